"""The compiler driver: ``build``, graph IR in, a compiled model library out.

    specialize (bind symbolic dims, fold shapes) -> optimize (the pass pipeline of the opt
    level, passes/pipeline.py) -> lower (kernel IR per node)
    -> plan (kernel order, arena and weights placement) -> LLVM module (kernels, plan,
    descriptor) -> object code -> shared library with the C runtime and the weights.

The result is an ``Executable``: ``run`` executes the library through ``kiln.runtime``,
``export`` copies the library (with its header, and its weights file if external) to a path;
``model()`` is the loaded ``kiln.runtime.Model`` (its profile, for a profiling build).

``build_bundle`` shares every phase up to the object code and then writes a static bundle
instead (artifact/bundle.py): one relocatable object with a freestanding runtime, for boards
without a loader, allocator or threads.

A CUDA target (``build(graph, target="cuda")``) lowers with the GPU schedules (lower/gpu),
compiles each kernel to PTX (codegen/nvptx) and packs plan, PTX and weights into one artifact
(artifact/cuda.py): a ``CudaExecutable``, run by ``kiln.runtime.cuda.CudaModel``.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from kiln.runtime import Model
from kiln.runtime import load as load_library
from kiln.runtime.cuda import CudaModel, parse_artifact

from .artifact import TensorSpec, build_library, fnv1a64
from .artifact.bundle import DEFAULT_PREFIX, Bundle, check_prefix, write_bundle
from .artifact.cuda import cuda_artifact
from .codegen.llvm import optimize_and_emit
from .codegen.nvptx.ptx import KernelPTX, compile_kernels
from .codegen.plan_module import build_module
from .codegen.target import Target
from .errors import KilnError
from .ir import symbolic
from .ir.graph import Graph
from .lower.from_graph import LoweredGraph, lower_graph, read_input_dims, require_static
from .lower.interpret import concrete_shape
from .lower.kernel_ir import Buffer
from .passes.pipeline import PassStats, optimize
from .passes.specialize import specialize
from .plan.plan import Plan, make_plan, pack_constants

Progress = Callable[[str], None]
# One axis of ``input_shapes``: an extent, None (symbolic), or (smallest, largest) bounds.
InputExtent = int | None | tuple[int, int]


@dataclass
class BuildStats:
    kernels: int
    arena_bytes: int
    unshared_bytes: int
    weights_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)
    passes: list[PassStats] = field(default_factory=list)  # one row per optimizer pass run

    @classmethod
    def of(cls, plan: Plan, seconds: dict[str, float], passes: list[PassStats]) -> BuildStats:
        """The statistics of a build of ``plan``."""
        return cls(len(plan.calls), plan.arena_bytes, plan.unshared_bytes, len(plan.weights),
                   seconds, passes)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


class Executable:
    """A compiled model in a private temporary folder; loaded on first ``run``."""

    def __init__(self, folder: Path, library: Path, target: Target, threads: int | None,
                 stats: BuildStats) -> None:
        self.folder = folder
        self.library = library
        self.target = target
        self.threads = threads
        self.stats = stats
        self._model: Model | None = None
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(folder), True)

    def model(self) -> Model:
        """The loaded library (host targets only), created on first use with ``threads``."""
        if not self.target.is_host:
            raise KilnError(
                f"this model was compiled for {self.target.triple}; it runs only there "
                "(export it and deploy the library)"
            )
        if self._model is None:
            self._model = load_library(str(self.library), threads=self.threads)
        return self._model

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the compiled model (host targets only); outputs in graph order."""
        return self.model().run(inputs)

    def export(self, path: str | Path) -> Path:
        """Copy the library to ``path`` (plus ``.h`` beside it, and ``.bin`` if external)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.library, target)
        for suffix in (".h", ".bin"):
            companion = self.library.with_suffix(suffix)
            if companion.exists():
                shutil.copyfile(companion, target.with_suffix(suffix))
        return target


class CudaExecutable:
    """A model compiled for a CUDA target: the artifact's bytes (``artifact``) and each
    kernel's PTX (``kernels``). ``run`` loads it onto GPU 0 on first use (a clear error where
    there is no CUDA driver or GPU); ``export`` writes the artifact file (``model.kiln``)."""

    def __init__(self, artifact: bytes, kernels: list[KernelPTX], target: Target,
                 stats: BuildStats) -> None:
        self.artifact = artifact
        self.kernels = kernels
        self.target = target
        self.stats = stats
        self._model: CudaModel | None = None

    def model(self) -> CudaModel:
        """The artifact loaded on the GPU, created on first use."""
        if self._model is None:
            self._model = CudaModel(parse_artifact(self.artifact, "<cuda build>"))
        return self._model

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the compiled model on the GPU; outputs in graph order."""
        return self.model().run(inputs)

    def export(self, path: str | Path) -> Path:
        """Write the artifact to ``path``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.artifact)
        return target


class _Phases:
    """Runs the build's phases, timing each (``seconds``) and reporting it to ``progress``."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self.progress:
            self.progress(f"{name}...")
        start = time.perf_counter()
        result = fn(*args)
        self.seconds[name] = time.perf_counter() - start
        return result


