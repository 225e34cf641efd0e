"""Type rules of the movement ops (data rearranged, not computed) and the shape ops.

Several rules read the VALUE of an input (Reshape's shape, Slice's starts, Pad's pads...): when
``ctx.dims_value`` knows it (a constant, or a shape computed from symbolic dims such as
``(batch, seq, 4, -1)``) they give exact, possibly symbolic, extents, else ``UNKNOWN`` ones.
Symbolic extents follow the convention of input symbols: each symbol is at least 1, so
``x[:, 1:]`` of a ``seq`` axis is ``seq-1``; an extent that is right only for some sizes
(``x[:, :8]`` of ``seq``) is ``UNKNOWN``. The arithmetic that both a rule and its numpy kernel
need (slice bounds, reshape targets, split sizes, resize extents) lives here once, over dims,
and the kernels in ``kiln.compiler.reference.kernels.movement`` call it with concrete ints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ...errors import TypeInferenceError
from .. import symbolic
from ..op import Group, Op
from ..schema import (
    DTYPE_ATTR,
    FLOAT,
    INT,
    INTS,
    REQUIRED,
    STRING,
    TENSOR,
    InferContext,
    define,
)
from ..shapes import broadcast, normalize_axes, normalize_axis, product, same_dim
from ..types import FLOATS, UNKNOWN, Dim, DType, TensorType

INDEX_TYPES = frozenset({DType.I32, DType.I64})
_I64 = frozenset({DType.I64})


# ---------------------------------------------------------------- helpers shared with kernels

def const_ints(ctx: InferContext, index: int) -> list[int] | None:
    """The value of a constant integer input as a flat list, else None (absent or not const)."""
    value = ctx.const(index) if ctx.has_input(index) else None
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def vector_length(ctx: InferContext, index: int, what: str) -> int:
    """The static length of a 1-D integer input (its element count decides an output rank)."""
    found = ctx.input(index)
    if found.rank != 1:
        raise ctx.fail(f"{what} must be a 1-D tensor, got rank {found.rank}")
    if not isinstance(found.shape[0], int):
        raise ctx.fail(f"{what} has a dynamic length, so the output rank is unknown")
    return found.shape[0]


def dims_input(ctx: InferContext, index: int) -> list[Dim] | None:
    """The value of an integer input as dims (see ``InferContext.dims_value``), else None."""
    found = ctx.dims_value(index)
    return None if found is None else list(found)


def ints_of(dims: Sequence[Dim] | None) -> list[int] | None:
    """``dims`` when they are all static, else None."""
    if dims is None or not all(isinstance(d, int) for d in dims):
        return None
    return [int(d) for d in dims]


def unify(a: Dim, b: Dim) -> Dim:
    """The better-known of two dims that must be equal (static beats symbol beats UNKNOWN)."""
    if isinstance(a, int):
        return a
    if isinstance(b, int) or a == UNKNOWN:
        return b
    return a


def reshape_dims(
    source: Sequence[Dim], target: Sequence[Dim], allowzero: int,
    fail: Callable[[str], Exception],
) -> tuple[Dim, ...]:
    """Reshape's output dims: 0 copies the input extent (unless allowzero), -1 is inferred. A
    symbolic target entry is an extent (symbols are at least 1, so it is neither marker); an
    UNKNOWN one gives an UNKNOWN extent whatever it turns out to be."""
    if target.count(-1) > 1:
        raise fail(f"shape {list(target)} has more than one -1")
    if allowzero and -1 in target and 0 in target:
        raise fail(f"shape {list(target)} has both -1 and 0 while allowzero=1")
    out: list[Dim] = []
    for i, t in enumerate(target):
        if isinstance(t, int) and t < -1:
            raise fail(f"shape {list(target)} has invalid entry {t}")
        if t == 0 and not allowzero:
            if i >= len(source):
                raise fail(f"shape entry {i} is 0 but the input has rank {len(source)}")
            out.append(source[i])
        else:
            out.append(t)
    if -1 in out:
        known = [d for d in out if d != -1]
        out[out.index(-1)] = _infer_minus_one(list(source), known, fail)
    elif all(isinstance(d, int) for d in source) and all(isinstance(d, int) for d in out):
        if product(source) != product(out):
            raise fail(f"cannot reshape {list(source)} ({product(source)} elements) to "
                       f"{list(target)}")
    return tuple(out)


def _infer_minus_one(source: list[Dim], known: list[Dim], fail: Callable[[str], Exception]) -> Dim:
    total, divisor = product(source), product(known)
    if not (isinstance(total, int) and isinstance(divisor, int)):
        # Exact polynomial division: [b,4,6] -> [b,-1] gives 24, [b*s,8] -> [b,-1] gives 8*s;
        # anything inexact ([b,6] -> [4,-1]) is known only at run time.
        return symbolic.floordiv(total, divisor)
    if divisor == 0:
        if total != 0:
            raise fail(f"cannot infer -1: {total} elements into a zero-sized shape")
        return 0
    if total % divisor:
        raise fail(f"cannot infer -1: {total} elements are not divisible by {divisor}")
    return total // divisor


def slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int, int]:
    """ONNX Slice clamping of one axis: (start, end, length), end == -1 meaning "before 0"."""
    if step == 0:
        raise ValueError("slice step must not be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        length = max(0, -(-(end - start) // step))
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        length = max(0, -(-(start - end) // -step))
    return start, end, length


def slice_params(
    rank: int, starts: Sequence[Dim], ends: Sequence[Dim], axes: list[int] | None,
    steps: list[int] | None, fail: Callable[[str], Exception],
) -> list[tuple[int, Dim, Dim, int]]:
    """Validated (axis, start, end, step) per sliced axis."""
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise fail(f"starts, ends, axes and steps differ in length: {len(starts)}, {len(ends)}, "
                   f"{len(axes)}, {len(steps)}")
    try:
        norm = normalize_axes(axes, rank)
    except TypeInferenceError as error:
        raise fail(str(error)) from None
    if 0 in steps:
        raise fail("slice step must not be 0")
    return list(zip(norm, starts, ends, steps, strict=True))


def split_sizes(dim: int, n: int) -> list[int]:
    """Split's default sizes: chunks of ceil(dim / n), the last one smaller (negative when
    ``dim`` cannot be split so; a rule then says UNKNOWN, as such a node may sit in a branch
    never taken, and the kernel fails if it runs)."""
    chunk = -(-dim // n)
    return [chunk] * (n - 1) + [dim - chunk * (n - 1)]


def pad_widths(rank: int, pads: Sequence[Dim], axes: list[int] | None,
               fail: Callable[[str], Exception]) -> list[tuple[Dim, Dim]]:
    """(begin, end) pad per axis of the input from Pad's pads and optional axes."""
    axes = list(range(rank)) if axes is None else axes
    if len(pads) != 2 * len(axes):
        raise fail(f"pads has {len(pads)} entries; expected 2 * {len(axes)} axes")
    try:
        norm = normalize_axes(axes, rank)
    except TypeInferenceError as error:
        raise fail(str(error)) from None
    widths: list[tuple[Dim, Dim]] = [(0, 0)] * rank
    for i, axis in enumerate(norm):
        widths[axis] = (pads[i], pads[len(axes) + i])
    return widths


