"""This machine's peaks, measured once and cached: FMA GFLOP/s per thread and memory bandwidth.

``machine_peaks()`` returns the cached ``Peaks`` of this machine, measuring them first (about
1-2 s) when the cache has none or ``refresh`` asks; ``kiln profile`` divides each kernel's
achieved rates by them.

FMA peak: a JIT-compiled loop (llvmlite MCJIT, host target) of independent ``llvm.fma``
chains on the widest f32 vector (``<16 x float>`` on AVX-512, ``<8 x float>`` on AVX2), enough
chains to cover the FMA latency on every pipe and few enough to stay in registers (``fma_loop``).
Its fastest short burst on one thread (``measure_peak``) is the per-core peak; ``n`` cores peak
at ``n`` times that. The benchmarks (benchmarks/bench_gemm.py, bench_models.py) run the same
loop between their timed engines (``peak_probe``).

Memory bandwidth (``copy_bandwidth``): numpy copies of a buffer four times the last-level cache
(at least 64 MiB), split among one thread per CPU (numpy releases the GIL while it copies),
counting each byte read and each byte written once, as a kernel's ``bytes`` do; the fastest
pass is the figure. A copy, not a triad: memcpy-speed streaming is the rate a kernel that only
moves data can reach, and numpy has no fused triad. Write-allocate reads of the destination
are not counted, so the figure errs low on CPUs that do them, as the kernels' byte counts do.

Cache: JSON at ``$KILN_CALIBRATION_CACHE``, else ``$XDG_CACHE_HOME/kiln/calibration.json``
(``XDG_CACHE_HOME`` defaulting to ``~/.cache``)::

    {"format": "kiln-calibration", "version": 1,
     "machines": {"<cpu model>|<tune machine key>": {"gflops_per_thread": 73.1,
        "gbytes_per_second": 21.4, "cpu": "AMD EPYC", "measured_at": "2025-01-31T12:00:00Z"}}}

keyed by the CPU's model name and ``kiln.compiler.tune.cache.machine_key`` of the host (triple,
LLVM CPU name, CPU count and a digest of the feature string): a file shared between machines,
or a VM moved to another host, finds no stale entry. A file that is missing, not JSON or not of
this format holds no peaks; the next measurement replaces it (atomically: a temporary file in
the same folder, renamed).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "kiln-calibration"
FORMAT_VERSION = 1
FMA_SECONDS = 0.5  # of one-thread bursts: the fastest found the core free
COPY_SECONDS = 0.5  # of copy passes (at least MIN_COPY_PASSES)
MIN_COPY_PASSES = 3
MIN_COPY_BYTES = 64 << 20

Progress = Callable[[str], None]


# --- FMA peak ---------------------------------------------------------------------------------


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

    from ..codegen.llvm.compile import create_module, emit_assembly, optimize
    from ..codegen.target import Target

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
        return _on_threads([(self.loop.function, (self.iterations, a)) for a in arguments])

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
    """The best FMA GFLOP/s per thread count (all threads together) over a time of bursts:
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
    """The fastest burst of ``seconds`` of bursts per thread count, as GFLOP/s."""
    gflops = {}
    for count in sorted(set(threads)):
        # threads start anew for each burst: longer bursts keep that cost out of the rate
        sized = probe if count == 1 else PeakProbe(probe.loop, 20 * probe.iterations)
        gflops[count] = sized.flops(count) / _fastest(sized.runner(count), seconds) / 1e9
    loop = probe.loop
    return Peak(gflops, loop.lanes, loop.accumulators, loop.fma_instruction())


def _fastest(run: Callable[[], None], seconds: float, at_least: int = 1) -> float:
    """The fastest of the calls of ``run`` made in ``seconds`` (and at least ``at_least``)."""
    fastest = math.inf
    calls = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or calls < at_least:
        start = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - start)
        calls += 1
    return fastest


def _on_threads(work: Sequence[tuple[Callable[..., object], tuple[Any, ...]]]
                ) -> Callable[[], None]:
    """A burst running each ``(function, arguments)`` on a thread of its own, all at once."""

    def burst() -> None:
        workers = [threading.Thread(target=function, args=arguments)
                   for function, arguments in work]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return burst


# --- memory bandwidth -------------------------------------------------------------------------


def last_level_cache_bytes() -> int:
    """The largest cache Linux reports in sysfs for CPU 0 (32 MiB where it reports none)."""
    largest = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        digits = text.rstrip("KMG")
        if digits.isdigit():
            largest = max(largest, int(digits) << {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0))
    return largest or 32 << 20


