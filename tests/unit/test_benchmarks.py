"""The benchmark scripts' code paths on tiny inputs: table rows and summary lines and the GEMM
and model benchmarks end to end, each timed engine checked against numpy or onnxruntime (the
FMA peak loop they share is tested with the calibration, tests/unit/test_calibrate.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_gemm  # noqa: E402
import bench_models  # noqa: E402
from bench_gemm import GemmRow, Shape  # noqa: E402
from bench_models import Case, Row  # noqa: E402


def _row(model: str, threads: int, kiln_ms: float, ort_ms: float, error: float = 0.0) -> Row:
    return Row(model, threads, kiln_ms, ort_ms, None, 1.0, None, 0.5, error)


def test_geomean() -> None:
    assert bench_models.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert bench_models.geomean([0.5]) == pytest.approx(0.5)


def test_summary_states_each_bar() -> None:
    rows = [_row("a", 1, 1.0, 2.0), _row("b", 1, 2.0, 1.0),  # ratios 2 and 0.5: geomean 1
            _row("a", 2, 1.0, 1.0), _row("b", 2, 1.0, 0.9, error=1e-2)]  # geomean sqrt(0.9)
    lines = bench_models.summary(rows, [1, 2], failed=["c"])
    assert "geometric mean ort/kiln at 1 thread(s): 1.000 over 2 models" in lines
    assert "geometric mean ort/kiln at 2 thread(s): 0.949 over 2 models" in lines
    verdicts = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    assert verdicts == [
        "PASS: geomean ort/kiln at 1 thread(s) 1.000 (bar 1.0)",
        "FAIL: geomean ort/kiln at 2 thread(s) 0.949 (bar 1.0)",
        "FAIL: no model below 0.7: lowest 0.500 (b)",
        "FAIL: outputs match onnxruntime (rel err <= 0.001): worst 1.0e-02 (b)",
        "FAIL: 1 model(s) did not run: c",
    ]


def test_rows_line_up_with_the_header() -> None:
    with_openvino = Row("light_resnet50", 2, 12.5, 25.0, 20.0, 300.0, 400.0, 10.0, 1e-6)
    for row in (_row("mlp", 1, 0.1, 0.05), with_openvino):
        line = bench_models.format_row(row)
        assert len(line) == len(bench_models.HEADER)
        assert line.split()[0] == row.model
    assert bench_models.format_row(with_openvino).split()[2:9] == [
        "12.500", "25.000", "2.000", "20.000", "1.600", "300.00", "75.0"]
    gemm = GemmRow("1024x1024@1024x1024", 1, 80.0, 90.0, 85.0, 100.0, 1.0, 1e-7)
    assert len(bench_gemm.format_row(gemm)) == len(bench_gemm.HEADER)
    assert bench_gemm.format_row(gemm).split()[2:7] == ["80.00", "90.00", "85.00", "100.00",
                                                         "80.0%"]


def test_relative_error() -> None:
    expected = [np.array([1.0, -4.0], np.float32), np.array([2.0], np.float32)]
    actual = [np.array([1.0, -4.0], np.float32), np.array([2.5], np.float32)]
    assert bench_models.relative_error(actual, expected) == pytest.approx(0.5 / 4.0)
    assert bench_models.relative_error(actual[:1], expected) == float("inf")
    assert bench_models.relative_error([np.zeros(3)], [np.zeros(2)]) == float("inf")
    nan = np.array([np.nan, 1.0])
    assert bench_models.relative_error([nan], [nan]) == 0.0
    assert bench_models.relative_error([nan], [np.ones(2)]) == float("inf")
    assert bench_models.relative_error([np.ones(2)], [nan]) == float("inf")
    with_inf = [np.array([np.inf, 2.0, 3.0])], [np.array([np.inf, 2.5, 4.0])]
    assert bench_models.relative_error(*with_inf) == pytest.approx(1.0 / 4.0)


def test_interleaved_times_times_every_engine() -> None:
    calls = {"a": 0, "b": 0}

    def engine(name: str):  # type: ignore[no-untyped-def]
        def run() -> None:
            calls[name] += 1
        return run

    runs = 7
    times = bench_models.interleaved_times({n: engine(n) for n in calls}, runs)
    assert {n: len(t) for n, t in times.items()} == {"a": runs, "b": runs}
    assert all(t >= 0 for samples in times.values() for t in samples)
    blocks = -(-runs // bench_models.BLOCK)
    # two warm-up runs, the timed runs, one untimed run before each block
    assert calls == {"a": 2 + runs + blocks, "b": 2 + runs + blocks}


@pytest.fixture(scope="module")
def probe() -> bench_gemm.PeakProbe:
    return bench_gemm.peak_probe()


@pytest.mark.parametrize("shape", [Shape(16, 24, 8), Shape(8, 12, 4, batch=3)],
                         ids=lambda s: s.name)
def test_gemm_models_agree_with_numpy(shape: Shape) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from kiln.compiler import build

    a, b = shape.operands()
    expected = a @ b
    got = build(bench_gemm.kiln_graph(shape), opt_level=3).run(shape.inputs())[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    session = onnxruntime.InferenceSession(bench_gemm.onnx_model(shape),
                                           providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, shape.inputs())[0], expected, rtol=1e-5,
                               atol=1e-6)


def test_bench_shape_and_the_gemm_bar(probe: bench_gemm.PeakProbe) -> None:
    pytest.importorskip("onnxruntime")
    (row,) = bench_gemm.bench_shape(Shape(32, 32, 32), [1], 1, probe)
    assert row.threads == 1 and row.max_error < 1e-5
    assert min(row.kiln_gflops, row.ort_gflops, row.numpy_gflops, row.peak_gflops) > 0
    assert row.peak_fraction == pytest.approx(row.kiln_gflops / row.peak_gflops)
    bar = Shape(bench_gemm.BAR_SIZE, bench_gemm.BAR_SIZE, bench_gemm.BAR_SIZE).name
    rows = [GemmRow(bar, 1, 80.0, 90.0, 85.0, 100.0, 1.0, 0.0),
            GemmRow(bar, 2, 100.0, 150.0, 160.0, 200.0, 1.0, 0.0), row]
    assert bench_gemm.bar_lines(rows) == [
        "PASS: GEMM 1024^3 at 80.0% of FMA peak at 1 thread(s) (bar 75%)",
        "FAIL: GEMM 1024^3 at 50.0% of FMA peak at 2 thread(s) (bar 75%)",
    ]


def test_bench_times_every_engine_on_a_small_model(tmp_path: Path,
                                                   probe: bench_gemm.PeakProbe) -> None:
    pytest.importorskip("onnxruntime")
    shape = Shape(16, 16, 16)
    path = tmp_path / "gemm.onnx"
    path.write_bytes(bench_gemm.onnx_model(shape))
    case = Case("gemm", path, shape.inputs())
    (row,) = bench_models.bench(case, [1], 2, probe)
    assert row.error < 1e-6
    assert row.kiln_ms > 0 and row.ort_ms > 0 and row.peak_gflops
    assert row.gflops == pytest.approx(shape.flops / row.kiln_ms / 1e6)
    assert row.peak_fraction == pytest.approx(row.gflops / row.peak_gflops)
    (unprobed,) = bench_models.bench(case, [1], 1)
    assert unprobed.peak_gflops is None and unprobed.peak_fraction is None
    try:
        import openvino  # noqa: F401
    except ImportError:
        assert row.openvino_ms is None
    else:
        assert row.openvino_ms is not None and row.openvino_ms > 0


def test_flops_come_from_the_summary(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    shape = Shape(8, 4, 16, batch=3)
    path = tmp_path / "batched.onnx"
    path.write_bytes(bench_gemm.onnx_model(shape))
    assert bench_models.model_flops(path, shape.inputs()) == 2 * 3 * 8 * 4 * 16


def test_main_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "results.json"
    assert bench_models.main(["--models", "mlp", "--runs", "1", "--threads", "1",
                              "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert bench_models.HEADER in printed
    results = json.loads(out.read_text())
    assert results["failed"] == []
    (row,) = results["rows"]
    assert row["model"] == "mlp" and row["threads"] == 1
    assert row["error"] <= bench_models.ERROR_BOUND
    fields = {k: v for k, v in row.items() if k not in ("ratio", "peak_fraction")}
    assert results["summary"] == bench_models.summary([Row(**fields)], [1], [])


def test_gemm_main_prints_the_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "gemm.json"
    assert bench_gemm.main(["--sizes", "32", "--threads", "1", "--runs", "1", "--no-batched",
                            "--json", str(out)]) == 0
    assert bench_gemm.HEADER in capsys.readouterr().out
    results = json.loads(out.read_text())
    assert [r["shape"] for r in results["rows"]] == ["32x32@32x32"]
    assert results["peak"]["gflops"]["1"] > 0