def shape_bounds(start: int, end: int | None, rank: int) -> tuple[int, int]:
    """Shape's start/end clamped into [0, rank]."""
    def clamp(v: int) -> int:
        return min(max(v + rank if v < 0 else v, 0), rank)
    return clamp(start), clamp(rank if end is None else end)


def resize_extents(
    in_dims: Sequence[int], axes: Sequence[int], scales: Sequence[float] | None,
    sizes: Sequence[int] | None, policy: str,
) -> tuple[list[int], list[float]]:
    """Resize's output extents and per-axis scale factors (all axes of the input)."""
    out = list(in_dims)
    factors = [1.0] * len(in_dims)
    if sizes is not None:
        ratios = [sizes[i] / in_dims[a] if in_dims[a] else 1.0 for i, a in enumerate(axes)]
        if policy != "stretch":
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [scale] * len(axes)
            sizes = [int(scale * in_dims[a] + 0.5) for a in axes]
        for i, a in enumerate(axes):
            out[a], factors[a] = int(sizes[i]), ratios[i]
    elif scales is not None:
        for i, a in enumerate(axes):
            factors[a] = float(scales[i])
            out[a] = math.floor(in_dims[a] * float(scales[i]))
    return out, factors


RESIZE_POLICIES = ("stretch", "not_larger", "not_smaller")
RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                 "asymmetric", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def checked_axis(ctx: InferContext, axis: int, rank: int, what: str = "axis") -> int:
    try:
        return normalize_axis(axis, rank, what)
    except TypeInferenceError as error:
        raise ctx.fail(str(error)) from None


