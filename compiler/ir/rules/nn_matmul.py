"""Type rules of the matrix-product family: Gemm, MatMul (plain, integer, quantized), Einsum,
Attention, LinearAttention and RotaryEmbedding."""

from __future__ import annotations

from collections.abc import Sequence

from .. import symbolic
from ..op import Group, Op
from ..schema import DTYPE_ATTR, FLOAT, INT, REQUIRED, STRING, InferContext, define
from ..shapes import broadcast, same_dim
from ..types import FLOATS, NUMERIC, UNKNOWN, Dim, DType, TensorType
from .nn_conv import QUANTIZED, check_zero_point


def matmul_shape(ctx: InferContext, a: TensorType, b: TensorType) -> tuple[Dim, ...]:
    """numpy.matmul's result shape: 1-D operands are promoted then dropped, batch dims
    broadcast."""
    if a.rank == 0 or b.rank == 0:
        raise ctx.fail(f"matmul operands must have rank >= 1, got {a} and {b}")
    a_shape = (1, *a.shape) if a.rank == 1 else a.shape
    b_shape = (*b.shape, 1) if b.rank == 1 else b.shape
    if not same_dim(a_shape[-1], b_shape[-2]):
        raise ctx.fail(f"inner dimensions of {a} and {b} differ ({a_shape[-1]} vs {b_shape[-2]})")
    try:
        batch = broadcast(a_shape[:-2], b_shape[:-2])
    except Exception as error:
        raise ctx.fail(f"batch dimensions of {a} and {b} do not broadcast: {error}") from None
    rows = () if a.rank == 1 else (a_shape[-2],)
    cols = () if b.rank == 1 else (b_shape[-1],)
    return (*batch, *rows, *cols)


@define(
    Op.GEMM,
    ["A", "B", "C?"],
    ["Y"],
    {"alpha": FLOAT(1.0), "beta": FLOAT(1.0), "transA": INT(0), "transB": INT(0)},
    Group.MATMUL,
)
def _gemm(ctx: InferContext) -> list[TensorType]:
    """alpha * op(A) @ op(B) + beta * C, with C broadcast to [M, N]."""
    dtype = ctx.require_dtype(0, NUMERIC)
    a, b = ctx.input(0), ctx.input(1)
    if a.rank != 2 or b.rank != 2 or b.dtype != dtype:
        raise ctx.fail(f"A {a} and B {b} must be matrices of one element type")
    m, k = a.shape[::-1] if ctx.attr("transA") else a.shape
    k2, n = b.shape[::-1] if ctx.attr("transB") else b.shape
    if not same_dim(k, k2):
        raise ctx.fail(f"inner dimensions differ: op(A) is [{m},{k}], op(B) is [{k2},{n}]")
    if ctx.has_input(2):
        c = ctx.input(2)
        if c.rank > 2 or not all(
            same_dim(d, 1) or same_dim(d, t)
            for d, t in zip(reversed(c.shape), (n, m), strict=False)
        ):
            raise ctx.fail(f"C {c} does not broadcast to [{m},{n}]")
    return [TensorType(dtype, (m, n))]


@define(Op.MATMUL, ["A", "B"], ["Y"], {}, Group.MATMUL)
def _matmul(ctx: InferContext) -> list[TensorType]:
    """numpy.matmul semantics."""
    dtype = ctx.require_dtype(0, NUMERIC)
    if ctx.input(1).dtype != dtype:
        raise ctx.fail(f"operands {ctx.input(0)} and {ctx.input(1)} differ in element type")
    return [TensorType(dtype, matmul_shape(ctx, ctx.input(0), ctx.input(1)))]


@define(Op.MATMUL_INTEGER, ["A", "B", "a_zero_point?", "b_zero_point?"], ["Y"], {}, Group.MATMUL)
def _matmul_integer(ctx: InferContext) -> list[TensorType]:
    """(A - a_zero_point) @ (B - b_zero_point) in int32."""
    ctx.require_dtype(0, QUANTIZED)
    ctx.require_dtype(1, QUANTIZED)
    check_zero_point(ctx, 2, 0, "a_zero_point")
    check_zero_point(ctx, 3, 1, "b_zero_point")
    return [TensorType(DType.I32, matmul_shape(ctx, ctx.input(0), ctx.input(1)))]


