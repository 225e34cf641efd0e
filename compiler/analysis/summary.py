"""A model summary: op counts, parameters, estimated FLOPs, and the graph's inputs and outputs.

``summarize(graph)`` walks every node (subgraph bodies of If/Loop/Scan included, each counted
once, since trip counts are data) and returns a :class:`ModelSummary`; ``format_summary`` renders
it for ``kiln inspect``.

Conventions of the FLOP estimate (an estimate for comparing models, not a cycle count):

* a multiply-add counts 2 FLOPs: Conv is ``2 * out_elements * (C_in / group) * prod(kernel)``,
  MatMul ``2 * out_elements * K``, Gemm ``2 * M * N * K`` (plus ``M * N`` for the bias);
* recurrent layers count their gate matmuls, ``2 * seq * batch * dirs * gates * H * (I + H)``;
* elementwise ops count one FLOP per output element, reductions one per input element, pooling
  one per window element read, normalizations a few per element (see ``_PER_ELEMENT``);
* data movement (reshape, transpose, gather, concat...) and shape ops count zero;
* symbolic dimensions are taken as 1 unless bound through ``dims`` (the summary lists which were
  assumed), and a node whose shapes stay unknown (data-dependent ``?`` dims) is counted in
  ``unknown_flop_nodes`` instead of guessed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node, Value
from ..ir.op import Group, Op
from ..ir.schema import op_def
from ..ir.types import Dim, TensorType


@dataclass(frozen=True)
class ModelSummary:
    """What ``kiln inspect`` reports about a graph."""

    name: str
    inputs: tuple[tuple[str, TensorType], ...]
    outputs: tuple[tuple[str, TensorType], ...]
    op_counts: dict[str, int]  # op spelling -> node count, most frequent first
    node_count: int
    parameter_count: int  # elements of all constant tensors
    parameter_bytes: int
    flops_by_kind: dict[str, int]  # kind (conv, matmul, elementwise...) -> estimated FLOPs
    unknown_flop_nodes: int = 0
    assumed_dims: dict[str, int] = field(default_factory=dict)  # symbol -> extent used

    @property
    def total_flops(self) -> int:
        return sum(self.flops_by_kind.values())


def summarize(graph: Graph, dims: Mapping[str, int] | None = None) -> ModelSummary:
    """Summarize ``graph``; ``dims`` binds symbolic dimensions for the FLOP estimate."""
    bound = dict(dims or {})
    assumed: dict[str, int] = {}

    def extent(dim: Dim) -> int | None:
        if isinstance(dim, int):
            return dim
        if dim in bound:
            return bound[dim]
        if dim == "?":
            return None
        assumed[dim] = 1
        return 1

    counts: Counter[str] = Counter()
    flops: Counter[str] = Counter()
    unknown = 0
    param_count = param_bytes = 0
    nodes = 0
    for node in graph.walk():
        nodes += 1
        counts[node.op.value] += 1
        if node.op is Op.CONSTANT:
            # an ndarray, or an ElidedTensor (from parsed text) whose DType has an itemsize too
            data = node.attrs["value"]
            size = math.prod(data.shape)
            param_count += size
            param_bytes += size * data.dtype.itemsize
            continue
        estimate = _estimate(node, extent)
        if estimate is None:
            unknown += 1
        elif estimate[1] > 0:
            flops[estimate[0]] += estimate[1]
    return ModelSummary(
        name=graph.name,
        inputs=tuple((v.name, v.type) for v in graph.inputs),
        outputs=tuple((v.name, v.type) for v in graph.outputs),
        op_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        node_count=nodes,
        parameter_count=param_count,
        parameter_bytes=param_bytes,
        flops_by_kind=dict(sorted(flops.items(), key=lambda kv: (-kv[1], kv[0]))),
        unknown_flop_nodes=unknown,
        assumed_dims=dict(sorted(assumed.items())),
    )


Extent = Callable[[Dim], "int | None"]


class _UnknownShapeError(Exception):
    """A shape the estimate needs is data-dependent."""


def _estimate(node: Node, extent: Extent) -> tuple[str, int] | None:
    """(kind, FLOPs) of one node, or None when a needed extent is unknown."""
    try:
        shapes = _Shapes(node, extent)
        rule = _RULES.get(node.op)
        if rule is not None:
            return rule(shapes)
        group = _group(node.op)
        if group is Group.ELEMENTWISE:
            return "elementwise", shapes.out_numel()
        if group is Group.REDUCE:
            return "reduction", shapes.in_numel(0)
        if group is Group.NORM:
            return "normalization", _DEFAULT_NORM_COST * shapes.in_numel(0)
        return "other", 0
    except _UnknownShapeError:
        return None


def _group(op: Op) -> Group:
    try:
        return op_def(op).group
    except KeyError:
        return Group.MISC


class _Shapes:
    """Concrete extents of a node's operand shapes (symbols bound or assumed)."""

    def __init__(self, node: Node, extent: Extent) -> None:
        self.node = node
        self.extent = extent

    def _dims(self, value: Value | None) -> list[int]:
        if value is None:
            raise _UnknownShapeError
        found = [self.extent(d) for d in value.type.shape]
        if any(d is None for d in found):
            raise _UnknownShapeError
        return [int(d) for d in found if d is not None]

    def input(self, index: int) -> list[int]:
        if index >= len(self.node.inputs):
            raise _UnknownShapeError
        return self._dims(self.node.inputs[index])

    def has_input(self, index: int) -> bool:
        return index < len(self.node.inputs) and self.node.inputs[index] is not None

    def output(self, index: int = 0) -> list[int]:
        return self._dims(self.node.outputs[index])

    def in_numel(self, index: int) -> int:
        return math.prod(self.input(index))

    def out_numel(self, index: int = 0) -> int:
        return math.prod(self.output(index))

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)