def checked_axes(ctx: InferContext, axes: Sequence[int], rank: int) -> tuple[int, ...]:
    try:
        return normalize_axes(axes, rank)
    except TypeInferenceError as error:
        raise ctx.fail(str(error)) from None


# ---------------------------------------------------------------------------- movement ops

@define(Op.RESHAPE, ["data", "shape"], ["reshaped"], {"allowzero": INT(0)}, Group.MOVEMENT)
def _reshape(ctx: InferContext) -> list[TensorType]:
    """Data viewed with a new shape (0 copies an extent, -1 infers one)."""
    x = ctx.input(0)
    ctx.require_dtype(1, _I64)
    target = dims_input(ctx, 1)
    if target is None:
        n = vector_length(ctx, 1, "shape")
        return [x.with_shape((UNKNOWN,) * n)]
    return [x.with_shape(reshape_dims(x.shape, target, ctx.attr("allowzero"), ctx.fail))]


@define(Op.TRANSPOSE, ["data"], ["transposed"], {"perm": INTS()}, Group.MOVEMENT)
def _transpose(ctx: InferContext) -> list[TensorType]:
    """Axes permuted by perm (default: reversed)."""
    x = ctx.input(0)
    perm = ctx.attr("perm")
    perm = tuple(reversed(range(x.rank))) if perm is None else perm
    if sorted(checked_axes(ctx, perm, x.rank)) != list(range(x.rank)):
        raise ctx.fail(f"perm {list(perm)} is not a permutation of {x.rank} axes")
    norm = checked_axes(ctx, perm, x.rank)
    return [x.with_shape(tuple(x.shape[p] for p in norm))]


@define(Op.SQUEEZE, ["data", "axes?"], ["squeezed"], {}, Group.MOVEMENT)
def _squeeze(ctx: InferContext) -> list[TensorType]:
    """Extents of 1 removed (those in axes, or every one)."""
    x = ctx.input(0)
    if not ctx.has_input(1):
        # Without axes the output rank depends on which extents are 1; symbolic extents are
        # taken not to be (the executor's shape check catches a run where one is).
        return [x.with_shape(tuple(d for d in x.shape if d != 1))]
    axes = const_ints(ctx, 1)
    if axes is None:
        return [x.with_shape((UNKNOWN,) * (x.rank - vector_length(ctx, 1, "axes")))]
    norm = checked_axes(ctx, axes, x.rank)
    for a in norm:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ctx.fail(f"cannot squeeze axis {a} of extent {x.shape[a]}")
    return [x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in norm))]


@define(Op.UNSQUEEZE, ["data", "axes"], ["expanded"], {}, Group.MOVEMENT)
def _unsqueeze(ctx: InferContext) -> list[TensorType]:
    """Extents of 1 inserted at axes (of the output)."""
    x = ctx.input(0)
    axes = const_ints(ctx, 1)
    if axes is None:
        return [x.with_shape((UNKNOWN,) * (x.rank + vector_length(ctx, 1, "axes")))]
    norm = set(checked_axes(ctx, axes, x.rank + len(axes)))
    rest = iter(x.shape)
    return [x.with_shape(tuple(1 if i in norm else next(rest)
                               for i in range(x.rank + len(axes))))]


@define(Op.FLATTEN, ["input"], ["output"], {"axis": INT(1)}, Group.MOVEMENT)
def _flatten(ctx: InferContext) -> list[TensorType]:
    """A 2-D view: axes before `axis` folded into rows, the rest into columns."""
    x = ctx.input(0)
    axis = ctx.attr("axis")
    if not -x.rank <= axis <= x.rank:
        raise ctx.fail(f"axis {axis} is out of range for rank {x.rank}")
    axis = axis + x.rank if axis < 0 else axis
    return [x.with_shape((product(x.shape[:axis]), product(x.shape[axis:])))]


