"""Kiln vs onnxruntime on the same machine, in one run: latency, ratio, compile time.

    python benchmarks/bench_models.py [--runs 20] [--threads 1 2] [--models NAME ...]

For each model (the nine ONNX "light" models and the PyTorch-built models of tests/models/zoo.py)
it compiles the model once (reporting compile time), then for each thread count measures the
median latency of ``--runs`` runs after warm-up, for Kiln's compiled library and for an
onnxruntime session limited to the same number of threads, and prints the ratio
onnxruntime/Kiln (above 1: Kiln is faster). Absolute times on shared machines are noise; ratios
taken in one run are the figure to read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "models"), str(ROOT / "tests" / "conformance")]


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


def torch_cases(folder: Path) -> list[Case]:
    try:
        from zoo import UNSUPPORTED, ZOO
    except ImportError:  # torch missing: those models are skipped
        return []
    cases = []
    for name, make in ZOO.items():
        exporter = "torchscript" if (name, "torchscript") not in UNSUPPORTED else "dynamo"
        exported = make(exporter, folder)
        cases.append(Case(name, exported.path, exported.inputs))
    return cases


def median_latency(fn: Callable[[], object], runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(case: Case, threads: list[int], runs: int) -> list[str]:
    import onnxruntime

    from kiln.compiler import build
    from kiln.frontends.onnx import load_onnx
    from kiln.runtime import load

    start = time.perf_counter()
    graph = load_onnx(case.path)
    exe = build(graph, input_shapes={k: v.shape for k, v in case.inputs.items()})
    compile_seconds = time.perf_counter() - start
    rows = []
    for count in threads:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = count
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(case.path), options,
                                               providers=["CPUExecutionProvider"])
        feeds = {i.name: case.inputs[i.name] for i in session.get_inputs()}
        ort = median_latency(lambda s=session, f=feeds: s.run(None, f), runs)
        with load(str(exe.library), threads=count) as model:
            kiln = median_latency(lambda m=model: m.run(case.inputs), runs)
        rows.append(f"{case.name:28} {count:>7} {kiln * 1e3:10.3f} {ort * 1e3:10.3f} "
                    f"{ort / kiln:8.3f} {compile_seconds:10.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="*", help="only these models (substring match)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        cases = light_cases() + torch_cases(Path(folder))
        if args.models:
            cases = [c for c in cases if any(m in c.name for m in args.models)]
        print(f"{'model':28} {'threads':>7} {'kiln ms':>10} {'ort ms':>10} {'ort/kiln':>8} "
              f"{'compile s':>10}")
        ratios: dict[int, list[float]] = {t: [] for t in args.threads}
        for case in cases:
            try:
                rows = bench(case, args.threads, args.runs)
            except Exception as error:  # one failing model must not hide the others' numbers
                print(f"{case.name:28} failed: {type(error).__name__}: {error}"[:200])
                continue
            for row in rows:
                print(row, flush=True)
                fields = row.split()
                ratios[int(fields[1])].append(float(fields[4]))
        for count, values in ratios.items():
            if values:
                geomean = float(np.exp(np.mean(np.log(values))))
                print(f"geometric mean ort/kiln at {count} thread(s): {geomean:.3f} "
                      f"over {len(values)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
