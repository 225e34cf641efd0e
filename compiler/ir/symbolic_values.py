"""Symbolic shape values: the elements of small integer tensors, as dims, where they are known.

A model exported with dynamic axes computes its Reshape targets at run time from the input
shapes: ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``. Constant folding cannot collapse
such a chain (the shape is not constant), yet its elements are known symbolically: ``Shape(x)``
of an ``f32[batch,seq,32]`` is ``(batch, seq, 32)``. This side analysis follows such values
through the ops that shape computations use, so a type rule can read ``(batch, seq, 4, -1)`` as
a Reshape target (``InferContext.dims_value``) and keep the symbols in its output type.

A *dims value* is the flat tuple of a tensor's elements (one entry for a scalar), each an int, a
symbolic polynomial, or ``UNKNOWN`` for an element known only at run time. Only tensors of rank
0 or 1 with at most ``MAX_ELEMENTS`` integral elements are followed. Integer and floating
tensors alike (a shape is sometimes cast to float and back), elements always being integers:
an op whose result might not be integral (an inexact Div) gives ``UNKNOWN`` elements. Booleans
are 0 and 1, for the ``Where(Equal(shape, -1), 1, shape)`` that torch's tracing exporter puts
before an Expand.

    >>> propagate(Op.SHAPE, {"start": 0}, [TensorType(DType.F32, ("b", "s", 32))], [None],
    ...           [TensorType(DType.I64, (3,))])
    [('b', 's', 32)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import symbolic
from .op import Op
from .types import UNKNOWN, Dim, DType, TensorType

DimsValue = tuple[Dim, ...]
# Shape vectors are short; a longer integer tensor is data, not worth following.
MAX_ELEMENTS = 64
_CAST_TARGETS = frozenset({DType.I32, DType.I64, DType.F32, DType.F64})


def dims_of_array(data: np.ndarray) -> DimsValue | None:
    """The dims value of a constant: its elements when they are all integers, else None."""
    data = np.asarray(data)
    if data.ndim > 1 or data.dtype.kind not in "iufb":
        return None
    flat = data.reshape(-1)
    if data.dtype.kind == "f" and not np.all(np.isfinite(flat) & (flat == np.floor(flat))):
        return None
    return tuple(int(v) for v in flat)


def followed(type_: TensorType) -> bool:
    """True when the analysis keeps a dims value for a tensor of this type."""
    numel = type_.numel
    return (type_.rank <= 1 and numel is not None and numel <= MAX_ELEMENTS
            and (type_.dtype.is_int or type_.dtype.is_float or type_.dtype is DType.BOOL))


def propagate(
    op: Op,
    attrs: Mapping[str, Any],
    inputs: Sequence[TensorType | None],
    values: Sequence[DimsValue | None],
    outputs: Sequence[TensorType | None],
) -> list[DimsValue | None]:
    """The dims values of a node's outputs from its inputs' types and dims values (None where
    unknown). ``values`` holds the inputs' dims values, constants included."""
    result: list[DimsValue | None] = [None] * len(outputs)
    rule = _RULES.get(op)
    out = outputs[0] if outputs else None
    if rule is None or out is None or not followed(out):
        return result
    found = rule(_Node(attrs, list(inputs), list(values), out))
    if found is not None and len(found) == out.numel:
        result[0] = tuple(found)
    return result


class _Node:
    """What a value rule sees: attributes, input types and dims values, the output type."""

    def __init__(self, attrs: Mapping[str, Any], inputs: list[TensorType | None],
                 values: list[DimsValue | None], out: TensorType) -> None:
        self.attrs, self.inputs, self.values, self.out = attrs, inputs, values, out

    def value(self, index: int) -> DimsValue | None:
        return self.values[index] if index < len(self.values) else None

    def ints(self, index: int) -> list[int] | None:
        found = self.value(index)
        if found is None or not all(isinstance(d, int) for d in found):
            return None
        return [int(d) for d in found]

    def present(self, index: int) -> bool:
        return index < len(self.inputs) and self.inputs[index] is not None


_Rule = Callable[[_Node], Sequence[Dim] | None]
_RULES: dict[Op, _Rule] = {}


def _rule(*ops: Op) -> Callable[[_Rule], _Rule]:
    def register(rule: _Rule) -> _Rule:
        for op in ops:
            _RULES[op] = rule
        return rule
    return register


@_rule(Op.SHAPE)
def _shape(node: _Node) -> Sequence[Dim] | None:
    # The rules import the schema, which imports this module: their helpers load late.
    from .rules.movement import shape_bounds

    x = node.inputs[0]
    assert x is not None
    start, end = shape_bounds(node.attrs.get("start", 0), node.attrs.get("end"), x.rank)
    return x.shape[start:end]


@_rule(Op.SIZE)
def _size(node: _Node) -> Sequence[Dim] | None:
    x = node.inputs[0]
    assert x is not None
    return (symbolic.product(x.shape),)


@_rule(Op.IDENTITY, Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE, Op.FLATTEN, Op.FLOOR, Op.CEIL,
       Op.ROUND)
def _same_elements(node: _Node) -> Sequence[Dim] | None:
    # Row-major order is unchanged by a view, and integers are their own floor/ceil/round.
    return node.value(0)


@_rule(Op.CAST)
def _cast(node: _Node) -> Sequence[Dim] | None:
    return node.value(0) if node.out.dtype in _CAST_TARGETS else None


