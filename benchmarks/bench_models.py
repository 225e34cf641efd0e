"""Kiln vs onnxruntime (and OpenVINO where installed) at batch 1, in one run, one table.

    python benchmarks/bench_models.py [--runs 20] [--threads 1 2] [--models NAME ...]
                                      [--json PATH]

Models: the nine ONNX "light" models (tests/conformance/light.py) and the PyTorch-built models
of benchmarks/models.py (MobileNetV2-style, BERT-style encoder at sequence 128, GPT-2-style
decoder, LSTM, LeNet-5, MLP), every one at batch 1. Each is compiled once with
``build(graph, opt_level=3)`` (compile time: ONNX file in, library out); then for each thread
count the compiled library is loaded with ``kiln.runtime.load(lib, threads=n)``, an onnxruntime
session gets ``intra_op_num_threads = n``, and OpenVINO (when ``import openvino`` works) compiles
the model for the CPU with f32 inference precision (its default is bf16 on CPUs with AVX512-BF16)
and ``n`` inference threads. Latency is the median of ``--runs`` runs after warm-up; the engines
take turns in blocks of runs, so load from other processes on a shared machine falls on all of
them alike.

Columns: Kiln, onnxruntime and OpenVINO milliseconds, ``ort/kiln`` and ``ov/kiln`` (above 1:
Kiln is faster), Kiln's GFLOP/s (FLOPs estimated by ``kiln.compiler.analysis.summary``) and its
fraction of the FMA peak (threads x the per-core peak: the fastest 1 ms burst of the FMA loop
of kiln.compiler.profile.calibrate, run in turn with the engines; against Kiln's median the
fraction errs low on a loaded machine), the compile time, and ``rel err``: max |kiln - ort|
/ max |ort| over the outputs, a check that the timed code computes the model.
After the table: the geometric-mean ratios per thread count, the lowest ratio, and PASS/FAIL
against the issue's bars (geomean ort/kiln >= 1.0 at each thread count, no model below 0.7).
Absolute times on shared machines are noise; ratios from one run are the figures to read.

The OpenVINO column: ``pip install openvino`` (not a dependency of Kiln; the benchmark runs
without it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kiln.compiler.profile.calibrate import PeakProbe

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "models"), str(ROOT / "tests" / "conformance")]

GEOMEAN_BAR = 1.0  # geometric-mean ort/kiln at each thread count
MIN_RATIO_BAR = 0.7  # no model's ort/kiln below this
ERROR_BOUND = 1e-3  # rel err above this marks a model whose timed outputs are wrong
BLOCK = 5  # timed runs per engine before the next engine takes its turn
# Pause before each engine's turn: thread pools (onnxruntime's, Kiln's) spin-wait a while
# after a run, and a spinning pool of the engine that just ran would take the cores the next
# engine's threads need (it halved Kiln's and onnxruntime's 2-thread rates on small kernels).
SETTLE_SECONDS = 0.1


@dataclass
class Case:
    name: str
    path: Path
    inputs: dict[str, np.ndarray]


def light_cases() -> list[Case]:
    import onnx
    from light import LIGHT, MODELS, dummy_inputs

    return [
        Case(f"light_{name}", LIGHT / f"light_{name}.onnx",
             dummy_inputs(onnx.load(LIGHT / f"light_{name}.onnx", load_external_data=False)))
        for name in sorted(MODELS)
    ]


def torch_cases(folder: Path, wanted: Callable[[str], bool] = lambda name: True) -> list[Case]:
    """benchmarks/models.py's models that ``wanted`` selects, exported with TorchScript (each
    export takes seconds, so unwanted ones are not exported); none when torch is missing."""
    try:
        from models import BENCH_MODELS
    except ImportError:
        return []
    cases = []
    for name, make in BENCH_MODELS.items():
        if wanted(name):
            exported = make("torchscript", folder)
            cases.append(Case(name, exported.path, exported.inputs))
    return cases


def median_latency(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(engines: Mapping[str, Callable[[], object]],
                      runs: int) -> dict[str, list[float]]:
    """Seconds of ``runs`` runs per engine, the engines taking turns in blocks of ``BLOCK`` runs
    (each block after a ``SETTLE_SECONDS`` pause and one untimed run, so the previous engine's
    threads are idle and the caches hold this engine's data)."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    for fn in engines.values():
        for _ in range(2):
            fn()
    while any(len(t) < runs for t in times.values()):
        for name, fn in engines.items():
            time.sleep(SETTLE_SECONDS)
            fn()
            for _ in range(min(BLOCK, runs - len(times[name]))):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def relative_error(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """Max |actual - expected| over all outputs, over the largest finite |expected|; infinite
    when shapes differ or a NaN (or infinity) stands where the other engine has none."""
    if len(actual) != len(expected):
        return math.inf
    worst, scale = 0.0, 0.0
    for a, e in zip(actual, expected, strict=True):
        if np.shape(a) != np.shape(e):
            return math.inf
        a64, e64 = np.asarray(a, np.float64), np.asarray(e, np.float64)
        same = (a64 == e64) | (np.isnan(a64) & np.isnan(e64))
        with np.errstate(invalid="ignore"):  # inf - inf: equal infinities, already `same`
            difference = np.where(same, 0.0, np.abs(a64 - e64))
        if a64.size:
            largest = float(difference.max())
            if math.isnan(largest):  # one side alone is NaN
                return math.inf
            worst = max(worst, largest)
            finite = np.abs(e64[np.isfinite(e64)])
            scale = max(scale, float(finite.max()) if finite.size else 0.0)
    return worst / scale if scale else worst


def model_flops(path: Path, inputs: Mapping[str, np.ndarray]) -> int:
    """Estimated FLOPs of one run at the inputs' shapes."""
    from kiln.compiler.analysis import summarize
    from kiln.compiler.passes.specialize import specialize
    from kiln.frontends.onnx import load_onnx

    graph = specialize(load_onnx(path), {k: v.shape for k, v in inputs.items()})
    return summarize(graph).total_flops


def openvino_session(path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], object] | None:
    """An OpenVINO CPU inference function for ``path`` (f32, ``threads`` threads, one stream),
    or None when openvino is not installed or cannot compile the model (its column is then
    empty: it is a reference point, not what the bars measure)."""
    try:
        import openvino
    except ImportError:
        return None
    import openvino.properties as properties
    import openvino.properties.hint as hints

    try:
        compiled = openvino.Core().compile_model(str(path), "CPU", {
            hints.inference_precision: openvino.Type.f32,
            properties.inference_num_threads: threads,
            properties.num_streams: 1,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
        })
    except RuntimeError as error:
        print(f"openvino cannot compile {path.name}: {error}"[:200], file=sys.stderr)
        return None
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds, share_inputs=True)


