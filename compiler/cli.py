"""The ``kiln`` command line: ``kiln inspect``, ``compile``, ``tune``, ``run`` and ``profile``.

This module is Kiln's one composition root: it is the only place under ``kiln.compiler`` that
reaches a frontend, and it does so inside the command functions (never at module top level), so
importing ``kiln.compiler`` stays free of ONNX. ``tests/unit/test_layering.py`` enforces both.

Errors print one line, ``kiln: error: ...``, and exit non-zero (2 for usage errors, 1 for the
rest); ``--debug`` shows the traceback instead. Output is quiet by default: ``--verbose`` adds
progress lines on stderr (``kiln tune``, a long measurement, always reports progress there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from .analysis.summary import format_summary, summarize
from .errors import KilnError
from .ir.graph import Graph
from .ir.types import DType, TensorType
from .machine import Machine

if TYPE_CHECKING:
    from kiln.runtime import Model, ProfileCounters

    from .codegen.target import Target
    from .profile.report import Section

PROG = "kiln"
# What a model argument may be (the frontends it goes to: compiler/cli.py _load).
MODEL_HELP = "an .onnx file, or a Python file defining a DSL model (net.py, or net.py:NAME)"
LIBRARY_SUFFIXES = (".so", ".dylib", ".dll", ".kiln")  # .kiln: a CUDA artifact


class UsageError(Exception):
    """A command line that names things the model does not have, or that cannot be parsed."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kiln`` command line; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    log = _progress_logger(getattr(args, "verbose", False))
    try:
        args.handler(args, log)
    except Exception as error:  # every failure becomes one line unless --debug asks for more
        if getattr(args, "debug", False):
            raise
        print(f"{PROG}: error: {_describe(error)}", file=sys.stderr)
        return 1
    return 0


def _describe(error: Exception) -> str:
    from kiln.runtime import KilnRuntimeError

    if isinstance(error, (KilnError, UsageError, KilnRuntimeError)):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return f"internal error: {type(error).__name__}: {error} (rerun with --debug for details)"