@_rule(Op.GATHER)
def _gather(node: _Node) -> Sequence[Dim] | None:
    data, indices = node.value(0), node.ints(1)
    if data is None or indices is None or node.attrs.get("axis", 0) not in (0, -1):
        return None
    n = len(data)
    if node.inputs[0] is None or node.inputs[0].rank != 1 or any(not -n <= i < n for i in indices):
        return None
    return [data[i] for i in indices]


@_rule(Op.CONCAT)
def _concat(node: _Node) -> Sequence[Dim] | None:
    parts = [node.value(i) for i in range(len(node.inputs))]
    if node.out.rank != 1 or any(p is None for p in parts):
        return None
    return [d for p in parts if p is not None for d in p]


@_rule(Op.SLICE)
def _slice(node: _Node) -> Sequence[Dim] | None:
    from .rules.movement import slice_bounds

    data = node.value(0)
    starts, ends = node.ints(1), node.ints(2)
    axes = node.ints(3) if node.present(3) else [0]
    steps = node.ints(4) if node.present(4) else [1]
    if (data is None or starts is None or ends is None or axes not in ([0], [-1])
            or steps is None or len(starts) != 1 or len(ends) != 1 or len(steps) != 1
            or steps[0] == 0):
        return None
    start, _, length = slice_bounds(starts[0], ends[0], steps[0], len(data))
    return [data[start + k * steps[0]] for k in range(length)]


def _elementwise(combine: Callable[..., Dim]) -> _Rule:
    # Operands of rank <= 1 broadcast only as a single element against n elements.
    def rule(node: _Node) -> Sequence[Dim] | None:
        operands = [node.value(i) for i in range(len(node.inputs))]
        n = node.out.numel
        if n is None or any(v is None or len(v) not in (1, n) for v in operands):
            return None
        return [combine(*(v[i % len(v)] for v in operands if v is not None)) for i in range(n)]
    return rule


def _exact_div(a: Dim, b: Dim) -> Dim:
    # Exact division is both the floor (integers) and the true quotient (floats).
    return symbolic.floordiv(a, b)


def _bound(pick: Callable[[int, int], int], larger: bool) -> Callable[[Dim, Dim], Dim]:
    def combine(a: Dim, b: Dim) -> Dim:
        if isinstance(a, int) and isinstance(b, int):
            return pick(a, b)
        if a == b:
            return a
        a_wins = symbolic.provably_nonnegative(symbolic.sub(a, b))
        b_wins = symbolic.provably_nonnegative(symbolic.sub(b, a))
        if a_wins or b_wins:
            return a if a_wins == larger else b
        return UNKNOWN
    return combine


def _equal(a: Dim, b: Dim) -> Dim:
    if a == b and a != UNKNOWN:
        return 1
    difference = symbolic.sub(a, b)
    if isinstance(difference, int):
        return int(difference == 0)
    # Never equal when the difference is provably >= 1 or <= -1 (symbols are at least 1).
    apart = (symbolic.provably_nonnegative(symbolic.sub(difference, 1))
             or symbolic.provably_nonnegative(symbolic.sub(-1, difference)))
    return 0 if apart else UNKNOWN


def _where(condition: Dim, a: Dim, b: Dim) -> Dim:
    if not isinstance(condition, int):
        return UNKNOWN
    return a if condition else b


_RULES[Op.EQUAL] = _elementwise(_equal)
_RULES[Op.WHERE] = _elementwise(_where)
_RULES[Op.ADD] = _elementwise(symbolic.add)
_RULES[Op.SUB] = _elementwise(symbolic.sub)
_RULES[Op.MUL] = _elementwise(symbolic.mul)
_RULES[Op.DIV] = _elementwise(_exact_div)
_RULES[Op.MAX] = _elementwise(_bound(max, larger=True))
_RULES[Op.MIN] = _elementwise(_bound(min, larger=False))


@_rule(Op.NEG)
def _neg(node: _Node) -> Sequence[Dim] | None:
    found = node.value(0)
    return None if found is None else [symbolic.mul(d, -1) for d in found]


def _reduction(combine: Callable[[Sequence[Dim]], Dim]) -> _Rule:
    # A whole 1-D vector reduced (torch's numel of a shape): its product or sum.
    def rule(node: _Node) -> Sequence[Dim] | None:
        data = node.value(0)
        axes = node.ints(1) if node.present(1) else []
        if data is None or axes not in ([], [0], [-1]) or node.out.numel != 1:
            return None
        if not axes and node.attrs.get("noop_with_empty_axes", 0):
            return None
        return (combine(data),)
    return rule


_RULES[Op.REDUCE_PROD] = _reduction(symbolic.product)
_RULES[Op.REDUCE_SUM] = _reduction(symbolic.total)


def graph_dims_values(
    nodes: Sequence[Any], known: Mapping[str, DimsValue] | None = None
) -> dict[str, DimsValue]:
    """The dims values of the values defined by ``nodes`` (a graph's nodes, in order), for
    code that types nodes outside a ``GraphBuilder`` (a rewrite, the verifier): value name ->
    dims value, starting from ``known`` (the enclosing graph's)."""
    found = dict(known or {})
    for node in nodes:
        if node.op is Op.CONSTANT:
            out, data = node.outputs[0], node.attrs["value"]
            value = dims_of_array(data) if isinstance(data, np.ndarray) else None
            if out is not None and value is not None and followed(out.type):
                found[out.name] = value
            continue
        values = [None if v is None else found.get(v.name) for v in node.inputs]
        outs = propagate(node.op, node.attrs, [None if v is None else v.type for v in node.inputs],
                         values, [None if v is None else v.type for v in node.outputs])
        for out, value in zip(node.outputs, outs, strict=True):
            if out is not None and value is not None:
                found[out.name] = value
    return found
