"""Lowering of RotaryEmbedding: each output element reads its rotation partner and the
cos/sin entry of its position (through position_ids when given). Batch, sequence and cache
lengths may be known only at run time; head counts and sizes must be static."""

from __future__ import annotations

from ...ir.op import Op
from ..kernel_ir import (
    Binary,
    Buffer,
    Declare,
    Expr,
    If,
    Kernel,
    Report,
    Stmt,
    Var,
    block,
    extent_mul,
    select,
)
from ..registry import LowerContext, lowering
from .nn_common import nest


@lowering(Op.ROTARY_EMBEDDING)
def lower_rotary_embedding(ctx: LowerContext) -> list[Kernel]:
    x, cos, sin, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    positions = ctx.input(3) if ctx.has_input(3) else None
    packed = len(x.shape) == 3
    ctx.require_static(Buffer(x.name, x.dtype, x.shape[-1:] if packed else x.shape[1::2]),
                       Buffer(cos.name, cos.dtype, cos.shape[-1:]),
                       Buffer(sin.name, sin.dtype, sin.shape[-1:]))
    if packed:
        heads = int(ctx.attr("num_heads"))
        batch, steps, hidden = x.shape
        head = hidden // heads
    else:
        batch, heads, steps, head = x.shape
    dim = int(ctx.attr("rotary_embedding_dim")) or head
    half = dim // 2
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise ctx.fail(f"cos/sin caches must end in rotary_embedding_dim / 2 = {half}")
    interleaved = bool(ctx.attr("interleaved"))

    def body(v: list[Expr]) -> Stmt:
        b, s, h, d = v

        def at(dd: Expr) -> list[Expr]:
            return [b, s, h * head + dd] if packed else [b, h, s, dd]

        pos = Var("pos")
        pair = d // 2 if interleaved else select(d < half, d, d - half)
        first = pair * 2 if interleaved else pair
        second = first + 1 if interleaved else pair + half
        is_first = (d % 2).eq(0) if interleaved else d < half

        def table(buffer: Buffer) -> Expr:
            return buffer.load(pos, pair) if positions is not None else buffer.load(b, s, pair)

        x1, x2 = x.load(*at(first)), x.load(*at(second))
        c, sn = table(cos).cast(x.dtype), table(sin).cast(x.dtype)
        store: Stmt = out.store(at(d), select(is_first, c * x1 - sn * x2, sn * x1 + c * x2))
        if dim < head:
            # An If, not a select: the partner and cache loads are in range only below dim.
            store = If(d < dim, store, out.store(at(d), x.load(*at(d))))
        if positions is None:
            return store
        limit = cos.shape[0]
        size = f" of {limit}" if isinstance(limit, int) else ""
        return block(
            Declare(pos, positions.load(b, s)),
            If(Binary("and", pos >= 0, pos < limit), store,
               Report(f"RotaryEmbedding: a position id is outside the cache{size}")),
        )
    return [ctx.kernel(nest([batch, steps, heads, head], body, "o",
                            work=extent_mul(4, x.numel)))]
