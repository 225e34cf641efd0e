"""Type rules of the control-flow ops If, Loop and Scan.

Their bodies are ``Graph`` attributes already typed by Kiln's inference, so each rule derives
its output types from the body outputs: where two types meet (the two branches of an If, the
initial and the per-iteration value of a loop-carried variable), equal dims stay and differing
dims become UNKNOWN; differing element types or ranks are errors. A stacked scan output gets
the trip count as its new dim when that count is known at compile time, else UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import TypeInferenceError
from .. import symbolic
from ..graph import Graph, Value
from ..op import Group, Op
from ..schema import GRAPH, INT, INTS, REQUIRED, InferContext, define
from ..shapes import normalize_axis
from ..types import UNKNOWN, Dim, DType, TensorType


def merge_types(ctx: InferContext, a: TensorType, b: TensorType, what: str) -> TensorType:
    """The type covering both ``a`` and ``b``: equal dims kept, others UNKNOWN."""
    if a.dtype != b.dtype:
        raise ctx.fail(f"{what}: element types differ ({a} vs {b})")
    if a.rank != b.rank:
        raise ctx.fail(f"{what}: ranks differ ({a} vs {b})")
    return a.with_shape(tuple(x if x == y else UNKNOWN for x, y in zip(a.shape, b.shape,
                                                                      strict=True)))


def _check_scalar(ctx: InferContext, index: int, name: str, dtype: DType) -> None:
    found = ctx.input(index)
    if found.dtype != dtype or found.numel not in (1, None) or found.rank > 1:
        raise ctx.fail(f"{name} must be a single {dtype.value} element, got {found}")


def _scalar_const(ctx: InferContext, index: int) -> np.ndarray | None:
    data = ctx.const(index) if ctx.has_input(index) else None
    return None if data is None else data.reshape(-1)[0]


@define(
    Op.IF,
    ["cond"],
    ["outputs*"],
    {"then_branch": GRAPH(REQUIRED), "else_branch": GRAPH(REQUIRED)},
    Group.CONTROL,
)
def _if(ctx: InferContext) -> list[TensorType]:
    """One output per branch output; a constant cond selects its branch's types exactly."""
    _check_scalar(ctx, 0, "cond", DType.BOOL)
    then_branch: Graph = ctx.attr("then_branch")
    else_branch: Graph = ctx.attr("else_branch")
    for branch in (then_branch, else_branch):
        if branch.inputs:
            raise ctx.fail(f"branch {branch.name!r} must take no inputs, has {len(branch.inputs)}")
    if len(then_branch.outputs) != len(else_branch.outputs):
        raise ctx.fail(
            f"then_branch has {len(then_branch.outputs)} outputs, else_branch "
            f"{len(else_branch.outputs)}"
        )
    _check_output_count(ctx, len(then_branch.outputs))
    cond = _scalar_const(ctx, 0)
    if cond is not None:
        return [v.type for v in (then_branch if bool(cond) else else_branch).outputs]
    pairs = zip(then_branch.outputs, else_branch.outputs, strict=True)
    return [merge_types(ctx, t.type, e.type, f"output {i} of the branches")
            for i, (t, e) in enumerate(pairs)]


def _check_output_count(ctx: InferContext, available: int) -> None:
    if ctx.num_outputs > available:
        raise ctx.fail(f"node has {ctx.num_outputs} outputs, but its body yields {available}")


def _check_carried(
    ctx: InferContext, initial: Sequence[TensorType], body_in: Sequence[Value],
    body_out: Sequence[Value],
) -> list[TensorType]:
    """Check loop-carried values against the body's inputs and outputs; returns final types."""
    finals = []
    for i, (init, inside, produced) in enumerate(zip(initial, body_in, body_out, strict=True)):
        if init.dtype != inside.type.dtype or init.rank != inside.type.rank:
            raise ctx.fail(
                f"loop-carried value {i}: initial value {init} does not fit body input "
                f"%{inside.name}: {inside.type}"
            )
        finals.append(merge_types(ctx, init, produced.type, f"loop-carried value {i}"))
    return finals


def never_stops_early(body: Graph) -> bool:
    """True when the body's condition output is provably true given a true condition input:
    the input passed through (directly or by Identity) or a constant true."""
    cond_out = body.outputs[0]
    source = body.producers().get(cond_out.name)
    if source is not None and source.op is Op.IDENTITY:
        cond_out = source.inputs[0]  # type: ignore[assignment]
        source = body.producers().get(cond_out.name)
    if cond_out.name == body.inputs[1].name:
        return True
    value = source.attrs.get("value") if source is not None and source.op is Op.CONSTANT else None
    return isinstance(value, np.ndarray) and bool(np.all(value))


@define(Op.LOOP, ["M?", "cond?", "v_initial*"], ["v_final_and_scan_outputs*"],
        {"body": GRAPH(REQUIRED)}, Group.CONTROL)