@dataclass
class Timing:
    """One model at one thread count: Kiln's and onnxruntime's milliseconds."""

    model: str
    threads: int
    kiln_ms: float
    ort_ms: float

    @property
    def ratio(self) -> float:
        """onnxruntime time over Kiln time: above 1, Kiln is faster."""
        return self.ort_ms / self.kiln_ms


@dataclass
class Row(Timing):
    openvino_ms: float | None
    gflops: float  # Kiln's
    peak_gflops: float | None  # threads x the FMA loop's fastest burst on one thread
    compile_seconds: float
    error: float  # max |kiln - ort| / max |ort|

    @property
    def openvino_ratio(self) -> float | None:
        return None if self.openvino_ms is None else self.openvino_ms / self.kiln_ms

    @property
    def peak_fraction(self) -> float | None:
        """Kiln's GFLOP/s over the FMA peak."""
        return None if self.peak_gflops is None else self.gflops / self.peak_gflops


def bench(case: Case, threads: Sequence[int], runs: int,
          probe: PeakProbe | None = None) -> list[Row]:
    """Compile ``case`` once, then time every engine (and the FMA peak ``probe``, when given)
    at each thread count."""
    import onnxruntime

    from kiln.compiler import build
    from kiln.frontends.onnx import load_onnx
    from kiln.runtime import load

    start = time.perf_counter()
    graph = load_onnx(case.path)
    exe = build(graph, opt_level=3, input_shapes={k: v.shape for k, v in case.inputs.items()})
    compile_seconds = time.perf_counter() - start
    flops = model_flops(case.path, case.inputs)
    rows = []
    for count in threads:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = count
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only (the light models warn of unused initializers)
        session = onnxruntime.InferenceSession(str(case.path), options,
                                               providers=["CPUExecutionProvider"])
        feeds = {i.name: case.inputs[i.name] for i in session.get_inputs()}
        openvino = openvino_session(case.path, count)
        with load(str(exe.library), threads=count) as model:
            error = relative_error(model.run(case.inputs), session.run(None, feeds))
            engines: dict[str, Callable[[], object]] = {
                "kiln": lambda: model.run(case.inputs),
                "ort": lambda s=session, f=feeds: s.run(None, f),
            }
            if openvino is not None:
                engines["openvino"] = lambda o=openvino, f=feeds: o(f)
            if probe is not None:
                engines["peak"] = probe.runner()
            times = interleaved_times(engines, runs)
        seconds = {name: statistics.median(t) for name, t in times.items()}
        rows.append(Row(case.name, count, seconds["kiln"] * 1e3, seconds["ort"] * 1e3,
                        seconds["openvino"] * 1e3 if "openvino" in seconds else None,
                        flops / seconds["kiln"] / 1e9,
                        probe.peak_gflops(min(times["peak"]), count) if probe else None,
                        compile_seconds, error))
    return rows


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}{spec}}"


