"""Numpy kernels of RNN, GRU and LSTM: one recurrence driver, three cells.

The driver handles what the three ops share (layout, directions, sequence lengths, biases,
initial states, activation lists); a cell maps (gate inputs of one step, state) to the new state.
Time steps run in a Python loop; each step is vectorized over batch and hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...ir.op import Op
from ...ir.rules.rnn import activation_specs
from .registry import KernelContext, kernel

Activation = Callable[[np.ndarray], np.ndarray]

def _activation(name: str, alpha: float, beta: float) -> Activation:
    functions: dict[str, Activation] = {
        "relu": lambda x: np.maximum(x, 0),
        "tanh": np.tanh,
        "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
        "softsign": lambda x: x / (1 + np.abs(x)),
        "softplus": lambda x: np.logaddexp(0, x),
        "leakyrelu": lambda x: np.where(x >= 0, x, alpha * x),
        "thresholdedrelu": lambda x: np.where(x > alpha, x, 0),
        "elu": lambda x: np.where(x >= 0, x, alpha * (np.exp(x) - 1)),
        "affine": lambda x: alpha * x + beta,
        "scaledtanh": lambda x: alpha * np.tanh(beta * x),
        "hardsigmoid": lambda x: np.clip(alpha * x + beta, 0, 1),
    }
    return functions[name]


def _activations(ctx: KernelContext, num_dirs: int) -> list[list[Activation]]:
    """The activation functions of each direction."""
    return [[_activation(*spec) for spec in direction]
            for direction in activation_specs(ctx.op, ctx.attrs, num_dirs)]


@dataclass
class Direction:
    """Weights and settings of one direction, as a cell reads them."""

    r: np.ndarray  # [G*hidden, hidden]
    r_bias: np.ndarray  # [G*hidden]
    peephole: np.ndarray  # [3*hidden] (LSTM only; zeros when absent)
    activations: list[Activation]
    clip: Callable[[np.ndarray], np.ndarray]


# A cell: (direction, x @ W^T + Wb for this step, h, c) -> (new h, new c).
Cell = Callable[[Direction, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _rnn_cell(d: Direction, xw: np.ndarray, h: np.ndarray, c: np.ndarray):
    (f,) = d.activations
    return f(d.clip(xw + h @ d.r.T + d.r_bias)), c


def _gru_cell(d: Direction, xw: np.ndarray, h: np.ndarray, c: np.ndarray, *, lbr: bool):
    f, g = d.activations
    rz, rr, rh = np.split(d.r, 3)
    bz, br, bh = np.split(d.r_bias, 3)
    xz, xr, xh = np.split(xw, 3, axis=-1)
    z = f(d.clip(xz + h @ rz.T + bz))
    r = f(d.clip(xr + h @ rr.T + br))
    if lbr:
        candidate = g(d.clip(xh + r * (h @ rh.T + bh)))
    else:
        candidate = g(d.clip(xh + (r * h) @ rh.T + bh))
    return (1 - z) * candidate + z * h, c


def _lstm_cell(d: Direction, xw: np.ndarray, h: np.ndarray, c: np.ndarray, *, couple: bool):
    f, g, act_h = d.activations
    pi, po, pf = np.split(d.peephole, 3)
    gi, go, gf, gc = np.split(xw + h @ d.r.T + d.r_bias, 4, axis=-1)
    i = f(d.clip(gi + pi * c))
    forget = 1 - i if couple else f(d.clip(gf + pf * c))
    c_new = forget * c + i * g(d.clip(gc))
    o = f(d.clip(go + po * c_new))
    return o * act_h(c_new), c_new


def _within_lengths_reversed(lengths: np.ndarray, steps: int) -> np.ndarray:
    """Index [step, batch] that reverses each sequence within its own length (an involution;
    padding steps map to themselves)."""
    t = np.arange(steps)[:, None]
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _recurrence(ctx: KernelContext, cell: Cell, x, w, r, b=None, lengths=None, h0=None,
                c0=None, p=None):
    """Run ``cell`` over time for every direction; returns (Y, Y_h, Y_c) in the op's layout."""
    layout = ctx.attr("layout")
    if layout == 1:
        x = x.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    # Half-precision inputs compute in f32, like the runtimes that accept them.
    compute = np.promote_types(x.dtype, np.float32)
    x, w, r = x.astype(compute), w.astype(compute), r.astype(compute)
    steps, batch, _ = x.shape
    num_dirs, gated, hidden = r.shape
    b = np.zeros((num_dirs, 2 * gated), compute) if b is None else b.astype(compute)
    h0 = np.zeros((num_dirs, batch, hidden), compute) if h0 is None else h0.astype(compute)
    c0 = np.zeros((num_dirs, batch, hidden), compute) if c0 is None else c0.astype(compute)
    p = np.zeros((num_dirs, 3 * hidden), compute) if p is None else p.astype(compute)
    lengths = np.full(batch, steps) if lengths is None else lengths.astype(np.int64)
    if np.any(lengths > steps) or np.any(lengths < 0):
        raise ctx.fail(f"sequence_lens {lengths.tolist()} out of range [0, {steps}]")
    clip_at = ctx.attr("clip")

    def clip(v: np.ndarray) -> np.ndarray:
        return v if clip_at is None else np.clip(v, -clip_at, clip_at)

    active = np.arange(steps)[:, None] < lengths[None, :]  # [step, batch]
    batch_index = np.arange(batch)[None, :]
    reverse_index = _within_lengths_reversed(lengths, steps)
    activations = _activations(ctx, num_dirs)
    y = np.zeros((steps, num_dirs, batch, hidden), compute)
    y_h = np.empty((num_dirs, batch, hidden), compute)
    y_c = np.empty((num_dirs, batch, hidden), compute)
    for d in range(num_dirs):
        backward = ctx.attr("direction") == "reverse" or d == 1
        seq = x[reverse_index, batch_index] if backward else x
        xw = seq @ w[d].T + b[d, :gated]
        direction = Direction(r[d], b[d, gated:], p[d], activations[d], clip)
        h, c = h0[d], c0[d]
        out = np.zeros((steps, batch, hidden), compute)
        for t in range(steps):
            h_new, c_new = cell(direction, xw[t], h, c)
            keep = active[t][:, None]
            h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
            out[t] = np.where(keep, h_new, 0)
        y[:, d] = out[reverse_index, batch_index] if backward else out
        y_h[d], y_c[d] = h, c
    if layout == 1:
        return y.transpose(2, 0, 1, 3), y_h.transpose(1, 0, 2), y_c.transpose(1, 0, 2)
    return y, y_h, y_c


@kernel(Op.RNN)
def rnn(ctx: KernelContext, *inputs: np.ndarray | None):
    return _recurrence(ctx, _rnn_cell, *inputs)[:2]


@kernel(Op.GRU)
def gru(ctx: KernelContext, *inputs: np.ndarray | None):
    lbr = bool(ctx.attr("linear_before_reset"))
    return _recurrence(ctx, lambda *a: _gru_cell(*a, lbr=lbr), *inputs)[:2]


@kernel(Op.LSTM)
def lstm(ctx: KernelContext, *inputs: np.ndarray | None):
    couple = bool(ctx.attr("input_forget"))
    return _recurrence(ctx, lambda *a: _lstm_cell(*a, couple=couple), *inputs)
