"""Algebraic simplification (a pass, Graph -> Graph): the rule list ``RULES``, driven to a
fixpoint by ``rewrite.apply_rules``.

Pre: a valid graph. Post: no rule of ``RULES`` applies; every rewrite kept each value's type
and its numbers (each rule states why it is exact; the only difference any rule makes is
``x + 0 -> x`` giving -0.0 where the Add gave +0.0, the usual license compilers take).

    before: %t = transpose(%x) {perm=[1,0]} : f32[3,2]
            %u = transpose(%t) {perm=[1,0]} : f32[2,3]
            %y = mul(%u, %one) : f32[2,3]          (%one: a constant of ones)
    after:  (uses of %y read %x)

``absorb_moves`` is a pass of two more rules (``MOVE_RULES``), which make the element moves
exporters put around ops (tf2onnx's Transposes from TensorFlow's NHWC and batch-major tensors)
part of the op, run after layout selection: ``moves_into_weights`` (kept out of ``RULES``: it
reorders a sum) turns the moves (Transposes, Reshapes, transforms out of a blocked layout)
between a tensor and a Flatten + MatMul/Gemm with constant weights into a permutation of the
weights' rows; ``batch_major_rnn`` runs an RNN/GRU/LSTM fed and read through batch <-> time
Transposes in its batch-major layout.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.rules.layout import PLAIN
from ..ir.types import UNKNOWN, DType
from ..reference.kernels.layout import from_blocked
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


def _reshape_to(rw: Rewriter, source: Value, node: Node) -> Replacement:
    """A Reshape of ``source`` to the type of ``node``'s output, or None when no constant
    shape gives it: a static type is its own shape; a symbolic dim is written 0 (copy the
    source's extent) where the source has the same dim at that axis, else -1 (what is left),
    at most once, and then no extent may be 0 (allowzero would be needed for it, and would
    take the 0s literally)."""
    out = node.outputs[0]
    if out is None:
        return None
    if out.type.is_static:
        attrs = {"allowzero": 1} if 0 in out.type.shape else {}
        shape = np.array(out.type.shape, dtype=np.int64)
        return rw.emit(Op.RESHAPE, [source, rw.constant(shape)], attrs, name=node.name)
    if UNKNOWN in out.type.shape or 0 in out.type.shape:
        return None
    entries = [d if isinstance(d, int) else 0 if i < source.type.rank
               and source.type.shape[i] == d else -1 for i, d in enumerate(out.type.shape)]
    if entries.count(-1) > 1:
        return None
    return rw.emit(Op.RESHAPE, [source, rw.constant(np.array(entries, np.int64))],
                   name=node.name)


@rule("reshape_chain", *_RESHAPES)
def _reshape_chain(rw: Rewriter, node: Node) -> Replacement:
    """A reshape of a reshape (Reshape/Flatten/Squeeze/Unsqueeze) is one Reshape of the
    source to the final shape: both only reinterpret the same row-major elements."""
    inner = rw.producer(node.inputs[0])
    if inner is None or inner.op not in _RESHAPES or inner.inputs[0] is None:
        return None
    return _reshape_to(rw, inner.inputs[0], node)


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


@rule("transpose_as_reshape", Op.TRANSPOSE)
def _transpose_as_reshape(rw: Rewriter, node: Node) -> Replacement:
    """A transpose that keeps the order of the dims longer than 1 moves no element (NHWC ->
    NCHW of a one-channel image, for one): a Reshape, which only renames the shape."""
    source = node.inputs[0]
    if source is None or UNKNOWN in source.type.shape:
        return None
    perm = _perm(node)
    # A symbolic dim counts as long: were it 1 at run time, the order would hold all the more.
    long = [p for p in perm if source.type.shape[p] != 1]
    if long != sorted(long) or perm == tuple(range(len(perm))):
        return None
    return _reshape_to(rw, source, node)


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


# Ops that only move elements: each output element is one input element (a LayoutTransform to
# NCHW drops the zero padded channels). ``_moved_indices`` replays them on element indices.
_MOVES = (*_RESHAPES, Op.TRANSPOSE, Op.LAYOUT_TRANSFORM)


def _moved_indices(chain: list[Node], indices: np.ndarray) -> np.ndarray:
    """``indices`` (an array shaped like the chain's source) moved by each node of ``chain``
    in turn: the result holds, per element of the chain's end, the source element it is. A
    symbolic first dim (a batch) stands for the first extent of ``indices``."""
    for node in chain:
        out = node.outputs[0]
        assert out is not None
        if node.op is Op.TRANSPOSE:
            indices = np.transpose(indices, _perm(node))
        elif node.op is Op.LAYOUT_TRANSFORM:
            indices = from_blocked(indices, int(node.attrs.get("channels") or 0))
        else:
            shape = [int(d) if isinstance(d, int) else len(indices) for d in out.type.shape]
            indices = indices.reshape(shape)
    return indices


def _batch_major(chain: list[Node], source: Value, rows: str) -> bool:
    """Whether every value of ``chain`` (from ``source``) has the symbolic ``rows`` as its
    first dim, static others, and no Transpose moves that first axis: each row is then moved
    within itself, the same way for every row, so one row shows how."""
    values = [source, *(n.outputs[0] for n in chain)]
    return all(v is not None and v.type.rank >= 1 and v.type.shape[0] == rows
               and all(isinstance(d, int) for d in v.type.shape[1:]) for v in values) \
        and all(_perm(n)[0] == 0 for n in chain if n.op is Op.TRANSPOSE)


@rule("moves_into_weights", Op.MATMUL, Op.GEMM)
def _moves_into_weights(rw: Rewriter, node: Node) -> Replacement:
    """flatten(moves(x)) @ W = reshape(x, [N, -1]) @ W' with W' the rows of the constant W
    permuted (zero rows for elements the moves drop): a Transpose to NHWC, or a transform out
    of a blocked layout, before a Flatten and a Dense/Gemm costs nothing but the weights'
    order. The moves must keep each batch row's elements in that row; a symbolic batch must
    be the first axis throughout (``_batch_major``). Not bit-exact: the matrix product sums
    the same products in another order."""
    if node.op is Op.GEMM and node.attrs.get("transA"):
        return None
    a, b = node.inputs[0], node.inputs[1]
    weights = rw.const(b)
    if a is None or weights is None or weights.ndim != 2 or a.type.rank != 2 \
            or not isinstance(a.type.shape[1], int) or UNKNOWN in a.type.shape:
        return None
    chain: list[Node] = []
    source = a
    while (producer := rw.producer(source)) is not None and producer.op in _MOVES and (
            producer.op is not Op.LAYOUT_TRANSFORM or producer.attrs["dst_layout"] == PLAIN):
        chain.insert(0, producer)
        source = producer.inputs[0]
        assert source is not None
    if not any(n.op in (Op.TRANSPOSE, Op.LAYOUT_TRANSFORM) for n in chain) \
            or source.type.rank < 1:
        return None
    rows = a.type.shape[0]
    if isinstance(rows, int):
        if not source.type.is_static:
            return None
        shape = tuple(int(d) for d in source.type.shape)
    elif _batch_major(chain, source, rows):
        shape = (1, *(int(d) for d in source.type.shape[1:]))  # one row shows them all
    else:
        return None
    size = int(np.prod(shape))
    if source.type.shape[0] != rows or size == 0 or size % shape[0]:
        return None
    width = size // shape[0]
    moved = _moved_indices(chain, np.arange(size).reshape(shape)).reshape(shape[0], -1)
    order = moved[0] % width  # per column of a: the column of reshape(x) it reads
    if not (np.all(moved // width == np.arange(shape[0])[:, None])
            and np.all(moved % width == order)):
        return None
    transposed = bool(node.attrs.get("transB")) if node.op is Op.GEMM else False
    rows_first = weights.T if transposed else weights
    permuted = np.zeros((width, rows_first.shape[1]), weights.dtype)
    permuted[order] = rows_first
    flat_shape = np.array([rows if isinstance(rows, int) else -1, width], np.int64)
    flat = rw.emit(Op.RESHAPE, [source, rw.constant(flat_shape)])[0]
    new_b = rw.constant(np.ascontiguousarray(permuted.T if transposed else permuted))
    return rw.emit(node.op, [flat, new_b, *node.inputs[2:]], node.attrs, name=node.name)


RULES: tuple[Rule, ...] = (
    _noop_by_type, _dropout, _reshape_chain, _transpose_identity, _transpose_pair,
    _transpose_as_reshape, _cast_chain,
    _neutral_operand, _involution, _idempotent, _expand_into_broadcast, _pad_zero,
    _where_constant,
)


_RNNS = (Op.RNN, Op.GRU, Op.LSTM)


@rule("batch_major_rnn", Op.TRANSPOSE)
def _batch_major_rnn(rw: Rewriter, node: Node) -> Replacement:
    """transpose(squeeze(rnn(transpose(x, [1,0,2])).Y, [1]), [1,0,2]) = squeeze(rnn'(x).Y, [2])
    with rnn' the same one-direction RNN/GRU/LSTM in layout 1 (batch-major X, Y and initial
    states): the same computation on the same elements, read and written in another order.
    The RNN's final-state outputs must be unused (they change layout too)."""
    squeeze = rw.producer(node.inputs[0])
    if _perm(node) != (1, 0, 2) or squeeze is None or squeeze.op is not Op.SQUEEZE \
            or len(squeeze.inputs) < 2 or not rw.single_use(node.inputs[0]):  # type: ignore[arg-type]
        return None
    axes = rw.const(squeeze.inputs[1])
    rnn = rw.producer(squeeze.inputs[0])
    if axes is None or [int(a) % 4 for a in axes.reshape(-1)] != [1] or rnn is None \
            or rnn.op not in _RNNS or int(rnn.attrs.get("layout") or 0) != 0 \
            or rnn.outputs[0] is not squeeze.inputs[0] or not rw.single_use(rnn.outputs[0]):
        return None
    if any(v is not None and (rw.uses[v.name] or v.name in rw.outputs)
           for v in rnn.outputs[1:]):
        return None
    transpose = rw.producer(rnn.inputs[0])
    if transpose is None or transpose.op is not Op.TRANSPOSE or _perm(transpose) != (1, 0, 2):
        return None
    inputs = list(rnn.inputs)
    inputs[0] = transpose.inputs[0]
    for index in (5, 6):  # initial_h (and LSTM's initial_c): [dirs, batch, hidden] -> batch first
        state = inputs[index] if index < len(inputs) else None
        if state is not None:
            data = rw.const(state)
            inputs[index] = rw.emit(Op.TRANSPOSE, [state], {"perm": [1, 0, 2]})[0] \
                if data is None else rw.constant(np.ascontiguousarray(data.transpose(1, 0, 2)))
    outputs = rw.emit(rnn.op, inputs, {**rnn.attrs, "layout": 1}, name=rnn.name,
                      outputs=len(rnn.outputs))
    return rw.emit(Op.SQUEEZE, [outputs[0], rw.constant(np.array([2], np.int64))],
                   name=squeeze.name)


MOVE_RULES: tuple[Rule, ...] = (_moves_into_weights, _batch_major_rnn)


def absorb_moves(graph: Graph, fired: Counter[str] | None = None) -> Graph:
    """``graph`` with ``MOVE_RULES`` applied to a fixpoint (the same object when none
    applies); the pipeline runs it after layout selection, whose transforms out of blocked form
    ``moves_into_weights`` folds."""
    return apply_rules(graph, MOVE_RULES, fired)
