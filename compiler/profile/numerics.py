"""The numerics mode: find the first intermediate value where a compiled model goes wrong.

``first_divergence(graph, inputs)`` compiles ``graph`` at the requested opt level with every
intermediate value that survives optimization under its own name made an extra graph output,
runs it, and compares those values in the graph's topological order against the reference
executor's (or against ``reference_values``, e.g. onnxruntime's intermediates from
``kiln.frontends.onnx.ort_profile.ort_intermediates``). The first value beyond tolerance names
the node that produced it and the source ops of the kernel that computed it.

Which values can be observed: the values of the graph's top level (control-flow bodies are
not looked into) that are kernel outputs once the plain graph is optimized. Only those become
graph outputs, so the fusion (hence the kernels) of the checked build is that of the user's
build, and every observed value stays in memory until the run ends. Values computed inside a
fused kernel, kept only in another layout (-O3), folded to constants or removed by the
optimizer cannot be observed; the report lists them with the reason. A wrong fused kernel
therefore shows at its first output, whose divergence names the kernel's source ops (rerun at
-O0 to see the values inside it). Reference values from onnxruntime lack the values that
Kiln's frontend creates when it expands an ONNX node into several ops: those are listed as
unreferenced.

Tolerance rule, per compared tensor (``ref`` the reference, ``got`` the compiled value)::

    max |got - ref|  <=  atol + rtol * max |ref|      (max over the tensor's finite elements)

The error is measured against the tensor's scale rather than element by element: relative
errors of values near zero (a ReLU's many small outputs, cancellations) say nothing about a
kernel. NaN matches NaN and an infinity matches the same infinity; any other mismatch of
non-finite values diverges. Integer and boolean values must be equal. The defaults per float
type are ``DEFAULT_TOLERANCE``; explicit ``rtol`` / ``atol`` apply to every float value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .. import reference
from ..codegen.target import Target
from ..driver import build
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.types import DType
from ..passes.pipeline import optimize
from ..passes.specialize import specialize

# (rtol, atol) per float type: what a different summation order and vectorized math functions
# move a value by, at each precision.
DEFAULT_TOLERANCE: dict[DType, tuple[float, float]] = {
    DType.F16: (4e-3, 1e-3),
    DType.BF16: (1.6e-2, 1e-2),
    DType.F32: (1e-4, 1e-5),
    DType.F64: (1e-10, 1e-12),
}


@dataclass(frozen=True)
class Divergence:
    """The first compared value beyond tolerance, and where it came from.

    ``node_name`` / ``op``: the graph node that produced the value; ``kernel_ops``: the source
    ops of the compiled kernel that computed it (several when the node was fused); ``index``:
    the element with the largest error (None when the shapes differ) and ``got`` /
    ``expected`` its compiled and reference values; ``max_rel_err``: ``max_abs_err /
    max|ref|``, the quantity the tolerance rule bounds by ``rtol``."""

    node_name: str
    value_name: str
    op: str
    shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    index: tuple[int, ...] | None
    got: float | None
    expected: float | None
    kernel_ops: tuple[str, ...]

    def describe(self) -> str:
        where = f"{self.op} {self.node_name!r}" if self.node_name else self.op
        kernel = f" (computed by the kernel of {', '.join(self.kernel_ops)})" \
            if self.kernel_ops and self.kernel_ops != (self.node_name,) else ""
        if self.index is None:
            return (f"{where}: value {self.value_name!r} has shape {list(self.shape)}, the "
                    f"reference {list(self.reference_shape)}{kernel}")
        return (f"{where}: value {self.value_name!r} {list(self.shape)} diverges{kernel}: "
                f"max abs err {self.max_abs_err:.3g}, max rel err {self.max_rel_err:.3g} at "
                f"{list(self.index)} (got {self.got!r}, expected {self.expected!r})")


@dataclass(frozen=True)
class NumericsReport:
    """``compared``: value names compared, in topological order, up to and including the first
    divergence; ``hidden``: intermediates the compiled model does not expose, with why;
    ``unreferenced``: observable values the given reference values lack."""

    compared: tuple[str, ...]
    divergence: Divergence | None
    hidden: dict[str, str]
    unreferenced: tuple[str, ...] = ()

    def describe(self, details: bool = False) -> str:
        """A summary and the divergence; ``details`` adds a line per value not compared."""
        lines = [f"compared {len(self.compared)} values"
                 + (f"; {len(self.hidden)} not observable in the compiled model"
                    if self.hidden else "")
                 + (f"; {len(self.unreferenced)} without a reference value"
                    if self.unreferenced else "")]
        found = self.divergence
        lines.append("first divergence: " + found.describe() if found else "no divergence")
        if found and len(found.kernel_ops) > 1:
            lines.append("the values inside a fused kernel are observable at opt level 0")
        if details:
            lines += [f"  not observable: {name}: {why}" for name, why in self.hidden.items()]
            lines += [f"  no reference value: {name}" for name in self.unreferenced]
        return "\n".join(lines) + "\n"


def first_divergence(
    graph: Graph,
    inputs: Mapping[str, np.ndarray],
    *,
    opt_level: int = 2,
    reference_values: Mapping[str, np.ndarray] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    target: str | Target = "host",
    threads: int | None = None,
) -> NumericsReport:
    """Compile ``graph`` at ``opt_level`` for ``target`` (it must run here) with its observable
    intermediates as outputs, run it on ``inputs`` and report the first value beyond tolerance
    (module docstring) against the reference executor, or against ``reference_values`` (by
    value name; values they lack are listed as unreferenced, not compared)."""
    shapes = {name: np.shape(data) for name, data in inputs.items()}
    optimized = optimize(specialize(graph, shapes), opt_level)
    intermediates = _intermediates(graph)
    kernels = _kernel_ops(optimized)
    observable = [v for v in intermediates if v.name in kernels]
    hidden = {v.name: _why_hidden(v.name, optimized) for v in intermediates
              if v.name not in kernels}
    checked = _with_outputs(graph, observable)
    got = dict(zip((v.name for v in checked.outputs),
                   build(checked, target, opt_level, threads, input_shapes=shapes).run(inputs),
                   strict=True))
    if reference_values is None:
        reference_values = dict(zip((v.name for v in checked.outputs),
                                    reference.run(checked, inputs), strict=True))
    producers = graph.producers()
    compared: list[str] = []
    for value in observable:
        if value.name not in reference_values:
            continue
        compared.append(value.name)
        divergence = _compare(value, got[value.name], np.asarray(reference_values[value.name]),
                              rtol, atol, producers[value.name], kernels[value.name])
        if divergence is not None:
            break
    else:
        divergence = None
    unreferenced = tuple(v.name for v in observable if v.name not in reference_values)
    return NumericsReport(tuple(compared), divergence, hidden, unreferenced)


def _intermediates(graph: Graph) -> list[Value]:
    """Values computed by the top-level nodes of ``graph`` (outputs included), in order."""
    return [v for node in graph.nodes if node.op is not Op.CONSTANT
            for v in node.outputs if v is not None]


def _source_ops(node: Node) -> tuple[str, ...]:
    """The graph nodes a node of the optimized graph implements, as its lowering names them in
    ``Kernel.source`` (a fused node: its body's nodes)."""
    if node.op is Op.FUSED:
        return tuple(n.name for n in node.attrs["body"].nodes
                     if n.op is not Op.CONSTANT and n.name)
    return (node.name,) if node.name else ()


def _kernel_ops(optimized: Graph) -> dict[str, tuple[str, ...]]:
    """Each value a kernel of ``optimized`` computes -> the source ops of that kernel. A value
    a layout transform brings back to its original layout (-O3) is credited to the kernel
    that computed it in the other layout: the transform implements no source op."""
    found: dict[str, tuple[str, ...]] = {}
    for node in optimized.nodes:
        if node.op is Op.CONSTANT:
            continue
        ops = _source_ops(node)
        if node.op is Op.LAYOUT_TRANSFORM and not ops and node.inputs[0] is not None:
            ops = found.get(node.inputs[0].name, ())
        found.update((v.name, ops) for v in node.outputs if v is not None)
    return found


def _why_hidden(name: str, optimized: Graph) -> str:
    """Why the value ``name`` of the source graph is no kernel output of ``optimized``."""
    for node in optimized.nodes:
        if node.op is Op.CONSTANT:
            if node.outputs[0] is not None and node.outputs[0].name == name:
                return "folded to a constant"
            continue
        made = [(v.name, False) for v in node.outputs if v is not None]
        if node.op is Op.FUSED:
            made += [(v.name, True) for inner in node.attrs["body"].walk()
                     for v in inner.outputs if v is not None]
        for found, inside in made:
            # layout selection names the value in a blocked layout "<name>.<layout>"
            if found != name and not found.startswith(name + "."):
                continue
            where = (f"inside the kernel of {node.name} ({', '.join(_source_ops(node))})"
                     if inside else f"computed by {node.describe()}")
            return where if found == name else f"kept as {found} (another layout), {where}"
    return "removed by the optimizer"


def _with_outputs(graph: Graph, values: Sequence[Value]) -> Graph:
    """``graph`` returning ``values`` after its own outputs (each value once)."""
    names = {v.name for v in graph.outputs}
    extra = tuple(v for v in values if v.name not in names)
    return replace(graph, outputs=graph.outputs + extra)


def _compare(value: Value, got: np.ndarray, expected: np.ndarray, rtol: float | None,
             atol: float | None, producer: Node, kernel_ops: tuple[str, ...]) -> Divergence | None:
    """A Divergence when ``got`` is not within tolerance of ``expected`` (module docstring)."""

    def divergence(abs_err: float, rel_err: float, index: tuple[int, ...] | None) -> Divergence:
        at = None if index is None else (float(got[index]), float(expected[index]))
        return Divergence(producer.name, value.name, producer.op.value, tuple(got.shape),
                          tuple(expected.shape), abs_err, rel_err, index,
                          None if at is None else at[0], None if at is None else at[1],
                          kernel_ops)

    if got.shape != expected.shape:
        return divergence(float("inf"), float("inf"), None)
    if got.size == 0:
        return None
    a, b = got.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(a - b)
    # Equal non-finite values (NaN and NaN, inf and inf) agree; other non-finite ones do not.
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    err = np.where(same, 0.0, np.where(np.isfinite(err), err, np.inf))
    finite = np.isfinite(b)
    scale = float(np.max(np.abs(b), where=finite, initial=0.0))
    if value.type.dtype.is_float:
        default_rtol, default_atol = DEFAULT_TOLERANCE[value.type.dtype]
        bound = (default_atol if atol is None else atol) \
            + (default_rtol if rtol is None else rtol) * scale
    else:
        bound = 0.0
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    max_err = float(err[worst])
    if max_err <= bound:
        return None
    rel = max_err / scale if scale > 0 else float("inf")
    return divergence(max_err, rel, tuple(int(i) for i in worst))