def copy_bandwidth(seconds: float = COPY_SECONDS, nbytes: int | None = None,
                   threads: int | None = None) -> float:
    """GB/s of copying ``nbytes`` (default: four times the last-level cache, at least 64 MiB)
    split among ``threads`` threads (default one per CPU), each byte read and written counted
    once: the fastest pass of those made in ``seconds`` (at least ``MIN_COPY_PASSES``)."""
    size = nbytes or max(4 * last_level_cache_bytes(), MIN_COPY_BYTES)
    count = threads or os.cpu_count() or 1
    # ones and zeros, not empty: the pages are touched before the first timed pass
    source = np.ones(size // 8, np.float64)
    target = np.zeros_like(source)
    bounds = np.linspace(0, source.size, count + 1).astype(int)
    work = [(np.copyto, (target[a:b], source[a:b]))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    run = _on_threads(work) if count > 1 else lambda: np.copyto(target, source)
    return 2 * source.nbytes / _fastest(run, seconds, at_least=MIN_COPY_PASSES) / 1e9


# --- the cached peaks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Peaks:
    """This machine's peaks: one thread's FMA rate (``n`` threads: ``n`` times that) and the
    memory bandwidth of all CPUs together; ``cpu`` is the CPU's model name."""

    gflops_per_thread: float
    gbytes_per_second: float
    cpu: str
    measured_at: str

    def gflops(self, threads: int) -> float:
        return threads * self.gflops_per_thread


def default_cache_path() -> Path:
    """``$KILN_CALIBRATION_CACHE``, else ``$XDG_CACHE_HOME/kiln/calibration.json`` (default
    ``~/.cache``)."""
    explicit = os.environ.get("KILN_CALIBRATION_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "kiln" / "calibration.json"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo's, else the platform's, else LLVM's CPU name)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.processor():
        return platform.processor()
    from ..codegen.target import Target

    return Target.parse("host").cpu


def calibration_key() -> str:
    """The cache's key for this machine: CPU model and the tuning cache's machine key."""
    from ..codegen.target import Target
    from ..tune.cache import machine_key

    return f"{cpu_name()}|{machine_key(Target.parse('host'), None)}"


def measure_peaks(progress: Progress | None = None) -> Peaks:
    """Measure this machine's peaks now (about ``FMA_SECONDS + COPY_SECONDS`` plus the loop's
    compile time)."""
    say = progress or (lambda message: None)
    say("calibrating: FMA peak of one thread")
    gflops = measure_peak(peak_probe(), [1], FMA_SECONDS).gflops[1]
    say(f"calibrating: {gflops:.1f} GFLOP/s per thread; memory bandwidth")
    bandwidth = copy_bandwidth()
    say(f"calibrating: {bandwidth:.1f} GB/s")
    return Peaks(gflops, bandwidth, cpu_name(), time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()))


def machine_peaks(refresh: bool = False, *, progress: Progress | None = None) -> Peaks:
    """This machine's peaks from the cache (``default_cache_path()``), measured and stored
    first when the cache has none for this machine or ``refresh`` is set. ``progress`` hears
    about a measurement (and about a cache that could not be read or written); nothing is
    said when the cache answers."""
    say = progress or (lambda message: None)
    path = default_cache_path()
    key = calibration_key()
    data, problem = _read(path)
    if problem:
        say(f"ignoring the calibration cache {path}: {problem}")
    if not refresh:
        cached = _peaks(data["machines"].get(key))
        if cached is not None:
            return cached
    peaks = measure_peaks(say)
    data["machines"][key] = asdict(peaks)
    try:
        _write(path, data)
    except OSError as error:
        say(f"could not write the calibration cache {path}: {error}")
    return peaks


def _read(path: Path) -> tuple[dict[str, Any], str]:
    """The cache file's content (a fresh empty cache when unusable) and why it was unusable
    ('' when it was fine or missing)."""
    empty: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "machines": {}}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return empty, ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return empty, str(error)
    if (not isinstance(data, dict) or data.get("format") != FORMAT
            or data.get("version") != FORMAT_VERSION
            or not isinstance(data.get("machines"), dict)):
        return empty, f"not a version {FORMAT_VERSION} Kiln calibration cache"
    return data, ""


def _peaks(raw: Any) -> Peaks | None:
    """The peaks stored as ``raw``; None when missing or malformed (then they are measured)."""
    try:
        peaks = Peaks(float(raw["gflops_per_thread"]), float(raw["gbytes_per_second"]),
                      str(raw["cpu"]), str(raw["measured_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    rates = (peaks.gflops_per_thread, peaks.gbytes_per_second)
    return peaks if all(math.isfinite(r) and r > 0 for r in rates) else None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
