"""Lowering of LinearAttention: the recurrent state update of linear, gated, delta and
gated_delta linear attention, computed in f32 like the reference.

Each (batch, kv head) pair owns a [d_k, d_v] f32 state (present_state itself when that is f32,
else a scratch copied out at the end) and runs the time steps in order; the outer loop over the
pairs is parallel. Per step: decay the state rows by exp(decay) (gated rules), add
k ⊗ v — with the delta rules v is first replaced, column by column, by beta * (v - state^T k) —
then read every query head of the group out of the updated state. Batch and sequence length
may be known only at run time; head counts and sizes must be static.
"""

from __future__ import annotations

import math

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Buffer,
    Declare,
    Expr,
    Kernel,
    Loop,
    LoopKind,
    Stmt,
    Unary,
    Var,
    as_index,
    block,
    extent_mul,
)
from ..registry import LowerContext, lowering
from .common import const, idx
from .nn_common import add_to, nest, unravel

F32 = DType.F32


@lowering(Op.LINEAR_ATTENTION)
def lower_linear_attention(ctx: LowerContext) -> list[Kernel]:
    query, key, value, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0)
    past, decay, beta = (ctx.input(i) if ctx.has_input(i) else None for i in (3, 4, 5))
    present = ctx.outputs[1] if len(ctx.outputs) > 1 else None
    hq, hkv = int(ctx.attr("q_num_heads")), int(ctx.attr("kv_num_heads"))
    batch, steps, q_hidden = query.shape
    ctx.require_static(*(Buffer(b.name, b.dtype, b.shape[2:]) for b in (query, key, value)))
    d_k, d_v = q_hidden // hq, value.shape[2] // hkv
    if key.shape[2] != hkv * d_k:
        raise ctx.fail(f"key {list(key.shape)} must be [B, T, kv_num_heads * {d_k}]")
    group = hq // hkv
    state = (present if present is not None and present.dtype is F32
             else ctx.scratch("state", F32, (batch, hkv, d_k, d_v)))
    per_head_decay = decay is not None and decay.shape[2] == hkv
    shared_beta = beta is not None and beta.shape[2] == 1
    attr_scale = float(ctx.attr("scale"))

    def loop(var: Var, extent: int | Expr, body: Stmt, vector: bool = False) -> Stmt:
        return Loop(var, as_index(extent), body,
                    LoopKind.VECTORIZE if vector else LoopKind.SERIAL)

    def readout(b: Expr, t: Expr, q_head: Expr, m: Expr, dot: Expr) -> Stmt:
        if attr_scale:
            scaled = const(attr_scale, F32) * dot
        else:
            # The reference's default scale is an f64 scalar, so this product is in f64.
            scaled = (const(1.0 / math.sqrt(d_k), DType.F64) * dot.cast(DType.F64)).cast(F32)
        return out.store([b, t, q_head * d_v + m], scaled.cast(out.dtype))

    def body(v: list[Expr]) -> Stmt:
        b, h = unravel(v[0], (batch, hkv))
        t, d, m, qh = Var("t"), Var("d"), Var("m"), Var("qh")

        def k_at(dd: Expr) -> Expr:
            return key.load(b, t, h * d_k + dd).cast(F32)

        def v_at(mm: Expr) -> Expr:
            return value.load(b, t, h * d_v + mm).cast(F32)

        def cell(dd: Expr, mm: Expr) -> Expr:
            return state.load(b, h, dd, mm)

        init = past.load(b, h, d, m).cast(F32) if past is not None else const(0.0, F32)
        step: list[Stmt] = []
        if decay is not None:
            factor = Var("factor", F32)
            gate = decay.load(b, t, h if per_head_decay else h * d_k + d).cast(F32)
            scale_row = loop(m, d_v, state.store([b, h, d, m], cell(d, m) * factor), vector=True)
            if per_head_decay:
                step += [Declare(factor, Unary("exp", gate)), loop(d, d_k, scale_row)]
            else:
                step.append(loop(d, d_k, block(Declare(factor, Unary("exp", gate)), scale_row)))
        if beta is not None:
            # Column m of the update only reads column m of the state: fuse per column.
            rate = beta.load(b, t, idx(0) if shared_beta else h).cast(F32)
            recalled, new = Var("recalled", F32), Var("new", F32)
            step.append(loop(m, d_v, block(
                Declare(recalled, const(0.0, F32)),
                loop(d, d_k, add_to(recalled, cell(d, m) * k_at(d))),
                Declare(new, rate * (v_at(m) - recalled)),
                loop(d, d_k, state.store([b, h, d, m], cell(d, m) + k_at(d) * new)),
            )))
        else:
            step.append(loop(d, d_k, loop(
                m, d_v, state.store([b, h, d, m], cell(d, m) + k_at(d) * v_at(m)), vector=True)))
        dot, q_head = Var("dot", F32), h * group + qh if group > 1 else h
        read = loop(m, d_v, block(
            Declare(dot, const(0.0, F32)),
            loop(d, d_k, add_to(dot, query.load(b, t, q_head * d_k + d).cast(F32)
                                * cell(d, m))),
            readout(b, t, q_head, m, dot),
        ))
        step.append(loop(qh, group, read) if group > 1 else read)
        stmts: list[Stmt] = [
            loop(d, d_k, loop(m, d_v, state.store([b, h, d, m], init), vector=True)),
            loop(t, steps, block(step)),
        ]
        if present is not None and present is not state:
            stmts.append(loop(d, d_k, loop(m, d_v, present.store(
                [b, h, d, m], cell(d, m).cast(present.dtype)), vector=True)))
        return block(stmts)

    work = extent_mul(extent_mul(batch, steps), hkv * d_k * d_v * (3 + group))
    outputs: list[Buffer] = [o for o in (out, present) if o is not None]
    return [ctx.kernel(nest([extent_mul(batch, hkv)], body, "p", work=work), outputs=outputs)]
