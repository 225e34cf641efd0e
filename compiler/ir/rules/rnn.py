"""Type rules of the recurrent ops RNN, GRU and LSTM (ONNX semantics, layout 0 and 1).

The three share one signature shape: X [seq, batch, input] (layout 1: [batch, seq, input]),
W [dirs, G*hidden, input], R [dirs, G*hidden, hidden], B [dirs, 2*G*hidden], sequence_lens
[batch], initial states [dirs, batch, hidden] (layout 1: [batch, dirs, hidden]); G is the number
of gates (1, 3, 4). Every output is optional: Y [seq, dirs, batch, hidden] (layout 1:
[batch, seq, dirs, hidden]) and the final states, shaped like the initial ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..op import Group, Op
from ..schema import FLOAT, FLOATS, INT, STRING, STRINGS, InferContext, define
from ..types import FLOATS as FLOAT_DTYPES
from ..types import INTS as INT_DTYPES
from ..types import UNKNOWN, Dim, DType, TensorType

GATES = {Op.RNN: 1, Op.GRU: 3, Op.LSTM: 4}
# Activation functions per direction, in the order ONNX lists them (f, g, h).
ACTIVATION_COUNT = {Op.RNN: 1, Op.GRU: 2, Op.LSTM: 3}
DEFAULT_ACTIVATIONS = {
    Op.RNN: ("Tanh",),
    Op.GRU: ("Sigmoid", "Tanh"),
    Op.LSTM: ("Sigmoid", "Tanh", "Tanh"),
}
# The activation names ONNX allows, lower-cased, with how many of (alpha, beta) each consumes.
ACTIVATION_PARAMS = {
    "relu": 0, "tanh": 0, "sigmoid": 0, "softsign": 0, "softplus": 0,
    "leakyrelu": 1, "thresholdedrelu": 1, "elu": 1,
    "affine": 2, "scaledtanh": 2, "hardsigmoid": 2,
}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}

_COMMON_ATTRS = {
    "activation_alpha": FLOATS(),
    "activation_beta": FLOATS(),
    "activations": STRINGS(),
    "clip": FLOAT(),
    "direction": STRING("forward"),
    "hidden_size": INT(),
    "layout": INT(0),
}


def _unify(ctx: InferContext, a: Dim, b: Dim, what: str) -> Dim:
    """The better known of two dims that must be equal; fails on two different static ones."""
    if isinstance(a, int) and isinstance(b, int):
        if a != b:
            raise ctx.fail(f"{what}: {a} != {b}")
        return a
    if isinstance(a, int):
        return a
    if isinstance(b, int) or a == UNKNOWN:
        return b
    return a


def _check_shape(
    ctx: InferContext, index: int, name: str, expected: tuple[Dim, ...]
) -> tuple[Dim, ...]:
    """Check input ``index`` against ``expected`` dim by dim; returns the unified dims."""
    found = ctx.input(index)
    if found.rank != len(expected):
        raise ctx.fail(f"{name} must have rank {len(expected)}, got {found}")
    return tuple(
        _unify(ctx, f, e, f"{name} dim {axis} does not fit {list(expected)} (got {found})")
        for axis, (f, e) in enumerate(zip(found.shape, expected, strict=True))
    )


def _check_activations(ctx: InferContext, num_dirs: int) -> None:
    names = ctx.attr("activations")
    if names is None:
        return
    per_dir = ACTIVATION_COUNT[ctx.op]
    if len(names) not in (per_dir, per_dir * num_dirs):
        raise ctx.fail(
            f"activations lists {len(names)} functions; expected {per_dir * num_dirs} "
            f"({per_dir} per direction)"
        )
    for name in names:
        if name.lower() not in ACTIVATION_PARAMS:
            raise ctx.fail(f"unknown activation function {name!r}")


def _recurrent_rule(ctx: InferContext) -> list[TensorType]:
    """Shared rule of RNN, GRU and LSTM; see the module docstring for the shapes."""
    if ctx.attr("direction") not in DIRECTIONS:
        raise ctx.fail(
            f"direction must be forward, reverse or bidirectional, got {ctx.attr('direction')!r}"
        )
    layout = ctx.attr("layout")
    if layout not in (0, 1):
        raise ctx.fail(f"layout must be 0 or 1, got {layout}")
    num_dirs: Dim = DIRECTIONS[ctx.attr("direction")]
    gates = GATES[ctx.op]
    _check_activations(ctx, int(num_dirs))
    dtype = ctx.require_dtype(0, FLOAT_DTYPES)
    _check_float(ctx, 1, "W", dtype)
    _check_float(ctx, 2, "R", dtype)
    x = ctx.input(0)
    if x.rank != 3:
        raise ctx.fail(f"X must have rank 3, got {x}")
    seq, batch, input_size = x.shape if layout == 0 else (x.shape[1], x.shape[0], x.shape[2])

    hidden: Dim = UNKNOWN if ctx.attr("hidden_size") is None else ctx.attr("hidden_size")
    if isinstance(hidden, int) and hidden <= 0:
        raise ctx.fail(f"hidden_size must be positive, got {hidden}")
    w_dirs, w_gated, input_size = _check_shape(ctx, 1, "W", (num_dirs, UNKNOWN, input_size))
    num_dirs, gated, hidden = _check_shape(ctx, 2, "R", (w_dirs, w_gated, hidden))
    if isinstance(gated, int):
        if gated % gates:
            raise ctx.fail(f"W and R dim 1 ({gated}) must be {gates} * hidden_size")
        hidden = _unify(ctx, hidden, gated // gates, f"W and R dim 1 must be {gates} * hidden")
    gated = hidden * gates if isinstance(hidden, int) else gated

    if ctx.has_input(3):
        _check_float(ctx, 3, "B", dtype)
        _check_shape(ctx, 3, "B", (num_dirs, 2 * gated if isinstance(gated, int) else UNKNOWN))
    if ctx.has_input(4):
        ctx.require_dtype(4, INT_DTYPES)
        (batch,) = _check_shape(ctx, 4, "sequence_lens", (batch,))
    state = (num_dirs, batch, hidden) if layout == 0 else (batch, num_dirs, hidden)
    states = ((5, "initial_h"), (6, "initial_c")) if ctx.op is Op.LSTM else ((5, "initial_h"),)
    for index, name in states:
        if ctx.has_input(index):
            _check_float(ctx, index, name, dtype)
            state = _check_shape(ctx, index, name, state)
    if ctx.op is Op.LSTM and ctx.has_input(7):
        _check_float(ctx, 7, "P", dtype)
        _check_shape(ctx, 7, "P", (num_dirs, 3 * hidden if isinstance(hidden, int) else UNKNOWN))

    num_dirs, batch, hidden = state if layout == 0 else (state[1], state[0], state[2])
    y = (seq, num_dirs, batch, hidden) if layout == 0 else (batch, seq, num_dirs, hidden)
    outputs = [TensorType(dtype, y), TensorType(dtype, state)]
    if ctx.op is Op.LSTM:
        outputs.append(TensorType(dtype, state))
    return outputs


def _check_float(ctx: InferContext, index: int, name: str, dtype: DType) -> None:
    if ctx.input(index).dtype != dtype:
        raise ctx.fail(
            f"{name} has element type {ctx.input(index).dtype.value}, X has {dtype.value}"
        )


define(
    Op.RNN,
    ["X", "W", "R", "B?", "sequence_lens?", "initial_h?"],
    ["Y?", "Y_h?"],
    _COMMON_ATTRS,
    Group.RNN,
)(_recurrent_rule)
define(
    Op.GRU,
    ["X", "W", "R", "B?", "sequence_lens?", "initial_h?"],
    ["Y?", "Y_h?"],
    {**_COMMON_ATTRS, "linear_before_reset": INT(0)},
    Group.RNN,
)(_recurrent_rule)
define(
    Op.LSTM,
    ["X", "W", "R", "B?", "sequence_lens?", "initial_h?", "initial_c?", "P?"],
    ["Y?", "Y_h?", "Y_c?"],
    {**_COMMON_ATTRS, "input_forget": INT(0)},
    Group.RNN,
)(_recurrent_rule)


# Defaults of (alpha, beta) where the activation list leaves them out: those of the ONNX op of
# the same name.
ACTIVATION_DEFAULTS = {
    "leakyrelu": (0.01, 0.0), "thresholdedrelu": (1.0, 0.0), "elu": (1.0, 0.0),
    "affine": (1.0, 0.0), "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5),
}


def activation_specs(
    op: Op, attrs: Mapping[str, Any], num_dirs: int
) -> list[list[tuple[str, float, float]]]:
    """(lower-case name, alpha, beta) of each activation of each direction: the list repeats
    for both directions when given once; alpha/beta values are consumed in list order by the
    functions that take them (onnxruntime's reading of the spec)."""
    names = list(attrs.get("activations") or DEFAULT_ACTIVATIONS[op])
    per_dir = ACTIVATION_COUNT[op]
    if len(names) == per_dir:
        names = names * num_dirs
    alphas = list(attrs.get("activation_alpha") or ())
    betas = list(attrs.get("activation_beta") or ())
    specs = []
    for name in names:
        key = name.lower()
        alpha, beta = ACTIVATION_DEFAULTS.get(key, (0.0, 0.0))
        if ACTIVATION_PARAMS[key] >= 1 and alphas:
            alpha = alphas.pop(0)
        if ACTIVATION_PARAMS[key] == 2 and betas:
            beta = betas.pop(0)
        specs.append((key, float(alpha), float(beta)))
    return [specs[d * per_dir:(d + 1) * per_dir] for d in range(num_dirs)]
