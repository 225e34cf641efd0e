"""Lowerings of the random ops: RandomNormal(Like), RandomUniform(Like), Bernoulli, Multinomial.

A counter-based generator in the kernel IR: draw ``c`` of a node is splitmix64's output
function applied to ``key + (c + 1) * golden`` (u64 arithmetic wraps), where ``key`` mixes the
``seed`` attribute's f64 bits. So every element is independent of the loop order and of the
thread that computes it, the same seed gives the same values run after run, and different
seeds give unrelated streams. A uniform in [0, 1) takes the top 53 bits; a normal comes from
Box-Muller on draws ``2 e`` and ``2 e + 1`` of element ``e``. The values are not numpy's
(the reference draws with numpy's generator): only their distribution is the same.

Without a ``seed`` the ONNX ops draw fresh values on every run; the kernel IR has no entropy
source, so an unseeded node uses seed 0 (deterministic, documented deviation).
"""

from __future__ import annotations

import math

import numpy as np

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Const,
    Declare,
    Expr,
    Kernel,
    Loop,
    Stmt,
    Unary,
    Var,
    as_index,
    binary,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .rnn import flat_loop

U64 = DType.U64
F64 = DType.F64
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def _mix_python(z: int) -> int:
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return z ^ (z >> 31)


def seed_key(seed: float | None) -> int:
    """The generator key of a ``seed`` attribute (its f64 bits, mixed)."""
    bits = int(np.array(0.0 if seed is None else seed, np.float64).view(np.uint64))
    return _mix_python((bits + _GOLDEN) & _MASK)


def uniform(stmts: list[Stmt], name: str, key: int, counter: Expr) -> Var:
    """Declare (into ``stmts``) and return an f64 local uniform in [0, 1) for draw ``counter``
    (an i64 expression)."""
    z = Var(f"{name}_z", U64)
    stmts.append(Declare(z, counter.cast(U64) * _GOLDEN + ((key + _GOLDEN) & _MASK)))
    for shift, multiplier in ((30, _MIX1), (27, _MIX2)):
        stmts.append(Assign(z, binary("xor", z, binary("shr", z, shift)) * multiplier))
    stmts.append(Assign(z, binary("xor", z, binary("shr", z, 31))))
    u = Var(name, F64)
    stmts.append(Declare(u, binary("shr", z, 11).cast(F64) * (1.0 / (1 << 53))))
    return u


def _generate(ctx: LowerContext, draw: str, inputs: bool) -> list[Kernel]:
    """Fill the output with ``draw`` ("normal", "uniform" or "bernoulli") per element."""
    out = ctx.output()
    key = seed_key(ctx.attr("seed"))
    flat = Var("rand_e")

    def body(idx: list[Expr]) -> Stmt:
        stmts: list[Stmt] = []
        if draw == "normal":
            u1 = uniform(stmts, "rand_u1", key, flat * 2)
            u2 = uniform(stmts, "rand_u2", key, flat * 2 + 1)
            radius = Unary("sqrt", Unary("log", 1.0 - u1) * -2.0)
            value: Expr = radius * Unary("cos", u2 * (2 * math.pi))
            value = value * float(ctx.attr("scale")) + float(ctx.attr("mean"))
        elif draw == "uniform":
            u = uniform(stmts, "rand_u", key, flat)
            low, high = float(ctx.attr("low")), float(ctx.attr("high"))
            value = u * (high - low) + low
        else:
            u = uniform(stmts, "rand_u", key, flat)
            value = u < ctx.input(0).load(*idx).cast(F64)
        stmts.append(out.store(idx, value.cast(out.dtype)))
        return block(stmts)

    loop = flat_loop(flat.name, out.shape, body, 16)
    return [ctx.kernel(loop, inputs=[ctx.input(0)] if inputs else [])]


@lowering(Op.RANDOM_NORMAL, Op.RANDOM_NORMAL_LIKE)
def lower_random_normal(ctx: LowerContext) -> list[Kernel]:
    return _generate(ctx, "normal", inputs=False)


@lowering(Op.RANDOM_UNIFORM, Op.RANDOM_UNIFORM_LIKE)
def lower_random_uniform(ctx: LowerContext) -> list[Kernel]:
    return _generate(ctx, "uniform", inputs=False)


@lowering(Op.BERNOULLI)
def lower_bernoulli(ctx: LowerContext) -> list[Kernel]:
    return _generate(ctx, "bernoulli", inputs=True)


@lowering(Op.MULTINOMIAL)
def lower_multinomial(ctx: LowerContext) -> list[Kernel]:
    """Per row: softmax normalizer, then each sample counts the classes whose cumulative weight
    its scaled uniform reaches (the reference's ``draw >= cdf`` count, clamped)."""
    logits, out = ctx.input(0), ctx.output()
    batch, classes = logits.shape
    top_class = float(classes - 1) if isinstance(classes, int) else (classes - 1).cast(F64)
    samples = out.shape[1]
    key = seed_key(ctx.attr("seed"))
    b, c, s = Var("mn_b"), Var("mn_c"), Var("mn_s")
    top, total, acc, count = (Var(n, F64) for n in ("mn_max", "mn_total", "mn_acc", "mn_count"))

    def weight(c: Expr) -> Expr:
        return Unary("exp", logits.load(b, c).cast(F64) - top)

    def row(idx: list[Expr]) -> Stmt:
        sample: list[Stmt] = []
        u = uniform(sample, "mn_u", key, b * samples + s)
        target = Var("mn_target", F64)
        sample += [
            Declare(target, u * total), Declare(acc, Const(0.0, F64)),
            Declare(count, Const(0.0, F64)),
            Loop(c, as_index(classes), block(
                Assign(acc, acc + weight(c)),
                Assign(count, count + select(target >= acc, Const(1.0, F64), 0.0)),
            )),
            out.store([b, s], binary("min", count, top_class).cast(out.dtype)),
        ]
        return block(
            Declare(top, Const(-math.inf, F64)),
            Loop(c, as_index(classes),
                 Assign(top, binary("max", top, logits.load(b, c).cast(F64)))),
            Declare(total, Const(0.0, F64)),
            Loop(c, as_index(classes), Assign(total, total + weight(c))),
            Loop(s, Const(samples, DType.I64), block(sample)),
        )

    work = classes * (samples + 2) if isinstance(classes, int) else samples + 2
    return [ctx.kernel(flat_loop(b.name, (batch,), row, work))]
