"""Lowerings of the control-flow ops If, Loop and Scan: one kernel each, bodies inlined.

Each body is lowered with the graph lowering and its statements inlined (control_inline.py):

- If: ``if cond { then-branch; copy its outputs } else { ... }`` (a constant cond inlines only
  the branch it takes, whose types the node has).
- Loop: a serial loop over iterations guarded by a ``run`` flag (cond input, body condition,
  trip count M). A trip count that is not a small constant -- a run-time M, or none -- becomes
  four nested loops of at most 2^16 iterations each, every level guarded by ``run``, so a loop
  that stops early wastes at most a few 2^16 flag tests (the kernel IR has no ``break``).
- Scan: a serial loop over the sequence; the body's loads of a scan-input slice read the
  sequence input directly at the step's index.

Loop-carried values live in scratch (the body's input buffers); after each iteration the body's
outputs are copied into the node's final outputs, and from there into the carried scratch (two
steps, so a body that permutes its carried values reads no half-updated state). Scan outputs
are written at the iteration's slice, so their shapes must be static (trip count known at build
time), which the type rules ensure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...ir.graph import Graph
from ...ir.op import Op
from ...ir.rules.control import scan_settings
from ...ir.types import DType, TensorType
from ..kernel_ir import (
    Assign,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    Stmt,
    Var,
    binary,
    block,
)
from ..registry import LowerContext, lowering
from .common import over
from .control_inline import InlinedBody, static_shape

# Iterations per level of a Loop whose trip count is not a small constant.
LEVEL_BITS = 16
INT64_MAX = (1 << 63) - 1

Reader = Callable[[list[Var]], Expr]


def _copy(prefix: str, shape: Sequence[int], read: Reader,
          store: Callable[[list[Var], Expr], Stmt]) -> Stmt:
    return over(shape, lambda idx: store(idx, read(idx)), prefix=prefix)


def _into(buffer: Buffer) -> Callable[[list[Var], Expr], Stmt]:
    return lambda idx, value: buffer.store(idx, value.cast(buffer.dtype))


def _scalar(buffer: Buffer) -> Expr:
    """The single element of a rank-0 or [1] buffer."""
    return buffer.load(*([0] * len(buffer.shape)))


def _kernel(ctx: LowerContext, body: Stmt, inlined: Sequence[InlinedBody]) -> Kernel:
    inputs = list(ctx.inputs) + [b for inner in inlined for b in inner.free]
    return ctx.kernel(body, inputs=[b for b in inputs if b is not None])


def _check_types(ctx: LowerContext, body: InlinedBody, expected: Sequence[tuple[int, Buffer]],
                 what: str, stacked_axis: dict[int, int] | None = None) -> None:
    """Body output ``i`` must have the type of buffer ``b`` for each ``(i, b)`` (less the
    stacked axis of a scan output, where ``stacked_axis`` names one)."""
    for index, target in expected:
        shape = list(target.shape)
        if stacked_axis is not None:
            del shape[stacked_axis[index]]
        produced = body.graph.outputs[index]
        got = static_shape(ctx, produced, what)
        if produced.type.dtype != target.dtype or got != tuple(shape):
            raise ctx.fail(
                f"{what} %{produced.name}: body yields {produced.type}, but the node needs "
                f"{target.dtype.value}[{','.join(map(str, shape))}] (a value whose shape "
                "changes across iterations is not supported)"
            )


@lowering(Op.IF)
def lower_if(ctx: LowerContext) -> list[Kernel]:
    present = [(k, out) for k, out in enumerate(ctx.outputs) if out is not None]
    constant = ctx.const(0)

    def branch(name: str) -> tuple[InlinedBody, Stmt]:
        inlined = InlinedBody(ctx, ctx.attr(name), [], {})
        _check_types(ctx, inlined, present, "branch output")
        copies = [_copy(f"{ctx.name}_o{k}_", out.shape, lambda idx, k=k: inlined.read(k, idx),
                        _into(out)) for k, out in present]
        return inlined, block(inlined.prologue, inlined.stmts, copies)

    if constant is not None:
        inlined, stmt = branch("then_branch" if bool(constant.reshape(-1)[0]) else "else_branch")
        return [_kernel(ctx, stmt, [inlined])]
    then_inlined, then_stmt = branch("then_branch")
    else_inlined, else_stmt = branch("else_branch")
    body = If(_scalar(ctx.input(0)), then_stmt, else_stmt)
    return [_kernel(ctx, body, [then_inlined, else_inlined])]


def _body_scalar_type(graph: Graph, index: int, dtype: DType) -> TensorType:
    """A Loop body's iteration-number / condition input type: rank 0, or [1] when declared
    with rank 1."""
    return TensorType(dtype, (1,) * min(graph.inputs[index].type.rank, 1))


def _trip_loop(ctx: LowerContext, limit: Expr, limit_const: int | None, run: Var,
               body: Callable[[Expr], Stmt]) -> Stmt:
    """Iterations ``i = 0, 1, ...`` of ``body(i)`` while ``run`` holds and ``i < limit``."""
    name = f"{ctx.name}_it"
    if limit_const is not None and limit_const <= 1 << LEVEL_BITS:
        i = Var(name)
        return Loop(i, Const(max(limit_const, 0), DType.I64), If(run, body(i)))
    total = Var(f"{name}_total")
    levels = 4
    extents: list[Expr] = []
    for level in range(levels):
        # ceil(total / 2^(16 level)), capped at 2^16 below the top level; <= 0 when total is.
        count: Expr = total if level == 0 else binary(
            "shr", total - 1, LEVEL_BITS * level) + 1
        if level < levels - 1:
            count = binary("min", count, 1 << LEVEL_BITS)
        extents.append(count)
    variables = [Var(f"{name}{level}") for level in range(levels)]
    index: Expr = variables[-1]
    for var in reversed(variables[:-1]):
        index = index * (1 << LEVEL_BITS) + var
    i = Var(name)
    stmt: Stmt = If(run, block(Declare(i, index), body(i)))
    for level in range(levels):
        stmt = Loop(variables[level], extents[level], stmt)
        if level < levels - 1:
            stmt = If(run, stmt)
    return block(Declare(total, limit), stmt)


@lowering(Op.LOOP)
def lower_loop(ctx: LowerContext) -> list[Kernel]:
    graph: Graph = ctx.attr("body")
    initial = [ctx.input(i) for i in range(2, len(ctx.inputs))]
    n = len(initial)
    finals = [ctx.outputs[k] if k < len(ctx.outputs) and ctx.outputs[k] is not None
              else ctx.scratch(f"final{k}", b.dtype, b.shape) for k, b in enumerate(initial)]
    scans = [(j, out) for j, out in enumerate(ctx.outputs[n:]) if out is not None]
    iteration = Var(f"{ctx.name}_i")
    types = [_body_scalar_type(graph, 0, DType.I64), _body_scalar_type(graph, 1, DType.BOOL)]
    types += [TensorType(b.dtype, b.shape) for b in initial]
    inlined = InlinedBody(ctx, graph, types, {0: lambda _: iteration,
                                              1: lambda _: Const(True, DType.BOOL)})
    _check_types(ctx, inlined, [(1 + k, b) for k, b in enumerate(finals)], "loop-carried value")
    _check_types(ctx, inlined, [(1 + n + j, out) for j, out in scans], "scan output",
                 {1 + n + j: 0 for j, _ in scans})

    limit: Expr = Const(INT64_MAX, DType.I64)
    limit_const: int | None = None
    if ctx.has_input(0):
        limit = _scalar(ctx.input(0))
        data = ctx.const(0)
        limit_const = None if data is None else int(data.reshape(-1)[0])
    run = Var(f"{ctx.name}_run", DType.BOOL)
    start = Const(True, DType.BOOL) if not ctx.has_input(1) else _scalar(ctx.input(1))
    setup: list[Stmt] = [Declare(run, binary("and", start, Const(0, DType.I64) < limit))]
    for k, source in enumerate(initial):
        for target in (finals[k], inlined.state(2 + k)):
            setup.append(_copy(f"{ctx.name}_init{k}_", source.shape,
                               lambda idx, source=source: source.load(*idx), _into(target)))

    def iterate(i: Expr) -> Stmt:
        stmts: list[Stmt] = [Declare(iteration, i), *inlined.stmts]
        for k, final in enumerate(finals):
            stmts.append(_copy(f"{ctx.name}_out{k}_", final.shape,
                               lambda idx, k=k: inlined.read(1 + k, idx), _into(final)))
        for k, final in enumerate(finals):
            stmts.append(_copy(f"{ctx.name}_carry{k}_", final.shape,
                               lambda idx, final=final: final.load(*idx),
                               _into(inlined.state(2 + k))))
        for j, out in scans:
            stmts.append(_copy(
                f"{ctx.name}_scan{j}_", out.shape[1:],
                lambda idx, j=j: inlined.read(1 + n + j, idx),
                lambda idx, value, out=out: out.store([iteration, *idx], value.cast(out.dtype)),
            ))
        cond = inlined.read(0, [Const(0, DType.I64)] * graph.outputs[0].type.rank)
        stmts.append(Assign(run, binary("and", cond, iteration + 1 < limit)))
        return block(stmts)

    body = block(setup, inlined.prologue, _trip_loop(ctx, limit, limit_const, run, iterate))
    return [_kernel(ctx, body, [inlined])]


@lowering(Op.SCAN)
def lower_scan(ctx: LowerContext) -> list[Kernel]:
    graph: Graph = ctx.attr("body")
    m = int(ctx.attr("num_scan_inputs"))
    n = len(ctx.inputs) - m
    k_out = len(graph.outputs) - n
    in_axes, in_dirs = scan_settings(ctx.attrs, m, k_out, "input")
    out_axes, out_dirs = scan_settings(ctx.attrs, m, k_out, "output")
    states = [ctx.input(i) for i in range(n)]
    sequences = [ctx.input(n + j) for j in range(m)]
    axes = [a % len(s.shape) for a, s in zip(in_axes, sequences, strict=True)]
    length = sequences[0].shape[axes[0]]
    if any(s.shape[a] != length for s, a in zip(sequences, axes, strict=True)):
        raise ctx.fail(f"scan inputs differ in sequence length: "
                       f"{[s.shape[a] for s, a in zip(sequences, axes, strict=True)]}")
    step = Var(f"{ctx.name}_t")

    def position(backward: int) -> Expr:
        return (length - 1 - step) if backward else step

    def slice_of(j: int) -> Callable[[tuple[Expr, ...]], Expr]:
        def load(idx: tuple[Expr, ...]) -> Expr:
            full = list(idx)
            full.insert(axes[j], position(in_dirs[j]))
            return sequences[j].load(*full)
        return load

    types = [TensorType(b.dtype, b.shape) for b in states]
    types += [TensorType(s.dtype, s.shape[:a] + s.shape[a + 1:])
              for s, a in zip(sequences, axes, strict=True)]
    inlined = InlinedBody(ctx, graph, types, {n + j: slice_of(j) for j in range(m)})
    finals = [ctx.outputs[k] if k < len(ctx.outputs) and ctx.outputs[k] is not None
              else ctx.scratch(f"final{k}", b.dtype, b.shape) for k, b in enumerate(states)]
    scans = [(j, out) for j, out in enumerate(ctx.outputs[n:]) if out is not None]
    out_axis = {j: out_axes[j] % len(out.shape) for j, out in scans}
    _check_types(ctx, inlined, list(enumerate(finals)), "state")
    _check_types(ctx, inlined, [(n + j, out) for j, out in scans], "scan output",
                 {n + j: out_axis[j] for j, _ in scans})

    setup: list[Stmt] = []
    for k, source in enumerate(states):
        for target in (finals[k], inlined.state(k)):
            setup.append(_copy(f"{ctx.name}_init{k}_", source.shape,
                               lambda idx, source=source: source.load(*idx), _into(target)))
    stmts: list[Stmt] = list(inlined.stmts)
    for k, final in enumerate(finals):
        stmts.append(_copy(f"{ctx.name}_out{k}_", final.shape,
                           lambda idx, k=k: inlined.read(k, idx), _into(final)))
    for k, final in enumerate(finals):
        stmts.append(_copy(f"{ctx.name}_carry{k}_", final.shape,
                           lambda idx, final=final: final.load(*idx), _into(inlined.state(k))))
    for j, out in scans:
        shape = list(out.shape)
        del shape[out_axis[j]]

        def store(idx: list[Var], value: Expr, j: int = j, out: Buffer = out) -> Stmt:
            full: list[Expr] = list(idx)
            full.insert(out_axis[j], position(out_dirs[j]))
            return out.store(full, value.cast(out.dtype))

        stmts.append(_copy(f"{ctx.name}_scan{j}_", shape,
                           lambda idx, j=j: inlined.read(n + j, idx), store))
    body = block(setup, inlined.prologue, Loop(step, Const(length, DType.I64), block(stmts)))
    return [_kernel(ctx, body, [inlined])]
