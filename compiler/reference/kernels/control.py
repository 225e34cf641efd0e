"""Numpy kernels of the control-flow ops If, Loop and Scan; bodies run via ctx.run_subgraph."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...ir.graph import Graph, Value
from ...ir.op import Op
from ...ir.rules.control import scan_settings
from .registry import KernelContext, kernel


def _scalar(data: np.ndarray) -> np.generic:
    return np.asarray(data).reshape(-1)[0]


def _stack(ctx: KernelContext, pieces: Sequence[np.ndarray], produced: Value, axis: int = 0):
    """Stack per-iteration values on a new ``axis``; zero iterations need a static body type."""
    if pieces:
        return np.stack(pieces, axis=axis)
    if not produced.type.is_static:
        raise ctx.fail(f"zero iterations, and scan output %{produced.name} has no static shape "
                       f"({produced.type}) to build an empty result from")
    shape = [int(d) for d in produced.type.shape]
    shape.insert(axis, 0)
    return np.zeros(shape, produced.type.dtype.numpy)


@kernel(Op.IF)
def if_(ctx: KernelContext, cond: np.ndarray):
    branch: Graph = ctx.attr("then_branch" if bool(_scalar(cond)) else "else_branch")
    return tuple(ctx.run_subgraph(branch, []))


@kernel(Op.LOOP)
def loop(ctx: KernelContext, limit: np.ndarray | None = None, cond: np.ndarray | None = None,
         *initial: np.ndarray):
    body: Graph = ctx.attr("body")
    n = len(initial)
    trips = None if limit is None else int(_scalar(limit))
    going = True if cond is None else bool(_scalar(cond))
    state = list(initial)
    scans: list[list[np.ndarray]] = [[] for _ in body.outputs[1 + n:]]
    i = 0
    # The spec says a body's condition is ignored when the cond input is absent; onnxruntime
    # (and ONNX's own reference) stop on it all the same, and so do we, so that models relying
    # on it terminate. The two agree whenever the body keeps its condition true.
    while going and (trips is None or i < trips):
        outs = ctx.run_subgraph(body, [np.array(i, np.int64), np.array(going), *state])
        going = bool(_scalar(outs[0]))
        state = outs[1:1 + n]
        for pieces, value in zip(scans, outs[1 + n:], strict=True):
            pieces.append(value)
        i += 1
    stacked = [_stack(ctx, p, v) for p, v in zip(scans, body.outputs[1 + n:], strict=True)]
    return tuple(state + stacked)


@kernel(Op.SCAN)
def scan(ctx: KernelContext, *inputs: np.ndarray):
    body: Graph = ctx.attr("body")
    m = ctx.attr("num_scan_inputs")
    n = len(inputs) - m
    k = len(body.outputs) - n
    in_axes, in_dirs = scan_settings(ctx.attrs, m, k, "input")
    out_axes, out_dirs = scan_settings(ctx.attrs, m, k, "output")
    sequences = [
        np.moveaxis(x, axis, 0)[::-1 if backward else 1]
        for x, axis, backward in zip(inputs[n:], in_axes, in_dirs, strict=True)
    ]
    length = sequences[0].shape[0]
    if any(s.shape[0] != length for s in sequences):
        raise ctx.fail(f"scan inputs differ in sequence length: {[s.shape[0] for s in sequences]}")
    state = list(inputs[:n])
    pieces: list[list[np.ndarray]] = [[] for _ in range(k)]
    for t in range(length):
        outs = ctx.run_subgraph(body, [*state, *(s[t] for s in sequences)])
        state = outs[:n]
        for collected, value in zip(pieces, outs[n:], strict=True):
            collected.append(value)
    results = []
    for j, produced in enumerate(body.outputs[n:]):
        axis = out_axes[j] % (produced.type.rank + 1)
        collected = pieces[j][::-1] if out_dirs[j] else pieces[j]
        results.append(_stack(ctx, collected, produced, axis))
    return tuple(state + results)