@dataclass(frozen=True)
class _Compiled:
    """A graph compiled to the target's object code (what build and build_bundle share)."""

    plan: Plan
    input_names: list[str]
    object_code: bytes
    passes: list[PassStats]

    def tensors(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The (name, dtype, shape) of each input and output."""
        return _tensor_specs(self.plan, self.input_names)


def _tensor_specs(plan: Plan, input_names: Sequence[str]
                  ) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The (name, dtype, shape) of each input and output of ``plan``."""
    def spec(name: str, buffer: Buffer) -> TensorSpec:
        return name, buffer.dtype, tuple(d if isinstance(d, int) else -1 for d in buffer.shape)

    inputs = zip(input_names, plan.inputs, strict=True)
    outputs = zip(plan.output_names, plan.outputs, strict=True)
    return [spec(n, b) for n, b in inputs], [spec(n, b) for n, b in outputs]


@dataclass(frozen=True)
class _Options:
    """The arguments ``build`` and ``build_bundle`` share (see ``build``), checked once."""

    target: Target
    opt_level: int
    input_shapes: Mapping[str, Sequence[InputExtent]] | None
    weights: str
    tuned: Mapping[str, Mapping[str, Any]] | None
    print_ir_after: Sequence[str]
    print_ir_after_all: bool
    verify_each: bool
    ir_out: TextIO | None
    dump_dir: Path | None
    specialize: Sequence[Mapping[str, Sequence[int]]] | None = None

    def __post_init__(self) -> None:
        if self.opt_level not in (0, 1, 2, 3):
            raise KilnError(f"opt_level must be 0, 1, 2 or 3, got {self.opt_level}")
        if self.weights not in ("embed", "external"):
            raise KilnError(f"weights must be 'embed' or 'external', got {self.weights!r}")

    def bound_shapes(self) -> dict[str, list[int | None]]:
        """``input_shapes`` for ``specialize``: an extent given as bounds stays symbolic."""
        return {name: [None if isinstance(d, tuple) or d is None else int(d) for d in shape]
                for name, shape in (self.input_shapes or {}).items()}

    def specializations(self, graph: Graph, bounds: Mapping[str, tuple[int, int]]
                        ) -> list[dict[str, tuple[int, ...]]]:
        """The input shapes of the static plans a library with free extents carries: those
        given, or by default, when every free extent is a leading (batch) axis, batch 1 (at the
        smallest bound when bounded)."""
        if self.specialize is not None:
            return [{name: tuple(int(d) for d in shape) for name, shape in given.items()}
                    for given in self.specialize]
        free = [(axis, d) for v in graph.inputs for axis, d in enumerate(v.type.shape)
                if not isinstance(d, int)]
        if not free or any(axis != 0 or symbolic.poly(d) != {(d,): 1} for axis, d in free):
            return []
        return [{v.name: tuple(bounds.get(d, (1, 1))[0] if not isinstance(d, int) else d
                               for d in v.type.shape)
                 for v in graph.inputs}]

    def bounds(self, graph: Graph) -> dict[str, tuple[int, int]]:
        """Symbol -> (smallest, largest) extent from the bounded axes of ``input_shapes``, read
        against the specialized ``graph``'s input dims."""
        found: dict[str, tuple[int, int]] = {}
        types = {v.name: v.type for v in graph.inputs}
        for name, shape in (self.input_shapes or {}).items():
            for axis, extent in enumerate(shape):
                if not isinstance(extent, tuple):
                    continue
                low, high = (int(e) for e in extent)
                symbol = types[name].shape[axis]
                if not 1 <= low <= high or not isinstance(symbol, str):
                    raise KilnError(f"input {name!r} axis {axis}: bounds {low}..{high} need "
                                    f"1 <= smallest <= largest on a symbolic axis")
                if symbol in found and found[symbol] != (low, high):
                    raise KilnError(f"symbol {symbol!r} has two bounds: {found[symbol]} and "
                                    f"{(low, high)}")
                found[symbol] = (low, high)
        return found


def _plan(graph: Graph, options: _Options, phase: _Phases, specializing: bool = False
          ) -> tuple[Graph, Plan, list[PassStats], list[Plan]]:
    """Specialize, optimize, lower (GPU schedules for a GPU target) and plan ``graph``: the
    specialized graph, the plan, one row per optimizer pass run, and (``specializing`` a plan
    with free extents) static plans for ``options.specialize`` sharing its weights blob."""
    target, opt_level = options.target, options.opt_level
    if target.is_gpu:
        from .lower.gpu import gpu_machine, lower_graph_gpu

        machine = gpu_machine()
        lower: Callable[..., Any] = lower_graph_gpu
    else:
        machine = target.machine().with_tuned(options.tuned or {})
        lower = functools.partial(lower_graph, machine=machine)
    static = phase("specialize", specialize, graph, options.bound_shapes())
    bounds = options.bounds(static)
    pass_rows: list[PassStats] = []
    optimized = phase("optimize", lambda: optimize(
        static, opt_level, print_after=options.print_ir_after,
        print_after_all=options.print_ir_after_all, verify_each=options.verify_each,
        stats=pass_rows, out=options.ir_out, machine=machine,
    ))
    lowered = phase("lower", lower, optimized)
    variants: list[LoweredGraph] = []
    if specializing and not lowered.is_static:
        for shapes in options.specializations(static, bounds):
            try:
                fixed = optimize(specialize(static, shapes), opt_level, machine=machine)
                variant = phase("specialize plans", lower, fixed)
            except KilnError as error:
                if options.specialize is not None:  # asked for: say why it cannot be
                    raise KilnError(f"specializing for {shapes}: {error}") from error
                continue  # the default batch-1 plan is an optimization: the general one runs
            if _agrees(lowered, variant, shapes):
                variants.append(variant)
    shared = pack_constants([lowered, *variants])
    plan: Plan = phase("plan", make_plan, lowered, bounds, shared)
    return static, plan, pass_rows, [make_plan(v, None, shared) for v in variants]


def _agrees(general: LoweredGraph, variant: LoweredGraph,
            shapes: Mapping[str, Sequence[int]]) -> bool:
    """Whether a specialized plan may stand in for the general one at ``shapes``: it is static
    (values may still set extents: then it is no static plan) and its outputs are what the
    general plan's would be there (a Squeeze of a free extent that is 1 changes the rank)."""
    if not variant.is_static or [(b.dtype, len(b.shape)) for b in general.outputs] != [
            (b.dtype, len(b.shape)) for b in variant.outputs]:
        return False
    dims = read_input_dims(general.dims, [np.empty(shapes[b.name], np.uint8)
                                          for b in general.inputs])
    try:
        return all(concrete_shape(g.shape, dims) == v.shape
                   for g, v in zip(general.outputs, variant.outputs, strict=True))
    except KilnError:  # an output extent that depends on values
        return False


def _compile(graph: Graph, options: _Options, phase: _Phases, profile: bool) -> _Compiled:
    """Specialize, optimize, lower, plan, generate and emit object code for the target."""
    target, opt_level = options.target, options.opt_level
    static, plan, pass_rows, specialized = _plan(graph, options, phase, not profile)
    if options.dump_dir is not None:
        from .codegen.dump import write_dump  # its printers load only when a dump is asked for

        phase("dump", write_dump, plan, target, options.dump_dir, opt_level)
    names = ([v.name for v in static.inputs], list(plan.output_names))
    external = options.weights == "external"
    checksum = fnv1a64(plan.weights)
    module = phase("codegen", build_module, plan, target, names, external, checksum, profile,
                   specialized)
    obj = phase("llvm", optimize_and_emit, module, target, opt_level)
    return _Compiled(plan, names[0], obj, pass_rows)


def build(
    graph: Graph,
    target: str | Target = "host",
    opt_level: int = 2,
    threads: int | None = None,
    input_shapes: Mapping[str, Sequence[InputExtent]] | None = None,
    weights: str = "embed",
    progress: Progress | None = None,
    *,
    tuned: Mapping[str, Mapping[str, Any]] | None = None,
    print_ir_after: Sequence[str] = (),
    print_ir_after_all: bool = False,
    verify_each: bool = False,
    ir_out: TextIO | None = None,
    profile: bool = False,
    dump_dir: Path | None = None,
    specialize: Sequence[Mapping[str, Sequence[int]]] | None = None,
) -> Executable | CudaExecutable:
    """Compile ``graph`` for ``target``. ``input_shapes`` binds input extents by input name:
    per axis an int, or None (stays symbolic), or ``(smallest, largest)``: symbolic with bounds,
    which size the arena up front and are checked at run time. A symbolic extent left free
    compiles to code that reads it from the input shapes at run time (one library for every
    batch size). ``opt_level`` picks the optimizer's passes (and LLVM's level); ``print_ir_after`` /
    ``print_ir_after_all`` print the IR after those passes to ``ir_out`` (default stderr);
    ``verify_each`` verifies the IR after every pass. ``tuned`` maps kernel signatures to
    schedule parameters that override the cost model's choice (what ``kiln tune`` measured:
    ``kiln.compiler.tune.TuneCache().tuned(target, threads)``); without it the build uses
    the cost model alone and reads no cache file. ``profile`` compiles in per-kernel timers
    and the kernel table (``Model.profile``; without it the code has no timer at all);
    ``dump_dir`` receives each kernel's kernel IR, LLVM IR and assembly (codegen/dump.py).
    ``specialize`` lists input shapes (``{name: shape}`` each) for which a library with free
    extents also carries a static plan, run when a run's shapes match (None: batch 1 when the
    free extents are all leading axes; ``[]``: none; a profiling build carries none)."""
    target = target if isinstance(target, Target) else Target.parse(target)
    options = _Options(target, opt_level, input_shapes, weights, tuned, print_ir_after,
                       print_ir_after_all, verify_each, ir_out, dump_dir, specialize)
    phase = _Phases(progress)
    if target.is_gpu:
        return _build_cuda(graph, options, phase)
    compiled = _compile(graph, options, phase, profile)
    plan = compiled.plan
    inputs, outputs = compiled.tensors()
    folder = Path(tempfile.mkdtemp(prefix="kiln-"))
    library = folder / "model.so"
    phase("link", lambda: build_library(
        compiled.object_code, library, inputs=inputs, outputs=outputs, weights=plan.weights,
        external_weights=weights == "external", target=target,
    ))
    stats = BuildStats.of(plan, phase.seconds, compiled.passes)
    if progress:
        progress(f"built {library.name}: {stats.kernels} kernels in {stats.total_seconds:.2f}s")
    return Executable(folder, library, target, threads, stats)


def _build_cuda(graph: Graph, options: _Options, phase: _Phases) -> CudaExecutable:
    """``build`` for a CUDA target: GPU schedules, PTX per kernel, one artifact file."""
    target, opt_level = options.target, options.opt_level
    if options.weights != "embed":
        raise KilnError("a CUDA artifact holds its weights: weights must be 'embed'")
    static, plan, pass_rows, _ = _plan(graph, options, phase)
    kernels, messages = phase("codegen", compile_kernels, plan.kernels, target, opt_level)
    if options.dump_dir is not None:
        from .codegen.nvptx.dump import write_gpu_dump

        phase("dump", write_gpu_dump, plan, kernels, target, options.dump_dir, opt_level)
    inputs, outputs = _tensor_specs(plan, [v.name for v in static.inputs])
    artifact = phase("artifact", cuda_artifact, plan, kernels, messages, inputs, outputs,
                     target)
    stats = BuildStats.of(plan, phase.seconds, pass_rows)
    if phase.progress:
        phase.progress(f"built the CUDA artifact: {len(kernels)} kernels ({stats.kernels} "
                       f"calls) in {stats.total_seconds:.2f}s")
    return CudaExecutable(artifact, kernels, target, stats)


def build_bundle(
    graph: Graph,
    output: str | Path,
    target: str | Target = "host",
    opt_level: int = 2,
    input_shapes: Mapping[str, Sequence[InputExtent]] | None = None,
    weights: str = "external",
    *,
    tuned: Mapping[str, Mapping[str, Any]] | None = None,
    prefix: str = DEFAULT_PREFIX,
    progress: Progress | None = None,
    print_ir_after: Sequence[str] = (),
    print_ir_after_all: bool = False,
    verify_each: bool = False,
    ir_out: TextIO | None = None,
    dump_dir: Path | None = None,
    pass_stats: list[PassStats] | None = None,
) -> Bundle:
    """Compile ``graph`` for ``target`` into a static bundle (artifact/bundle.py): the object
    ``output`` (``model.o``), ``model.h`` beside it and, with ``weights="external"``,
    ``model.weights.bin``. The plan and code are ``build``'s; the bundle runs them with the
    caller's memory and no threads, allocator or I/O. ``prefix`` renames the API
    (``kiln_bundle_run`` -> ``PREFIX_run``) so that two bundles link into one program; the
    other arguments are ``build``'s; ``pass_stats`` receives one row per optimizer pass run."""
    check_prefix(prefix)  # before the compile it would waste
    target = target if isinstance(target, Target) else Target.parse(target)
    if target.is_gpu:
        raise KilnError(f"a static bundle is CPU code; {target.name} builds a CUDA artifact "
                        "(build(..., target='cuda'))")
    options = _Options(target, opt_level, input_shapes, weights, tuned, print_ir_after,
                       print_ir_after_all, verify_each, ir_out, dump_dir)
    phase = _Phases(progress)
    compiled = _compile(graph, options, phase, False)
    require_static(compiled.plan.inputs + compiled.plan.outputs, "a static bundle")
    if pass_stats is not None:
        pass_stats.extend(compiled.passes)
    inputs, outputs = compiled.tensors()
    bundle: Bundle = phase("link", lambda: write_bundle(
        compiled.object_code, output, inputs=inputs, outputs=outputs,
        weights=compiled.plan.weights, arena_bytes=compiled.plan.arena_bytes,
        external_weights=weights == "external", target=target, prefix=prefix,
    ))
    if progress:
        progress(f"built {bundle.object.name} in {sum(phase.seconds.values()):.2f}s")
    return bundle
