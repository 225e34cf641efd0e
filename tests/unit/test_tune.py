"""``kiln tune`` and the tuning cache: the cache file, machine keys, and tune -> compile.

The end-to-end tests use a fake schedule family (``fake_family``) so that they do not depend on
the real GEMM/convolution schedules: MatMul and Conv lowerings are wrapped to ask
``schedules.choose`` for a ``Passes`` schedule and run the original lowering ``passes`` times
(the same result, a measurably different cost; the compiled library's kernel count shows the
choice); the real families' decisions inside are hidden. Its candidates include a broken one
(``negate``: the weight negated, wrong results) and one whose lowering fails (``passes=0``):
the tuner must reject both, never cache them. ``test_real_families_*`` tune the real ones.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler import build, reference
from kiln.compiler.cli import main
from kiln.compiler.codegen.target import Target
from kiln.compiler.ir.op import Op
from kiln.compiler.lower import registry, schedules
from kiln.compiler.machine import Machine
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.specialize import specialize
from kiln.compiler.tune import search
from kiln.compiler.tune.cache import (
    FORMAT_VERSION,
    TuneCache,
    TuneCacheWarning,
    default_cache_path,
    machine_key,
)
from kiln.frontends.onnx import load_onnx
from kiln.runtime import load

HOST = Target.parse("host")


@dataclasses.dataclass(frozen=True)
class Passes:
    passes: int = 2
    negate: bool = False


CANDIDATES = (Passes(1), Passes(2), Passes(1, negate=True), Passes(0))


@pytest.fixture
def fake_family(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.lowerings()  # load the real ones first, then wrap them
    for op in (Op.MATMUL, Op.CONV):
        original = registry.lowering_for(op)
        assert original is not None

        def fake(ctx: registry.LowerContext, original=original) -> list:  # type: ignore[no-untyped-def]
            signature = f"fake {ctx.op.value} {ctx.output().shape}"
            chosen = schedules.choose(ctx.machine, signature, Passes(), CANDIDATES)
            if chosen.passes == 0:
                raise ctx.fail("the fake schedule with no passes cannot be lowered")
            if chosen.negate:
                weight = ctx.const(1)
                assert weight is not None
                # both views of the weight: tiled lowerings pack the constant's value
                ctx.inputs[1] = ctx.derived_constant(f"{ctx.input(1).name}.negated", -weight)
                ctx.consts[1] = -weight
            with schedules.collect(isolated=True):  # hides the real families' decisions
                return [kernel for _ in range(chosen.passes) for kernel in original(ctx)]

        monkeypatch.setitem(registry._LOWERINGS, op, fake)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """x -> Conv (constant weight, padded) -> Flatten -> MatMul (constant weight) -> y."""
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    mm_w = rng.standard_normal((4 * 8 * 8, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("MatMul", ["f", "mm_w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
        initializer=[numpy_helper.from_array(conv_w, "conv_w"),
                     numpy_helper.from_array(mm_w, "mm_w")],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache" / "tune.json"
    monkeypatch.setenv("KILN_TUNE_CACHE", str(path))
    return path


def _record(cache: TuneCache, target: Target, threads: int | None, signature: str,
            params: dict[str, object]) -> None:
    cache.record(target, threads, signature, params, seconds=1e-3, default_seconds=2e-3,
                 measured=3, candidates=3)


def _fake_decisions(graph: object, tuned: dict[str, dict[str, object]]
                    ) -> tuple[list[schedules.Decision], list[np.ndarray]]:
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with schedules.collect() as decisions:
        exe = build(graph, tuned=tuned)  # type: ignore[arg-type]
    return decisions, exe.run({"x": x})


# ---- the cache file ----

def test_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "tune.json"
    _record(TuneCache(path), HOST, 2, "gemm m=1", {"mr": 8, "nr": 48})
    _record(TuneCache(path), HOST, 2, "conv k=3", {"block": 16})
    reread = TuneCache(path)
    assert reread.tuned(HOST, 2) == {"gemm m=1": {"mr": 8, "nr": 48}, "conv k=3": {"block": 16}}
    entry = reread.entries(HOST, 2)["gemm m=1"]
    assert (entry.seconds, entry.default_seconds, entry.complete) == (1e-3, 2e-3, True)
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("kiln-tune", FORMAT_VERSION)
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")] == [path.name]


@pytest.mark.parametrize("content", [
    "{not json", "[1, 2]", '{"format": "other", "version": 1, "machines": {}}',
    json.dumps({"format": "kiln-tune", "version": FORMAT_VERSION + 1, "machines": {}}),
    json.dumps({"format": "kiln-tune", "version": FORMAT_VERSION, "machines": []}),
    b"\xff\xfe\x00garbage",
])
def test_corrupt_cache_warns_is_ignored_and_replaced(tmp_path: Path, content: str | bytes
                                                     ) -> None:
    path = tmp_path / "tune.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.warns(TuneCacheWarning, match="ignoring it"):
        assert TuneCache(path).tuned(HOST, None) == {}
    with pytest.warns(TuneCacheWarning):
        _record(TuneCache(path), HOST, None, "gemm m=1", {"mr": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TuneCache(path).tuned(HOST, None) == {"gemm m=1": {"mr": 4}}


def test_malformed_entries_and_other_versions_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "tune.json"
    _record(TuneCache(path), HOST, 1, "good", {"mr": 4})
    data = json.loads(path.read_text())
    entries = data["machines"][machine_key(HOST, 1)]["entries"]
    entries["no params"] = {"seconds": 1.0}
    entries["old kiln"] = dict(entries["good"], kiln="0.0.0-old")
    path.write_text(json.dumps(data))
    assert TuneCache(path).tuned(HOST, 1) == {"good": {"mr": 4}}


def test_machine_keys_separate_targets_and_thread_counts(tmp_path: Path) -> None:
    cache = TuneCache(tmp_path / "tune.json")
    avx2 = Target.parse("x86_64-avx2")
    _record(cache, HOST, 1, "gemm", {"mr": 1})
    _record(cache, HOST, 4, "gemm", {"mr": 4})
    _record(cache, avx2, 1, "gemm", {"mr": 6})
    assert cache.tuned(HOST, 1) == {"gemm": {"mr": 1}}
    assert cache.tuned(HOST, 4) == {"gemm": {"mr": 4}}
    assert cache.tuned(avx2, 1) == {"gemm": {"mr": 6}}
    assert cache.tuned(Target.parse("x86_64-avx512"), 1) == {}
    # the feature string's order does not matter; its content does
    reordered = dataclasses.replace(avx2, features="+fma,+avx2")
    assert machine_key(reordered, 1) == machine_key(
        dataclasses.replace(avx2, features="+avx2,+fma"), 1)
    assert machine_key(reordered, 1) != machine_key(avx2, 1)


def test_default_cache_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KILN_TUNE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_path() == tmp_path / ".cache" / "kiln" / "tune.json"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "kiln" / "tune.json"
    monkeypatch.setenv("KILN_TUNE_CACHE", str(tmp_path / "mine.json"))
    assert default_cache_path() == tmp_path / "mine.json"


def test_choose_picks_the_tuned_entry() -> None:
    machine = Machine().with_tuned({"sig": {"passes": 1}, "bad": {"no_such_field": 1},
                                    "stale": {"passes": 3}})
    with schedules.collect() as decisions:
        assert schedules.choose(machine, "sig", Passes(), CANDIDATES) == Passes(1)
        assert schedules.choose(machine, "bad", Passes(), CANDIDATES) == Passes()
        assert schedules.choose(machine, "other", Passes(), CANDIDATES) == Passes()
        # an entry that is not among the candidates (stale or hand-edited) is ignored
        assert schedules.choose(machine, "stale", Passes(), CANDIDATES) == Passes()
    assert [d.chosen for d in decisions] == [{"passes": 1, "negate": False},
                                             {"passes": 2, "negate": False},
                                             {"passes": 2, "negate": False},
                                             {"passes": 2, "negate": False}]
    assert decisions[0].candidates == tuple(dataclasses.asdict(c) for c in CANDIDATES)


# ---- kiln tune -> kiln compile ----

def test_tune_then_compile_uses_the_cache(fake_family: None, model: Path, cache_path: Path,
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(["tune", str(model), "--runs", "2"]) == 0
    captured = capsys.readouterr()
    # the broken candidates were measured and rejected
    assert captured.err.count("negate=True: failed: output 0 differs") == 2
    assert captured.err.count("passes=0 negate=False: failed: does not compile") == 2
    table = captured.out.splitlines()
    assert table[0].split()[:2] == ["signature", "nodes"]
    assert {line.split(" (")[0] for line in table[1:3]} == {"fake conv", "fake matmul"}
    assert table[-1] == f"cache: {cache_path} [{machine_key(HOST, None)}]"

    entries = TuneCache(cache_path).entries(HOST, None)
    assert set(entries) == {"fake conv (2, 4, 8, 8)", "fake matmul (2, 10)"}
    for entry in entries.values():
        assert entry.params in ({"passes": 1, "negate": False}, {"passes": 2, "negate": False})
        assert (entry.measured, entry.candidates) == (4, 4)
        assert 0 < entry.seconds <= entry.default_seconds

    # build with the cache: every decision takes the cached params; results are unchanged
    graph = load_onnx(model)
    tuned = TuneCache(cache_path).tuned(HOST, None)
    decisions, with_cache = _fake_decisions(graph, tuned)
    assert {d.signature: d.chosen for d in decisions} == tuned
    _, without = _fake_decisions(graph, {})
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = reference.run(graph, {"x": x})[0]
    np.testing.assert_allclose(with_cache[0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(without[0], want, rtol=1e-4, atol=1e-4)

    # a second tune finds complete results and measures nothing
    assert main(["tune", str(model)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("cached") == 2 and "default" not in captured.err


def test_compile_reads_the_cache_unless_told_not_to(
        fake_family: None, model: Path, cache_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The fake schedule's passes show in the library's kernel count."""
    conv, matmul = "fake conv (2, 4, 8, 8)", "fake matmul (2, 10)"
    one = {"passes": 1, "negate": False}  # a candidate other than the default
    graph = load_onnx(model)
    kernels = {name: build(graph, tuned=tuned).stats.kernels for name, tuned in
               [("none", {}), ("both", {conv: one, matmul: one}), ("matmul", {matmul: one})]}
    assert len(set(kernels.values())) == 3
    cache = TuneCache(cache_path)
    for signature in (conv, matmul):
        _record(cache, HOST, None, signature, one)
    other = tmp_path / "other.json"
    _record(TuneCache(other), HOST, 3, matmul, one)
    library = tmp_path / "tiny.so"
    runs = [([], "both"), (["--no-tune-cache"], "none"), (["--tune-cache", str(other)], "none"),
            (["--tune-cache", str(other), "--tune-threads", "3"], "matmul")]
    for flags, expected in runs:
        assert main(["compile", str(model), "-o", str(library), "-v", *flags]) == 0
        captured = capsys.readouterr()
        assert f" {kernels[expected]} kernels," in captured.out, flags
        used = {"none": 0, "both": 2, "matmul": 1}[expected]
        assert f"tuned schedules used by {used} of 2 tunable kernels" in captured.err, flags


