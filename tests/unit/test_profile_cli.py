"""``kiln profile`` and its parts: the per-kernel report (rows, rates, bound, totals; table, JSON
and CSV), the Chrome trace, and the command end to end on a small ONNX model compiled with
``kiln compile --profile`` (every kernel of the plan reported, kernel times within the run time,
a trace that loads, onnxruntime and numerics sections, clear errors).

The machine's peaks come from a calibration cache the tests write (fixed peaks, so no test
measures them and each rate can be checked against them); test_calibrate.py measures for real.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler.cli import main
from kiln.compiler.profile import calibrate
from kiln.compiler.profile.calibrate import Peaks
from kiln.compiler.profile.report import (
    COLUMNS,
    Report,
    Section,
    Totals,
    format_csv,
    format_json,
    format_table,
    profile_rows,
)
from kiln.compiler.profile.trace import chrome_trace, thread_name
from kiln.runtime import KernelCounters, KernelInfo, ProfileCounters, TraceEvent, load

PEAKS = Peaks(50.0, 10.0, "test cpu", "2025-01-01T00:00:00Z")
THREADS = 2
# The command's kernels must account for at least this fraction of the whole-run time: the
# rest is the plan function's own work between kernels and the timer calls, a few hundred
# nanoseconds per kernel against the tens of microseconds each kernel of MODEL takes.
KERNEL_SHARE_FLOOR = 0.5


# --- the report and the trace, from counters given here -------------------------------------


def _counters() -> ProfileCounters:
    """Three plan calls over 4 runs, two of them of one kernel ("gemm")."""
    return ProfileCounters(runs=4, run_ns=10_000, kernels=[
        KernelCounters(0, "gemm", ("mm",), 1000, 100, 4, 4000),
        KernelCounters(1, "copy", (), 0, 800, 4, 1000),
        KernelCounters(2, "gemm", ("mm2", "mm"), 1000, 100, 4, 2000),
    ])


def _report(sections: tuple[Section, ...] = ()) -> Report:
    counters = _counters()
    peaks = Peaks(1.0, 2.0, "cpu", "now")
    return Report("m.onnx", THREADS, peaks, profile_rows(counters, peaks, THREADS),
                  Totals.of(counters), sections)


def test_rows_add_up_each_kernel_and_name_its_bound() -> None:
    gemm, copy = _report().rows  # longest total time first
    assert (gemm.name, gemm.calls, gemm.total_ns, gemm.flops, gemm.bytes) == \
        ("gemm", 8, 6000, 1000, 100)
    assert gemm.source_ops == ("mm", "mm2")
    assert gemm.share == pytest.approx(0.6)
    # 8 calls x 1000 FLOPs in 6000 ns; peak 2 threads x 1 GFLOP/s
    assert gemm.gflops_per_s == pytest.approx(8000 / 6000)
    assert gemm.gbytes_per_s == pytest.approx(800 / 6000)
    assert (gemm.peak_fraction, gemm.bound) == (pytest.approx(8000 / 6000 / 2), "compute")
    assert gemm.mean_ns == pytest.approx(750)
    # a copy moves 4 x 800 bytes in 1000 ns: 3.2 GB/s, 160% of a 2 GB/s bandwidth
    assert (copy.name, copy.calls, copy.gflops_per_s, copy.bound) == ("copy", 4, 0.0, "memory")
    assert copy.peak_fraction == pytest.approx(1.6)
    totals = _report().totals
    assert (totals.runs, totals.run_ns, totals.kernel_ns) == (4, 10_000, 7000)
    assert totals.kernel_fraction == pytest.approx(0.7)


def test_table_lists_each_kernel_and_the_totals() -> None:
    lines = format_table(_report()).splitlines()
    assert lines[0] == ("m.onnx: 4 run(s) on 2 thread(s); peaks 2 x 1.0 GFLOP/s (FMA), "
                        "2.0 GB/s (memory) [cpu]")
    header = lines[2].split()
    assert header[:4] == ["kernel", "calls", "total", "ms"] and header[-2:] == ["source", "ops"]
    rows = {line.split()[0]: line.split() for line in lines[4:6]}
    assert rows["gemm"][1:5] == ["8", "0.006", "0.8", "60.0%"]
    assert rows["gemm"][-4:] == ["66.7%", "compute", "mm,", "mm2"]
    assert rows["copy"][1:8] == ["4", "0.001", "0.2", "10.0%", "0", "800B", "0.00"]
    assert rows["copy"][-2:] == ["160.0%", "memory"]  # and no source ops
    assert lines[7].split()[:5] == ["all", "kernels", "12", "0.007", "70.0%"]
    assert lines[8].split() == ["whole", "run", "4", "0.010", "2.5", "100.0%", "30.0%",
                                "outside", "kernels"]
    assert len(lines[3].split()) == 12 and set(lines[3]) == {"-", " "}  # a rule per column


def test_json_and_csv_carry_the_same_numbers() -> None:
    report = _report()
    data = json.loads(format_json(report))
    assert data["threads"] == THREADS and data["runs"] == 4
    assert data["peaks"] == {"gflops_per_thread": 1.0, "gbytes_per_second": 2.0, "cpu": "cpu",
                             "measured_at": "now"}
    assert data["totals"] == {"runs": 4, "run_ms": 0.01, "kernel_ms": 0.007,
                              "kernel_percent": pytest.approx(70.0)}
    rows = list(csv.DictReader(io.StringIO(format_csv(report))))
    assert [list(row) for row in rows] == [list(COLUMNS)] * 2
    assert [list(row) for row in data["kernels"]] == [list(COLUMNS)] * 2
    for from_json, from_csv in zip(data["kernels"], rows, strict=True):
        for column in COLUMNS:
            value = from_json[column]
            if column == "source_ops":
                assert from_csv[column].split(";") == value or (value == [] and
                                                                from_csv[column] == "")
            elif isinstance(value, str):
                assert from_csv[column] == value
            else:
                assert float(from_csv[column]) == value, column
    gemm = data["kernels"][0]
    assert (gemm["name"], gemm["calls"], gemm["total_ms"], gemm["mean_us"]) == \
        ("gemm", 8, 0.006, 0.75)
    assert gemm["share_percent"] == pytest.approx(60.0)


def test_sections_follow_the_table_and_join_the_json() -> None:
    section = Section("extra", "more numbers", "line one\nline two\n",
                      {"a": [1, 2], "error": float("inf")})
    report = _report((section,))
    assert format_table(report).endswith("\nmore numbers:\nline one\nline two\n")

    def reject(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    # strict JSON: an infinite error is spelled out, not written as Infinity
    assert json.loads(format_json(report), parse_constant=reject)["extra"] == {
        "a": [1, 2], "error": "inf"}
    assert format_csv(report) == format_csv(_report())


def test_chrome_trace_events() -> None:
    info = [KernelInfo(0, "first", ("a", "b"), 10, 20), KernelInfo(1, "second", (), 0, 8)]
    events = [TraceEvent(1, 0, 2000, 5000), TraceEvent(0, 0, 1000, 1500),
              TraceEvent(1, 1, 2500, 3000), TraceEvent(1, 0, 2000, 2400)]
    trace = chrome_trace(events, info)
    assert trace["displayTimeUnit"] == "ns"
    metadata = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    assert {(e["name"], e["tid"], e["args"]["name"]) for e in metadata} == {
        ("process_name", 0, "kiln"), ("thread_name", 0, thread_name(0)),
        ("thread_name", 1, thread_name(1))}
    spans = [(e["name"], e["tid"], e["ts"], e["dur"]) for e in trace["traceEvents"]
             if e["ph"] == "X"]
    # per thread by start, an enclosing span before the spans it holds; microseconds from the
    # earliest event
    assert spans == [("first", 0, 0.0, 0.5), ("second", 0, 1.0, 3.0), ("second", 0, 1.0, 0.4),
                     ("second", 1, 1.5, 0.5)]
    first = next(e for e in trace["traceEvents"] if e["name"] == "first")
    assert first["args"] == {"call": 0, "source_ops": "a,b", "flops": 10, "bytes": 20}
    assert first["pid"] == 1 and first["cat"] == "kernel"
    assert chrome_trace([], info)["traceEvents"] == metadata[:1]


# --- the command ------------------------------------------------------------------------------


def _model(path: Path) -> Path:
    """MatMul-Add-Relu (fused into one kernel), a second MatMul and a Softmax over x: f32[64,
    512]: each kernel takes tens of microseconds or more, the first two in parallel chunks.
    (Weights above conftest's FULL_TEXT_LIMIT elements keep its text round trip quick.)"""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (512, 512)), ("b1", (512,)), ("w2", (512, 64)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
             helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2"),
             helper.make_node("Softmax", ["z"], ["y"], name="softmax")]
    graph = helper.make_graph(
        nodes, "profiled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model, a profiling build of it (kiln compile --profile) and a plain one."""
    folder = tmp_path_factory.mktemp("profiled")
    model = _model(folder / "model.onnx")
    assert main(["compile", str(model), "-o", str(folder / "profiled.so"), "--profile",
                 "--no-tune-cache"]) == 0
    assert main(["compile", str(model), "-o", str(folder / "plain.so"), "--no-tune-cache"]) == 0
    return {"model": model, "profiled": folder / "profiled.so", "plain": folder / "plain.so"}


@pytest.fixture(scope="module")
def calibration_key() -> str:
    return calibrate.calibration_key()


@pytest.fixture(autouse=True)
def fixed_peaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calibration_key: str) -> Path:
    """A calibration cache holding PEAKS for this machine."""
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"format": calibrate.FORMAT, "version": calibrate.FORMAT_VERSION,
                                "machines": {calibration_key: {
                                    "gflops_per_thread": PEAKS.gflops_per_thread,
                                    "gbytes_per_second": PEAKS.gbytes_per_second,
                                    "cpu": PEAKS.cpu, "measured_at": PEAKS.measured_at}}}))
    monkeypatch.setenv("KILN_CALIBRATION_CACHE", str(path))
    return path


