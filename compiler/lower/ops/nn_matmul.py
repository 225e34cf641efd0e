"""Lowerings of the matrix products: MatMul (plain, integer, quantized), Gemm and Einsum.

Each output element is a local accumulator summed over the contraction index, innermost; the
output loops carry broadcast batch indices and the outermost is parallel for large products.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import Buffer, Declare, Expr, Kernel, Stmt, Var, block
from ..registry import LowerContext, lowering
from .common import broadcast_index, const, idx
from .nn_common import acc_dtype, add_to, nest, requantize
from .nn_conv import scalar

# (a value, b value, i, j, k) -> the product term; i/j are None for 1-D operands.
Term = Callable[[Expr, Expr, Expr | None, Expr | None, Expr], Expr]


def work_dtype(dtype: DType) -> DType:
    return acc_dtype(dtype) if dtype.is_float else dtype


def _operand_index(buffer: Buffer, batch: list[Expr], row: Expr, col: Expr) -> list[Expr]:
    """Index of a matrix operand (rank >= 2): broadcast batch dims, then (row, col)."""
    lead = broadcast_index(batch, Buffer(buffer.name, buffer.dtype, buffer.shape[:-2]))
    return [*lead, row, col]


def matmul_nest(
    a: Buffer, b: Buffer, out: Buffer, acc_type: DType, term: Term,
    finish: Callable[[Expr, list[Expr], Expr | None, Expr | None], Expr],
) -> Stmt:
    """out[batch, i, j] = finish(sum_k term(a[batch, i, k], b[batch, k, j], i, j, k))."""
    k_extent = a.shape[-1]
    has_rows, has_cols = len(a.shape) > 1, len(b.shape) > 1
    batch_rank = len(out.shape) - int(has_rows) - int(has_cols)

    def body(v: list[Expr]) -> Stmt:
        batch = v[:batch_rank]
        i = v[batch_rank] if has_rows else None
        j = v[-1] if has_cols else None
        acc = Var("acc", acc_type)

        def step(kv: list[Expr]) -> Stmt:
            k = kv[0]
            a_index = [k] if i is None else _operand_index(a, batch, i, k)
            b_index = [k] if j is None else _operand_index(b, batch, k, j)
            return add_to(acc, term(a.load(*a_index), b.load(*b_index), i, j, k))

        return block(Declare(acc, const(0, acc_type)), nest([k_extent], step, "k"),
                     out.store(v, finish(acc, v, i, j).cast(out.dtype)))

    return nest(list(out.shape), body, "o", work=out.numel * k_extent)


@lowering(Op.MATMUL)
def lower_matmul(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    work = work_dtype(a.dtype)

    def term(x: Expr, y: Expr, *_: Expr | None) -> Expr:
        return x.cast(work) * y.cast(work)

    return [ctx.kernel(matmul_nest(a, b, out, work, term, lambda acc, *_: acc))]


@lowering(Op.GEMM)
def lower_gemm(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    c = ctx.input(2) if ctx.has_input(2) else None
    alpha, beta = float(ctx.attr("alpha")), float(ctx.attr("beta"))
    trans_a, trans_b = bool(ctx.attr("transA")), bool(ctx.attr("transB"))
    work = work_dtype(a.dtype)
    # Integer Gemm with fractional alpha/beta scales in f64 (numpy promotes the same way).
    scaled = DType.F64 if not work.is_float and (alpha != 1.0 or beta != 1.0) else work
    m, n = out.shape
    k_extent = a.shape[0] if trans_a else a.shape[1]

    def body(v: list[Expr]) -> Stmt:
        i, j = v
        acc = Var("acc", work)

        def step(kv: list[Expr]) -> Stmt:
            k = kv[0]
            x = a.load(k, i) if trans_a else a.load(i, k)
            y = b.load(j, k) if trans_b else b.load(k, j)
            return add_to(acc, x.cast(work) * y.cast(work))

        value = acc.cast(scaled)
        if alpha != 1.0:
            value = value * alpha
        if c is not None:
            bias = c.load(*broadcast_index([i, j], c)).cast(scaled)
            value = value + (bias if beta == 1.0 else bias * beta)
        return block(Declare(acc, const(0, work)), nest([k_extent], step, "k"),
                     out.store([i, j], value.cast(out.dtype)))

    return [ctx.kernel(nest([m, n], body, "o", work=m * n * k_extent))]


def _by_axis(buffer: Buffer | None, primary: Expr | None, fallback: Expr) -> Expr | None:
    """A quantization parameter: one value, or a vector indexed along ``primary`` (rows of A,
    columns of B) or, for 1-D operands, the contraction index."""
    if buffer is None:
        return None
    if buffer.numel == 1:
        return scalar(buffer)
    return buffer.load(primary if primary is not None else fallback)


def _integer_term(a_zero: Buffer | None, b_zero: Buffer | None) -> Term:
    def term(x: Expr, y: Expr, i: Expr | None, j: Expr | None, k: Expr) -> Expr:
        left, right = x.cast(DType.I32), y.cast(DType.I32)
        za, zb = _by_axis(a_zero, i, k), _by_axis(b_zero, j, k)
        if za is not None:
            left = left - za.cast(DType.I32)
        if zb is not None:
            right = right - zb.cast(DType.I32)
        return left * right

    return term


@lowering(Op.MATMUL_INTEGER)
def lower_matmul_integer(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    zeros = [ctx.input(i) if ctx.has_input(i) else None for i in (2, 3)]
    term = _integer_term(*zeros)
    return [ctx.kernel(matmul_nest(a, b, out, DType.I32, term, lambda acc, *_: acc))]


@lowering(Op.QLINEAR_MATMUL)
def lower_qlinear_matmul(ctx: LowerContext) -> list[Kernel]:
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (ctx.input(i) for i in range(8))
    out = ctx.output()
    f32 = DType.F32

    def finish(acc: Expr, _v: list[Expr], i: Expr | None, j: Expr | None) -> Expr:
        sa = _by_axis(a_scale, i, idx(0))
        sb = _by_axis(b_scale, j, idx(0))
        assert sa is not None and sb is not None
        multiplier = sa.cast(f32) * sb.cast(f32) / scalar(y_scale).cast(f32)
        return requantize(acc.cast(f32) * multiplier, scalar(y_zero), out.dtype)

    term = _integer_term(a_zero, b_zero)
    return [ctx.kernel(matmul_nest(a, b, out, DType.I32, term, finish))]


def _einsum_terms(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """Operand and output label lists, each ellipsis expanded to numbered batch labels that
    align right (numpy broadcasting)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    batch_rank = max(rank - len(t.replace("...", "")) for t, rank in zip(terms, ranks,
                                                                         strict=True))
    batch = [f"...{d}" for d in range(batch_rank)]

    def expand(term: str, extra: int) -> list[str]:
        before, dots, after = term.partition("...")
        return [*before, *(batch[batch_rank - extra:] if dots else []), *after]

    labels = [expand(t, rank - len(t.replace("...", ""))) for t, rank in zip(terms, ranks,
                                                                            strict=True)]
    if arrow:
        output = expand(rhs, batch_rank)
    else:
        counts: dict[str, int] = {}
        for term_labels in labels:
            for label in term_labels:
                counts[label] = counts.get(label, 0) + 1
        output = batch + sorted(k for k, c in counts.items() if c == 1 and k not in batch)
    return labels, output


