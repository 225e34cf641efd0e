"""GEMM GFLOP/s against this machine's measured FMA peak: Kiln, onnxruntime and numpy.

    python benchmarks/bench_gemm.py [--sizes 256 512 1024 2048] [--threads 1 2] [--runs 10]
                                    [--json PATH]

Machine peak: a JIT-compiled loop (llvmlite MCJIT, host target) of independent ``llvm.fma``
chains on the widest f32 vector (``<16 x float>`` on AVX-512, ``<8 x float>`` on AVX2), enough
chains to cover the FMA latency on every pipe and few enough to stay in registers. Its FLOP/s
on one thread is the per-core peak; ``n`` cores peak at ``n`` times that. The first line
printed is the best rate of a second of bursts per thread count (``n`` threads running the loop
at once: ctypes calls release the GIL), which shows whether the cores add up, with the FMA
instruction found in the loop's assembly (so a peak that is not a vector FMA peak shows).

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
import ctypes
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from bench_models import interleaved_times, relative_error

PEAK_BAR = 0.75  # GEMM 1024^3 must reach this fraction of the measured FMA peak
BAR_SIZE = 1024


# --- machine peak ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FmaLoop:
    """The JIT-compiled FMA loop: ``function(iterations, vectors)`` runs ``accumulators``
    chains for ``iterations`` steps; ``vectors`` holds the multiplier, the addend and each
    chain's start value (``accumulators + 2`` vectors of ``lanes`` floats)."""

    function: Callable[[int, ctypes.Array], None]
    lanes: int
    accumulators: int
    assembly: str
    engine: object  # the execution engine owning the code; kept alive with the function

    @property
    def flops_per_iteration(self) -> int:
        return 2 * self.lanes * self.accumulators

    def vectors(self) -> ctypes.Array:
        """Arguments for one call: accumulators converge to 1 (x' = 0.999 x + 0.001), so no
        value turns denormal or infinite however long the loop runs; each chain starts at a
        different value so that LLVM cannot merge identical chains."""
        values = [0.999, 0.001, *(1.0 + i / 64 for i in range(self.accumulators))]
        data = np.repeat(np.asarray(values, np.float32), self.lanes)
        return (ctypes.c_float * data.size)(*data.tolist())

    def fma_instruction(self) -> str:
        """The first vector FMA of the assembly with its register class, e.g.
        ``vfmadd213ps zmm``; empty when there is none."""
        found = re.search(r"\b(fmla|vfn?madd\w*)\s+%?([xyz]mm|v)", self.assembly)
        return f"{found.group(1)} {found.group(2)}" if found else ""


def accumulator_count(vector_bits: int) -> int:
    """Independent chains: enough to keep every FMA pipe busy through the FMA latency (2 pipes
    x 4 cycles on current x86 cores: 8), few enough to stay in registers with the two operands:
    12 of AVX2's 16 vector registers, 24 of AVX-512's 32."""
    return 24 if vector_bits >= 512 else 12