def _loop(ctx: InferContext) -> list[TensorType]:
    """N carried finals, then K scan outputs stacked on a new leading trip-count dim."""
    body: Graph = ctx.attr("body")
    initial = [ctx.input(i) for i in range(2, len(ctx.inputs))]
    n = len(initial)
    if len(body.inputs) != 2 + n:
        raise ctx.fail(f"body takes {len(body.inputs)} inputs; expected 2 + {n} (iteration "
                       "number, condition, loop-carried values)")
    if len(body.outputs) < 1 + n:
        raise ctx.fail(f"body yields {len(body.outputs)} outputs; expected at least 1 + {n} "
                       "(condition, loop-carried values, scan outputs)")
    if ctx.has_input(0):
        _check_scalar(ctx, 0, "M", DType.I64)
    if ctx.has_input(1):
        _check_scalar(ctx, 1, "cond", DType.BOOL)
    for value, dtype, what in ((body.inputs[0], DType.I64, "iteration number"),
                               (body.inputs[1], DType.BOOL, "condition"),
                               (body.outputs[0], DType.BOOL, "condition")):
        if value.type.dtype != dtype or value.type.rank > 1:
            raise ctx.fail(f"body {what} %{value.name} must be a {dtype.value} scalar, "
                           f"got {value.type}")
    _check_output_count(ctx, len(body.outputs) - 1)
    finals = _check_carried(ctx, initial, body.inputs[2:], body.outputs[1:1 + n])
    trips: Dim = UNKNOWN
    limit, cond = _scalar_const(ctx, 0), _scalar_const(ctx, 1)
    runs_every_trip = (not ctx.has_input(1) or cond) and never_stops_early(body)
    if limit is not None and runs_every_trip:
        trips = max(int(limit), 0)
    elif runs_every_trip:
        # A trip count computed from symbolic dims (a loop over Shape(x)[1]: seq steps).
        found = ctx.dims_value(0)
        if found is not None and symbolic.provably_nonnegative(found[0]):
            trips = found[0]
    scans = [TensorType(v.type.dtype, (trips, *v.type.shape)) for v in body.outputs[1 + n:]]
    return finals + scans


@define(
    Op.SCAN,
    ["initial_state_and_scan_inputs*"],
    ["final_state_and_scan_outputs*"],
    {
        "body": GRAPH(REQUIRED),
        "num_scan_inputs": INT(REQUIRED),
        "scan_input_axes": INTS(),
        "scan_input_directions": INTS(),
        "scan_output_axes": INTS(),
        "scan_output_directions": INTS(),
    },
    Group.CONTROL,
)
def _scan(ctx: InferContext) -> list[TensorType]:
    """N final states, then K scan outputs with the sequence dim inserted at their axis."""
    body: Graph = ctx.attr("body")
    m = ctx.attr("num_scan_inputs")
    n = len(ctx.inputs) - m
    if m < 1 or n < 0:
        raise ctx.fail(f"num_scan_inputs must be in [1, {len(ctx.inputs)}], got {m}")
    if len(body.inputs) != n + m:
        raise ctx.fail(f"body takes {len(body.inputs)} inputs; expected {n} states + {m} scan "
                       "inputs")
    k = len(body.outputs) - n
    if k < 0:
        raise ctx.fail(f"body yields {len(body.outputs)} outputs; expected at least {n} states")
    _check_output_count(ctx, len(body.outputs))
    in_axes, _ = scan_settings(ctx.attrs, m, k, "input")
    out_axes, _ = scan_settings(ctx.attrs, m, k, "output")
    length: Dim | None = None
    for j in range(m):
        scanned = ctx.input(n + j)
        axis = _axis(ctx, in_axes[j], scanned.rank, f"scan_input_axes[{j}]")
        element = scanned.with_shape(scanned.shape[:axis] + scanned.shape[axis + 1:])
        inside = body.inputs[n + j].type
        if element.dtype != inside.dtype or element.rank != inside.rank:
            raise ctx.fail(f"scan input {j} slices to {element}, but the body takes {inside}")
        dim = scanned.shape[axis]
        if length is None:
            length = dim
        elif isinstance(dim, int):
            if isinstance(length, int) and dim != length:
                raise ctx.fail(f"scan inputs have different sequence lengths ({length}, {dim})")
            length = dim
    assert length is not None
    states = [ctx.input(i) for i in range(n)]
    finals = _check_carried(ctx, states, body.inputs[:n], body.outputs[:n])
    scans = []
    for j, produced in enumerate(body.outputs[n:]):
        shape = produced.type.shape
        axis = _axis(ctx, out_axes[j], len(shape) + 1, f"scan_output_axes[{j}]")
        scans.append(produced.type.with_shape((*shape[:axis], length, *shape[axis:])))
    return finals + scans


def _axis(ctx: InferContext, axis: int, rank: int, what: str) -> int:
    # Wrapped here: an attribute named scan_* would read as already naming the op.
    try:
        return normalize_axis(axis, rank, what)
    except TypeInferenceError as error:
        raise ctx.fail(str(error)) from None


def scan_settings(
    attrs: Mapping[str, Any], m: int, k: int, side: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(axes, directions) of Scan's inputs (``side="input"``, m of them) or outputs (k);
    absent lists default to axis 0, forward."""
    count = m if side == "input" else k
    axes = attrs.get(f"scan_{side}_axes") or (0,) * count
    directions = attrs.get(f"scan_{side}_directions") or (0,) * count
    if len(axes) != count or len(directions) != count:
        raise TypeInferenceError(
            f"expected {count} entries in scan_{side}_axes and scan_{side}_directions, got "
            f"{len(axes)} and {len(directions)}"
        )
    if any(d not in (0, 1) for d in directions):
        raise TypeInferenceError(
            f"entries of scan_{side}_directions must be 0 or 1, got {list(directions)}"
        )
    return tuple(axes), tuple(directions)
