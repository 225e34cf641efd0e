"""Algebraic simplification (a pass, Graph -> Graph): the rule list ``RULES``, driven to a
fixpoint by ``rewrite.apply_rules``.

Pre: a valid graph. Post: no rule of ``RULES`` applies; every rewrite kept each value's type
and its numbers (each rule states why it is exact; the only difference any rule makes is
``x + 0 -> x`` giving -0.0 where the Add gave +0.0, the usual license compilers take).

    before: %t = transpose(%x) {perm=[1,0]} : f32[3,2]
            %u = transpose(%t) {perm=[1,0]} : f32[2,3]
            %y = mul(%u, %one) : f32[2,3]          (%one: a constant of ones)
    after:  (uses of %y read %x)
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.types import UNKNOWN, DType
from .rewrite import Replacement, Rewriter, Rule, apply_rules, rule


def simplify(graph: Graph, fired: Counter[str] | None = None) -> Graph:
    """``graph`` with ``RULES`` applied to a fixpoint; the same object when none applies.
    ``fired`` counts applications per rule name."""
    return apply_rules(graph, RULES, fired)


def _same_type(node: Node, value: Value | None) -> Replacement:
    """``[value]`` when it can stand for the node's single output (same type, fully known)."""
    out = node.outputs[0]
    if value is None or out is None or value.type != out.type or UNKNOWN in out.type.shape:
        return None
    return [value]


def _all_equal(data: np.ndarray | None, number: float) -> bool:
    return data is not None and data.size > 0 and bool(np.all(data == number))


_RESHAPES = (Op.RESHAPE, Op.FLATTEN, Op.SQUEEZE, Op.UNSQUEEZE)
_VARIADIC = (Op.SUM, Op.MAX, Op.MIN, Op.MEAN)


@rule("noop_by_type", Op.IDENTITY, *_RESHAPES, Op.EXPAND, Op.TILE, Op.CAST,
      Op.CONCAT, *_VARIADIC)
def _noop_by_type(rw: Rewriter, node: Node) -> Replacement:
    """An op that keeps its operand's type is a no-op: a reshape/expand/tile to the same shape,
    a cast to the same type, a Concat whose other operands are empty along the axis, a
    one-operand Sum/Max/Min/Mean, an Identity."""
    if node.op in _VARIADIC and len(node.inputs) != 1:
        return None
    return _same_type(node, node.inputs[0])


@rule("dropout_inference", Op.DROPOUT)
def _dropout(rw: Rewriter, node: Node) -> Replacement:
    """Dropout outside training passes its input through (when its mask is unused)."""
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is not None and not _all_equal(rw.const(training), 0):
        return None
    return [node.inputs[0], None][: len(node.outputs)]


@rule("reshape_chain", *_RESHAPES)
def _reshape_chain(rw: Rewriter, node: Node) -> Replacement:
    """A reshape of a reshape (Reshape/Flatten/Squeeze/Unsqueeze) is one Reshape of the
    source to the final static shape: both only reinterpret the same row-major elements."""
    inner = rw.producer(node.inputs[0])
    out = node.outputs[0]
    if inner is None or inner.op not in _RESHAPES or out is None or not out.type.is_static:
        return None
    shape = np.array(out.type.shape, dtype=np.int64)
    attrs = {"allowzero": 1} if 0 in out.type.shape else {}
    return rw.emit(Op.RESHAPE, [inner.inputs[0], rw.constant(shape)], attrs, name=node.name)


def _perm(node: Node) -> tuple[int, ...]:
    rank = node.outputs[0].type.rank  # type: ignore[union-attr]
    perm = node.attrs.get("perm")
    return tuple(reversed(range(rank))) if perm is None else tuple(p % rank for p in perm)


@rule("transpose_identity", Op.TRANSPOSE)
def _transpose_identity(rw: Rewriter, node: Node) -> Replacement:
    """A transpose by the identity permutation moves nothing."""
    return [node.inputs[0]] if _perm(node) == tuple(range(len(_perm(node)))) else None


@rule("transpose_pair", Op.TRANSPOSE)
def _transpose_pair(rw: Rewriter, node: Node) -> Replacement:
    """transpose(transpose(x, p1), p2) = transpose(x, p1[p2]): compose (cancel when that is
    the identity)."""
    inner = rw.producer(node.inputs[0])
    if inner is None or inner.op is not Op.TRANSPOSE:
        return None
    first, second = _perm(inner), _perm(node)
    composed = tuple(first[p] for p in second)
    if composed == tuple(range(len(composed))):
        return [inner.inputs[0]]
    return rw.emit(Op.TRANSPOSE, [inner.inputs[0]], {"perm": composed}, name=node.name)


_MANTISSA_BITS = {DType.F16: 11, DType.BF16: 8, DType.F32: 24, DType.F64: 53}
_FLOAT_WIDENING = {DType.F16: {DType.F32, DType.F64}, DType.BF16: {DType.F32, DType.F64},
                   DType.F32: {DType.F64}}


