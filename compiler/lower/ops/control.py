"""Lowerings of the control-flow ops If, Loop and Scan: bodies inlined into the node's kernel.

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
are written at the iteration's slice.

Run-time extents. Extents of inputs and body values may be symbolic (``batch``; the body is
lowered on the run's DimTable, so they are the same expressions inside and out) or computed by
an earlier node. Output extents that are UNKNOWN (``ctx.undefined_dims``) are defined by a
first "shape kernel" that takes no output; later kernels compute the outputs:

- If: the shape kernel evaluates ``cond`` and defines each output extent as the taken branch's
  (branches may yield different shapes). A branch computing extents of its own values (a
  Compress, a Reshape fed a computed shape) keeps its kernels apart, each under the condition
  (control_inline.py, ``split_kernels``).
- Scan: the output extents are the sequence length and the body's extents.
- Loop, carried values of fixed shape: a final value's extents are its initial ones; a scan
  output's leading extent is the number of iterations actually run. When the body provably
  never stops the loop (its condition output is its condition input or constant true) that
  number is ``cond ? max(M, 0) : 0``, computed without running the body. Otherwise (a
  while-loop) the shape kernel runs the whole loop once, carried values in scratch, to count
  the iterations, and the compute kernel runs it again writing the outputs: the body costs
  twice, but no buffer is sized before its extent is known, and the two runs agree because
  kernel IR is deterministic (random ops included: counter-based, seeded).
- Loop, carried values whose shape changes (the body's type inference says which axes), or
  scan slices whose extents the body computes: body values live in scratch of an upper bound
  of their extents (control_inline.py, BOUNDED); the shape kernel runs the loop, defining the
  final extents, the scan slices' extents (a slice whose shape differs from the first
  iteration's is a run-time error) and the count; the compute kernel runs it again when there
  are scan outputs, and copies the final carried values out. A value with no known bound (it
  may grow without end: a Concat onto a carried value) is refused when lowering."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...ir.graph import Graph
from ...ir.op import Op
from ...ir.rules.control import never_stops_early, scan_settings
from ...ir.types import UNKNOWN, DType, TensorType
from ..kernel_ir import (
    DIMS,
    Assign,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Load,
    Loop,
    Report,
    Stmt,
    Store,
    Var,
    as_index,
    binary,
    block,
    define_dim,
    dim,
    dim_slot,
    select,
    unary,
)
from ..registry import LowerContext, lowering
from .common import Extent, over, same_extent
from .control_inline import BOUNDED, SPLIT, InlinedBody, body_type, rebuild_body
from .index_common import shape_kernel

# Iterations per level of a Loop whose trip count is not a small constant.
LEVEL_BITS = 16
INT64_MAX = (1 << 63) - 1

Reader = Callable[[list[Var]], Expr]


def _copy(prefix: str, shape: Sequence[Extent], read: Reader,
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


def _fit(ctx: LowerContext, target: Buffer, source: Sequence[Extent], dtype: DType, what: str,
         removed: int | None = None, checked: str | None = None) -> list[Stmt]:
    """Statements giving ``target``'s extents (less axis ``removed``) those of ``source``, what
    the body yields as ``dtype``: defines of its undefined extents; any other difference is an
    error (a value whose shape changes across iterations, or differs from the node's type),
    reported at run time with the message ``checked`` where given and an extent is run-time."""
    shape = list(target.shape)
    if removed is not None:
        del shape[removed]
    undefined = {dim_slot(extent) for extent in ctx.undefined_dims}
    defines: list[Stmt] = []
    fits = dtype == target.dtype and len(shape) == len(source)
    for want, got in zip(shape, source, strict=False):
        if not isinstance(want, int) and dim_slot(want) in undefined:
            defines.append(define_dim(want, as_index(got)))
        elif checked is not None and not (isinstance(want, int) and isinstance(got, int)):
            defines.append(If(as_index(want).ne(as_index(got)), Report(checked)))
        elif not same_extent(want, got):
            fits = False
    if not fits:
        raise ctx.fail(f"{what} %{target.name}: the body yields {dtype.value}{_text(source)}, "
                       f"but the node needs {target.dtype.value}{_text(shape)}")
    return defines


def _text(shape: Sequence[Extent]) -> str:
    return "[" + ",".join(str(d) if isinstance(d, int) else "<run-time>" for d in shape) + "]"


def _output_dtype(inlined: InlinedBody, index: int) -> DType:
    return inlined.graph.outputs[index].type.dtype


def _present(ctx: LowerContext, start: int = 0) -> list[tuple[int, Buffer]]:
    return [(k, out) for k, out in enumerate(ctx.outputs[start:]) if out is not None]


class _Branch:
    """One branch of an If, inlined: its statements, and the statements defining the node's
    undefined output extents and copying its outputs into the node's."""

    def __init__(self, ctx: LowerContext, name: str) -> None:
        present = _present(ctx)
        self.inlined = inlined = InlinedBody(ctx, ctx.attr(name), [], {}, SPLIT)
        self.defines = [stmt for k, out in present for stmt in _fit(
            ctx, out, inlined.output_shape(k), _output_dtype(inlined, k), "branch output")]
        self.copies = block([_copy(f"{ctx.name}_o{k}_", out.shape,
                                   lambda idx, k=k: inlined.read(k, idx), _into(out))
                             for k, out in present])

    @property
    def split(self) -> bool:
        """Whether the branch computes extents of its own values (kernels kept apart)."""
        return bool(self.inlined.inner_slots)

    def inline(self) -> Stmt:
        return block(self.inlined.prologue, self.inlined.stmts, self.copies)


@lowering(Op.IF)
def lower_if(ctx: LowerContext) -> list[Kernel]:
    """One kernel ``if cond {then} else {else}``; a shape kernel first when output extents
    differ between the branches. A branch whose values have extents computed inside it keeps
    its kernels apart, each under the branch's condition (after a kernel zeroing the extents
    of the branch not taken, so its buffers are allocated empty), then a copy kernel."""
    constant = ctx.const(0)
    if constant is not None:  # only the branch taken exists
        taken = _Branch(ctx, "then_branch" if bool(constant.reshape(-1)[0]) else "else_branch")
        if not taken.split:
            shapes = [shape_kernel(ctx, taken.defines, [])] if taken.defines else []
            return [*shapes, _kernel(ctx, taken.inline(), [taken.inlined])]
        kernels = taken.inlined.split_kernels(None, [])
        if taken.defines:
            kernels.append(shape_kernel(ctx, taken.defines, []))
        return [*kernels, _kernel(ctx, taken.copies, [taken.inlined])]
    then, otherwise = _Branch(ctx, "then_branch"), _Branch(ctx, "else_branch")
    flag = ctx.input(0)
    cond = _scalar(flag)
    chosen = [If(cond, block(then.defines), block(otherwise.defines))]
    if not (then.split or otherwise.split):
        # Output extents are those of the branch taken: known once cond is read.
        shapes = [shape_kernel(ctx, chosen, [flag])] if then.defines or otherwise.defines else []
        return [*shapes, _kernel(ctx, If(cond, then.inline(), otherwise.inline()),
                                 [then.inlined, otherwise.inlined])]
    zero = [If(cond, block([define_dim(dim(slot), 0) for slot in otherwise.inlined.inner_slots]),
               block([define_dim(dim(slot), 0) for slot in then.inlined.inner_slots]))]
    return [
        shape_kernel(ctx, zero, [flag]),
        *then.inlined.split_kernels(cond, [flag]),
        *otherwise.inlined.split_kernels(unary("not", cond), [flag]),
        shape_kernel(ctx, chosen, [flag]),
        _kernel(ctx, If(cond, then.copies, otherwise.copies), [then.inlined, otherwise.inlined]),
    ]


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


@dataclass(frozen=True)
class _Carried:
    """A loop-carried value: its initial buffer; the body input ``state`` and where each
    iteration's value lands, ``final`` (buffers, and their logical extents: a value whose shape
    changes lives in scratch of a bounded capacity); the body output's logical extents."""

    initial: Buffer
    state: Buffer
    state_shape: tuple[Extent, ...]
    final: Buffer
    final_shape: tuple[Extent, ...]
    out_shape: tuple[Extent, ...]


def _varying(ctx: LowerContext, graph: Graph, types: list[TensorType], n: int
             ) -> list[TensorType]:
    """``types`` of a Loop body's inputs with UNKNOWN on each axis of a carried value whose
    extent the body changes (found by type inference, repeated until no change spreads)."""
    for _ in range(1 + sum(t.rank for t in types[2:])):
        outputs = rebuild_body(ctx, graph, types).outputs
        changed = False
        for k in range(n):
            before, after = types[2 + k], outputs[1 + k].type
            if before.rank == after.rank:
                shape = tuple(a if a == b else UNKNOWN
                              for a, b in zip(before.shape, after.shape, strict=True))
                changed |= shape != before.shape
                types[2 + k] = before.with_shape(shape)
        if not changed:
            break
    return types


class _LoopNode:
    """What a Loop's kernels share: the inlined body, trip count and start condition."""

    def __init__(self, ctx: LowerContext) -> None:
        self.ctx = ctx
        self.graph: Graph = ctx.attr("body")
        self.initial = [ctx.input(i) for i in range(2, len(ctx.inputs))]
        self.n = n = len(self.initial)
        self.iteration = Var(f"{ctx.name}_i")
        types = [_body_scalar_type(self.graph, 0, DType.I64),
                 _body_scalar_type(self.graph, 1, DType.BOOL)]
        types += [body_type(ctx, ctx.node.inputs[2 + k].type, b.shape)  # type: ignore[union-attr]
                  for k, b in enumerate(self.initial)]
        fixed = list(types)
        types = _varying(ctx, self.graph, types, n)
        self.varying = types != fixed
        self.inlined = inlined = InlinedBody(
            ctx, self.graph, types, {0: lambda _: self.iteration,
                                     1: lambda _: Const(True, DType.BOOL)},
            BOUNDED, [(2 + k, 1 + k, b.shape) for k, b in enumerate(self.initial)])
        for k, source in enumerate(self.initial):
            if types[2 + k] == fixed[2 + k]:
                _fit(ctx, source, inlined.output_shape(1 + k), _output_dtype(inlined, 1 + k),
                     "loop-carried value")
        self.limit: Expr = Const(INT64_MAX, DType.I64)
        self.limit_const: int | None = None
        if ctx.has_input(0):
            self.limit = _scalar(ctx.input(0))
            data = ctx.const(0)
            self.limit_const = None if data is None else int(data.reshape(-1)[0])
        self.start: Expr = (Const(True, DType.BOOL) if not ctx.has_input(1)
                            else _scalar(ctx.input(1)))
        self.owned: set[int] = set()  # slots of carried extents this lowering defines

    def carried(self, finals: Sequence[Buffer]) -> list[_Carried]:
        """The carried values ending in ``finals`` (values of fixed shape)."""
        inlined = self.inlined
        return [_Carried(b, inlined.state(2 + k), inlined.state(2 + k).shape, final,
                         final.shape, inlined.output_shape(1 + k))
                for k, (b, final) in enumerate(zip(self.initial, finals, strict=True))]

    def changing(self) -> list[_Carried]:
        """The carried values, each ending in scratch of its state's capacity; their
        varying extents are slots this lowering defines."""
        ctx, inlined, result = self.ctx, self.inlined, []
        for k, b in enumerate(self.initial):
            state = inlined.state(2 + k)
            state_shape = inlined.shapes[inlined.own_inputs[2 + k].name]
            final_shape = tuple(
                ctx.dims.new_slot(f"{ctx.node.describe()} carried value {k} axis {a}")
                if inlined.is_inner(e) and ctx.dims is not None else e
                for a, e in enumerate(state_shape))
            self.owned |= {s for e in (*state_shape, *final_shape) if inlined.is_inner(e)
                           for s in [dim_slot(e)] if s is not None}  # type: ignore[arg-type]
            final = ctx.scratch(f"final{k}", b.dtype, state.shape)
            result.append(_Carried(b, state, state_shape, final, final_shape,
                                   inlined.output_shape(1 + k)))
        return result

    def _set(self, target: Sequence[Extent], source: Sequence[Extent]) -> list[Stmt]:
        return [define_dim(t, as_index(s)) for t, s in zip(target, source, strict=True)
                if not isinstance(t, int) and dim_slot(t) in self.owned]

    def stmt(self, carried: Sequence[_Carried], scans: Sequence[tuple[int, Buffer]],
             count: Var | None = None, per_iteration: Sequence[Stmt] = ()) -> Stmt:
        """The whole loop: carried values end in their ``final``, scan output ``j`` is written
        to ``out`` for each ``(j, out)`` of ``scans``; ``count`` (a local declared before, when
        given) ends as the number of iterations run; ``per_iteration`` ends each iteration."""
        ctx, inlined, n, iteration = self.ctx, self.inlined, self.n, self.iteration
        run = Var(f"{ctx.name}_run", DType.BOOL)
        setup: list[Stmt] = [Declare(run, binary("and", self.start,
                                                 Const(0, DType.I64) < self.limit))]
        for k, c in enumerate(carried):
            setup += self._set(c.final_shape, c.initial.shape)
            setup += self._set(c.state_shape, c.initial.shape)
            for target in (c.final, c.state):
                setup.append(_copy(f"{ctx.name}_init{k}_", c.initial.shape,
                                   lambda idx, c=c: c.initial.load(*idx), _into(target)))

        def iterate(i: Expr) -> Stmt:
            # Scan slices and the condition are read before the carried values are updated:
            # a body output may be a body input, and extents may be those of the state.
            stmts: list[Stmt] = [Declare(iteration, i), *inlined.stmts]
            for j, out in scans:
                shape = inlined.output_shape(1 + n + j)
                copy: Stmt = _copy(
                    f"{ctx.name}_scan{j}_", shape,
                    lambda idx, j=j: inlined.read(1 + n + j, idx),
                    lambda idx, value, out=out: out.store([iteration, *idx],
                                                          value.cast(out.dtype)),
                )
                # A slice whose extents may differ from the output's (reported by the shape
                # kernel) is not written: no store out of bounds.
                for want, got in zip(out.shape[1:], shape, strict=True):
                    if not same_extent(want, got):
                        copy = If(as_index(want).eq(as_index(got)), copy)
                stmts.append(copy)
            stmts += per_iteration
            going = Var(f"{ctx.name}_going", DType.BOOL)
            stmts.append(Declare(going, inlined.read(
                0, [Const(0, DType.I64)] * self.graph.outputs[0].type.rank)))
            for k, c in enumerate(carried):
                stmts += self._set(c.final_shape, c.out_shape)
                stmts.append(_copy(f"{ctx.name}_out{k}_", c.out_shape,
                                   lambda idx, k=k: inlined.read(1 + k, idx), _into(c.final)))
            for k, c in enumerate(carried):
                stmts += self._set(c.state_shape, c.final_shape)
                stmts.append(_copy(f"{ctx.name}_carry{k}_", c.final_shape,
                                   lambda idx, c=c: c.final.load(*idx), _into(c.state)))
            if count is not None:
                stmts.append(Assign(count, iteration + 1))
            stmts.append(Assign(run, binary("and", going, iteration + 1 < self.limit)))
            return block(stmts)

        return block(setup, inlined.prologue,
                     _trip_loop(ctx, self.limit, self.limit_const, run, iterate))

    def counted(self, carried: Sequence[_Carried], slots: Sequence[Expr],
                per_iteration: Sequence[Stmt] = ()) -> list[Stmt]:
        """The loop run to count its iterations into each of ``slots``."""
        count = Var(f"{self.ctx.name}_count")
        return [Declare(count, Const(0, DType.I64)),
                self.stmt(carried, [], count, per_iteration),
                *(define_dim(slot, count) for slot in slots)]

    def trip_counts(self, slots: Sequence[Expr]) -> tuple[list[Stmt], bool]:
        """Statements defining each of ``slots`` as the number of iterations the loop runs, and
        whether they run the body (a counting pass, which uses the node's scratch)."""
        ctx = self.ctx
        if ctx.has_input(0) and never_stops_early(self.inlined.graph):
            trips = select(self.start, binary("max", self.limit, Const(0, DType.I64)),
                           Const(0, DType.I64))
            return [define_dim(slot, trips) for slot in slots], False
        finals = [ctx.scratch(f"count{k}", b.dtype, b.shape) for k, b in enumerate(self.initial)]
        return self.counted(self.carried(finals), slots), True


def _leading_extents(scans: Sequence[tuple[int, Buffer]]) -> list[Expr]:
    """The run-time leading extents of scan outputs (each the number of iterations run)."""
    return [out.shape[0] for _, out in scans if not isinstance(out.shape[0], int)]


@lowering(Op.LOOP)
def lower_loop(ctx: LowerContext) -> list[Kernel]:
    node = _LoopNode(ctx)
    n, inlined = node.n, node.inlined
    scans = _present(ctx, n)
    if node.varying or any(inlined.is_inner(e) for j, _ in scans
                           for e in inlined.output_shape(1 + n + j)):
        return _changing_loop(ctx, node, scans)
    defines: list[Stmt] = []
    finals = []
    for k, b in enumerate(node.initial):
        out = ctx.outputs[k] if k < len(ctx.outputs) else None
        if out is None:
            out = ctx.scratch(f"final{k}", b.dtype, b.shape)
        else:  # its extents are the initial value's (the body keeps them)
            defines += _fit(ctx, out, b.shape, b.dtype, "loop-carried value")
        finals.append(out)
    for j, out in scans:
        defines += _fit(ctx, out, inlined.output_shape(1 + n + j),
                        _output_dtype(inlined, 1 + n + j), "scan output", removed=0)
    counting = False
    if _leading_extents(scans):
        more, counting = node.trip_counts(_leading_extents(scans))
        defines += more
    kernels = []
    if defines:
        inputs = [b for b in ctx.inputs if b is not None] + inlined.free
        kernels.append(shape_kernel(ctx, defines, inputs,
                                    ctx.scratch_buffers if counting else []))
    kernels.append(_kernel(ctx, node.stmt(node.carried(finals), scans), [inlined]))
    return kernels


def _changing_loop(ctx: LowerContext, node: _LoopNode, scans: Sequence[tuple[int, Buffer]]
                   ) -> list[Kernel]:
    """A Loop whose carried values change shape, or whose scan outputs' extents are computed
    by the body: a shape kernel runs the loop (carried values in bounded scratch), defining
    the final extents, the scan slices' extents (checked equal in every iteration) and the
    iteration count; then, with scan outputs, the loop runs again writing them; the final
    carried values are copied out last."""
    n, inlined = node.n, node.inlined
    carried = node.changing()
    checks: list[Stmt] = []
    for j, out in scans:
        message = f"{ctx.node.describe()}: scan output {j} changes shape across iterations"
        for define in _fit(ctx, out, inlined.output_shape(1 + n + j),
                           _output_dtype(inlined, 1 + n + j), "scan output", 0, message):
            if isinstance(define, Store):  # of the first iteration; later ones must agree
                changed = binary("and", node.iteration > 0,
                                 Load(DIMS, define.indices).ne(define.value))
                define = block(If(changed, Report(message)), define)
            checks.append(define)
    finals = []
    for k, c in enumerate(carried):
        out = ctx.outputs[k] if k < len(ctx.outputs) else None
        if out is not None:
            finals += _fit(ctx, out, c.final_shape, c.initial.dtype, "loop-carried value")
    stmts = node.counted(carried, _leading_extents(scans), checks)
    inputs = [b for b in ctx.inputs if b is not None] + inlined.free
    copies = [_copy(f"{ctx.name}_final{k}_", out.shape, lambda idx, c=c: c.final.load(*idx),
                    _into(out)) for k, (c, out) in enumerate(zip(carried, ctx.outputs[:n],
                                                                 strict=False))
              if out is not None]
    again = [node.stmt(carried, scans)] if scans else []
    return [shape_kernel(ctx, stmts + finals, inputs, ctx.scratch_buffers),
            _kernel(ctx, block(again, copies), [inlined])]


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
    lengths = [s.shape[a] for s, a in zip(sequences, axes, strict=True)]
    differ = [other for other in lengths if not same_extent(other, length)]
    if any(isinstance(other, int) and isinstance(length, int) for other in differ):
        raise ctx.fail(f"scan inputs differ in sequence length: {_text(lengths)}")
    step = Var(f"{ctx.name}_t")

    def position(backward: int) -> Expr:
        return (length - 1 - step) if backward else step

    def slice_of(j: int) -> Callable[[tuple[Expr, ...]], Expr]:
        def load(idx: tuple[Expr, ...]) -> Expr:
            full = list(idx)
            full.insert(axes[j], position(in_dirs[j]))
            return sequences[j].load(*full)
        return load

    values = ctx.node.inputs
    types = [body_type(ctx, values[k].type, b.shape)  # type: ignore[union-attr]
             for k, b in enumerate(states)]
    for j, (s, a) in enumerate(zip(sequences, axes, strict=True)):
        whole = values[n + j].type  # type: ignore[union-attr]
        types.append(body_type(ctx, whole.with_shape(whole.shape[:a] + whole.shape[a + 1:]),
                               s.shape[:a] + s.shape[a + 1:]))
    inlined = InlinedBody(ctx, graph, types, {n + j: slice_of(j) for j in range(m)}, BOUNDED,
                          [(k, k, b.shape) for k, b in enumerate(states)])
    defines: list[Stmt] = []
    finals = []
    for k, b in enumerate(states):
        _fit(ctx, b, inlined.output_shape(k), _output_dtype(inlined, k),
             "state (a Scan state keeps its shape across iterations)")
        out = ctx.outputs[k] if k < len(ctx.outputs) else None
        if out is None:
            out = ctx.scratch(f"final{k}", b.dtype, b.shape)
        else:
            defines += _fit(ctx, out, b.shape, b.dtype, "state")
        finals.append(out)
    scans = _present(ctx, n)
    out_axis = {j: out_axes[j] % len(out.shape) for j, out in scans}
    if any(inlined.is_inner(e) for j, _ in scans for e in inlined.output_shape(n + j)):
        raise ctx.fail("a scan output's extents are computed by the body at run time; Scan "
                       "supports scan outputs of static or symbolic shape only")
    for j, out in scans:
        stacked = list(inlined.output_shape(n + j))
        stacked.insert(out_axis[j], length)
        defines += _fit(ctx, out, stacked, _output_dtype(inlined, n + j), "scan output")

    setup: list[Stmt] = []
    for k, source in enumerate(states):
        for target in (finals[k], inlined.state(k)):
            setup.append(_copy(f"{ctx.name}_init{k}_", source.shape,
                               lambda idx, source=source: source.load(*idx), _into(target)))
    # Scan slices are read before the states are updated (a slice may be a state itself).
    stmts: list[Stmt] = list(inlined.stmts)
    for j, out in scans:
        shape = list(out.shape)
        del shape[out_axis[j]]

        def store(idx: list[Var], value: Expr, j: int = j, out: Buffer = out) -> Stmt:
            full: list[Expr] = list(idx)
            full.insert(out_axis[j], position(out_dirs[j]))
            return out.store(full, value.cast(out.dtype))

        stmts.append(_copy(f"{ctx.name}_scan{j}_", shape,
                           lambda idx, j=j: inlined.read(n + j, idx), store))
    for k, final in enumerate(finals):
        stmts.append(_copy(f"{ctx.name}_out{k}_", final.shape,
                           lambda idx, k=k: inlined.read(k, idx), _into(final)))
    for k, final in enumerate(finals):
        stmts.append(_copy(f"{ctx.name}_carry{k}_", final.shape,
                           lambda idx, final=final: final.load(*idx), _into(inlined.state(k))))
    body: Stmt = block(setup, inlined.prologue, Loop(step, as_index(length), block(stmts)))
    if differ:  # run-time lengths that may differ: check before reading any sequence
        mismatch = as_index(differ[0]).ne(as_index(length))
        for other in differ[1:]:
            mismatch = binary("or", mismatch, as_index(other).ne(as_index(length)))
        body = If(mismatch, Report(f"{ctx.node.describe()}: scan inputs differ in sequence "
                                   "length"), body)
    kernels = [shape_kernel(ctx, defines, sequences)] if defines else []
    kernels.append(_kernel(ctx, body, [inlined]))
    return kernels
