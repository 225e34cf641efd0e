"""-O0 vs -O3 on the same machine, in one run: kernels, arena, compile time, latency.

    python benchmarks/bench_opt_levels.py [--runs 20] [--threads 1 2] [--models NAME ...]

For ResNet-50 (the ONNX light model), the BERT-style encoder and the MobileNetV2-style net of
tests/models/zoo.py (TorchScript exporter), it compiles each model at -O0 and -O3 and prints,
per level, the kernels launched per run (``exe.stats.kernels``), the activation arena bytes
(and the bytes without reuse), the weights bytes and the compile time (wall time of ``build``);
then, per thread count, the median latency of ``--runs`` runs after warm-up at each level,
the -O0/-O3 latency ratio (above 1: -O3 is faster) and onnxruntime's median latency limited to
the same number of threads, for reference. Absolute times on shared machines are noise; ratios
taken in one run are the figure to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_models import Case, light_cases, median_latency

from kiln.compiler.driver import Executable

LEVELS = (0, 3)
ZOO_MODELS = ("bert_style_encoder", "mobilenet_v2_style")


@dataclass
class Built:
    """One compiled level; holding the Executable keeps its library folder alive."""

    level: int
    executable: Executable
    compile_seconds: float


def cases(folder: Path) -> list[Case]:
    """light_resnet50 and the zoo models of ``ZOO_MODELS``, exported with TorchScript."""
    from zoo import ZOO

    resnet = [c for c in light_cases() if c.name == "light_resnet50"]
    exported = [(name, ZOO[name]("torchscript", folder)) for name in ZOO_MODELS]
    return resnet + [Case(name, e.path, e.inputs) for name, e in exported]


def build_levels(case: Case) -> list[Built]:
    from kiln.compiler import build
    from kiln.frontends.onnx import load_onnx

    graph = load_onnx(case.path)
    shapes = {k: v.shape for k, v in case.inputs.items()}
    built = []
    for level in LEVELS:
        start = time.perf_counter()
        exe = build(graph, opt_level=level, input_shapes=shapes)
        built.append(Built(level, exe, time.perf_counter() - start))
    return built


def onnxruntime_latency(case: Case, threads: int, runs: int) -> float:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(case.path), options,
                                           providers=["CPUExecutionProvider"])
    feeds = {i.name: case.inputs[i.name] for i in session.get_inputs()}
    return median_latency(lambda: session.run(None, feeds), runs)


def kiln_latency(library: Path, case: Case, threads: int, runs: int) -> float:
    from kiln.runtime import load

    with load(str(library), threads=threads) as model:
        return median_latency(lambda: model.run(case.inputs), runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="*", help="only these models (substring match)")
    args = parser.parse_args(argv)
    build_rows = [f"{'model':22} {'level':>5} {'kernels':>8} {'arena B':>11} {'unshared B':>11} "
                  f"{'weights B':>11} {'compile s':>9}"]
    latency_rows = [f"{'model':22} {'threads':>7} {'-O0 ms':>9} {'-O3 ms':>9} {'O0/O3':>6} "
                    f"{'ort ms':>9} {'ort/O3':>6}"]
    with tempfile.TemporaryDirectory() as folder:
        selected = [c for c in cases(Path(folder))
                    if not args.models or any(m in c.name for m in args.models)]
        for case in selected:
            print(f"{case.name}: compiling at {', '.join(f'-O{n}' for n in LEVELS)}...",
                  file=sys.stderr, flush=True)
            try:
                built = build_levels(case)
            except Exception as error:  # one failing model must not hide the others' numbers
                build_rows.append(f"{case.name:22} failed: {type(error).__name__}: {error}"[:300])
                continue
            for b in built:
                stats = b.executable.stats
                build_rows.append(f"{case.name:22} {'-O' + str(b.level):>5} {stats.kernels:>8} "
                                  f"{stats.arena_bytes:>11,} {stats.unshared_bytes:>11,} "
                                  f"{stats.weights_bytes:>11,} {b.compile_seconds:>9.2f}")
            for threads in args.threads:
                print(f"{case.name}: timing with {threads} thread(s)...", file=sys.stderr,
                      flush=True)
                o0, o3 = (kiln_latency(b.executable.library, case, threads, args.runs)
                          for b in built)
                ort = onnxruntime_latency(case, threads, args.runs)
                latency_rows.append(f"{case.name:22} {threads:>7} {o0 * 1e3:>9.3f} "
                                    f"{o3 * 1e3:>9.3f} {o0 / o3:>6.2f} {ort * 1e3:>9.3f} "
                                    f"{ort / o3:>6.2f}")
            print("\n".join(build_rows[-len(built):] + latency_rows[-len(args.threads):]),
                  file=sys.stderr, flush=True)
    print(f"median of {args.runs} runs after warm-up")
    print("\n".join(build_rows))
    print()
    print("\n".join(latency_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