HEADER = (f"{'model':28} {'threads':>7} {'kiln ms':>9} {'ort ms':>9} {'ort/kiln':>8} "
          f"{'ov ms':>9} {'ov/kiln':>8} {'GFLOP/s':>8} {'%peak':>6} {'compile s':>9} "
          f"{'rel err':>8}")


def format_row(row: Row) -> str:
    peak = None if row.peak_fraction is None else 100 * row.peak_fraction
    return (f"{row.model:28} {row.threads:>7} {row.kiln_ms:9.3f} {row.ort_ms:9.3f} "
            f"{row.ratio:8.3f} {_cell(row.openvino_ms, '.3f', 9)} "
            f"{_cell(row.openvino_ratio, '.3f', 8)} {row.gflops:8.2f} {_cell(peak, '.1f', 6)} "
            f"{row.compile_seconds:9.2f} {row.error:8.1e}")


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(rows: Sequence[Row], threads: Sequence[int], failed: Sequence[str]) -> list[str]:
    """Geometric means, the lowest ratio and the issue's bars as PASS/FAIL lines."""
    lines = []
    verdicts = []
    for count in threads:
        at = [r for r in rows if r.threads == count]
        if not at:
            continue
        mean = geomean([r.ratio for r in at])
        lines.append(f"geometric mean ort/kiln at {count} thread(s): {mean:.3f} "
                     f"over {len(at)} models")
        openvino = [r.openvino_ratio for r in at if r.openvino_ratio is not None]
        if openvino:
            lines.append(f"geometric mean ov/kiln at {count} thread(s): {geomean(openvino):.3f} "
                         f"over {len(openvino)} models")
        verdicts.append((mean >= GEOMEAN_BAR, f"geomean ort/kiln at {count} thread(s) "
                                              f"{mean:.3f} (bar {GEOMEAN_BAR})"))
    if rows:
        low = min(rows, key=lambda r: r.ratio)
        lines.append(f"lowest ort/kiln: {low.ratio:.3f} ({low.model}, {low.threads} thread(s))")
        verdicts.append((low.ratio >= MIN_RATIO_BAR, f"no model below {MIN_RATIO_BAR}: lowest "
                                                     f"{low.ratio:.3f} ({low.model})"))
        worst = max(rows, key=lambda r: r.error)
        verdicts.append((worst.error <= ERROR_BOUND, f"outputs match onnxruntime (rel err <= "
                                                     f"{ERROR_BOUND}): worst {worst.error:.1e} "
                                                     f"({worst.model})"))
    if failed:
        verdicts.append((False, f"{len(failed)} model(s) did not run: {', '.join(failed)}"))
    return lines + [f"{'PASS' if ok else 'FAIL'}: {text}" for ok, text in verdicts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="*", help="only these models (substring match)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    def wanted(name: str) -> bool:
        return not args.models or any(m in name for m in args.models)

    from kiln.compiler.profile.calibrate import measure_peak, peak_probe

    probe = peak_probe()
    peak = measure_peak(probe, args.threads)
    print(*peak.lines(), sep="\n")
    rows: list[Row] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        cases = [c for c in light_cases() if wanted(c.name)] + torch_cases(Path(folder), wanted)
        print(HEADER, flush=True)
        for case in cases:
            try:
                found = bench(case, args.threads, args.runs, probe)
            except Exception as error:  # one failing model must not hide the others' numbers
                print(f"{case.name:28} failed: {type(error).__name__}: {error}"[:200], flush=True)
                failed.append(case.name)
                continue
            for row in found:
                print(format_row(row), flush=True)
            rows += found
    lines = summary(rows, args.threads, failed)
    print(*lines, sep="\n")
    if args.json:
        args.json.write_text(json.dumps({
            "peak": asdict(peak),
            "rows": [asdict(r) | {"ratio": r.ratio, "peak_fraction": r.peak_fraction}
                     for r in rows],
            "failed": failed, "summary": lines}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
