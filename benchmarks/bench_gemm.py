"""GEMM GFLOP/s against this machine's measured FMA peak: Kiln, onnxruntime and numpy.

    python benchmarks/bench_gemm.py [--sizes 256 512 1024 2048] [--threads 1 2] [--runs 10]
                                    [--json PATH]

Machine peak: the FMA loop of ``kiln.compiler.profile.calibrate`` (``fma_loop``: independent
``llvm.fma`` chains on the widest f32 vector, JIT-compiled for the host), the loop ``kiln
profile`` calibrates with. Its FLOP/s on one thread is the per-core peak; ``n`` cores peak at
``n`` times that. The first line printed is the best rate of a second of bursts per thread
count (``n`` threads running the loop at once: ctypes calls release the GIL), which shows
whether the cores add up, with the FMA instruction found in the loop's assembly (so a peak that
is not a vector FMA peak shows).

GEMM: for each size ``M = N = K``, a one-node graph ``MatMul(A: input f32[M,K], B: constant
f32[K,N])`` compiled with ``build(graph, opt_level=3)`` and loaded per thread count, the same
model in onnxruntime (``intra_op_num_threads`` = threads) and numpy's ``matmul`` (BLAS threads
limited through threadpoolctl when it is installed) take turns (benchmarks share
``interleaved_times``) with 1 ms bursts of the FMA loop on one thread. Each rate is that of the
fastest of ``--runs`` runs after warm-up, the run that had the cores to itself on a shared
machine; ``peak GF/s`` is the threads times the fastest burst's rate, and ``kiln %peak`` Kiln's
rate over it, so that load from other processes moves neither side of the fraction. A batched
attention-shaped row (12 heads of ``[128,64] @ [64,128]``, both operands inputs) follows. The
last lines hold GEMM 1024^3 to the issue's bar: at least 75% of the FMA peak. Absolute numbers
on a shared machine are noise; fractions and ratios taken in one run are the figures to read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from bench_models import interleaved_times, relative_error

from kiln.compiler.profile.calibrate import PeakProbe, measure_peak, peak_probe

PEAK_BAR = 0.75  # GEMM 1024^3 must reach this fraction of the measured FMA peak
BAR_SIZE = 1024


# --- GEMM --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """``batch`` independent ``[m,k] @ [k,n]`` products; a constant B when ``batch`` is 0 (a
    plain 2-D MatMul with weights, as in a Linear layer)."""

    m: int
    n: int
    k: int
    batch: int = 0

    @property
    def flops(self) -> int:
        return 2 * max(1, self.batch) * self.m * self.n * self.k

    @property
    def name(self) -> str:
        if self.batch:
            return f"{self.batch}x[{self.m}x{self.k}]@[{self.k}x{self.n}]"
        return f"{self.m}x{self.k}@{self.k}x{self.n}"

    def operands(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        lead = (self.batch,) if self.batch else ()
        a = rng.standard_normal((*lead, self.m, self.k)).astype(np.float32)
        b = (rng.standard_normal((*lead, self.k, self.n)) / np.sqrt(self.k)).astype(np.float32)
        return a, b

    def inputs(self) -> dict[str, np.ndarray]:
        a, b = self.operands()
        return {"A": a, "B": b} if self.batch else {"A": a}


def kiln_graph(shape: Shape):  # type: ignore[no-untyped-def]
    """The MatMul as a Kiln graph (B a constant unless batched)."""
    from kiln.compiler.ir.builder import GraphBuilder
    from kiln.compiler.ir.op import Op
    from kiln.compiler.ir.types import DType, TensorType

    a, b = shape.operands()
    builder = GraphBuilder("gemm")
    left = builder.add_input("A", TensorType(DType.F32, a.shape))
    right = (builder.add_input("B", TensorType(DType.F32, b.shape)) if shape.batch
             else builder.constant(b, name="B"))
    return builder.finish([builder.add1(Op.MATMUL, [left, right], output="Y")])


def onnx_model(shape: Shape) -> bytes:
    """The same MatMul as a serialized ONNX model (B an initializer unless batched)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    a, b = shape.operands()
    inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, a.shape)]
    initializers = []
    if shape.batch:
        inputs.append(helper.make_tensor_value_info("B", TensorProto.FLOAT, b.shape))
    else:
        initializers.append(numpy_helper.from_array(b, "B"))
    out_shape = (*a.shape[:-1], shape.n)
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "gemm", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape)],
                              initializers)
    # IR version 8 (opset 17's): onnx's newest may be ahead of what onnxruntime reads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@contextlib.contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """Limit numpy's BLAS to ``count`` threads where threadpoolctl can (else leave it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=count, user_api="blas"):
        yield


