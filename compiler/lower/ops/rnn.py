"""Lowerings of the recurrent ops RNN, GRU and LSTM: one driver, three cells.

Like the reference (compiler/reference/kernels/rnn.py), the driver does what the three share and
a cell says how one step turns gate pre-activations into the new state. Two kernels:

1. the input projection ``XW[d, t, b, g] = Wb[d, g] + sum_i X[t, b, i] * W[d, g, i]`` for every
   step at once (a parallel loop over (d, t, b) with the reduction innermost);
2. the recurrence: per direction (unrolled in Python: activations may differ per direction),
   a serial loop over steps whose body runs phases over (batch x gate rows) -- the recurrent
   matmul ``Rb + h @ R^T`` into a ``gates`` scratch -- then the elementwise cell update over
   (batch x hidden), which writes ``h``/``c`` in place and the step's row of ``Y``.

Everything computes in f32 (f64 for f64 inputs), like the reference. A backward direction reads
and writes step ``s`` of sequence ``b`` at time ``len_b - 1 - s`` (padding steps in place), the
reference's within-length reversal; steps past a sequence's length keep the state and write 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...ir.op import Op
from ...ir.rules.rnn import activation_specs
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Unary,
    Var,
    binary,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import PARALLEL_WORK

Activation = Callable[[Expr], Expr]

def _activation(name: str, alpha: float, beta: float) -> Activation:
    """``x -> f(x)`` as an expression; ``x`` must be a local (some functions read it twice)."""
    functions: dict[str, Activation] = {
        "relu": lambda x: binary("max", x, 0.0),
        "tanh": lambda x: Unary("tanh", x),
        "sigmoid": lambda x: Unary("sigmoid", x),
        "softsign": lambda x: x / (Unary("abs", x) + 1.0),
        # log(1 + e^x) without overflow: max(x, 0) + log(1 + e^-|x|), numpy's logaddexp(0, x).
        "softplus": lambda x: binary("max", x, 0.0)
        + Unary("log", Unary("exp", -Unary("abs", x)) + 1.0),
        "leakyrelu": lambda x: select(x >= 0.0, x, x * alpha),
        "thresholdedrelu": lambda x: select(x > alpha, x, 0.0),
        "elu": lambda x: select(x >= 0.0, x, (Unary("exp", x) - 1.0) * alpha),
        "affine": lambda x: x * alpha + beta,
        "scaledtanh": lambda x: Unary("tanh", x * beta) * alpha,
        "hardsigmoid": lambda x: binary("min", binary("max", x * alpha + beta, 0.0), 1.0),
    }
    return functions[name]


def _activations(ctx: LowerContext, num_dirs: int) -> list[list[Activation]]:
    """The activation functions of each direction."""
    return [[_activation(*spec) for spec in direction]
            for direction in activation_specs(ctx.op, ctx.attrs, num_dirs)]


def unflatten(flat: Expr, extents: Sequence[int]) -> list[Expr]:
    """Row-major indices of position ``flat`` in a nest of ``extents``."""
    indices: list[Expr] = []
    for axis in range(len(extents) - 1, -1, -1):
        indices.append(flat % extents[axis] if axis else flat)
        flat = flat // extents[axis]
    return indices[::-1]


def flat_loop(name: str, extents: Sequence[int], body: Callable[[list[Expr]], Stmt],
              work_per_item: int) -> Loop:
    """One loop over every position of ``extents`` (parallel when the work is large)."""
    count = 1
    for extent in extents:
        count *= extent
    var = Var(name)
    parallel = count > 1 and count * work_per_item > PARALLEL_WORK
    return Loop(var, Const(count, DType.I64), body(unflatten(var, extents)),
                LoopKind.PARALLEL if parallel else LoopKind.SERIAL)


def reduce_sum(name: str, extent: int, init: Expr, term: Callable[[Var], Expr],
               finish: Callable[[Expr], Stmt]) -> Stmt:
    """``acc = init; for k < extent: acc += term(k); finish(acc)``."""
    acc, k = Var(f"{name}_acc", init.dtype), Var(f"{name}_k")
    return block(
        Declare(acc, init),
        Loop(k, Const(extent, DType.I64), Assign(acc, acc + term(k))),
        finish(acc),
    )


@dataclass
class Recurrence:
    """What the cells and phases read: sizes, buffers, and the expressions of one step."""

    ctx: LowerContext
    compute: DType
    steps: int
    batch: int
    hidden: int
    gated: int
    layout: int
    xw: Buffer  # [dirs, steps, batch, gated], input projection plus W bias
    gates: Buffer  # [batch, gated], recurrent projection plus R bias
    h: Buffer  # [batch, hidden]
    c: Buffer | None  # [batch, hidden], LSTM only
    clip: float | None

    def load(self, buffer: Buffer, *indices: Expr | int) -> Expr:
        return buffer.load(*indices).cast(self.compute)

    def clipped(self, x: Expr) -> Expr:
        if self.clip is None:
            return x
        return binary("min", binary("max", x, -self.clip), self.clip)

    def state(self, index: int, d: int, b: Expr, j: Expr) -> Expr:
        """Element (b, j) of initial state input ``index`` of direction ``d`` (0 if absent)."""
        if not self.ctx.has_input(index):
            return Const(0.0, self.compute)
        source = self.ctx.input(index)
        return self.load(source, d, b, j) if self.layout == 0 else self.load(source, b, d, j)

    def r_bias(self, d: int, g: Expr) -> Expr:
        if not self.ctx.has_input(3):
            return Const(0.0, self.compute)
        return self.load(self.ctx.input(3), d, g + self.gated)

    def matmul_phase(self, name: str, d: int, rows: tuple[int, int], source: Buffer,
                     active: Callable[[Expr], Expr]) -> Stmt:
        """``gates[b, g] = Rb[g] + sum_k source[b, k] * R[d, g, k]`` for g in ``rows``, skipping
        sequences that have ended."""
        first, last = rows
        r = self.ctx.input(2)

        def body(idx: list[Expr]) -> Stmt:
            b, g = idx[0], idx[1] + first
            return If(active(b), reduce_sum(
                name, self.hidden, self.r_bias(d, g),
                lambda k: self.load(source, b, k) * self.load(r, d, g, k),
                lambda acc: self.gates.store([b, g], acc),
            ))

        return flat_loop(f"{name}_bg", (self.batch, last - first), body, self.hidden)


@dataclass
class Step:
    """One (batch, hidden) element of one step, as a cell sees it."""

    rec: Recurrence
    d: int
    t: Expr  # the time index this step reads and writes
    b: Expr
    j: Expr
    activations: list[Activation]

    def x(self, gate: int) -> Expr:
        """Input projection of gate ``gate`` (in ONNX order) for this element."""
        return self.rec.load(self.rec.xw, self.d, self.t, self.b, self.j + gate * self.rec.hidden)

    def r(self, gate: int) -> Expr:
        return self.rec.load(self.rec.gates, self.b, self.j + gate * self.rec.hidden)


# A cell: (step, locals to declare) -> (new h, new c or None); it appends the Declares of its
# intermediate values to the list so every expression is computed once.
Cell = Callable[[Step, list[Stmt]], tuple[Expr, Expr | None]]


def let(stmts: list[Stmt], name: str, value: Expr) -> Var:
    var = Var(name, value.dtype)
    stmts.append(Declare(var, value))
    return var


def _apply(step: Step, stmts: list[Stmt], which: int, name: str, pre: Expr) -> Var:
    """Declare the clipped pre-activation, then ``name = activation[which](it)``."""
    x = let(stmts, f"{name}_pre", step.rec.clipped(pre))
    return let(stmts, name, step.activations[which](x))


def _rnn_cell(step: Step, stmts: list[Stmt]) -> tuple[Expr, Expr | None]:
    return _apply(step, stmts, 0, "h_new", step.x(0) + step.r(0)), None


def _gru_cell(step: Step, stmts: list[Stmt], lbr: bool) -> tuple[Expr, Expr | None]:
    rec = step.rec
    h = let(stmts, "h_old", rec.load(rec.h, step.b, step.j))
    z = _apply(step, stmts, 0, "z", step.x(0) + step.r(0))
    if lbr:
        r = _apply(step, stmts, 0, "r", step.x(1) + step.r(1))
        candidate = _apply(step, stmts, 1, "cand", step.x(2) + r * step.r(2))
    else:  # the reset gate was applied before the h-gate matmul (see _gru_phases)
        candidate = _apply(step, stmts, 1, "cand", step.x(2) + step.r(2))
    return (1.0 - z) * candidate + z * h, None


def _lstm_cell(step: Step, stmts: list[Stmt], couple: bool) -> tuple[Expr, Expr | None]:
    rec = step.rec
    ctx = rec.ctx
    assert rec.c is not None
    c = let(stmts, "c_old", rec.load(rec.c, step.b, step.j))

    def peephole(k: int, state: Expr) -> Expr | None:
        if not ctx.has_input(7):
            return None
        return rec.load(ctx.input(7), step.d, step.j + k * rec.hidden) * state

    def gate(which: int, name: str, pre: Expr, k: int, state: Expr) -> Var:
        extra = peephole(k, state)
        return _apply(step, stmts, which, name, pre if extra is None else pre + extra)

    i = gate(0, "gi", step.x(0) + step.r(0), 0, c)
    forget = (1.0 - i) if couple else gate(0, "gf", step.x(2) + step.r(2), 2, c)
    g = _apply(step, stmts, 1, "gc", step.x(3) + step.r(3))
    c_new = let(stmts, "c_new", forget * c + i * g)
    o = gate(0, "go", step.x(1) + step.r(1), 1, c_new)
    return o * step.activations[2](c_new), c_new


def _check_lengths(ctx: LowerContext, steps: int, batch: int) -> Stmt | None:
    """Report sequence lengths outside [0, steps] (uses clamp them, so nothing goes out of
    bounds)."""
    if not ctx.has_input(4):
        return None
    lengths = ctx.input(4)
    b = Var("len_b")
    value = lengths.load(b).cast(DType.I64)
    bad = select(value < 0, Const(True, DType.BOOL), value > steps)
    return Loop(b, Const(batch, DType.I64), If(bad, Report(
        f"{ctx.node.describe()}: sequence_lens has a value out of range [0, {steps}]")))


def _lower_recurrent(ctx: LowerContext, cell: Cell, gru_reset_first: bool = False
                     ) -> list[Kernel]:
    x, w, r = ctx.input(0), ctx.input(1), ctx.input(2)
    layout = int(ctx.attr("layout"))
    compute = DType.F64 if x.dtype is DType.F64 else DType.F32
    steps, batch, input_size = x.shape if layout == 0 else (x.shape[1], x.shape[0], x.shape[2])
    num_dirs, gated, hidden = r.shape
    direction = ctx.attr("direction")
    clip = ctx.attr("clip")
    xw = ctx.scratch("xw", compute, (num_dirs, steps, batch, gated))
    rec = Recurrence(
        ctx, compute, steps, batch, hidden, gated, layout, xw,
        ctx.scratch("gates", compute, (batch, gated)),
        ctx.scratch("h", compute, (batch, hidden)),
        ctx.scratch("c", compute, (batch, hidden)) if ctx.op is Op.LSTM else None,
        None if clip is None else float(clip),
    )
    reset_h = ctx.scratch("rh", compute, (batch, hidden)) if gru_reset_first else None

    def projection(idx: list[Expr]) -> Stmt:
        d, t, b = idx
        g = Var("proj_g")
        bias = rec.load(ctx.input(3), d, g) if ctx.has_input(3) else Const(0.0, compute)
        xs = (t, b) if layout == 0 else (b, t)
        return Loop(g, Const(gated, DType.I64), reduce_sum(
            "proj", input_size, bias,
            lambda i: rec.load(x, *xs, i) * rec.load(w, d, g, i),
            lambda acc: xw.store([d, t, b, g], acc),
        ))

    project = ctx.kernel(
        flat_loop("proj_dtb", (num_dirs, steps, batch), projection, gated * input_size),
        inputs=[x, w] + ([ctx.input(3)] if ctx.has_input(3) else []),
        outputs=[], scratch=[xw],
    )

    s = Var("step")

    def length(b: Expr) -> Expr:
        if not ctx.has_input(4):
            return Const(steps, DType.I64)
        value = ctx.input(4).load(b).cast(DType.I64)
        return binary("min", binary("max", value, 0), steps)

    def active(b: Expr) -> Expr:
        return s < length(b)

    activations = _activations(ctx, num_dirs)
    body: list[Stmt] = []
    check = _check_lengths(ctx, steps, batch)
    if check is not None:
        body.append(check)
    y, y_h, y_c = (ctx.outputs + [None, None, None])[:3]

    def state_index(d: int, b: Expr, j: Expr) -> list[Expr | int]:
        return [d, b, j] if layout == 0 else [b, d, j]

    for d in range(num_dirs):
        backward = direction == "reverse" or d == 1

        def init(idx: list[Expr], d: int = d) -> Stmt:
            b, j = idx
            stores = [rec.h.store([b, j], rec.state(5, d, b, j))]
            if rec.c is not None:
                stores.append(rec.c.store([b, j], rec.state(6, d, b, j)))
            return block(stores)

        def update(idx: list[Expr], d: int = d, backward: bool = backward) -> Stmt:
            b, j = idx
            stmts: list[Stmt] = []
            n = let(stmts, "seq_len", length(b))
            t = let(stmts, "t_at", select(s < n, n - 1 - s, s)) if backward else s
            live = let(stmts, "live", s < n)
            step = Step(rec, d, t, b, j, activations[d])
            inner: list[Stmt] = []
            h_new, c_new = cell(step, inner)
            h_var = let(inner, "h_out", h_new)
            inner.append(rec.h.store([b, j], h_var))
            if c_new is not None and rec.c is not None:
                inner.append(rec.c.store([b, j], c_new))
            writes: list[Stmt] = [If(live, block(inner))]
            if y is not None:
                y_index = [t, d, b, j] if layout == 0 else [b, t, d, j]
                writes.append(y.store(y_index, select(
                    live, rec.load(rec.h, b, j), Const(0.0, compute)).cast(y.dtype)))
            return block(stmts, writes)

        phases: list[Stmt] = []
        if gru_reset_first:
            assert reset_h is not None

            def reset(idx: list[Expr], d: int = d, backward: bool = backward) -> Stmt:
                b, k = idx
                head: list[Stmt] = []
                n = let(head, "seq_len", length(b))
                t = select(s < n, n - 1 - s, s) if backward else s
                step = Step(rec, d, t, b, k, activations[d])
                stmts: list[Stmt] = []
                gate = _apply(step, stmts, 0, "r", step.x(1) + step.r(1))
                stmts.append(reset_h.store([b, k], gate * rec.load(rec.h, b, k)))
                return block(head, If(s < n, block(stmts)))

            phases += [
                rec.matmul_phase("zr", d, (0, 2 * hidden), rec.h, active),
                flat_loop("reset_bk", (batch, hidden), reset, 1),
                rec.matmul_phase("hh", d, (2 * hidden, gated), reset_h, active),
            ]
        else:
            phases.append(rec.matmul_phase("rec", d, (0, gated), rec.h, active))
        phases.append(flat_loop("cell_bj", (batch, hidden), update, 1))
        body.append(flat_loop(f"init{d}_bj", (batch, hidden), init, 1))
        body.append(Loop(s, Const(steps, DType.I64), block(phases)))
        finals = [(y_h, rec.h)] + ([(y_c, rec.c)] if rec.c is not None else [])
        for out, state in finals:
            if out is not None:
                body.append(flat_loop(f"final{d}_bj", (batch, hidden), lambda idx, out=out,
                                      state=state, d=d: out.store(
                                          state_index(d, *idx), state.load(*idx).cast(out.dtype)),
                                      1))
    return [project, ctx.kernel(block(body))]


@lowering(Op.RNN)
def lower_rnn(ctx: LowerContext) -> list[Kernel]:
    return _lower_recurrent(ctx, _rnn_cell)


@lowering(Op.GRU)
def lower_gru(ctx: LowerContext) -> list[Kernel]:
    lbr = bool(ctx.attr("linear_before_reset"))
    return _lower_recurrent(ctx, lambda step, stmts: _gru_cell(step, stmts, lbr),
                            gru_reset_first=not lbr)


@lowering(Op.LSTM)
def lower_lstm(ctx: LowerContext) -> list[Kernel]:
    couple = bool(ctx.attr("input_forget"))
    return _lower_recurrent(ctx, lambda step, stmts: _lstm_cell(step, stmts, couple))