def _conv(s: _Shapes) -> tuple[str, int]:
    weight = s.input(1)  # [C_out, C_in / group, k...]
    flops = 2 * s.out_numel() * math.prod(weight[1:])
    if s.has_input(2):
        flops += s.out_numel()
    return "conv", flops


def _conv_transpose(s: _Shapes) -> tuple[str, int]:
    weight = s.input(1)  # [C_in, C_out / group, k...]: every input element feeds a window
    flops = 2 * s.in_numel(0) * math.prod(weight[1:])
    if s.has_input(2):
        flops += s.out_numel()
    return "conv", flops


def _matmul(s: _Shapes) -> tuple[str, int]:
    a = s.input(0)
    return "matmul", 2 * s.out_numel() * (a[-1] if a else 1)


def _gemm(s: _Shapes) -> tuple[str, int]:
    a = s.input(0)
    k = a[0] if s.attr("transA", 0) else a[1]
    flops = 2 * s.out_numel() * k
    if s.has_input(2):
        flops += s.out_numel()
    return "matmul", flops


def _einsum(s: _Shapes) -> tuple[str, int]:
    """2 FLOPs per point of the iteration space spanned by every index letter."""
    equation = str(s.attr("equation", "")).replace(" ", "")
    operands = equation.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    broadcast = 1
    for index, term in enumerate(operands):
        dims = s.input(index)
        letters = term.replace("...", "")
        if "..." in term:
            before = term.index("...")
            span = len(dims) - len(letters)
            broadcast = max(broadcast, math.prod(dims[before : before + span]))
            dims = dims[:before] + dims[before + span :]
        for letter, dim in zip(letters, dims, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), dim)
    return "matmul", 2 * broadcast * math.prod(sizes.values())


def _recurrent(gates: int) -> Callable[[_Shapes], tuple[str, int]]:
    def estimate(s: _Shapes) -> tuple[str, int]:
        x = s.input(0)
        w = s.input(1)  # [dirs, gates * H, I]
        seq, batch = (x[1], x[0]) if s.attr("layout", 0) else (x[0], x[1])
        hidden = w[1] // gates
        return "recurrent", 2 * seq * batch * w[0] * gates * hidden * (w[2] + hidden)

    return estimate


def _attention(s: _Shapes) -> tuple[str, int]:
    """Scores Q.K^T and the weighted sum with V: 2 FLOPs per (query element, key) pair each."""
    keys = s.input(1)[-2]
    return "attention", 2 * keys * (s.in_numel(0) + s.out_numel())


def _pool(s: _Shapes) -> tuple[str, int]:
    kernel = s.attr("kernel_shape", ()) or ()
    return "pooling", s.out_numel() * math.prod(kernel)


def _global_pool(s: _Shapes) -> tuple[str, int]:
    return "pooling", s.in_numel(0)


def _softmax(s: _Shapes) -> tuple[str, int]:
    return "softmax", _PER_ELEMENT[s.node.op] * s.in_numel(0)


def _normalization(s: _Shapes) -> tuple[str, int]:
    return "normalization", _PER_ELEMENT[s.node.op] * s.in_numel(0)