@define(Op.CONCAT, ["inputs*"], ["concat_result"], {"axis": INT(REQUIRED)}, Group.MOVEMENT)
def _concat(ctx: InferContext) -> list[TensorType]:
    """Inputs joined along axis."""
    types = [ctx.input(i) for i in range(len(ctx.inputs))]
    if not types:
        raise ctx.fail("needs at least one input")
    first = types[0]
    axis = checked_axis(ctx, ctx.attr("axis"), first.rank)
    shape = list(first.shape)
    for i, t in enumerate(types[1:], 1):
        if t.dtype != first.dtype or t.rank != first.rank:
            raise ctx.fail(f"input {i} is {t}, which does not match input 0 ({first})")
        for d in range(first.rank):
            if d != axis:
                if not same_dim(shape[d], t.shape[d]):
                    raise ctx.fail(f"input {i} is {t}; extent {d} does not match {first}")
                shape[d] = unify(shape[d], t.shape[d])
    shape[axis] = symbolic.total(t.shape[axis] for t in types)
    return [first.with_shape(tuple(shape))]


@define(Op.SPLIT, ["input", "split?"], ["outputs*"], {"axis": INT(0), "num_outputs": INT()},
        Group.MOVEMENT)
def _split(ctx: InferContext) -> list[TensorType]:
    """Pieces along axis, of the sizes in split or equal chunks."""
    x = ctx.input(0)
    axis = checked_axis(ctx, ctx.attr("axis"), x.rank)
    n = ctx.num_outputs
    num_outputs = ctx.attr("num_outputs")
    if num_outputs is not None and num_outputs != n:
        raise ctx.fail(f"num_outputs={num_outputs} but the node has {n} outputs")
    dim = x.shape[axis]
    sizes: list[Dim]
    if ctx.has_input(1):
        if num_outputs is not None:
            raise ctx.fail("split and num_outputs cannot both be given")
        given = dims_input(ctx, 1)
        if given is None:
            sizes = [UNKNOWN] * n
        else:
            if len(given) != n or any(isinstance(g, int) and g < 0 for g in given):
                raise ctx.fail(f"split {given} does not give {n} non-negative sizes")
            total = symbolic.total(given)
            if isinstance(dim, int) and isinstance(total, int) and total != dim:
                raise ctx.fail(f"split {given} does not sum to the extent {dim} of axis {axis}")
            sizes = list(given)
    elif isinstance(dim, int):
        sizes = [d if d >= 0 else UNKNOWN for d in split_sizes(dim, n)]
    else:
        # Equal chunks of a symbolic extent are exact only when n divides it (2*s in 2: s).
        sizes = [symbolic.floordiv(dim, n)] * n
    return [x.with_shape(x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


@define(Op.SLICE, ["data", "starts", "ends", "axes?", "steps?"], ["output"], {},
        Group.MOVEMENT)
def _slice(ctx: InferContext) -> list[TensorType]:
    """A strided window of data (ONNX clamping; negative steps walk backwards)."""
    x = ctx.input(0)
    for i in range(1, 5):
        if ctx.has_input(i):
            ctx.require_dtype(i, INDEX_TYPES)
    starts, ends = dims_input(ctx, 1), dims_input(ctx, 2)
    axes = const_ints(ctx, 3)
    steps = ints_of(dims_input(ctx, 4))
    if ctx.has_input(3) and axes is None:
        return [x.with_shape((UNKNOWN,) * x.rank)]
    if starts is None or ends is None or (ctx.has_input(4) and steps is None):
        n = vector_length(ctx, 1, "starts")
        touched = checked_axes(ctx, axes if axes is not None else range(n), x.rank)
        return [x.with_shape(tuple(UNKNOWN if i in touched else d
                                   for i, d in enumerate(x.shape)))]
    shape = list(x.shape)
    for axis, start, end, step in slice_params(x.rank, starts, ends, axes, steps, ctx.fail):
        dim = shape[axis]
        if isinstance(dim, int) and isinstance(start, int) and isinstance(end, int):
            shape[axis] = slice_bounds(start, end, step, dim)[2]
        else:
            shape[axis] = _symbolic_slice_extent(dim, start, end, step)
    return [x.with_shape(tuple(shape))]


_BIG = 2**31 - 1  # bounds beyond this mean "to the end" whatever the extent


def _symbolic_slice_extent(dim: Dim, start: Dim, end: Dim, step: int) -> Dim:
    """The extent of a slice whose axis extent or bounds are symbolic, where it is the same
    for every size of the symbols (each at least 1), else UNKNOWN."""
    if isinstance(start, int) and isinstance(end, int) and step in (1, -1):
        if step == 1 and (start == 0 or start <= -_BIG) and end >= _BIG:
            return dim
        if step == -1:
            return dim if (start == -1 or start >= _BIG) and end <= -_BIG else UNKNOWN
    if step != 1:
        return UNKNOWN
    low, high = _slice_position(start, dim), _slice_position(end, dim)
    if low is None or high is None:
        return UNKNOWN
    extent = symbolic.sub(high, low)
    return extent if symbolic.provably_nonnegative(extent) else UNKNOWN


def _slice_position(bound: Dim, dim: Dim) -> Dim | None:
    """Where a slice bound lands on an axis of extent ``dim`` (negative bounds count from the
    end), when it is provably within [0, dim] so that clamping leaves it alone; else None."""
    if isinstance(bound, int) and bound >= _BIG:
        return dim
    if isinstance(bound, int) and bound <= -_BIG:
        return 0
    if isinstance(bound, int) and bound < 0:
        position = symbolic.add(dim, bound)
    elif symbolic.provably_nonnegative(bound):
        position = bound
    else:
        return None
    inside = (symbolic.provably_nonnegative(position)
              and symbolic.provably_nonnegative(symbolic.sub(dim, position)))
    return position if inside else None


@define(Op.EXPAND, ["input", "shape"], ["output"], {}, Group.MOVEMENT)
def _expand(ctx: InferContext) -> list[TensorType]:
    """Input broadcast against shape."""
    x = ctx.input(0)
    ctx.require_dtype(1, _I64)
    target = dims_input(ctx, 1)
    if target is None:
        n = vector_length(ctx, 1, "shape")
        rank = max(n, x.rank)
        padded = (1,) * (rank - x.rank) + x.shape
        return [x.with_shape(tuple(d if isinstance(d, int) and d != 1 else UNKNOWN
                                   for d in padded))]
    try:
        return [x.with_shape(broadcast(x.shape, tuple(target)))]
    except TypeInferenceError:
        raise ctx.fail(f"cannot expand {x} to shape {target}") from None


@define(Op.TILE, ["input", "repeats"], ["output"], {}, Group.MOVEMENT)
def _tile(ctx: InferContext) -> list[TensorType]:
    """Input repeated along each axis."""
    x = ctx.input(0)
    ctx.require_dtype(1, _I64)
    repeats = dims_input(ctx, 1)
    if repeats is None:
        if vector_length(ctx, 1, "repeats") != x.rank:
            raise ctx.fail(f"repeats must have one entry per axis of {x}")
        return [x.with_shape((UNKNOWN,) * x.rank)]
    if len(repeats) != x.rank or any(isinstance(r, int) and r < 0 for r in repeats):
        raise ctx.fail(f"repeats {repeats} must be {x.rank} non-negative counts")
    return [x.with_shape(tuple(product((d, r)) if r != 1 else d
                               for d, r in zip(x.shape, repeats, strict=True)))]


PAD_MODES = ("constant", "reflect", "edge", "wrap")


@define(Op.PAD, ["data", "pads", "constant_value?", "axes?"], ["output"],
        {"mode": STRING("constant")}, Group.MOVEMENT)
def _pad(ctx: InferContext) -> list[TensorType]:
    """Data padded (or cropped, for negative pads) at both ends of each axis."""
    x = ctx.input(0)
    if ctx.attr("mode") not in PAD_MODES:
        raise ctx.fail(f"mode {ctx.attr('mode')!r} is not one of {', '.join(PAD_MODES)}")
    ctx.require_dtype(1, INDEX_TYPES)
    if ctx.has_input(2) and ctx.input(2).dtype != x.dtype:
        raise ctx.fail(f"constant_value is {ctx.input(2).dtype.value}, data is {x.dtype.value}")
    pads, axes = dims_input(ctx, 1), const_ints(ctx, 3)
    if pads is None or (ctx.has_input(3) and axes is None):
        if axes is None and ctx.has_input(3):
            return [x.with_shape((UNKNOWN,) * x.rank)]
        touched = checked_axes(ctx, axes if axes is not None else range(x.rank), x.rank)
        return [x.with_shape(tuple(UNKNOWN if i in touched else d
                                   for i, d in enumerate(x.shape)))]
    widths = pad_widths(x.rank, pads, axes, ctx.fail)
    shape = []
    for d, (lo, hi) in zip(x.shape, widths, strict=True):
        shape.append(symbolic.total((d, lo, hi)) if (lo, hi) != (0, 0) else d)
        if isinstance(shape[-1], int) and shape[-1] < 0:
            raise ctx.fail(f"pads {pads} crop more than the extent {d}")
    return [x.with_shape(tuple(shape))]


@define(Op.CENTER_CROP_PAD, ["input_data", "shape"], ["output_data"], {"axes": INTS()},
        Group.MOVEMENT)
def _center_crop_pad(ctx: InferContext) -> list[TensorType]:
    """Input center-cropped or zero-padded to shape along axes."""
    x = ctx.input(0)
    ctx.require_dtype(1, INDEX_TYPES)
    axes = ctx.attr("axes")
    norm = checked_axes(ctx, range(x.rank) if axes is None else axes, x.rank)
    target = dims_input(ctx, 1)
    if target is not None and len(target) != len(norm):
        raise ctx.fail(f"shape {target} must have one entry per axis in {list(norm)}")
    shape = list(x.shape)
    for i, a in enumerate(norm):
        shape[a] = UNKNOWN if target is None else target[i]
    return [x.with_shape(tuple(shape))]


def _block_rule(ctx: InferContext) -> list[TensorType]:
    x = ctx.input(0)
    block = ctx.attr("blocksize")
    if x.rank != 4:
        raise ctx.fail(f"input must be 4-D [N,C,H,W], got {x}")
    if block <= 0:
        raise ctx.fail(f"blocksize must be positive, got {block}")
    if ctx.attr("mode") not in ("DCR", "CRD"):
        raise ctx.fail(f"mode must be DCR or CRD, got {ctx.attr('mode')!r}")
    n, c, h, w = x.shape
    if ctx.op is Op.DEPTH_TO_SPACE:
        if isinstance(c, int) and c % (block * block):
            raise ctx.fail(f"channels {c} are not divisible by blocksize^2 = {block * block}")
        return [x.with_shape((n, _div(c, block * block), product((h, block)),
                              product((w, block))))]
    for d in (h, w):
        if isinstance(d, int) and d % block:
            raise ctx.fail(f"spatial extent {d} is not divisible by blocksize {block}")
    return [x.with_shape((n, product((c, block * block)), _div(h, block), _div(w, block)))]


def _div(d: Dim, k: int) -> Dim:
    return d // k if isinstance(d, int) else symbolic.floordiv(d, k)


_BLOCK_ATTRS = {"blocksize": INT(REQUIRED), "mode": STRING("DCR")}
define(Op.DEPTH_TO_SPACE, ["input"], ["output"], _BLOCK_ATTRS, Group.MOVEMENT)(_block_rule)
define(Op.SPACE_TO_DEPTH, ["input"], ["output"], _BLOCK_ATTRS, Group.MOVEMENT)(_block_rule)


@define(Op.TRILU, ["input", "k?"], ["output"], {"upper": INT(1)}, Group.MOVEMENT)
def _trilu(ctx: InferContext) -> list[TensorType]:
    """Upper or lower triangle of the last two axes, the rest zeroed."""
    x = ctx.input(0)
    if x.rank < 2:
        raise ctx.fail(f"input must have rank >= 2, got {x}")
    if ctx.has_input(1):
        ctx.require_dtype(1, _I64)
    return [x]


@define(Op.REVERSE_SEQUENCE, ["input", "sequence_lens"], ["Y"],
        {"batch_axis": INT(1), "time_axis": INT(0)}, Group.MOVEMENT)
def _reverse_sequence(ctx: InferContext) -> list[TensorType]:
    """The first sequence_lens[b] steps along time_axis reversed, per batch entry."""
    x = ctx.input(0)
    ctx.require_dtype(1, _I64)
    axes = {ctx.attr("batch_axis"), ctx.attr("time_axis")}
    if x.rank < 2 or axes != {0, 1}:
        raise ctx.fail(f"needs rank >= 2 and batch_axis/time_axis being 0 and 1 "
                       f"(got {x}, {sorted(axes)})")
    lens = ctx.input(1)
    if lens.rank != 1 or not same_dim(lens.shape[0], x.shape[ctx.attr("batch_axis")]):
        raise ctx.fail(f"sequence_lens {lens} must have one entry per batch entry of {x}")
    return [x]


@define(Op.RESIZE, ["X", "roi?", "scales?", "sizes?"], ["Y"], {
    "antialias": INT(0), "axes": INTS(), "coordinate_transformation_mode": STRING("half_pixel"),
    "cubic_coeff_a": FLOAT(-0.75), "exclude_outside": INT(0), "extrapolation_value": FLOAT(0.0),
    "keep_aspect_ratio_policy": STRING("stretch"), "mode": STRING("nearest"),
    "nearest_mode": STRING("round_prefer_floor"),
}, Group.MOVEMENT)
def _resize(ctx: InferContext) -> list[TensorType]:
    """Input resampled to new extents (nearest, N-linear or N-cubic)."""
    x = ctx.input(0)
    for name, allowed in (("mode", RESIZE_MODES), ("nearest_mode", NEAREST_MODES),
                          ("coordinate_transformation_mode", RESIZE_COORDS),
                          ("keep_aspect_ratio_policy", RESIZE_POLICIES)):
        if ctx.attr(name) not in allowed:
            raise ctx.fail(f"{name} {ctx.attr(name)!r} is not one of {', '.join(allowed)}")
    axes = checked_axes(ctx, ctx.attr("axes") or range(x.rank), x.rank)
    has_scales = ctx.has_input(2) and ctx.input(2).shape != (0,)
    has_sizes = ctx.has_input(3) and ctx.input(3).shape != (0,)
    if has_scales == has_sizes:
        raise ctx.fail("exactly one of scales and sizes must be given")
    if has_scales:
        ctx.require_dtype(2, FLOATS)
    else:
        ctx.require_dtype(3, _I64)
    scales = ctx.const(2) if has_scales else None
    sizes = dims_input(ctx, 3) if has_sizes else None
    if scales is None and sizes is None:
        return [x.with_shape(tuple(UNKNOWN if i in axes else d for i, d in enumerate(x.shape)))]
    factors = None if scales is None else [float(v) for v in np.asarray(scales).reshape(-1)]
    count = len(sizes) if sizes is not None else len(factors or ())
    if count != len(axes):
        raise ctx.fail(f"{'sizes' if sizes is not None else 'scales'} has {count} entries"
                       f" for {len(axes)} axes")
    static_sizes = ints_of(sizes)
    policy = ctx.attr("keep_aspect_ratio_policy")
    if all(isinstance(x.shape[a], int) for a in axes) and (
            factors is not None or static_sizes is not None):
        in_dims = [d if isinstance(d, int) else 1 for d in x.shape]
        out, _ = resize_extents(in_dims, axes, factors, static_sizes, policy)
        return [x.with_shape(tuple(out[i] if i in axes else d for i, d in enumerate(x.shape)))]
    shape = list(x.shape)
    for i, a in enumerate(axes):
        if factors is not None:
            shape[a] = _resized_by_scale(shape[a], factors[i])
        else:
            assert sizes is not None
            shape[a] = sizes[i] if policy == "stretch" else UNKNOWN
    return [x.with_shape(tuple(shape))]


def _resized_by_scale(dim: Dim, scale: float) -> Dim:
    """floor(dim * scale) where it is known: static, or a whole scale of a symbolic extent."""
    if isinstance(dim, int):
        return math.floor(dim * scale)
    return symbolic.mul(dim, int(scale)) if scale.is_integer() else UNKNOWN


@define(Op.BIT_CAST, ["input"], ["output"], {"to": DTYPE_ATTR(REQUIRED)}, Group.MOVEMENT)
def _bit_cast(ctx: InferContext) -> list[TensorType]:
    """The same bits read as another element type of the same width."""
    x = ctx.input(0)
    to: DType = ctx.attr("to")
    if to.itemsize != x.dtype.itemsize:
        raise ctx.fail(f"cannot bit-cast {x.dtype.value} ({x.dtype.itemsize * 8} bits) to "
                       f"{to.value} ({to.itemsize * 8} bits)")
    return [x.with_dtype(to)]


# ------------------------------------------------------------------------------- shape ops

@define(Op.SHAPE, ["data"], ["shape"], {"start": INT(0), "end": INT()}, Group.SHAPE)
def _shape(ctx: InferContext) -> list[TensorType]:
    """The extents of data[start:end] as an i64 vector."""
    x = ctx.input(0)
    start, end = shape_bounds(ctx.attr("start"), ctx.attr("end"), x.rank)
    return [TensorType(DType.I64, (max(end - start, 0),))]


@define(Op.SIZE, ["data"], ["size"], {}, Group.SHAPE)
def _size(ctx: InferContext) -> list[TensorType]:
    """The element count of data as an i64 scalar."""
    ctx.input(0)
    return [TensorType(DType.I64, ())]


@define(Op.CONSTANT_OF_SHAPE, ["input"], ["output"], {"value": TENSOR()}, Group.SHAPE)
def _constant_of_shape(ctx: InferContext) -> list[TensorType]:
    """A tensor of the given shape filled with value (default f32 zero)."""
    ctx.require_dtype(0, _I64)
    value = ctx.attr("value")
    dtype = DType.F32 if value is None else DType.from_numpy(value.dtype)
    if value is not None and value.size != 1:
        raise ctx.fail(f"value must hold one element, got shape {list(value.shape)}")
    shape = dims_input(ctx, 0)
    if shape is None:
        return [TensorType(dtype, (UNKNOWN,) * vector_length(ctx, 0, "input"))]
    if min((d for d in shape if isinstance(d, int)), default=0) < 0:
        raise ctx.fail(f"shape {shape} has a negative extent")
    return [TensorType(dtype, tuple(shape))]


@define(Op.EYE_LIKE, ["input"], ["output"], {"dtype": DTYPE_ATTR(), "k": INT(0)}, Group.SHAPE)
def _eye_like(ctx: InferContext) -> list[TensorType]:
    """A 2-D tensor shaped like input with ones on the k-th diagonal."""
    x = ctx.input(0)
    if x.rank != 2:
        raise ctx.fail(f"input must be 2-D, got {x}")
    dtype = ctx.attr("dtype") or x.dtype
    return [TensorType(dtype, x.shape)]


RANGE_TYPES = frozenset({DType.F32, DType.F64, DType.I16, DType.I32, DType.I64, DType.F16,
                         DType.BF16})


@define(Op.RANGE, ["start", "limit", "delta"], ["output"], {"stash_type": INT(1)}, Group.SHAPE)
def _range(ctx: InferContext) -> list[TensorType]:
    """start, start + delta, ... up to limit (exclusive)."""
    dtype = ctx.require_dtype(0, RANGE_TYPES)
    for i in range(3):
        t = ctx.input(i)
        # The spec says scalars; one-element tensors occur in real models (ONNX's own
        # AffineGrid function) and onnxruntime accepts them, so they are read alike.
        if t.dtype != dtype or t.numel not in (1, None) or t.rank > 1:
            raise ctx.fail(f"start, limit and delta must be {dtype.value} scalars; input {i} "
                           f"is {t}")
    start, limit, delta = (ctx.const(i) for i in range(3))
    if start is None or limit is None or delta is None:
        return [TensorType(dtype, (_symbolic_range_length(ctx),))]
    return [TensorType(dtype, (range_length(start, limit, delta, ctx.fail),))]


def _symbolic_range_length(ctx: InferContext) -> Dim:
    """Range's length from symbolic bounds (``range(0, seq)``: seq) where it is exact, the
    count being a whole quotient that is never negative; else UNKNOWN."""
    start, limit, delta = (ctx.dims_value(i) for i in range(3))
    if start is None or limit is None or delta is None or not isinstance(delta[0], int):
        return UNKNOWN
    step = delta[0]
    if step == 0:
        raise ctx.fail("delta must not be 0")
    span = symbolic.sub(limit[0], start[0]) if step > 0 else symbolic.sub(start[0], limit[0])
    count = symbolic.floordiv(span, abs(step))
    return count if symbolic.provably_nonnegative(count) else UNKNOWN


def range_length(start: np.ndarray, limit: np.ndarray, delta: np.ndarray,
                 fail: Callable[[str], Exception]) -> int:
    """max(ceil((limit - start) / delta), 0); floats in double precision, ints exactly."""
    s, lim, d = (np.asarray(v).reshape(-1)[0].item() for v in (start, limit, delta))
    if not d:
        raise fail("delta must not be 0")
    if isinstance(s, int):
        return max(-((s - lim) // d), 0)
    return max(math.ceil((lim - s) / d), 0)

