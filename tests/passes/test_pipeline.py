"""The optimizer pipeline: passes per opt level, print/stop/verify/stats controls, the
``build`` integration (-O0 and -O3 compile to the same results) and the ``kiln compile``
flags."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from passcheck import dense, ops, parse, random_inputs

from kiln.compiler import build, reference
from kiln.compiler.cli import main
from kiln.compiler.errors import KilnError, VerificationError
from kiln.compiler.ir.graph import Graph
from kiln.compiler.machine import Machine
from kiln.compiler.passes import pipeline
from kiln.compiler.passes.pipeline import PassEntry, PassStats, format_stats, optimize, passes_for
from kiln.frontends.onnx import load_onnx

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"
RNG = np.random.default_rng(3)


def _weights(shape: tuple[int, ...], positive: bool = False) -> str:
    data = RNG.standard_normal(shape).astype(np.float32) * 0.3
    data = np.abs(data) + 0.5 if positive else data
    return f"constant() {{value={dense(data)}}} : f32[{','.join(map(str, shape))}]"


def _resnet_block() -> Graph:
    """conv-BN-relu, conv-BN, residual add, relu, plus redundant ops for every local pass."""
    text = f"""func @main(%x: f32[1,4,6,6]) -> (f32[1,4,6,6]) {{
  %w1 = {_weights((4, 4, 3, 3))}
  %w2 = {_weights((4, 4, 3, 3))}
  %g = {_weights((4,))}
  %b = {_weights((4,))}
  %m = {_weights((4,))}
  %v = {_weights((4,), positive=True)}
  %shape = shape(%x) : i64[4]
  %id = reshape(%x, %shape) : f32[1,4,6,6]
  %c1 = conv(%id, %w1) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}} : f32[1,4,6,6]
  %n1 = batch_normalization(%c1, %g, %b, %m, %v) : f32[1,4,6,6]
  %r1 = relu(%n1) : f32[1,4,6,6]
  %r1b = relu(%n1) : f32[1,4,6,6]
  %c2 = conv(%r1, %w2) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}} : f32[1,4,6,6]
  %n2 = batch_normalization(%c2, %g, %b, %m, %v) : f32[1,4,6,6]
  %d = dropout(%n2) : f32[1,4,6,6]
  %s = add(%d, %x) : f32[1,4,6,6]
  %unused = exp(%r1b) : f32[1,4,6,6]
  %y = relu(%s) : f32[1,4,6,6]
  return %y
}}
"""
    return parse(text)


def test_passes_per_level() -> None:
    names = {level: [e.name for e in passes_for(level)] for level in range(4)}
    assert names[0] == ["fold_constants", "dead_code"]
    assert names[1][:6] == ["quant_fusion", "fold_constants", "simplify", "cse", "fold_batchnorm",
                            "dead_code"]
    assert all(set(names[level]) <= set(names[level + 1]) for level in range(3))
    assert not any(n in names[0] + names[1] for n in ("fuse", "select_layout"))
    with pytest.raises(KilnError, match="opt_level must be 0, 1, 2 or 3"):
        passes_for(4)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_optimize_verifies_and_keeps_results(level: int) -> None:
    graph = _resnet_block()
    rows: list[PassStats] = []
    optimized = optimize(graph, level, verify_each=True, stats=rows)
    assert [r.name for r in rows] == [e.name for e in passes_for(level)]
    assert rows[0].nodes_before == len(ops(graph))
    assert all(a.nodes_after == b.nodes_before for a, b in zip(rows, rows[1:], strict=False))
    if level >= 1:
        assert "batch_normalization" not in ops(optimized)
    if level == 1:
        assert ops(optimized) == ["conv", "relu", "conv", "add", "relu"]
    inputs = random_inputs(graph, 0)
    for want, got in zip(reference.run(graph, inputs), reference.run(optimized, inputs),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unchanged_passes_report_so() -> None:
    graph = parse("""func @main(%x: f32[2]) -> (f32[2]) {
  %y = relu(%x) : f32[2]
  return %y
}
""")
    rows: list[PassStats] = []
    assert optimize(graph, 1, stats=rows) is graph
    assert not any(r.changed for r in rows)
    table = format_stats(rows)
    assert table.splitlines()[0].split()[:3] == ["pass", "time", "(ms)"]
    assert all(name in table for name in ("fold_constants", "simplify", "dead_code"))


def test_stop_after_and_print_after() -> None:
    graph = _resnet_block()
    out = io.StringIO()
    rows: list[PassStats] = []
    result = optimize(graph, 3, stop_after="simplify", print_after=["fold_constants"],
                      stats=rows, out=out)
    assert [r.name for r in rows] == ["quant_fusion", "fold_constants", "simplify"]
    assert "batch_normalization" in ops(result) and "dropout" not in ops(result)
    text = out.getvalue()
    assert text.startswith("// IR after fold_constants\nfunc @main(")
    assert text.count("// IR after") == 1
    everything = io.StringIO()
    optimize(graph, 1, print_after_all=True, out=everything)
    headers = [line.removesuffix(" (unchanged)")
               for line in everything.getvalue().splitlines() if line.startswith("//")]
    assert headers == [f"// IR after {e.name}" for e in passes_for(1)]


def test_unknown_or_absent_pass_names_are_clear_errors() -> None:
    graph = _resnet_block()
    known = ", ".join(e.name for e in pipeline.PASSES)
    with pytest.raises(KilnError, match=f"unknown pass 'fold'; the passes are: {known}"):
        optimize(graph, 2, stop_after="fold")
    with pytest.raises(KilnError, match="unknown pass 'nope'"):
        optimize(graph, 2, print_after=["nope"])
    with pytest.raises(KilnError, match="pass 'simplify' does not run at -O0; the passes at "
                                        "-O0 are: fold_constants, dead_code"):
        optimize(graph, 0, stop_after="simplify")


def test_verify_each_names_the_pass_that_broke_the_ir(monkeypatch: pytest.MonkeyPatch) -> None:
    def drop_first_node(graph: Graph, _machine: Machine) -> Graph:
        return Graph(graph.name, graph.inputs, graph.nodes[1:], graph.outputs)

    monkeypatch.setattr(pipeline, "PASSES", (PassEntry("breaker", drop_first_node, 0),))
    with pytest.raises(VerificationError, match="after pass breaker: "):
        optimize(_resnet_block(), 0, verify_each=True)


def _compare_levels(graph: Graph, inputs: dict[str, np.ndarray]) -> None:
    shapes = {k: v.shape for k, v in inputs.items()}
    baseline = build(graph, opt_level=0, input_shapes=shapes, verify_each=True)
    optimized = build(graph, opt_level=3, input_shapes=shapes, verify_each=True)
    assert [r.name for r in optimized.stats.passes] == [e.name for e in passes_for(3)]
    for want, got in zip(baseline.run(inputs), optimized.run(inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_build_o0_and_o3_agree_on_digits() -> None:
    graph = load_onnx(DIGITS)
    images = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    _compare_levels(graph, {"image": images})


def test_build_o0_and_o3_agree_on_a_resnet_block() -> None:
    graph = _resnet_block()
    _compare_levels(graph, random_inputs(graph, 1))


def test_build_o0_and_o3_agree_on_the_zoo_resnet(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    from zoo import resnet_style_cnn

    exported = resnet_style_cnn("torchscript", tmp_path)
    _compare_levels(load_onnx(exported.path), exported.inputs)


# --- kiln compile flags ------------------------------------------------------------------------
SHAPE = ["--input-shape", "image=1,1,8,8"]


def test_cli_stop_after_prints_ir_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = tmp_path / "m.so"
    assert main(["compile", str(DIGITS), *SHAPE, "-o", str(library), "--stop-after", "cse",
                 "--pass-stats"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("func @main_graph(%image: f32[1,1,8,8]) -> (f32[1,10]) {")
    assert "conv(" in out and "fold_constants" in out and "dead_code" not in out
    assert not library.exists()


def test_cli_print_ir_after_and_pass_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = tmp_path / "m.so"
    assert main(["compile", str(DIGITS), *SHAPE, "-o", str(library), "-O1",
                 "--print-ir-after", "simplify", "--print-ir-after", "dead_code",
                 "--pass-stats"]) == 0
    captured = capsys.readouterr()
    headers = [line for line in captured.err.splitlines() if line.startswith("// IR after")]
    assert headers == ["// IR after simplify (unchanged)", "// IR after dead_code (unchanged)"]
    assert library.exists()
    table = captured.out.splitlines()[1:]
    assert table[0].startswith("pass ") and "fused groups" in table[0]
    assert [line.split()[0] for line in table[1:]] == [e.name for e in passes_for(1)]


def test_cli_print_ir_after_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(DIGITS), *SHAPE, "-O0", "--stop-after", "dead_code",
                 "--print-ir-after-all"]) == 0
    headers = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("// IR")]
    assert headers == ["// IR after fold_constants (unchanged)",
                       "// IR after dead_code (unchanged)"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--stop-after", "bogus"], "kiln: error: unknown pass 'bogus'; the passes are: "),
    (["--print-ir-after", "simplify", "-O0", "--stop-after", "dead_code"],
     "kiln: error: pass 'simplify' does not run at -O0"),
    ([], "kiln: error: compile needs -o MODEL.so (or --stop-after PASS to print the IR)"),
])
def test_cli_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(DIGITS), *SHAPE, *argv]) == 1
    assert capsys.readouterr().err.startswith(message)