@define(
    Op.QLINEAR_MATMUL,
    ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"],
    ["y"],
    {},
    Group.MATMUL,
)
def _qlinear_matmul(ctx: InferContext) -> list[TensorType]:
    """Quantized matmul requantized to y_zero_point's type."""
    ctx.require_dtype(0, QUANTIZED)
    ctx.require_dtype(3, QUANTIZED)
    out = ctx.require_dtype(7, QUANTIZED)
    for index in (1, 4, 6):
        ctx.require_dtype(index, FLOATS)
    check_zero_point(ctx, 2, 0, "a_zero_point")
    check_zero_point(ctx, 5, 3, "b_zero_point")
    return [TensorType(out, matmul_shape(ctx, ctx.input(0), ctx.input(3)))]


def parse_einsum(
    ctx: InferContext, equation: str, shapes: Sequence[tuple[Dim, ...]]
) -> tuple[Dim, ...]:
    """Output shape of an einsum ``equation`` over operands of ``shapes``."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ctx.fail(f"equation {equation!r} has {len(terms)} operands; got {len(shapes)}")
    sizes: dict[str, Dim] = {}
    counts: dict[str, int] = {}
    ellipsis: list[tuple[Dim, ...]] = []
    for term, shape in zip(terms, shapes, strict=False):
        letters = term.replace("...", "")
        if not letters.isalpha() and letters:
            raise ctx.fail(f"equation {equation!r} has an invalid term {term!r}")
        extra = len(shape) - len(letters)
        if extra < 0 or (extra and "..." not in term):
            raise ctx.fail(f"term {term!r} does not match an operand of rank {len(shape)}")
        start = term.find("...")
        dims = list(shape)
        if start >= 0:
            ellipsis.append(tuple(dims[start : start + extra]))
            del dims[start : start + extra]
        for letter, dim in zip(letters, dims, strict=False):
            known = sizes.get(letter)
            if known is not None and not (same_dim(known, dim) or dim == 1 or known == 1):
                raise ctx.fail(f"label {letter!r} has extents {known} and {dim}")
            if known is None or known == 1 or not isinstance(known, int):
                sizes[letter] = dim
            counts[letter] = counts.get(letter, 0) + 1
    try:
        batch = broadcast(*ellipsis) if ellipsis else ()
    except Exception as error:
        raise ctx.fail(f"ellipsis dimensions do not broadcast: {error}") from None
    if not arrow:
        rhs = ("..." if ellipsis else "") + "".join(sorted(k for k, c in counts.items() if c == 1))
    before, dots, after = rhs.partition("...")
    out: list[Dim] = []
    for letter in before + ("." if dots else "") + after:
        if letter == ".":
            out.extend(batch)
        elif letter in sizes:
            out.append(sizes[letter])
        else:
            raise ctx.fail(f"output label {letter!r} appears in no input of {equation!r}")
    return tuple(out)


@define(Op.EINSUM, ["Inputs*"], ["Output"], {"equation": STRING(REQUIRED)}, Group.MATMUL)
def _einsum(ctx: InferContext) -> list[TensorType]:
    """Einstein summation over any number of operands (ellipsis broadcasting)."""
    if not ctx.inputs:
        raise ctx.fail("einsum needs at least one operand")
    dtype = ctx.require_dtype(0, NUMERIC)
    shapes = [ctx.input(i).shape for i in range(len(ctx.inputs))]
    if any(ctx.input(i).dtype != dtype for i in range(len(ctx.inputs))):
        raise ctx.fail("einsum operands must share one element type")
    return [TensorType(dtype, parse_einsum(ctx, ctx.attr("equation"), shapes))]


def _heads(ctx: InferContext, hidden: Dim, heads: int | None, what: str) -> Dim:
    """Per-head size of a packed [B, S, heads * size] operand."""
    if heads is None or heads < 1:
        raise ctx.fail(f"3-D {what} needs a positive {what}_num_heads attribute")
    if not isinstance(hidden, int):
        return UNKNOWN
    if hidden % heads:
        raise ctx.fail(f"hidden size {hidden} of {what} is not divisible by {heads} heads")
    return hidden // heads


@define(
    Op.ATTENTION,
    ["Q", "K", "V", "attn_mask?", "past_key?", "past_value?", "nonpad_kv_seqlen?"],
    ["Y", "present_key?", "present_value?", "qk_matmul_output?"],
    {
        "is_causal": INT(0),
        "kv_num_heads": INT(),
        "q_num_heads": INT(),
        "qk_matmul_output_mode": INT(0),
        "scale": FLOAT(),
        "softcap": FLOAT(0.0),
        "softmax_precision": DTYPE_ATTR(),
        "left_window_size": INT(-1),
        "right_window_size": INT(-1),
    },
    Group.MATMUL,
)
def _attention(ctx: InferContext) -> list[TensorType]:
    """Scaled dot-product attention (MHA/GQA/MQA) with masks, KV cache and softcap."""
    dtype = ctx.require_dtype(0, FLOATS)
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    if not q.rank == k.rank == v.rank or q.rank not in (3, 4):
        raise ctx.fail(f"Q {q}, K {k} and V {v} must all be 3-D or all 4-D")
    if q.rank == 3:
        batch, q_len = q.shape[:2]
        q_heads = int(ctx.attr("q_num_heads") or 0)
        kv_heads = int(ctx.attr("kv_num_heads") or 0)
        head = _heads(ctx, q.shape[2], q_heads, "q")
        _heads(ctx, k.shape[2], kv_heads, "kv")
        v_head = _heads(ctx, v.shape[2], kv_heads, "kv")
        kv_len = k.shape[1]
        hkv: Dim = kv_heads
        hq: Dim = q_heads
    else:
        batch, hq, q_len, head = q.shape
        hkv, kv_len, v_head = k.shape[1], k.shape[2], v.shape[3]
    if isinstance(hq, int) and isinstance(hkv, int) and hq % hkv:
        raise ctx.fail(f"{hq} query heads are not a multiple of {hkv} key/value heads")
    total = kv_len
    if ctx.has_input(4):
        past = ctx.input(4).shape[2]
        total = symbolic.add(past, kv_len)
    if q.rank == 3:
        y_shape: tuple[Dim, ...] = (
            batch,
            q_len,
            symbolic.mul(hq, v_head),
        )
    else:
        y_shape = (batch, hq, q_len, v_head)
    k_head = k.shape[3] if k.rank == 4 else head
    return [
        TensorType(dtype, y_shape),
        TensorType(dtype, (batch, hkv, total, k_head)),
        TensorType(v.dtype, (batch, hkv, total, v_head)),
        TensorType(dtype, (batch, hq, q_len, total)),
    ]


@define(
    Op.LINEAR_ATTENTION,
    ["query", "key", "value", "past_state?", "decay?", "beta?"],
    ["output", "present_state"],
    {
        "chunk_size": INT(64),
        "kv_num_heads": INT(REQUIRED),
        "q_num_heads": INT(REQUIRED),
        "scale": FLOAT(0.0),
        "update_rule": STRING("gated_delta"),
    },
    Group.MATMUL,
)
def _linear_attention(ctx: InferContext) -> list[TensorType]:
    """Recurrent linear attention (linear, gated, delta, gated_delta update rules)."""
    dtype = ctx.require_dtype(0, FLOATS)
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    if not q.rank == k.rank == v.rank == 3:
        raise ctx.fail(f"query {q}, key {k} and value {v} must be [B, T, heads * size]")
    rule = ctx.attr("update_rule")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ctx.fail(f"update_rule {rule!r} is not linear, gated, delta or gated_delta")
    hq, hkv = int(ctx.attr("q_num_heads")), int(ctx.attr("kv_num_heads"))
    if hq < 1 or hkv < 1 or hq % hkv:
        raise ctx.fail(f"q_num_heads {hq} must be a positive multiple of kv_num_heads {hkv}")
    for index, name, needed in ((4, "decay", "gated"), (5, "beta", "delta")):
        if ctx.has_input(index) != (needed in rule):
            raise ctx.fail(
                f"update_rule {rule!r} {'needs' if needed in rule else 'forbids'} the {name} input"
            )
    d_k = _heads(ctx, q.shape[2], hq, "q")
    d_v = _heads(ctx, v.shape[2], hkv, "kv")
    state_type = ctx.input(3).dtype if ctx.has_input(3) else dtype
    out = symbolic.mul(hq, d_v)
    return [
        TensorType(dtype, (q.shape[0], q.shape[1], out)),
        TensorType(state_type, (q.shape[0], hkv, d_k, d_v)),
    ]


@define(
    Op.ROTARY_EMBEDDING,
    ["X", "cos_cache", "sin_cache", "position_ids?"],
    ["Y"],
    {"interleaved": INT(0), "num_heads": INT(), "rotary_embedding_dim": INT(0)},
    Group.MATMUL,
)
def _rotary_embedding(ctx: InferContext) -> list[TensorType]:
    """Rotary position embedding of [B, H, S, D] or packed [B, S, H * D] inputs."""
    x = ctx.input(0)
    ctx.require_dtype(0, FLOATS)
    if x.rank not in (3, 4):
        raise ctx.fail(f"input {x} must be [B, H, S, D] or [B, S, H * D]")
    if x.rank == 3 and not ctx.attr("num_heads"):
        raise ctx.fail("a 3-D input needs the num_heads attribute")
    if ctx.has_input(3):
        ctx.require_dtype(3, {DType.I64})
    return [x]