# FLOPs per input element of ops whose cost is a small multiple of their size: inference-time
# batch norm is a scale and a shift; the others also compute a mean and a variance.
_PER_ELEMENT: dict[Op, int] = {
    Op.BATCH_NORMALIZATION: 2,
    Op.LAYER_NORMALIZATION: 5,
    Op.GROUP_NORMALIZATION: 5,
    Op.INSTANCE_NORMALIZATION: 5,
    Op.RMS_NORMALIZATION: 4,
    Op.MEAN_VARIANCE_NORMALIZATION: 5,
    Op.LP_NORMALIZATION: 3,
    Op.LRN: 5,
    Op.SOFTMAX: 4,
    Op.LOG_SOFTMAX: 4,
    Op.HARDMAX: 1,
}

_DEFAULT_NORM_COST = 5

_RULES: dict[Op, Callable[[_Shapes], tuple[str, int]]] = {
    Op.CONV: _conv,
    Op.CONV_INTEGER: _conv,
    Op.QLINEAR_CONV: lambda s: ("conv", 2 * s.out_numel() * math.prod(s.input(3)[1:])),
    Op.DEFORM_CONV: _conv,
    Op.CONV_TRANSPOSE: _conv_transpose,
    # blocked weights [OC/b, IC/b, KH, KW, b_ic, b_oc]: one output lane sums IC/b*KH*KW*b_ic terms
    Op.CONV_NCHWC: lambda s: ("conv", 2 * s.out_numel() * math.prod(s.input(1)[1:5])),
    Op.MATMUL: _matmul,
    Op.MATMUL_INTEGER: _matmul,
    Op.QLINEAR_MATMUL: lambda s: ("matmul", 2 * s.out_numel() * s.input(0)[-1]),
    Op.GEMM: _gemm,
    Op.EINSUM: _einsum,
    Op.LSTM: _recurrent(4),
    Op.GRU: _recurrent(3),
    Op.RNN: _recurrent(1),
    Op.ATTENTION: _attention,
    Op.MAX_POOL: _pool,
    Op.AVERAGE_POOL: _pool,
    Op.LP_POOL: _pool,
    Op.GLOBAL_AVERAGE_POOL: _global_pool,
    Op.GLOBAL_MAX_POOL: _global_pool,
    Op.GLOBAL_LP_POOL: _global_pool,
    Op.SOFTMAX: _softmax,
    Op.LOG_SOFTMAX: _softmax,
    Op.HARDMAX: _softmax,
    Op.BATCH_NORMALIZATION: _normalization,
    Op.LAYER_NORMALIZATION: _normalization,
    Op.GROUP_NORMALIZATION: _normalization,
    Op.INSTANCE_NORMALIZATION: _normalization,
    Op.RMS_NORMALIZATION: _normalization,
    Op.MEAN_VARIANCE_NORMALIZATION: _normalization,
    Op.LP_NORMALIZATION: _normalization,
    Op.LRN: _normalization,
}


def _count(n: int, unit: str = "") -> str:
    """``1.23 M`` style, with the exact figure alongside for anything above a thousand."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}{unit} ({n:,})"
    return f"{n} {unit}".rstrip()


def _bytes(n: int) -> str:
    for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix} ({n:,} bytes)"
    return f"{n} bytes"


def format_summary(summary: ModelSummary) -> str:
    """The summary as aligned text, one fact per line."""
    lines = [f"graph {summary.name}"]
    for title, values in (("inputs", summary.inputs), ("outputs", summary.outputs)):
        lines.append(f"{title}:")
        width = max((len(name) for name, _ in values), default=0)
        lines.extend(f"  {name:<{width}}  {type_}" for name, type_ in values)
    lines.append(f"nodes: {summary.node_count}")
    lines.append("op counts:")
    width = max((len(op) for op in summary.op_counts), default=0)
    lines.extend(f"  {op:<{width}}  {count}" for op, count in summary.op_counts.items())
    lines.append(
        f"parameters: {_count(summary.parameter_count)} in constants, "
        f"{_bytes(summary.parameter_bytes)}"
    )
    lines.append(f"estimated FLOPs: {_count(summary.total_flops)}")
    width = max((len(kind) for kind in summary.flops_by_kind), default=0)
    lines.extend(f"  {kind:<{width}}  {_count(n)}" for kind, n in summary.flops_by_kind.items())
    if summary.assumed_dims:
        assumed = ", ".join(f"{k}={v}" for k, v in summary.assumed_dims.items())
        lines.append(f"  (symbolic dimensions taken as: {assumed})")
    if summary.unknown_flop_nodes:
        lines.append(
            f"  ({summary.unknown_flop_nodes} nodes with data-dependent shapes not counted)"
        )
    return "\n".join(lines)