@dataclass
class GemmRow:
    shape: str
    threads: int
    kiln_gflops: float
    ort_gflops: float
    numpy_gflops: float
    peak_gflops: float  # threads x the FMA loop's fastest burst on one thread
    compile_seconds: float
    max_error: float  # max |kiln - numpy| / max |numpy|

    @property
    def peak_fraction(self) -> float:
        return self.kiln_gflops / self.peak_gflops


def bench_shape(shape: Shape, threads: Sequence[int], runs: int,
                probe: PeakProbe) -> list[GemmRow]:
    import onnxruntime

    from kiln.compiler import build
    from kiln.runtime import load

    start = time.perf_counter()
    exe = build(kiln_graph(shape), opt_level=3)
    compile_seconds = time.perf_counter() - start
    feeds = shape.inputs()
    a, b = shape.operands()
    expected = a @ b
    model = onnx_model(shape)
    rows = []
    for count in threads:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = count
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings would break up the table
        session = onnxruntime.InferenceSession(model, options,
                                               providers=["CPUExecutionProvider"])
        with load(str(exe.library), threads=count) as library, blas_threads(count):
            error = relative_error(library.run(feeds), [expected])
            times = interleaved_times({
                "kiln": lambda: library.run(feeds),
                "ort": lambda s=session: s.run(None, feeds),
                "numpy": lambda: np.matmul(a, b),
                "peak": probe.runner(),
            }, runs)
        rows.append(GemmRow(shape.name, count, *(shape.flops / min(times[e]) / 1e9
                                                 for e in ("kiln", "ort", "numpy")),
                            probe.peak_gflops(min(times["peak"]), count), compile_seconds,
                            error))
    return rows


HEADER = (f"{'shape':24} {'threads':>7} {'kiln GF/s':>10} {'ort GF/s':>9} {'numpy GF/s':>10} "
          f"{'peak GF/s':>9} {'kiln %peak':>10} {'ort/kiln':>8} {'compile s':>9} {'rel err':>8}")


def format_row(row: GemmRow) -> str:
    return (f"{row.shape:24} {row.threads:>7} {row.kiln_gflops:10.2f} {row.ort_gflops:9.2f} "
            f"{row.numpy_gflops:10.2f} {row.peak_gflops:9.2f} {100 * row.peak_fraction:9.1f}% "
            f"{row.kiln_gflops / row.ort_gflops:8.3f} {row.compile_seconds:9.2f} "
            f"{row.max_error:8.1e}")


def bar_lines(rows: Sequence[GemmRow]) -> list[str]:
    """The issue's GEMM bar, one line per thread count measured at ``BAR_SIZE``."""
    name = Shape(BAR_SIZE, BAR_SIZE, BAR_SIZE).name
    return [f"{'PASS' if row.peak_fraction >= PEAK_BAR else 'FAIL'}: GEMM {BAR_SIZE}^3 at "
            f"{100 * row.peak_fraction:.1f}% of FMA peak at {row.threads} thread(s) "
            f"(bar {100 * PEAK_BAR:.0f}%)" for row in rows if row.shape == name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048],
                        help="square GEMM sizes M = N = K")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per measurement")
    parser.add_argument("--no-batched", action="store_true",
                        help="skip the batched attention-shaped MatMul row")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    probe = peak_probe()
    peak = measure_peak(probe, args.threads)
    print(*peak.lines(), sep="\n", flush=True)
    shapes = [Shape(s, s, s) for s in args.sizes]
    if not args.no_batched:
        shapes.append(Shape(128, 128, 64, batch=12))
    print(HEADER)
    rows: list[GemmRow] = []
    for shape in shapes:
        try:
            found = bench_shape(shape, args.threads, args.runs, probe)
        except Exception as error:  # one failing shape must not hide the others' numbers
            print(f"{shape.name:24} failed: {type(error).__name__}: {error}"[:200], flush=True)
            continue
        for row in found:
            print(format_row(row), flush=True)
        rows += found
    for line in bar_lines(rows):
        print(line)
    if args.json:
        table = [asdict(r) | {"peak_fraction": r.peak_fraction} for r in rows]
        args.json.write_text(json.dumps({"peak": asdict(peak), "rows": table,
                                         "bars": bar_lines(rows)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
