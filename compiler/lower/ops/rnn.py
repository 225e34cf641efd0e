"""Lowerings of the recurrent ops RNN, GRU and LSTM: one driver, three cells.

Like the reference (compiler/reference/kernels/rnn.py), the driver does what the three share and
a cell says how one step turns gate pre-activations into the new state. Two kernels:

1. the input projection ``XW = X @ W^T + biases`` for every step and direction at once;
2. the recurrence: per direction (unrolled in Python: activations may differ per direction),
   a serial loop over steps whose body runs the recurrent product ``h @ R^T`` into ``gates``
   scratch (GRU without ``linear_before_reset`` splits it around the reset gate: its h gate
   multiplies ``r * h``), then per sequence the cell update, a vectorized loop over the hidden
   units that writes ``h``/``c`` in place and the step's row of ``Y``.

An engine (compiler/lower/ops/rnn_engines.py) runs the two products and says where the cells
find their terms: tiled on weights packed at compile time (f32, constant weights), else scalar
loops.

Everything computes in f32 (f64 for f64 inputs), like the reference. A backward direction reads
and writes step ``s`` of sequence ``b`` at time ``len_b - 1 - s`` (padding steps in place), the
reference's within-length reversal; steps past a sequence's length keep the state and write 0.
"""

from __future__ import annotations

from collections.abc import Callable