def test_a_corrupt_cache_does_not_stop_compile(fake_family: None, model: Path, cache_path: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cache_path.parent.mkdir(parents=True)
    cache_path.write_text("{oops")
    assert main(["compile", str(model), "-o", str(tmp_path / "m.so")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("kiln: warning: the tuning cache") and "ignoring it" in err


def test_budget_zero_measures_nothing(fake_family: None, model: Path, cache_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", str(model), "--budget-seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("budget spent") == 2 and "0/4 measured" in out
    assert not cache_path.exists()


def test_model_without_tunable_kernels(tmp_path: Path, cache_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["tune", str(path)]) == 0
    assert "no tunable kernels" in capsys.readouterr().out
    assert not cache_path.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "aarch64-linux-gnu"], "does not run here"),
    (["--runs", "0"], "expected a positive integer"),
])
def test_tune_usage_errors(model: Path, cache_path: Path, args: list[str], message: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main(["tune", str(model), *args])
    except SystemExit as exit_:  # argparse rejects the malformed ones
        status = exit_.code  # type: ignore[assignment]
    assert status != 0
    assert message in capsys.readouterr().err


def test_interrupted_tune_keeps_what_it_measured(
        fake_family: None, model: Path, cache_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    measure = search._Bench.measure
    calls = iter(range(100))

    def interrupt_third(self: search._Bench, *args: object) -> object:
        if next(calls) == 2:
            raise KeyboardInterrupt
        return measure(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(search._Bench, "measure", interrupt_third)
    assert main(["tune", str(model)]) == 1
    assert "interrupted; what was measured is in" in capsys.readouterr().err
    entries = TuneCache(cache_path).entries(HOST, None)
    assert len(entries) == 2 and all(e.measured == 1 and not e.complete
                                     for e in entries.values())



def _real_tunables(model: Path, opt_level: int) -> dict[str, search.Tunable]:
    machine = HOST.machine()
    graph = optimize(specialize(load_onnx(model), {}), opt_level, machine=machine)
    return {t.signature: t for t in search.find_tunables(graph, machine)}


def _compiled_matches_reference(model: Path, library: Path, flags: list[str]) -> None:
    assert main(["compile", str(model), "-o", str(library), "-O3", *flags]) == 0
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with load(str(library)) as compiled:
        got = compiled.run({"x": x})[0]
    want = reference.run(load_onnx(model), {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_real_families_tune_and_compile(model: Path, cache_path: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The GEMM and blocked-conv families (at -O3) through tune -> cache -> compile."""
    tunables = _real_tunables(model, 3)
    assert {s.split()[0] for s in tunables} == {"gemm", "conv"}
    assert main(["tune", str(model), "-O3", "--runs", "1", "--budget-seconds", "1"]) == 0
    capsys.readouterr()
    entries = TuneCache(cache_path).entries(HOST, None)
    assert entries and set(entries) <= set(tunables)
    for signature, entry in entries.items():
        assert entry.params in tunables[signature].candidates
    _compiled_matches_reference(model, tmp_path / "tuned.so", [])

    # a non-default candidate of each family in the cache: compile takes it, results hold
    chosen = {s: t.candidates[-1] for s, t in tunables.items()}
    assert all(c != tunables[s].default for s, c in chosen.items())
    for signature, params in chosen.items():
        _record(TuneCache(cache_path), HOST, None, signature, params)
    _compiled_matches_reference(model, tmp_path / "forced.so", ["-v"])
    assert "tuned schedules used by 2 of 2 tunable kernels" in capsys.readouterr().err
    with schedules.collect() as decisions:
        build(load_onnx(model), opt_level=3, tuned=TuneCache(cache_path).tuned(HOST, None))
    assert {d.signature: d.chosen for d in decisions} == chosen


@pytest.mark.slow
def test_real_families_full_tune(model: Path, cache_path: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Every candidate of every real family measured; the compiled model still matches."""
    tunables = _real_tunables(model, 3)
    assert main(["tune", str(model), "-O3", "--runs", "3"]) == 0
    assert "failed" not in capsys.readouterr().err
    entries = TuneCache(cache_path).entries(HOST, None)
    assert set(entries) == set(tunables)
    for signature, entry in entries.items():
        assert entry.complete and entry.params in tunables[signature].candidates
    _compiled_matches_reference(model, tmp_path / "tuned.so", ["-v"])
    assert "tuned schedules used by 2 of 2 tunable kernels" in capsys.readouterr().err


def test_tune_help_and_exclusive_cache_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["tune", "--help"])
    assert done.value.code == 0 and "--budget-seconds" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["compile", "m.onnx", "-o", "m.so", "--tune-cache", "c.json", "--no-tune-cache"])
    assert done.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_repeated_layers_are_one_signature(fake_family: None, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(3)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"h{i + 1}"]) for i in range(3)],
        "stack", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("h3", TensorProto.FLOAT, [4, 16])],
        initializer=[numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    machine = HOST.machine()
    optimized = optimize(specialize(load_onnx(helper.make_model(graph)), {}), 2, machine=machine)
    (tunable,) = search.find_tunables(optimized, machine)
    assert (tunable.signature, tunable.nodes) == ("fake matmul (4, 16)", 3)
    assert tunable.candidates[0] == tunable.default == dataclasses.asdict(Passes())
    assert len(tunable.candidates) == len(CANDIDATES)
    # the node alone: its weight a constant, its activation an input
    assert [v.name for v in tunable.graph.inputs] == ["h0"]
    assert [n.op for n in tunable.graph.nodes] == [Op.CONSTANT, Op.MATMUL]