def fma_loop() -> FmaLoop:
    """Compile the peak loop for the host CPU with LLVM at -O3."""
    import llvmlite.binding as llvm
    from llvmlite import ir

    from kiln.compiler.codegen.llvm.compile import create_module, emit_assembly, optimize
    from kiln.compiler.codegen.target import Target

    target = Target.parse("host")
    lanes = max(1, target.vector_bits // 32)
    accumulators = accumulator_count(target.vector_bits)
    vector = ir.VectorType(ir.FloatType(), lanes)
    module = create_module("fma_peak", target)
    fma = ir.Function(module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{lanes}f32")
    function = ir.Function(module, ir.FunctionType(ir.VoidType(),
                                                   [ir.IntType(64), ir.PointerType()]), "fma_peak")
    iterations, data = function.args
    entry, loop, done = (function.append_basic_block(n) for n in ("entry", "loop", "done"))
    builder = ir.IRBuilder(entry)
    slots = [builder.gep(data, [ir.Constant(ir.IntType(64), i)], source_etype=vector)
             for i in range(accumulators + 2)]
    # align 4: the ctypes array is only float-aligned (the loads and stores sit outside the loop)
    scale, shift, *starts = (builder.load(slot, typ=vector, align=4) for slot in slots)
    builder.branch(loop)
    builder.position_at_end(loop)
    step = builder.phi(ir.IntType(64))
    chains = [builder.phi(vector) for _ in range(accumulators)]
    updated = [builder.call(fma, [chain, scale, shift]) for chain in chains]
    following = builder.add(step, ir.Constant(ir.IntType(64), 1))
    builder.cbranch(builder.icmp_unsigned("<", following, iterations), loop, done)
    step.add_incoming(ir.Constant(ir.IntType(64), 0), entry)
    step.add_incoming(following, loop)
    for chain, start, new in zip(chains, starts, updated, strict=True):
        chain.add_incoming(start, entry)
        chain.add_incoming(new, loop)
    builder.position_at_end(done)
    for slot, new in zip(slots[2:], updated, strict=True):  # stored, so nothing is dead code
        builder.store(new, slot, align=4)
    builder.ret_void()

    optimized = optimize(module, target, opt_level=3)
    assembly = emit_assembly(optimized, target, opt_level=3)
    # The engine takes ownership of its target machine and frees it with itself: give it a
    # private one, never the cached machine that Kiln's own builds share.
    machine = llvm.Target.from_triple(target.triple).create_target_machine(
        cpu=target.cpu, features=target.features, opt=3)
    engine = llvm.create_mcjit_compiler(optimized, machine)
    engine.finalize_object()
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)
    call = prototype(engine.get_function_address("fma_peak"))
    return FmaLoop(call, lanes, accumulators, assembly, engine)


@dataclass(frozen=True)
class PeakProbe:
    """The FMA loop sized so that one call takes a short burst, shorter than the time slices a
    loaded machine hands out, so that some bursts run unpreempted. Benchmarks run it on one
    thread as one more engine, taking turns with the engines they compare, and keep its fastest
    burst: the per-core peak when the core was free, looked for throughout the run rather than
    once. ``n`` threads' peak is ``n`` times that (the peak of ``n`` cores)."""

    loop: FmaLoop
    iterations: int  # per thread and call

    def flops(self, threads: int = 1) -> int:
        """FLOPs of one call of ``runner(threads)``."""
        return threads * self.iterations * self.loop.flops_per_iteration

    def runner(self, threads: int = 1) -> Callable[[], None]:
        """One burst on ``threads`` threads at once (ctypes releases the GIL during calls)."""
        arguments = [self.loop.vectors() for _ in range(threads)]
        if threads == 1:
            return lambda: self.loop.function(self.iterations, arguments[0])

        def burst() -> None:
            workers = [threading.Thread(target=self.loop.function, args=(self.iterations, a))
                       for a in arguments]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        return burst

    def peak_gflops(self, fastest: float, threads: int) -> float:
        """The peak of ``threads`` cores from the fastest one-thread burst, in seconds."""
        return threads * self.flops() / fastest / 1e9


def peak_probe(burst: float = 0.001) -> PeakProbe:
    """Compile the FMA loop and size one call to about ``burst`` seconds."""
    loop = fma_loop()
    iterations = 1 << 8
    while True:
        start = time.perf_counter()
        loop.function(iterations, loop.vectors())
        if time.perf_counter() - start > burst:
            return PeakProbe(loop, iterations)
        iterations *= 2


@dataclass(frozen=True)
class Peak:
    """The best FMA GFLOP/s per thread count (all threads together) over a second of bursts:
    on a shared machine, the burst that found the cores free."""

    gflops: dict[int, float]
    lanes: int
    accumulators: int
    instruction: str

    def lines(self) -> list[str]:
        chains = f"{self.accumulators} chains of <{self.lanes} x float> ({self.instruction})"
        return [f"FMA peak, {chains}: " + ", ".join(
            f"{g:.1f} GFLOP/s at {t} thread(s)" for t, g in sorted(self.gflops.items()))]


def measure_peak(probe: PeakProbe, threads: Sequence[int], seconds: float = 1.0) -> Peak:
    gflops = {}
    for count in sorted(set(threads)):
        # threads start anew for each burst: longer bursts keep that cost out of the rate
        sized = probe if count == 1 else PeakProbe(probe.loop, 20 * probe.iterations)
        run = sized.runner(count)
        fastest = math.inf
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            run()
            fastest = min(fastest, time.perf_counter() - start)
        gflops[count] = sized.flops(count) / fastest / 1e9
    loop = probe.loop
    return Peak(gflops, loop.lanes, loop.accumulators, loop.fma_instruction())


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
