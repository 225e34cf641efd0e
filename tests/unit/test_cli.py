"""The ``kiln`` command line, in process through ``main([...])`` and as a subprocess.

The tiny model: ``y = relu(x) + bias`` with ``x: f32[batch, 3]`` (symbolic batch) and a
three-element bias, plus ``n = Neg(x)`` as a second output.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler.cli import main

BIAS = np.array([0.5, -1.0, 2.0], dtype=np.float32)


def _save(path: Path, nodes: list[onnx.NodeProto], outputs: list[onnx.ValueInfoProto]) -> Path:
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        outputs,
        initializer=[numpy_helper.from_array(BIAS, "bias")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _save(
        tmp_path / "tiny.onnx",
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Add", ["r", "bias"], ["y"], name="add"),
         helper.make_node("Neg", ["x"], ["n"], name="neg")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("n", TensorProto.FLOAT, ["batch", 3])],
    )


def _kiln(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln.compiler.cli", *args],
                          capture_output=True, text=True, timeout=120)


def _checksum(array: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
    return f"sum={float(np.sum(array, dtype=np.float64)):.9g} sha256={digest}"


@pytest.mark.parametrize("args", [["--help"], ["inspect", "--help"], ["run", "--help"]])
def test_help(args: list[str]) -> None:
    done = _kiln(*args)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: kiln")


def test_console_script_is_registered() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="kiln")
    assert script.value == "kiln.compiler.cli:main"


def test_inspect_summary(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "x  f32[batch,3]" in out
    assert "y  f32[batch,3]" in out and "n  f32[batch,3]" in out
    for op in ("relu", "add", "neg"):
        assert any(line.split() == [op, "1"] for line in out.splitlines()), op
    assert "parameters: 3 in constants, 12 bytes" in out
    # relu, add and neg each count one FLOP per element of a [1, 3] tensor (batch taken as 1).
    assert "estimated FLOPs: 9" in out
    assert "batch=1" in out


def test_inspect_binds_symbols_and_prints_ir(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kiln.compiler.ir.printer import print_graph
    from kiln.frontends.onnx import load_onnx

    assert main(["inspect", str(tiny), "--ir", "--input-shape", "x=4,3"]) == 0
    out = capsys.readouterr().out
    assert "estimated FLOPs: 36" in out
    assert out.endswith(print_graph(load_onnx(tiny)))


def test_inspect_full_constants(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kiln.compiler.ir.printer import print_graph
    from kiln.frontends.onnx import load_onnx

    assert main(["inspect", str(tiny), "--ir", "--full-constants"]) == 0
    assert capsys.readouterr().out.endswith(print_graph(load_onnx(tiny), full_constants=True))


def test_run_with_inputs_and_output(tiny: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    x = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]], dtype=np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", str(tiny), "--inputs", str(tmp_path / "in.npz"),
                 "--output", str(tmp_path / "out.npz")]) == 0
    y, n = np.maximum(x, 0) + BIAS, -x
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"y  f32[2,3]  {_checksum(y)}",
                                         f"n  f32[2,3]  {_checksum(n)}"]
    assert captured.err == ""  # quiet unless --verbose
    with np.load(tmp_path / "out.npz") as saved:
        assert sorted(saved.files) == ["n", "y"]
        np.testing.assert_array_equal(saved["y"], y)
        np.testing.assert_array_equal(saved["n"], n)


def test_run_random_inputs_are_seeded(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for seed in ("0", "0", "1"):
        assert main(["run", str(tiny), "--input-shape", "x=5,3", "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert "y  f32[5,3]" in outputs[0]


def test_verbose_reports_progress(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tiny), "--input-shape", "x=1,3", "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "loading" in err and "running the reference executor" in err


def _assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("kiln: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_symbolic_input_needs_a_shape(tiny: Path) -> None:
    _assert_one_line_error(_kiln("run", str(tiny)), "'x'", "batch", "--input-shape x=1,3")


def test_missing_file(tmp_path: Path) -> None:
    _assert_one_line_error(_kiln("inspect", str(tmp_path / "absent.onnx")), "does not exist")


def test_corrupt_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07\x12\xffnot a protobuf" * 7)
    done = _kiln("run", str(corrupt))
    _assert_one_line_error(done, "corrupt.onnx")
    assert "internal error" not in done.stderr


def test_unsupported_op(tmp_path: Path) -> None:
    path = _save(tmp_path / "custom.onnx",
                 [helper.make_node("Frobnicate", ["x"], ["y"], name="frob", domain="com.example")],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    model = onnx.load(path)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, path)
    done = _kiln("inspect", str(path))
    _assert_one_line_error(done, "Frobnicate")
    assert "internal error" not in done.stderr


def test_bad_input_names(tiny: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", wrong=np.zeros((1, 3), np.float32))
    _assert_one_line_error(_kiln("run", str(tiny), "--inputs", str(tmp_path / "in.npz")),
                           "['wrong']", "['x']")


def test_bad_input_dtype(tiny: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3), np.float64))
    _assert_one_line_error(_kiln("run", str(tiny), "--inputs", str(tmp_path / "in.npz")),
                           "'x'", "f32")


@pytest.mark.parametrize("shape, needle", [
    ("x=1,4", "does not fit"),
    ("y=1,3", "model's inputs are ['x']"),
])
def test_bad_input_shape(tiny: Path, shape: str, needle: str) -> None:
    _assert_one_line_error(_kiln("run", str(tiny), "--input-shape", shape), needle)


def test_usage_errors_exit_2() -> None:
    done = _kiln("run")
    _assert_one_line_error(done, "model")
    assert done.returncode == 2
    done = _kiln("run", "m.onnx", "--input-shape", "x=a,b")
    _assert_one_line_error(done, "NAME=D0,D1")
    assert done.returncode == 2


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage")
    done = _kiln("--debug", "inspect", str(corrupt))
    assert done.returncode != 0
    assert "Traceback" in done.stderr


def _readme_sessions() -> list[tuple[list[str], str]]:
    """(arguments, printed output) of each ``$ kiln ...`` example in README.md."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    sessions = []
    for block in re.findall(r"```\n(\$ kiln .*?)```", readme, flags=re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            sessions.append((shlex.split(command)[1:], output.strip("\n")))
    return sessions


def test_readme_examples_match(capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's sample sessions are real: the summary verbatim, checksums' sums to 1e-6
    (the sha256 of float results may change with the BLAS build, so it is not compared)."""
    sessions = _readme_sessions()
    assert len(sessions) >= 2
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    for args, expected in sessions:
        assert main(args) == 0
        printed = capsys.readouterr().out.strip("\n")
        if args[0] == "inspect":
            assert printed == expected
            continue
        for got, want in zip(printed.splitlines(), expected.splitlines(), strict=True):
            assert got.split("sum=")[0] == want.split("sum=")[0]
            got_sum, want_sum = (float(s.split("sum=")[1].split()[0]) for s in (got, want))
            assert got_sum == pytest.approx(want_sum, rel=1e-6)


def test_compile_then_run_the_library_matches_the_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = Path(__file__).resolve().parents[2] / "examples" / "digits" / "digits_cnn.onnx"
    library = tmp_path / "digits.so"
    assert main(["compile", str(model), "-o", str(library), "--input-shape", "image=4,1,8,8",
                 "--weights", "external"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {library}" in printed and "kernels, arena" in printed
    assert library.with_suffix(".h").exists() and library.with_suffix(".bin").exists()
    images = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=images)
    for path in (model, library):
        assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz")]) == 0
    reference_line, compiled_line = capsys.readouterr().out.strip().splitlines()
    assert reference_line.split("sum=")[0] == compiled_line.split("sum=")[0]
    sums = [float(line.split("sum=")[1].split()[0]) for line in (reference_line, compiled_line)]
    assert sums[1] == pytest.approx(sums[0], rel=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-shape", "image=1,3,8,8"], "does not fit the declared"),
        (["--input-shape", "image=1,1,8,8", "--target", "sparc-sun-solaris"], "sparc"),
    ],
)
def test_compile_errors_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    model = Path(__file__).resolve().parents[2] / "examples" / "digits" / "digits_cnn.onnx"
    assert main(["compile", str(model), "-o", str(tmp_path / "m.so"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and message in err and len(err.splitlines()) == 1