def _build_parser() -> argparse.ArgumentParser:
    # Shared flags are accepted before or after the command; SUPPRESS keeps a subcommand's
    # default from overwriting a value given before it (main reads them with getattr; the
    # action objects are shared between parsers, so set_defaults would undo the SUPPRESS).
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="print progress on stderr")

    parser = _Parser(prog=PROG, parents=[common],
                     description="Kiln: an ahead-of-time compiler for ONNX models.")
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect", parents=[common], help="summarize a model (ops, parameters, FLOPs, I/O)",
        description="Print a model's inputs and outputs, op counts, parameter count and bytes, "
                    "and estimated FLOPs (symbolic dimensions taken as 1 unless bound).",
    )
    inspect.add_argument("model", type=Path, help=MODEL_HELP)
    inspect.add_argument("--ir", action="store_true", help="also print the graph IR text")
    inspect.add_argument("--full-constants", action="store_true",
                         help="with --ir, print constants whole instead of as digests")
    _add_input_shape(inspect, "bind symbolic dimensions for the FLOP estimate")
    inspect.set_defaults(handler=_inspect)

    compile_ = commands.add_parser(
        "compile", parents=[common], help="compile a model into a shared library",
        description="Compile an ONNX model ahead of time into a self-contained shared library "
                    "(code, static plan, weights) with a C ABI, plus a header beside it; or, "
                    "with --static, into a static bundle (one relocatable object) for boards "
                    "without a loader, allocator or threads.",
    )
    compile_.add_argument("model", type=Path, help=MODEL_HELP)
    compile_.add_argument("-o", "--output", type=Path, metavar="MODEL.so",
                          help="the library to write (MODEL.h, and MODEL.bin with "
                               "--weights external, go beside it), or with --static the "
                               "bundle object MODEL.o; required unless --stop-after is given")
    _add_target(compile_, "host (default), x86_64, x86_64-avx2, x86_64-avx512, "
                          "aarch64-linux-gnu, armv7-linux-gnueabihf, riscv64-linux-gnu, an "
                          "LLVM triple, or cuda / cuda:sm_NN (NVIDIA GPU: -o MODEL.kiln, one "
                          "artifact file; --cpu sm_NN picks the architecture, default sm_80)")
    compile_.add_argument("--weights", choices=("embed", "external"),
                          help="embed the weights in the library (default) or write MODEL.bin "
                               "beside it; with --static: write the raw blob MODEL.weights.bin "
                               "(default) or embed it in the object")
    compile_.add_argument("--static", action="store_true",
                          help="write a static bundle for boards without a loader, allocator or "
                               "threads: -o MODEL.o, an ELF relocatable (code, plan and a "
                               "freestanding runtime) plus MODEL.h with the kiln_bundle_* API, "
                               "the caller providing the weights, arena and I/O memory")
    compile_.add_argument("--prefix", metavar="NAME",
                          help="with --static: name the API NAME_* instead of kiln_bundle_* "
                               "(and the header's macros NAME_* instead of KILN_*), so that "
                               "two bundles link into one program")
    _add_input_shape(compile_, "bind the symbolic dimensions of an input (LO..HI: free within "
                     "bounds, ?: free; unbound symbols are free: one library for every size)",
                     ranges=True)
    compile_.add_argument("--specialize", action="append", metavar="NAME=D0,..[;NAME=D0,..]",
                          type=_parse_specialization,
                          help="input shapes the library also carries a static plan for (run "
                               "when a run's shapes match; repeatable; default: batch 1 when "
                               "the free extents are all batch axes)")
    compile_.add_argument("--no-specialize", action="store_true",
                          help="no static plans beside the general one")
    compile_.add_argument("--print-ir-after-all", action="store_true",
                          help="print the graph IR after every optimizer pass (on stderr)")
    compile_.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                          help="print the graph IR after the pass PASS (on stderr); repeatable")
    compile_.add_argument("--stop-after", metavar="PASS",
                          help="stop the optimizer after PASS, print the IR on stdout and write "
                               "no library")
    compile_.add_argument("--pass-stats", action="store_true",
                          help="print a per-pass table: time, ops before/after, changed, fused "
                               "groups, layout transforms inserted/removed")
    cache = compile_.add_mutually_exclusive_group()
    cache.add_argument("--tune-cache", type=Path, metavar="PATH",
                       help="use the kernel schedules kiln tune measured for this target, "
                            "from PATH (default: $KILN_TUNE_CACHE, else "
                            "$XDG_CACHE_HOME/kiln/tune.json, else ~/.cache/kiln/tune.json)")
    cache.add_argument("--no-tune-cache", action="store_true",
                       help="ignore the tuning cache: the cost model picks every schedule")
    compile_.add_argument("--tune-threads", type=_count, metavar="N",
                          help="use the schedules kiln tune measured with --threads N "
                               "(default: one thread per CPU, as the library runs by default)")
    compile_.add_argument("--profile", action="store_true",
                          help="a profiling build: per-kernel timers and trace events compiled "
                               "in, read by kiln profile or the C ABI's kiln_profile_* calls "
                               "(without it the code has no timer calls at all)")
    compile_.add_argument("--dump", type=Path, metavar="DIR",
                          help="write each kernel's kernel IR, LLVM IR before and after "
                               "optimization and assembly into DIR, named after the kernel, "
                               "and the plan (calls, buffers) as DIR/plan.txt")
    compile_.set_defaults(handler=_compile)

    tune = commands.add_parser(
        "tune", parents=[common], help="measure kernel schedules on this machine, cache the best",
        description="Measure the tile and block sizes of the model's tiled kernels (GEMM, "
                    "convolution) on this machine: each distinct kernel is compiled alone with "
                    "each candidate schedule and timed; the fastest goes into the tuning cache, "
                    "which kiln compile then uses for the same target and thread count. "
                    "Progress goes to stderr, the final table to stdout.",
    )
    tune.add_argument("model", type=Path, help=MODEL_HELP)
    _add_target(tune, "host (default) or a preset whose code runs on this CPU "
                      "(e.g. x86_64-avx2)")
    _add_input_shape(tune, "bind the symbolic dimensions of an input")
    tune.add_argument("--threads", type=_count, metavar="N",
                      help="threads to measure with (default: one per CPU)")
    tune.add_argument("--cache", type=Path, metavar="PATH",
                      help="the tuning cache to update (default: $KILN_TUNE_CACHE, else "
                           "$XDG_CACHE_HOME/kiln/tune.json, else ~/.cache/kiln/tune.json)")
    tune.add_argument("--budget-seconds", type=float, metavar="S",
                      help="stop measuring after about S seconds (what was measured is kept)")
    tune.add_argument("--runs", type=_count, default=10, metavar="R",
                      help="timing samples (of 1 ms or more) per candidate; the fastest "
                           "counts (default 10)")
    tune.add_argument("--retune", action="store_true",
                      help="measure again kernels the cache already has complete results for")
    tune.set_defaults(handler=_tune)

    run = commands.add_parser(
        "run", parents=[common], help="run a model (.onnx: reference executor; .so: compiled)",
        description="Run an ONNX model with the numpy reference executor, or a compiled "
                    "library through the runtime, and print each output's "
                    "name, shape, element type and checksum (sum and sha256 prefix of its "
                    "bytes). Inputs missing from --inputs are an error; without --inputs every "
                    "input is random (floats standard normal, integers in [0, 3), bools fair).",
    )
    run.add_argument("model", type=Path, help=f"{MODEL_HELP}, or a library from kiln compile")
    run.add_argument("--threads", type=int, help="threads of a compiled library (default: all)")
    run.add_argument("--inputs", type=Path, metavar="IN.npz",
                     help="input arrays, one per graph input, keyed by input name")
    run.add_argument("--output", type=Path, metavar="OUT.npz",
                     help="save the outputs, keyed by output name")
    run.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    _add_input_shape(run, "shape of a random input whose dimensions are symbolic")
    run.set_defaults(handler=_run)

    profile = commands.add_parser(
        "profile", parents=[common], help="time every kernel of a model (a profiling build)",
        description="Run a profiling build of a model (an .onnx or .py model is compiled for "
                    "this machine with the timers in; a library must come from kiln compile "
                    "--profile) W times to warm up and R times measured, then print per "
                    "kernel: calls, total and mean time, share of the run, FLOPs and bytes "
                    "of one call, achieved GFLOP/s and GB/s, and the fraction of this "
                    "machine's peak (the larger of compute and memory, named in 'bound'). "
                    "The peaks are measured once (about 2 s, reported on stderr) and cached in "
                    "$KILN_CALIBRATION_CACHE, else $XDG_CACHE_HOME/kiln/calibration.json, else "
                    "~/.cache/kiln/calibration.json. Inputs as for kiln run.",
    )
    profile.add_argument("model", type=Path,
                         help=f"{MODEL_HELP}, or a library from kiln compile --profile")
    profile.add_argument("--threads", type=_count, metavar="N",
                         help="threads to run with (default: one per CPU); an .onnx or .py "
                              "model uses the schedules kiln tune measured for N")
    profile.add_argument("--runs", type=_count, default=10, metavar="R",
                         help="measured runs (default 10)")
    profile.add_argument("--warmup", type=_count_or_zero, default=3, metavar="W",
                         help="unmeasured runs first (default 3)")
    profile.add_argument("--format", choices=("table", "json", "csv"), default="table",
                         help="table (default), json or csv (kernel rows only) on stdout")
    profile.add_argument("--trace", type=Path, metavar="OUT.json",
                         help="write the measured runs' kernel events as a Chrome trace-event "
                              "file (Perfetto, chrome://tracing), one track per thread")
    profile.add_argument("-O", dest="opt_level", type=int, choices=range(4), default=2,
                         metavar="N", help="optimization level 0-3 of the build (default 2)")
    profile.add_argument("--inputs", type=Path, metavar="IN.npz",
                         help="input arrays, one per model input, keyed by input name "
                              "(default: random, as kiln run makes them)")
    profile.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    _add_input_shape(profile, "bind the symbolic dimensions of an input")
    profile.add_argument("--recalibrate", action="store_true",
                         help="measure this machine's peaks again and update the cache")
    profile.add_argument("--compare-onnxruntime", action="store_true",
                         help="(.onnx) also run the model in onnxruntime with its profiler on "
                              "and put its per-node times beside Kiln's kernels")
    profile.add_argument("--numerics", choices=("reference", "onnxruntime"),
                         help="also compare every observable intermediate value with the "
                              "reference executor's or onnxruntime's (.onnx) and report the "
                              "first divergence")
    profile.add_argument("--rtol", type=float,
                         help="--numerics relative tolerance (default: per element type)")
    profile.add_argument("--atol", type=float,
                         help="--numerics absolute tolerance (default: per element type)")
    profile.set_defaults(handler=_profile)
    return parser