def holds_exactly(source: DType, target: DType) -> bool:
    """True when every value of ``source`` converts to ``target`` without change."""
    if source is target or source is DType.BOOL:
        return True
    if target is DType.BOOL:
        return False
    if source.is_float:
        return target in _FLOAT_WIDENING.get(source, set())
    bits = source.itemsize * 8 - (1 if source.is_signed else 0)  # magnitude bits
    if target.is_float:
        return _MANTISSA_BITS[target] >= bits
    if source.is_signed and not target.is_signed:
        return False
    return target.itemsize * 8 - (1 if target.is_signed else 0) >= bits


@rule("cast_chain", Op.CAST)
def _cast_chain(rw: Rewriter, node: Node) -> Replacement:
    """cast(cast(x, t1), t2) = cast(x, t2) when t1 holds every value of x exactly (the
    value reaching the second cast is x's own), and = x when t2 is x's type."""
    inner = rw.producer(node.inputs[0])
    if inner is None or inner.op is not Op.CAST:
        return None
    source = inner.inputs[0]
    assert source is not None and node.inputs[0] is not None
    if not holds_exactly(source.type.dtype, node.inputs[0].type.dtype):
        return None
    if node.attrs["to"] is source.type.dtype:
        return [source]
    return rw.emit(Op.CAST, [source], node.attrs, name=node.name)


# op -> (neutral element, operand positions it may take): x+0, 0+x, x-0, x*1, 1*x, x/1, x**1
_NEUTRAL = {Op.ADD: (0, (0, 1)), Op.MUL: (1, (0, 1)), Op.SUB: (0, (1,)), Op.DIV: (1, (1,)),
            Op.POW: (1, (1,))}


@rule("neutral_operand", *_NEUTRAL)
def _neutral_operand(rw: Rewriter, node: Node) -> Replacement:
    """x+0, 0+x, x-0, x*1, 1*x, x/1 and x**1 are x (when the constant does not broadcast x
    to a bigger shape)."""
    neutral, positions = _NEUTRAL[node.op]
    for position in positions:
        if _all_equal(rw.const(node.inputs[position]), neutral):
            found = _same_type(node, node.inputs[1 - position])
            if found is not None:
                return found
    return None


@rule("involution", Op.NEG, Op.NOT)
def _involution(rw: Rewriter, node: Node) -> Replacement:
    """neg(neg(x)) = x and not(not(x)) = x (two's complement negation wraps back too)."""
    inner = rw.producer(node.inputs[0])
    return [inner.inputs[0]] if inner is not None and inner.op is node.op else None


@rule("idempotent", Op.RELU, Op.ABS, Op.FLOOR, Op.CEIL, Op.ROUND, Op.SIGN)
def _idempotent(rw: Rewriter, node: Node) -> Replacement:
    """f(f(x)) = f(x) for relu, abs, floor, ceil, round and sign."""
    inner = rw.producer(node.inputs[0])
    return [inner.outputs[0]] if inner is not None and inner.op is node.op else None


_BROADCASTING = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MOD, Op.AND, Op.OR, Op.XOR,
                 Op.EQUAL, Op.GREATER, Op.GREATER_OR_EQUAL, Op.LESS, Op.LESS_OR_EQUAL,
                 Op.MAX, Op.MIN, Op.SUM, Op.MEAN, Op.WHERE, Op.BIT_SHIFT, Op.BITWISE_AND,
                 Op.BITWISE_OR, Op.BITWISE_XOR)


@rule("expand_into_broadcast", *_BROADCASTING)
def _expand_into_broadcast(rw: Rewriter, node: Node) -> Replacement:
    """An Expand feeding a broadcasting elementwise op is redundant when the op's result keeps
    its shape without it: the op broadcasts the unexpanded operand to the same elements."""
    for index, operand in enumerate(node.inputs):
        producer = rw.producer(operand)
        if producer is None or producer.op is not Op.EXPAND:
            continue
        inputs = list(node.inputs)
        inputs[index] = producer.inputs[0]
        new = rw.emit(node.op, inputs, node.attrs, name=node.name)
        if new[0].type == node.outputs[0].type:  # type: ignore[union-attr]
            return new
    return None


@rule("pad_zero", Op.PAD)
def _pad_zero(rw: Rewriter, node: Node) -> Replacement:
    """A Pad by all-zero pads (any mode) copies its input."""
    pads = rw.const(node.inputs[1])
    if pads is None or np.any(pads != 0):
        return None
    return _same_type(node, node.inputs[0])


@rule("where_constant_condition", Op.WHERE)
def _where_constant(rw: Rewriter, node: Node) -> Replacement:
    """where(true, x, y) = x and where(false, x, y) = y (when that operand has the shape)."""
    condition = rw.const(node.inputs[0])
    if condition is None or condition.size == 0:
        return None
    if bool(np.all(condition)):
        return _same_type(node, node.inputs[1])
    if not bool(np.any(condition)):
        return _same_type(node, node.inputs[2])
    return None


RULES: tuple[Rule, ...] = (
    _noop_by_type, _dropout, _reshape_chain, _transpose_identity, _transpose_pair, _cast_chain,
    _neutral_operand, _involution, _idempotent, _expand_into_broadcast, _pad_zero,
    _where_constant,
)