from ...ir.op import Op
from ...ir.rules.rnn import activation_specs
from ...ir.types import DType
from ..kernel_ir import (
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
    as_index,
    binary,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import Extent
from .conv_tiled import vector_width
from .rnn_engines import Recurrence, ScalarRecurrence, TiledRecurrence, flat_loop, tiles

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


class Step:
    """One (batch, hidden) element of one step, as a cell sees it."""

    def __init__(self, rec: Recurrence, d: int, t: Expr, b: Expr, j: Expr,
                 activations: list[Activation]) -> None:
        self.rec, self.d, self.t, self.b, self.j = rec, d, t, b, j
        self.activations = activations

    def x(self, gate: int) -> Expr:
        """Input projection of gate ``gate`` (in ONNX order) for this element."""
        return self.rec.x(self.d, self.t, self.b, gate, self.j)

    def r(self, gate: int) -> Expr:
        return self.rec.r(self.d, self.b, gate, self.j)


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
    else:  # the reset gate was applied before the h-gate matmul (see the driver)
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


def _check_lengths(ctx: LowerContext, steps: Extent, batch: Extent) -> Stmt | None:
    """Report sequence lengths outside [0, steps] (uses clamp them, so nothing goes out of
    bounds)."""
    if not ctx.has_input(4):
        return None
    lengths = ctx.input(4)
    b = Var("len_b")
    value = lengths.load(b).cast(DType.I64)
    bad = select(value < 0, Const(True, DType.BOOL), value > steps)
    bound = steps if isinstance(steps, int) else "seq_length"
    return Loop(b, as_index(batch), If(bad, Report(
        f"{ctx.node.describe()}: sequence_lens has a value out of range [0, {bound}]")))


def _sequences(rec: Recurrence, name: str, body: Callable[[Expr], Stmt]) -> Loop:
    """``for b < batch: body(b)``, parallel when batch x hidden is large."""
    return flat_loop(name, (rec.batch,), lambda idx: body(idx[0]), rec.hidden)


def _units(rec: Recurrence, name: str, body: Callable[[Var], Stmt]) -> Loop:
    """``for j < hidden: body(j)``, vectorized (the bodies are straight-line code)."""
    j = Var(name)
    return Loop(j, Const(rec.hidden, DType.I64), body(j), LoopKind.VECTORIZE,
                vector_width(rec.ctx, rec.compute, rec.hidden))


class _Direction:
    """The statements of one direction: initial state, the step loop, final states."""

    def __init__(self, rec: Recurrence, cell: Cell, d: int, reset_h: Buffer | None) -> None:
        ctx = rec.ctx
        self.rec, self.cell, self.d, self.reset_h = rec, cell, d, reset_h
        self.backward = ctx.attr("direction") == "reverse" or d == 1
        self.activations = _activations(ctx, rec.dirs)[d]
        self.s = Var("step")
        self.y, self.y_h, self.y_c = (ctx.outputs + [None, None, None])[:3]

    def state_index(self, b: Expr, j: Expr) -> list[Expr | int]:
        return [self.d, b, j] if self.rec.layout == 0 else [b, self.d, j]

    def y_index(self, t: Expr, b: Expr, j: Expr) -> list[Expr | int]:
        return [t, self.d, b, j] if self.rec.layout == 0 else [b, t, self.d, j]

    def timing(self, stmts: list[Stmt], b: Expr) -> tuple[Expr, Expr | None]:
        """(the time step ``s`` reads and writes for sequence ``b``, whether the sequence is
        still running: None when it always is)."""
        rec, s = self.rec, self.s
        if not rec.ctx.has_input(4):
            return (rec.steps - 1 - s if self.backward else s), None
        n = let(stmts, "seq_len", rec.length(b))
        live = s < n
        return (let(stmts, "t_at", select(live, n - 1 - s, s)) if self.backward else s), live

    def step(self, t: Expr, b: Expr, j: Expr) -> Step:
        return Step(self.rec, self.d, t, b, j, self.activations)

    def init(self, b: Expr) -> Stmt:
        rec = self.rec

        def element(j: Var) -> Stmt:
            stores: list[Stmt] = [rec.h.store([b, j], rec.state(5, self.d, b, j))]
            if rec.c is not None:
                stores.append(rec.c.store([b, j], rec.state(6, self.d, b, j)))
            return block(stores)

        return _units(rec, "init_j", element)

    def reset(self, b: Expr) -> Stmt:
        """``rh = r * h`` (GRU without linear_before_reset), before the h gate's product."""
        rec, reset_h = self.rec, self.reset_h
        assert reset_h is not None
        stmts: list[Stmt] = []
        t, live = self.timing(stmts, b)

        def element(k: Var) -> Stmt:
            inner: list[Stmt] = []
            step = self.step(t, b, k)
            gate = _apply(step, inner, 0, "r", step.x(1) + step.r(1))
            inner.append(reset_h.store([b, k], gate * rec.load(rec.h, b, k)))
            return block(inner)

        compute = _units(rec, "reset_k", element)
        return block(stmts, compute if live is None else If(live, compute))

    def update(self, b: Expr) -> Stmt:
        """The cell update of sequence ``b`` (or, once it has ended, 0 into ``Y``)."""
        rec, y = self.rec, self.y
        stmts: list[Stmt] = []
        t, live = self.timing(stmts, b)

        def element(j: Var) -> Stmt:
            inner: list[Stmt] = []
            h_new, c_new = self.cell(self.step(t, b, j), inner)
            h_var = let(inner, "h_out", h_new)
            inner.append(rec.h.store([b, j], h_var))
            if c_new is not None and rec.c is not None:
                inner.append(rec.c.store([b, j], c_new))
            if y is not None:
                inner.append(y.store(self.y_index(t, b, j), h_var.cast(y.dtype)))
            return block(inner)

        compute = _units(rec, "cell_j", element)
        if live is None:
            return block(stmts, compute)
        pad = None if y is None else _units(rec, "pad_j", lambda j: y.store(
            self.y_index(t, b, j), Const(0.0, y.dtype)))
        return block(stmts, If(live, compute, pad))

    def final(self, out: Buffer, state: Buffer) -> Stmt:
        return _sequences(self.rec, f"final{self.d}_b", lambda b: _units(
            self.rec, "final_j",
            lambda j: out.store(self.state_index(b, j), state.load(b, j).cast(out.dtype))))

    def statements(self) -> list[Stmt]:
        rec, d = self.rec, self.d
        phases = [rec.product(d, 0, rec.h, self.s)]
        if self.reset_h is not None:
            phases += [_sequences(rec, "reset_b", self.reset),
                       rec.product(d, 1, self.reset_h, self.s)]
        phases.append(_sequences(rec, "cell_b", self.update))
        body = [_sequences(rec, f"init{d}_b", self.init),
                Loop(self.s, as_index(rec.steps), block(phases))]
        finals = [(self.y_h, rec.h), (self.y_c, rec.c)]
        return body + [self.final(out, state) for out, state in finals
                       if out is not None and state is not None]


def _lower_recurrent(ctx: LowerContext, cell: Cell, gru_reset_first: bool = False,
                     lbr: bool = False) -> list[Kernel]:
    gated, hidden = ctx.input(2).shape[1:]
    segments = [(0, 2 * hidden), (2 * hidden, gated)] if gru_reset_first else [(0, gated)]
    rec: Recurrence = (TiledRecurrence(ctx, segments, lbr) if tiles(ctx)
                       else ScalarRecurrence(ctx, segments))
    project = rec.projection()
    reset_h = ctx.scratch("rh", rec.compute, (rec.batch, hidden)) if gru_reset_first else None
    body: list[Stmt] = []
    check = _check_lengths(ctx, rec.steps, rec.batch)
    if check is not None:
        body.append(check)
    for d in range(rec.dirs):
        body += _Direction(rec, cell, d, reset_h).statements()
    return [project, ctx.kernel(block(body))]


@lowering(Op.RNN)
def lower_rnn(ctx: LowerContext) -> list[Kernel]:
    return _lower_recurrent(ctx, _rnn_cell)


@lowering(Op.GRU)
def lower_gru(ctx: LowerContext) -> list[Kernel]:
    lbr = bool(ctx.attr("linear_before_reset"))
    return _lower_recurrent(ctx, lambda step, stmts: _gru_cell(step, stmts, lbr),
                            gru_reset_first=not lbr, lbr=lbr)


@lowering(Op.LSTM)
def lower_lstm(ctx: LowerContext) -> list[Kernel]:
    couple = bool(ctx.attr("input_forget"))
    return _lower_recurrent(ctx, lambda step, stmts: _lstm_cell(step, stmts, couple))