def _add_target(parser: argparse.ArgumentParser, targets: str) -> None:
    parser.add_argument("--target", default="host", help=targets)
    parser.add_argument("--cpu", help="CPU name for the target (e.g. cortex-a72)")
    parser.add_argument("--features", help="target features, e.g. +neon,+fp16")
    parser.add_argument("-O", dest="opt_level", type=int, choices=range(4), default=2,
                        metavar="N", help="optimization level 0-3 (default 2)")


def _count(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def _count_or_zero(text: str) -> int:
    return _integer(text, 0, "a non-negative integer")


def _integer(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _add_input_shape(parser: argparse.ArgumentParser, purpose: str,
                     ranges: bool = False) -> None:
    metavar = "NAME=D0,D1,..." + (" (Di: N, LO..HI or ?)" if ranges else "")
    parser.add_argument("--input-shape", action="append", default=[], metavar=metavar,
                        type=_parse_ranged_shape if ranges else _parse_input_shape,
                        help=f"{purpose}; repeatable")


def _parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, shape = _parse_ranged_shape(text)
    if not all(isinstance(d, int) for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=D0,D1,... with integer dims (bounds "
                                         f"LO..HI and ? are for compile), got {text!r}")
    return name, shape  # type: ignore[return-value]


def _parse_specialization(text: str) -> dict[str, tuple[int, ...]]:
    """``NAME=D0,D1,...[;NAME=D0,...]``: one input shape per input it names."""
    return dict(_parse_input_shape(part) for part in text.split(";"))


def _parse_ranged_shape(text: str) -> tuple[str, tuple[int | None | tuple[int, int], ...]]:
    """``NAME=D0,D1,...``; a dim is an extent, ``LO..HI`` (symbolic within bounds) or ``?``
    (symbolic, unbounded)."""
    name, sep, dims = text.rpartition("=")
    shape: list[int | None | tuple[int, int]] = []
    try:
        for dim in dims.split(",") if dims.strip() else []:
            dim = dim.strip()
            if dim == "?":
                shape.append(None)
            elif ".." in dim:
                low, high = (int(part) for part in dim.split(".."))
                shape.append((low, high) if 0 <= low <= high else (-1, -1))
            else:
                shape.append(int(dim))
    except ValueError:
        shape = [-1]
    if not sep or not name or any(d == -1 or d == (-1, -1) or isinstance(d, int) and d < 0
                                  for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected NAME=D0,D1,... with non-negative integer dims, LO..HI or ?, got {text!r}"
        )
    return name, tuple(shape)


def _progress_logger(verbose: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def log(message: str) -> None:
        if verbose:
            print(f"[{time.perf_counter() - start:7.2f}s] {message}", file=sys.stderr)

    return log


def _load(path: Path, log: Callable[[str], None]) -> Graph:
    """The graph of an ONNX file, or of the DSL model a Python file defines (``net.py:name``
    picks one of several)."""
    # the composition root is the one place that imports frontends
    from kiln.frontends.dsl.loading import load_python, split_model_path
    from kiln.frontends.onnx import load_onnx

    file, name = split_model_path(str(path))
    if not file.is_file():
        raise UsageError(f"model file '{file}' does not exist")
    log(f"loading {path}")
    graph = load_python(file, name) if file.suffix == ".py" else load_onnx(file)
    log(f"loaded {sum(1 for _ in graph.walk())} nodes")
    return graph


def _inspect(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    graph = _load(args.model, log)
    dims = _bind_symbols(graph, dict(args.input_shape))
    print(format_summary(summarize(graph, dims)))
    print(_memory_plan_line(graph, dict(args.input_shape)))
    if args.ir:
        from .ir.printer import print_graph

        print()
        print(print_graph(graph, full_constants=args.full_constants), end="")


def _compile(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    from .codegen.target import Target
    from .driver import build
    from .lower import schedules
    from .passes.pipeline import format_stats

    if args.output is None and args.stop_after is None:
        raise UsageError("compile needs -o MODEL.so (or --stop-after PASS to print the IR)")
    _check_static_options(args)
    graph = _load(args.model, log)
    target = Target.parse(args.target, cpu=args.cpu, features=args.features)
    # A bundle runs every loop on the calling thread: schedules measured on one thread fit it.
    threads = 1 if args.static and args.tune_threads is None else args.tune_threads
    # the tuning cache measures CPU schedules; GPU schedules are not tuned
    tuned = {} if args.no_tune_cache or target.is_gpu else _tuned_schedules(
        target, threads, log, args.tune_cache)
    if args.stop_after is not None:
        if target.is_gpu:
            from .lower.gpu import gpu_machine

            machine = gpu_machine()
        else:
            machine = target.machine().with_tuned(tuned)
        _compile_stop_after(args, graph, machine, log)
        return
    if args.static:
        _compile_bundle(args, graph, target, tuned, log)
        return
    with schedules.collect() as decisions:
        exe = build(graph, target=target, opt_level=args.opt_level,
                    input_shapes=dict(args.input_shape), weights=args.weights or "embed",
                    progress=log, print_ir_after=args.print_ir_after,
                    print_ir_after_all=args.print_ir_after_all, tuned=tuned,
                    profile=args.profile, dump_dir=args.dump,
                    specialize=[] if args.no_specialize else args.specialize)
    applied = sum(1 for d in decisions if tuned.get(d.signature) == d.chosen)
    log(f"tuned schedules used by {applied} of {len(decisions)} tunable kernels")
    written = exe.export(args.output)
    stats = exe.stats
    where = f"{target.triple} ({target.cpu})" if target.is_gpu else target.triple
    print(f"wrote {written} ({written.stat().st_size:,} bytes) for {where}: "
          f"{stats.kernels} kernels, arena {stats.arena_bytes:,} bytes, weights "
          f"{stats.weights_bytes:,} bytes, compiled in {stats.total_seconds:.2f}s")
    if args.pass_stats:
        print(format_stats(stats.passes), end="")


def _check_static_options(args: argparse.Namespace) -> None:
    """Usage errors of ``kiln compile --static`` / ``--prefix``."""
    if args.prefix is not None and not args.static:
        raise UsageError("--prefix names a static bundle's API: it needs --static")
    if args.static and args.profile:
        raise UsageError("--profile needs the threaded runtime's timers: a static bundle "
                         "(--static) cannot be a profiling build")


def _compile_bundle(args: argparse.Namespace, graph: Graph, target: Target,
                    tuned: Mapping[str, Mapping[str, Any]], log: Callable[[str], None]) -> None:
    """``kiln compile --static``: the bundle object, its header and its weights."""
    from .artifact.bundle import DEFAULT_PREFIX
    from .driver import build_bundle
    from .passes.pipeline import PassStats, format_stats

    passes: list[PassStats] = []
    bundle = build_bundle(graph, args.output, target=target, opt_level=args.opt_level,
                          input_shapes=dict(args.input_shape),
                          weights=args.weights or "external", tuned=tuned,
                          prefix=args.prefix or DEFAULT_PREFIX, progress=log,
                          print_ir_after=args.print_ir_after,
                          print_ir_after_all=args.print_ir_after_all, dump_dir=args.dump,
                          pass_stats=passes)
    written = [bundle.object, bundle.header, *([bundle.weights] if bundle.weights else [])]
    print(f"wrote {', '.join(str(path) for path in written)} for {target.triple}: "
          f"object {bundle.object.stat().st_size:,} bytes, arena {bundle.arena_bytes:,} bytes, "
          f"weights {bundle.weights_bytes:,} bytes "
          f"({'external' if bundle.weights else 'embedded'})")
    if args.pass_stats:
        print(format_stats(passes), end="")


def _tuned_schedules(
    target: Target, threads: int | None, log: Callable[[str], None], path: Path | None = None
) -> dict[str, dict[str, Any]]:
    """The schedules the tuning cache (``path``, default the user's) holds for ``target`` run
    with ``threads`` threads."""
    from .tune.cache import TuneCache, machine_key

    cache = TuneCache(path, warn=_warn)
    tuned = cache.tuned(target, threads)
    log(f"tuning cache {cache.path}: {len(tuned)} schedules for "
        f"{machine_key(target, threads)}")
    return tuned


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _tune(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    from .codegen.target import Target
    from .tune.cache import TuneCache, machine_key
    from .tune.search import format_results, tune

    graph = _load(args.model, log)
    target = Target.parse(args.target, cpu=args.cpu, features=args.features)
    cache = TuneCache(args.cache, warn=_warn)
    try:
        results = tune(graph, target, opt_level=args.opt_level, threads=args.threads,
                       input_shapes=dict(args.input_shape), cache=cache,
                       budget_seconds=args.budget_seconds, runs=args.runs,
                       retune=args.retune,
                       progress=log if getattr(args, "verbose", False) else _progress_logger(True))
    except KeyboardInterrupt:
        raise KilnError(f"interrupted; what was measured is in {cache.path}") from None
    if not results:
        print("no tunable kernels in this model: the cost model's schedules are all there is")
        return
    print(format_results(results), end="")
    print(f"cache: {cache.path} [{machine_key(target, args.threads)}]")


def _compile_stop_after(
    args: argparse.Namespace, graph: Graph, machine: Machine, log: Callable[[str], None]
) -> None:
    """``compile --stop-after PASS``: run the optimizer up to PASS and print the IR."""
    from .ir.printer import print_graph
    from .passes.pipeline import PassStats, format_stats, optimize
    from .passes.specialize import specialize

    rows: list[PassStats] = []
    log("optimizing")
    optimized = optimize(specialize(graph, dict(args.input_shape)), args.opt_level,
                         print_after=args.print_ir_after,
                         print_after_all=args.print_ir_after_all, stop_after=args.stop_after,
                         stats=rows, machine=machine)
    print(print_graph(optimized), end="")
    if args.pass_stats:
        print(format_stats(rows), end="")


def _memory_plan_line(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The static plan's kernel count and arena size, or why there is none yet."""
    from .lower.from_graph import lower_graph
    from .passes.specialize import specialize
    from .plan.plan import make_plan

    try:
        plan = make_plan(lower_graph(specialize(graph, shapes)))
    except KilnError as error:
        return f"memory plan: unavailable ({error})"
    return (f"memory plan: {len(plan.calls)} kernels, arena {plan.arena_bytes:,} bytes "
            f"(intermediates without reuse: {plan.unshared_bytes:,} bytes)")


def _run(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    if args.model.suffix in LIBRARY_SUFFIXES:
        names, outputs = _run_library(args, log)
    else:
        names, outputs = _run_reference(args, log)
    named = dict(zip(names, outputs, strict=True))
    width = max((len(name) for name in named), default=0)
    for name, array in named.items():
        print(f"{name:<{width}}  {_describe_array(array)}  {_checksum(array)}")
    if args.output is not None:
        _save_outputs(args.output, named)
        log(f"wrote {args.output}")


def _run_reference(
    args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[list[str], list[np.ndarray]]:
    from . import reference

    graph = _load(args.model, log)
    if args.inputs is not None:
        inputs = _read_inputs([v.name for v in graph.inputs], args.inputs)
    else:
        inputs = _random_inputs(graph, dict(args.input_shape), args.seed)
    for name, array in inputs.items():
        log(f"input {name}: {_describe_array(array)}")
    log("running the reference executor")
    outputs = reference.run(graph, inputs)
    log("done")
    return [v.name for v in graph.outputs], outputs


def _run_library(
    args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[list[str], list[np.ndarray]]:
    from kiln.runtime import load

    if not args.model.is_file():
        raise UsageError(f"library '{args.model}' does not exist")
    with load(str(args.model), threads=args.threads) as model:
        inputs = _library_inputs(model, args.inputs, args.seed)
        log("running the compiled library")
        outputs = model.run(inputs)
        log("done")
        return [o.name for o in model.outputs], outputs


def _profile(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    from kiln.runtime import load
    from kiln.runtime.abi import PROFILE_TRACE_EVENTS

    from .codegen.target import Target
    from .driver import Executable, build
    from .profile.calibrate import machine_peaks
    from .profile.report import Report, Totals, format_csv, format_json, format_table, profile_rows
    from .profile.trace import chrome_trace
    from .tune.cache import run_threads

    _check_profile_options(args)
    graph: Graph | None = None
    exe: Executable | None = None  # holds the library's temporary folder while it runs
    if args.model.suffix in LIBRARY_SUFFIXES:
        if not args.model.is_file():
            raise UsageError(f"library '{args.model}' does not exist")
        from kiln.runtime.cuda import is_cuda_artifact

        if is_cuda_artifact(args.model):
            _profile_cuda(args, log)
            return
        library = args.model
    else:
        graph = _load(args.model, log)
        exe = build(graph, opt_level=args.opt_level, input_shapes=dict(args.input_shape),
                    progress=log, tuned=_tuned_schedules(Target.parse("host"), args.threads, log),
                    profile=True)
        library = exe.library
    threads = run_threads(args.threads)
    with load(str(library), threads=args.threads) as model:
        if not model.profiling:
            raise UsageError(f"'{library}' is not a profiling build: compile it with "
                             "'kiln compile --profile' (or profile the .onnx model itself)")
        inputs = _library_inputs(model, args.inputs, args.seed)
        log(f"{args.warmup} warm-up and {args.runs} measured run(s) on {threads} thread(s)")
        for _ in range(args.warmup):
            model.run(inputs)
        model.reset_profile()
        for _ in range(args.runs):
            model.run(inputs)
        counters = model.profile()
        kernels = model.kernel_info()
        events = model.trace_events() if args.trace is not None else []
    peaks = machine_peaks(args.recalibrate,
                          progress=lambda message: print(f"{PROG}: {message}", file=sys.stderr))
    sections = []
    if args.compare_onnxruntime:
        sections.append(_onnxruntime_section(args, inputs, threads, counters, log))
    if args.numerics is not None:
        assert graph is not None  # _check_profile_options turned libraries away
        sections.append(_numerics_section(args, graph, inputs, log))
    report = Report(str(args.model), threads, peaks, profile_rows(counters, peaks, threads),
                    Totals.of(counters), tuple(sections))
    if args.trace is not None:
        if len(events) >= PROFILE_TRACE_EVENTS:
            _warn(f"the trace holds the newest {len(events)} events only (the runtime keeps "
                  "no more): profile fewer --runs for a complete one")
        args.trace.write_text(json.dumps(chrome_trace(events, kernels)))
        log(f"wrote {args.trace}: {len(events)} events")
    formats = {"table": format_table, "json": format_json, "csv": format_csv}
    print(formats[args.format](report), end="")


def _profile_cuda(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """``kiln profile model.kiln``: per kernel its launch, ptxas' registers / shared memory /
    spills (where ptxas is installed) and, on a machine with a GPU, its measured time."""
    from kiln.runtime.cuda import CudaError, load_cuda, read_artifact

    from .profile.cuda import cuda_report, format_cuda_json, format_cuda_table, kernel_times

    if args.format == "csv" or args.trace is not None or args.compare_onnxruntime:
        raise UsageError("a CUDA artifact's profile is a table or json (no --trace, csv or "
                         "--compare-onnxruntime)")
    artifact = read_artifact(args.model)
    times = None
    try:
        model = load_cuda(args.model)
    except CudaError as error:
        log(f"no GPU timing: {error}")
    else:
        with model:
            inputs = _library_inputs(model, args.inputs, args.seed)
            log(f"{args.warmup} warm-up and {args.runs} measured run(s) on {model.device_name}")
            times = kernel_times(model, inputs, args.warmup, args.runs)
    report = cuda_report(artifact, times)
    print(format_cuda_json(report) if args.format == "json" else format_cuda_table(report),
          end="")


def _check_profile_options(args: argparse.Namespace) -> None:
    """Usage errors of ``kiln profile`` found before anything is compiled or run."""
    onnx = args.model.suffix == ".onnx"
    if args.compare_onnxruntime and not onnx:
        raise UsageError("--compare-onnxruntime needs an .onnx model (onnxruntime runs it)")
    if args.numerics == "onnxruntime" and not onnx:
        raise UsageError("--numerics onnxruntime needs an .onnx model (onnxruntime runs it)")
    if args.numerics is not None and args.model.suffix in LIBRARY_SUFFIXES:
        raise UsageError("--numerics needs the model (.onnx or .py), not a compiled library")
    if args.format == "csv" and (args.compare_onnxruntime or args.numerics is not None):
        raise UsageError("--format csv holds the kernel rows only: use table or json with "
                         "--compare-onnxruntime or --numerics")


def _onnxruntime_section(args: argparse.Namespace, inputs: Mapping[str, np.ndarray],
                         threads: int, counters: ProfileCounters,
                         log: Callable[[str], None]) -> Section:
    """``kiln profile --compare-onnxruntime``: onnxruntime's per-node times beside the
    kernels', joined by ONNX node name."""
    from kiln.frontends.onnx.ort_profile import format_side_by_side, ort_op_times, side_by_side

    from .profile.report import Section

    log(f"running onnxruntime with its profiler: {args.warmup} warm-up and {args.runs} "
        "measured run(s)")
    times = ort_op_times(args.model, inputs, threads, args.runs, warmup=args.warmup)
    rows = side_by_side(counters.kernels, times, kiln_runs=counters.runs, ort_runs=args.runs)
    return Section("onnxruntime", f"beside onnxruntime on {threads} thread(s), us per run",
                   format_side_by_side(rows),
                   [asdict(row) | {"ort_us": row.ort_us} for row in rows])


def _numerics_section(args: argparse.Namespace, graph: Graph,
                      inputs: Mapping[str, np.ndarray], log: Callable[[str], None]) -> Section:
    """``kiln profile --numerics``: the first intermediate value off its reference."""
    from .profile.numerics import first_divergence
    from .profile.report import Section

    reference_values = None
    against = "the reference executor"
    if args.numerics == "onnxruntime":
        from kiln.frontends.onnx.ort_profile import ort_intermediates

        log("running onnxruntime for every intermediate value")
        reference_values = ort_intermediates(args.model, inputs)
        against = "onnxruntime"
    log("compiling with every observable intermediate value as an output")
    found = first_divergence(graph, inputs, opt_level=args.opt_level,
                             reference_values=reference_values, rtol=args.rtol, atol=args.atol,
                             threads=args.threads)
    return Section("numerics", f"numerics against {against}", found.describe(),
                   {"reference": args.numerics} | asdict(found))


def _library_inputs(model: Model, path: Path | None, seed: int) -> dict[str, np.ndarray]:
    """The arrays of ``path`` (an .npz), or random ones of the library's input types."""
    if path is not None:
        return _read_inputs([i.name for i in model.inputs], path)
    rng = np.random.default_rng(seed)
    return {i.name: _random_array(rng, DType.from_numpy(i.dtype), tuple(i.shape))
            for i in model.inputs}


def _save_outputs(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz archive readable by numpy.load; written by hand because numpy.savez's keyword
    form would reject outputs named like its own parameters ('file', 'allow_pickle')."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _read_inputs(expected: list[str], path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"--inputs file '{path}' does not exist") from None
    except (OSError, ValueError):
        raise UsageError(f"--inputs file '{path}' is not a readable .npz archive") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"--inputs file '{path}' holds one unnamed array; expected an .npz "
                         "archive with one array per input name (numpy.savez)")
    try:
        with data:
            inputs = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UsageError(f"--inputs file '{path}' is damaged: {error}") from None
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        raise UsageError(
            f"--inputs '{path}' holds {sorted(inputs)}, but the model's inputs are {expected}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    return inputs


def _bind_symbols(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Symbol extents implied by ``--input-shape`` values, after checking them against types."""
    bound: dict[str, int] = {}
    for name, shape in shapes.items():
        try:
            declared = graph.input_named(name).type.shape
        except KeyError:
            raise UsageError(
                f"--input-shape names {name!r}, but the model's inputs are "
                f"{[v.name for v in graph.inputs]}"
            ) from None
        if len(shape) != len(declared) or any(
            isinstance(d, int) and d != s for d, s in zip(declared, shape, strict=False)
        ):
            raise UsageError(
                f"--input-shape {name}={','.join(map(str, shape))} does not fit the declared "
                f"shape [{','.join(map(str, declared))}]"
            )
        for dim, size in zip(declared, shape, strict=True):
            if isinstance(dim, str) and bound.setdefault(dim, size) != size:
                raise UsageError(
                    f"--input-shape gives symbol {dim!r} two extents, {bound[dim]} and {size}"
                )
    return bound


def _random_inputs(
    graph: Graph, shapes: Mapping[str, tuple[int, ...]], seed: int
) -> dict[str, np.ndarray]:
    """Random arrays of each input's type; symbols resolve through ``--input-shape``."""
    bound = _bind_symbols(graph, shapes)
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for value in graph.inputs:
        shape = (shapes[value.name] if value.name in shapes
                 else _concrete_shape(value.name, value.type, bound))
        inputs[value.name] = _random_array(rng, value.type.dtype, shape)
    return inputs


def _concrete_shape(name: str, type_: TensorType, bound: Mapping[str, int]) -> tuple[int, ...]:
    free = [d for d in type_.shape if isinstance(d, str) and d not in bound]
    if free:
        example = ",".join(str(d) if isinstance(d, int) else "1" for d in type_.shape)
        raise UsageError(
            f"input {name!r} has type {type_} with unbound dimensions {free}; give its shape "
            f"with --input-shape {name}={example} (or pass --inputs)"
        )
    return tuple(d if isinstance(d, int) else bound[d] for d in type_.shape)


def _random_array(rng: np.random.Generator, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    # Small non-negative integers keep index-like inputs (Gather indices, axes) in range.
    if dtype.is_float:
        return rng.standard_normal(shape).astype(dtype.numpy)
    if dtype is DType.BOOL:
        return rng.random(shape) < 0.5
    return rng.integers(0, 3, size=shape).astype(dtype.numpy)


def _describe_array(array: np.ndarray) -> str:
    return f"{DType.from_numpy(array.dtype).value}[{','.join(map(str, array.shape))}]"


def _checksum(array: np.ndarray) -> str:
    total = float(np.sum(array, dtype=np.float64))
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
    return f"sum={total:.9g} sha256={digest}"


if __name__ == "__main__":
    sys.exit(main())