def _profile_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["profile", *args, "--format", "json", "--threads", str(THREADS)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # the peaks came from the cache: no calibration progress
    return json.loads(captured.out)


def _kernel_info(library: Path) -> list[KernelInfo]:
    with load(str(library), threads=1) as model:
        return model.kernel_info()


def test_every_kernel_of_the_plan_is_reported(built: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    runs = 6
    data = _profile_json(capsys, str(built["profiled"]), "--runs", str(runs), "--warmup", "2")
    plan = _kernel_info(built["profiled"])
    assert len(plan) >= 3
    rows = {row["name"]: row for row in data["kernels"]}
    assert set(rows) == {info.name for info in plan}
    for name, row in rows.items():
        calls = [info for info in plan if info.name == name]
        # the warm-up runs were not counted
        assert row["calls"] == runs * len(calls)
        assert row["source_ops"] == list(dict.fromkeys(op for i in calls for op in i.source_ops))
        assert (row["flops"], row["bytes"]) == (calls[0].flops, calls[0].bytes)
    assert {op for row in rows.values() for op in row["source_ops"]} == \
        {"mm1", "add1", "relu1", "mm2", "softmax"}
    assert data["runs"] == runs and data["threads"] == THREADS
    assert data["peaks"]["cpu"] == PEAKS.cpu
    times = [row["total_ms"] for row in data["kernels"]]
    assert times == sorted(times, reverse=True)


def test_rates_and_peak_fractions_follow_from_the_counts(
        built: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data = _profile_json(capsys, str(built["profiled"]), "--runs", "3")
    for row in data["kernels"]:
        seconds = row["total_ms"] / 1e3
        assert row["total_ms"] > 0
        assert row["mean_us"] == pytest.approx(row["total_ms"] * 1e3 / row["calls"])
        gflops = row["flops"] * row["calls"] / seconds / 1e9
        gbytes = row["bytes"] * row["calls"] / seconds / 1e9
        assert row["gflops_per_s"] == pytest.approx(gflops)
        assert row["gbytes_per_s"] == pytest.approx(gbytes)
        compute = gflops / (THREADS * PEAKS.gflops_per_thread)
        memory = gbytes / PEAKS.gbytes_per_second
        assert row["peak_percent"] == pytest.approx(100 * max(compute, memory))
        assert row["bound"] == ("compute" if compute >= memory else "memory")
        assert row["share_percent"] == pytest.approx(
            100 * row["total_ms"] / data["totals"]["run_ms"])
    matmul = next(row for row in data["kernels"] if "mm1" in row["source_ops"])
    assert matmul["flops"] >= 2 * 64 * 512 * 512


def test_kernel_times_sum_to_most_of_the_run(built: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The kernels run inside the run's timer, so their sum never exceeds it; and they are
    most of it (KERNEL_SHARE_FLOOR)."""
    totals = _profile_json(capsys, str(built["profiled"]), "--runs", "10")["totals"]
    assert totals["runs"] == 10
    assert KERNEL_SHARE_FLOOR * totals["run_ms"] <= totals["kernel_ms"] <= totals["run_ms"]
    assert totals["kernel_percent"] == pytest.approx(
        100 * totals["kernel_ms"] / totals["run_ms"])


def test_table_and_csv_of_a_model(built: dict[str, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(built["model"]), "--runs", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith(f"{built['model']}: 2 run(s) on ")
    names = {info.name for info in _kernel_info(built["profiled"])}
    body = [line.split() for line in table[4:4 + len(names)]]
    assert {row[0] for row in body} == names
    assert all(row[1] == "2" for row in body)
    assert table[-2].startswith("all kernels") and table[-1].startswith("whole run")
    assert main(["profile", str(built["profiled"]), "--runs", "2", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {row["name"] for row in rows} == names


def test_trace_loads_as_trace_event_json(built: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trace.json"
    _profile_json(capsys, str(built["profiled"]), "--runs", "3", "--trace", str(out))
    trace = json.loads(out.read_text())
    events = trace["traceEvents"]
    assert all({"name", "ph", "pid", "tid"} <= set(e) for e in events)
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all({"ts", "dur", "args"} <= set(e) for e in spans)
    assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in spans)
    assert min(e["ts"] for e in spans) == 0
    named = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert named == {e["tid"] for e in spans} and named <= set(range(THREADS))
    plan = _kernel_info(built["profiled"])
    # the caller's track holds every kernel call of every run, in plan order
    caller = [e["name"] for e in spans if e["tid"] == 0]
    assert caller == [info.name for info in plan] * 3
    assert {e["name"] for e in spans} <= {info.name for info in plan}
    for tid in named:  # spans on a track nest or follow one another, never overlap partly
        open_ends: list[int] = []
        for event in (e for e in spans if e["tid"] == tid):
            begin = round(event["ts"] * 1000)
            while open_ends and open_ends[-1] <= begin:
                open_ends.pop()
            end = begin + round(event["dur"] * 1000)
            assert not open_ends or end <= open_ends[-1]
            open_ends.append(end)


def test_a_python_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "net.py"
    source.write_text(textwrap.dedent("""
        import numpy as np
        from kiln.frontends import dsl

        W = np.ones((16, 4), np.float32)

        @dsl.model(x=dsl.f32["batch", 16])
        def net(x):
            return dsl.nn.relu(x @ W)
    """))
    data = _profile_json(capsys, str(source), "--input-shape", "x=3,16", "--runs", "2")
    assert data["kernels"] and all(row["calls"] == 2 for row in data["kernels"])


def test_compare_with_onnxruntime_and_numerics(built: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = _profile_json(capsys, str(built["model"]), "--runs", "2", "--compare-onnxruntime",
                         "--numerics", "onnxruntime")
    kernels = {row["name"] for row in data["kernels"]}
    beside = data["onnxruntime"]
    assert {k for row in beside for k in row["kernels"]} == kernels
    # joined by node name: onnxruntime's ops of a row are source ops of the row's kernels
    # (nodes onnxruntime fused under new names have rows of their own)
    for row in beside:
        assert {op for op, _ in row["ort_ops"]} <= set(row["source_ops"]) or not row["kernels"]
    (second,) = (row for row in beside if "mm2" in row["source_ops"])
    assert [op for op, _ in second["ort_ops"]] == ["mm2"] and second["ort_us"] > 0
    numerics = data["numerics"]
    assert numerics["reference"] == "onnxruntime"
    assert numerics["divergence"] is None and "y" in numerics["compared"]


def test_numerics_against_the_reference_in_the_table(built: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(built["model"]), "--runs", "1", "--numerics", "reference"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("\nnumerics against the reference executor:\n"):]
    assert "compared " in section and "no divergence" in section


def test_recalibrate_measures_and_reports_on_stderr(
        built: dict[str, Path], capsys: pytest.CaptureFixture[str], fixed_peaks: Path,
        monkeypatch: pytest.MonkeyPatch, calibration_key: str) -> None:
    measured = Peaks(7.0, 3.0, "measured cpu", "later")

    def measure(progress):  # type: ignore[no-untyped-def]
        progress("calibrating (stand-in)")
        return measured

    monkeypatch.setattr(calibrate, "measure_peaks", measure)
    assert main(["profile", str(built["profiled"]), "--runs", "1", "--recalibrate",
                 "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "kiln: calibrating (stand-in)\n"
    assert json.loads(captured.out)["peaks"]["cpu"] == "measured cpu"
    stored = json.loads(fixed_peaks.read_text())["machines"][calibration_key]
    assert stored["gflops_per_thread"] == 7.0


def test_compile_dump_writes_the_kernels(built: dict[str, Path], tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    assert main(["compile", str(built["model"]), "-o", str(tmp_path / "m.so"), "--dump",
                 str(dump), "--no-tune-cache"]) == 0
    written = {path.suffix for path in dump.iterdir()}
    assert {".kir", ".ll", ".s"} <= written


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], *needles: str) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err


def test_errors_are_one_clear_line(built: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["profile", str(built["plain"])], "is not a profiling build",
                    "kiln compile --profile")
    _one_line_error(capsys, ["profile", str(tmp_path / "missing.so")], "missing.so",
                    "does not exist")
    _one_line_error(capsys, ["profile", str(tmp_path / "missing.onnx")], "missing.onnx",
                    "does not exist")
    _one_line_error(capsys, ["profile", str(built["profiled"]), "--compare-onnxruntime"],
                    "--compare-onnxruntime needs an .onnx model")
    _one_line_error(capsys, ["profile", str(built["profiled"]), "--numerics", "reference"],
                    "--numerics needs the model")
    _one_line_error(capsys, ["profile", str(built["model"]), "--numerics", "reference",
                             "--format", "csv"], "use table or json")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--runs", "0"], ["--warmup", "-1"], ["--format", "xml"]):
        with pytest.raises(SystemExit) as exited:
            main(["profile", "m.onnx", *args])
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "expected a positive integer, got '0'" in err
    assert "expected a non-negative integer, got '-1'" in err