@lowering(Op.EINSUM)
def lower_einsum(ctx: LowerContext) -> list[Kernel]:
    """A loop nest over every label: the output's outside, the contracted ones inside."""
    operands = [ctx.input(i) for i in range(len(ctx.inputs))]
    out = ctx.output()
    labels, output = _einsum_terms(ctx.attr("equation"), [len(o.shape) for o in operands])
    sizes: dict[str, int] = {}
    for operand, term in zip(operands, labels, strict=True):
        for label, extent in zip(term, operand.shape, strict=True):
            sizes[label] = max(sizes.get(label, 1), extent)
    contracted = [label for label in sizes if label not in output]
    work = work_dtype(operands[0].dtype)

    def body(v: list[Expr]) -> Stmt:
        acc = Var("acc", work)

        def step(rv: list[Expr]) -> Stmt:
            where = dict(zip(output + contracted, v + rv, strict=True))
            product: Expr | None = None
            for operand, term in zip(operands, labels, strict=True):
                index = [where[label] if extent > 1 else idx(0)
                         for label, extent in zip(term, operand.shape, strict=True)]
                value = operand.load(*index).cast(work)
                product = value if product is None else product * value
            assert product is not None
            return add_to(acc, product)

        return block(Declare(acc, const(0, work)),
                     nest([sizes[label] for label in contracted], step, "r"),
                     out.store(v, acc.cast(out.dtype)))

    reduction = math.prod(sizes[label] for label in contracted)
    return [ctx.kernel(nest([sizes[label] for label in output], body, "o",
                            work=out.numel * reduction))]
