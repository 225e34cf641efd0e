"""Lowering of Attention (MHA/GQA/MQA, 3-D packed or 4-D operands, boolean or additive masks,
KV cache, causal and sliding windows, nonpad lengths, softcap, qk output modes).

Kernel 1 writes present_key/present_value (past then new); kernel 2 handles one query row per
iteration of its parallel loop: scores with their bias into a scratch row, a max-shifted
softmax in place, then the weighted sum of values.

Batch, sequence and cache lengths may be known only at run time (run-time loop extents; an
output extent the type rules leave unknown is defined by a first kernel); head counts and sizes
must be static.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Buffer,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    Stmt,
    Unary,
    Var,
    as_index,
    block,
    extent_add,
    extent_mul,
    select,
)
from ..registry import LowerContext, lowering
from .common import Extent, broadcast_index, const, idx, product
from .nn_common import acc_dtype, add_to, all_of, nest
from .nn_window import define_extents

NEG_INF = -math.inf


class _Operand:
    """A [B, heads, seq, size] view of a 4-D operand or of a packed [B, seq, heads * size]."""

    def __init__(self, ctx: LowerContext, buffer: Buffer, heads: int) -> None:
        self.buffer = buffer
        self.packed = len(buffer.shape) == 3
        self.seq: Extent
        if self.packed:
            self.heads, self.seq, width = heads, buffer.shape[1], buffer.shape[2]
        else:
            _, self.heads, self.seq, width = buffer.shape  # type: ignore[assignment]
        if not (isinstance(self.heads, int) and isinstance(width, int)):
            raise ctx.fail(f"the heads or head size of %{buffer.name} are known only at run "
                           "time; the lowering of attention needs them at compile time")
        self.size = width // heads if self.packed else width

    def load(self, b: Expr, h: Expr, s: Expr, d: Expr) -> Expr:
        if self.packed:
            return self.buffer.load(b, s, h * self.size + d)
        return self.buffer.load(b, h, s, d)

    def store(self, b: Expr, h: Expr, s: Expr, d: Expr, value: Expr) -> Stmt:
        if self.packed:
            return self.buffer.store([b, s, h * self.size + d], value)
        return self.buffer.store([b, h, s, d], value)


def _cached(new: _Operand, past: Buffer | None, b: Expr, h: Expr, t: Expr, d: Expr,
            then: Callable[[Expr], Stmt]) -> Stmt:
    """then(present[b, h, t, d]): the past cache first, then the new keys or values."""
    if past is None:
        return then(new.load(b, h, t, d))
    length = past.shape[2]
    return If(t < length, then(past.load(b, h, t, d)), then(new.load(b, h, t - length, d)))


@lowering(Op.ATTENTION)
def lower_attention(ctx: LowerContext) -> list[Kernel]:
    q_buf, k_buf, v_buf, y_buf = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    mask, past_k, past_v, nonpad = (ctx.input(i) if ctx.has_input(i) else None
                                    for i in (3, 4, 5, 6))
    present_k, present_v, qk_out = (ctx.outputs[i] if len(ctx.outputs) > i else None
                                    for i in (1, 2, 3))
    q = _Operand(ctx, q_buf, int(ctx.attr("q_num_heads") or 0))
    k = _Operand(ctx, k_buf, int(ctx.attr("kv_num_heads") or 0))
    v = _Operand(ctx, v_buf, int(ctx.attr("kv_num_heads") or 0))
    y = _Operand(ctx, y_buf, q.heads)
    dtype = q_buf.dtype
    acc = acc_dtype(dtype)
    precision = ctx.attr("softmax_precision") or dtype
    past_len = past_k.shape[2] if past_k is not None else 0
    total = extent_add(past_len, k.seq)
    batch, group = q_buf.shape[0], q.heads // k.heads
    scale = ctx.attr("scale")
    root = const(math.sqrt(1.0 / math.sqrt(q.size) if scale is None else float(scale)), dtype)
    softcap = float(ctx.attr("softcap"))
    mode = int(ctx.attr("qk_matmul_output_mode"))
    causal = bool(ctx.attr("is_causal"))
    left, right = int(ctx.attr("left_window_size")), int(ctx.attr("right_window_size"))
    row = ctx.scratch("row", precision, (batch, q.heads, q.seq, total))
    # output extents left to define (run-time ones the type rules could not name)
    pairs: list[tuple[Extent, list[Extent]]] = [
        (y_buf.shape[axis], [q_buf.shape[axis]]) for axis in range(len(y_buf.shape) - 1)]
    for present in (present_k, present_v):
        if present is not None:
            pairs += [(present.shape[0], [batch]), (present.shape[2], [total])]
    if qk_out is not None:
        pairs += [(qk_out.shape[0], [batch]), (qk_out.shape[2], [q.seq]),
                  (qk_out.shape[3], [total])]
    kernels: list[Kernel] = define_extents(ctx, pairs)

    for present, new, past in ((present_k, k, past_k), (present_v, v, past_v)):
        if present is not None:
            def copy(i: list[Expr], present: Buffer = present, new: _Operand = new,
                     past: Buffer | None = past) -> Stmt:
                return _cached(new, past, *i, lambda value: present.store(i, value))

            kernels.append(ctx.kernel(nest(list(present.shape), copy, "c"),
                                      outputs=[present], scratch=[]))

    def bias_of(b: Expr, h: Expr, i: Expr, t: Expr) -> Expr:
        terms: list[Expr] = []
        if mask is not None:
            length = mask.shape[-1]
            known = isinstance(length, int) and isinstance(total, int)
            covers = length >= total if known else length is total
            last = idx(length - 1) if isinstance(length, int) else length - 1
            clamped = t if covers else Binary("min", t, last)
            lead = Buffer(mask.name, mask.dtype, mask.shape[:-1])
            index = [*broadcast_index([b, h, i], lead, [batch, q.heads, q.seq]), clamped]
            if known:
                index = broadcast_index([b, h, i, clamped], mask)
            raw = mask.load(*index)
            value = (select(raw, const(0, dtype), const(NEG_INF, dtype))
                     if mask.dtype is DType.BOOL else raw.cast(dtype))
            if not covers:  # a short mask leaves the trailing keys masked out
                value = select(t < length, value, const(NEG_INF, dtype))
            terms.append(value)
        if past_k is not None:
            offset: Expr = as_index(past_len)
        elif nonpad is not None:
            offset = nonpad.load(b).cast(DType.I64) - q.seq
        else:
            offset = idx(0)
        distance = i + offset - t
        allowed = all_of([distance >= 0 if causal else None,
                          distance <= left if left >= 0 else None,
                          -distance <= right if right >= 0 else None])
        if allowed is not None:
            terms.append(select(allowed, const(0, dtype), const(NEG_INF, dtype)))
        if nonpad is not None:
            keep = t < nonpad.load(b).cast(DType.I64)
            terms.append(select(keep, const(0, dtype), const(NEG_INF, dtype)))
        result: Expr = const(0, dtype)
        for term in terms:
            result = result + term
        return result

    def body(o: list[Expr]) -> Stmt:
        b, h, i = o
        kv_head = h if group == 1 else h // group
        # numpy sums f16 in f32 and rounds once; other types (bf16 too) sum in their own type.
        peak = Var("peak", precision)
        sum_ = Var("sum", DType.F32 if precision is DType.F16 else precision)
        bias_peak = Var("bias_peak", dtype)
        dot, score, bias = Var("dot", acc), Var("score", dtype), Var("bias", dtype)
        t = Var("t")

        def qk(value: Expr) -> list[Stmt]:
            if qk_out is None:
                return []
            return [qk_out.store([b, h, i, t], value.cast(qk_out.dtype))]

        def keys(dd: list[Expr]) -> Stmt:
            left_value = (q.load(b, h, i, dd[0]) * root).cast(acc)
            return _cached(k, past_k, b, kv_head, t, dd[0], lambda key: add_to(
                dot, left_value * (key * root).cast(acc)))

        capped: Expr = score
        if softcap > 0:
            cap = const(softcap, dtype)
            capped = Unary("tanh", score / cap) * cap
        with_bias = Var("with_bias", dtype)
        scores_pass = block(
            Declare(dot, const(0, acc)), nest([q.size], keys, "d"),
            Declare(score, dot.cast(dtype)), Assign(score, capped),
            Declare(bias, bias_of(b, h, i, t)), Declare(with_bias, score + bias),
            row.store([b, h, i, t], with_bias.cast(precision)),
            Assign(peak, Binary("max", peak, with_bias.cast(precision))),
            Assign(bias_peak, Binary("max", bias_peak, bias)),
            *qk(with_bias if mode == 2 else score) if mode != 3 else [],
        )
        e = Var("e", precision)
        exp_pass = block(Declare(e, Unary("exp", row.load(b, h, i, t) - peak)),
                         row.store([b, h, i, t], e), add_to(sum_, e.cast(sum_.dtype)))
        prob, total_sum = Var("prob", precision), Var("total_sum", precision)
        masked_row = bias_peak.eq(NEG_INF)
        divisor = select(total_sum.eq(0.0), const(1.0, precision), total_sum)
        norm_pass = block(
            Declare(prob, select(masked_row, const(0, precision),
                                 row.load(b, h, i, t) / divisor)),
            row.store([b, h, i, t], prob), *(qk(prob) if mode == 3 else []),
        )
        out = Var("out", acc)

        def values(dv: list[Expr]) -> Stmt:
            # The probabilities are rounded to the input type before the product, as in
            # the reference.
            accumulate = nest([total], lambda tv: _cached(
                v, past_v, b, kv_head, tv[0], dv[0],
                lambda value: add_to(out, row.load(b, h, i, tv[0]).cast(dtype).cast(acc)
                                     * value.cast(acc))), "u")
            return block(Declare(out, const(0, acc)), accumulate,
                         y.store(b, h, i, dv[0], out.cast(dtype)))

        return block(
            Declare(peak, const(NEG_INF, precision)), Declare(bias_peak, const(NEG_INF, dtype)),
            Loop(t, as_index(total), scores_pass),
            If(peak.eq(NEG_INF), Assign(peak, const(0, precision))),
            Declare(sum_, const(0, sum_.dtype)), Loop(t, as_index(total), exp_pass),
            Declare(total_sum, sum_.cast(precision)),
            Loop(t, as_index(total), norm_pass),
            nest([v.size], values, "e"),
        )

    work = extent_mul(product([batch, q.heads, q.seq, total]), q.size + v.size)
    outputs = [b for b in (y_buf, qk_out) if b is not None]
    kernels.append(ctx.kernel(nest([batch, q.heads, q.seq], body, "o", work=work),
                              outputs=outputs))
    return kernels
