"""Sliding-window loop nests shared by the conv and pooling lowerings.

``over_window`` visits the taps of one output window (forward conv, pools): the input position
of a tap is ``out * stride - pad_begin + tap * dilation``; ``over_scatter_taps`` visits the input
positions that reach one output position of a transposed window (ConvTranspose, Col2Im):
``q = (out + pad_begin - tap * dilation) / stride`` when that divides exactly. Guards appear only
on the axes (and sides) where the geometry can leave the input, so unpadded windows are
branch-free, and each axis's guard wraps just the loops below it.

Run-time extents shared by those families (and the matrix products): ``by_image`` runs a
lowering written for static shapes on a batch known only at run time, one image at a time
(a run-time loop around the static schedule of one image); ``runtime_window`` is the window
over run-time spatial extents (the generic loop nests then guard every tap on those axes);
``define_extents`` defines the output extents a node must compute.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace

from ...ir.rules.nn_geometry import Window, auto_pad_of, int_list
from ...ir.types import DType
from ..inline import Rewriter
from ..kernel_ir import (
    Block,
    Buffer,
    Expr,
    Kernel,
    Load,
    Loop,
    MatmulTile,
    Stmt,
    Store,
    Var,
    as_index,
    block,
    define_dim,
    select,
)
from ..registry import LowerContext, Lowering
from .common import Extent, affine, broadcast_extent, idx
from .nn_common import all_of, guarded

TapBody = Callable[[list[Expr], list[Expr]], Stmt]


def _tap_vars(kernel: Sequence[int], prefix: str) -> list[Expr]:
    return [idx(0) if k == 1 else Var(f"{prefix}{axis}") for axis, k in enumerate(kernel)]


def _wrap(kernel: Sequence[int], taps: list[Expr], conds: list[Expr | None], body: Stmt) -> Stmt:
    for axis in reversed(range(len(kernel))):
        body = guarded(conds[axis], body)
        tap = taps[axis]
        if isinstance(tap, Var):
            body = Loop(tap, idx(kernel[axis]), body)
    return body


def window_positions(win: Window, out_vars: Sequence[Expr], taps: Sequence[Expr]) -> list[Expr]:
    return [
        affine([(o, s), (t, d)], offset=-win.pads[axis])
        for axis, (o, t, s, d) in enumerate(
            zip(out_vars, taps, win.strides, win.dilations, strict=True)
        )
    ]


def range_guard(
    win: Window, outs: Sequence[Extent], positions: Sequence[Expr], lows: Sequence[int],
    highs: Sequence[Extent], axis: int,
) -> Expr | None:
    """lows[axis] <= position < highs[axis], leaving out sides the geometry never crosses (a
    run-time extent may cross the high side)."""
    first = -win.pads[axis]
    pos = positions[axis]
    out, high = outs[axis], highs[axis]
    if not (isinstance(out, int) and isinstance(high, int)):
        return all_of([pos >= lows[axis] if first < lows[axis] else None, pos < high])
    last = (out - 1) * win.strides[axis] - win.pads[axis] + win.extent[axis] - 1
    return all_of([
        pos >= lows[axis] if first < lows[axis] else None,
        pos < high if last >= high else None,
    ])


def over_window(
    win: Window,
    sizes: Sequence[Extent],
    outs: Sequence[Extent],
    out_vars: Sequence[Expr],
    inner: TapBody,
    prefix: str,
    lows: Sequence[int] | None = None,
    highs: Sequence[Extent] | None = None,
) -> Stmt:
    """Loops over the taps of the window at ``out_vars`` whose positions lie in [lows, highs)
    (the input by default); ``inner(taps, positions)`` is the body."""
    lows = [0] * win.rank if lows is None else lows
    highs = list(sizes) if highs is None else highs
    taps = _tap_vars(win.kernel, prefix)
    positions = window_positions(win, out_vars, taps)
    conds = [range_guard(win, outs, positions, lows, highs, a) for a in range(win.rank)]
    return _wrap(win.kernel, taps, conds, inner(taps, positions))


def in_bounds(
    win: Window, sizes: Sequence[Extent], outs: Sequence[Extent], positions: Sequence[Expr]
) -> Expr | None:
    """The condition that every tap position lies inside the input (None: always)."""
    return all_of([
        range_guard(win, outs, positions, [0] * win.rank, sizes, a) for a in range(win.rank)
    ])


def over_scatter_taps(
    win: Window,
    in_sizes: Sequence[Extent],
    outs: Sequence[Extent],
    out_vars: Sequence[Expr],
    inner: TapBody,
    prefix: str,
) -> Stmt:
    """Loops over the taps ``k`` and input positions ``q`` with ``q * stride - pad_begin +
    k * dilation == out`` (the gather form of a transposed window); ``inner(taps, qs)``."""
    taps = _tap_vars(win.kernel, prefix)
    qs: list[Expr] = []
    conds: list[Expr | None] = []
    for axis, (o, tap, size) in enumerate(zip(out_vars, taps, in_sizes, strict=True)):
        s, d, pad, k = win.strides[axis], win.dilations[axis], win.pads[axis], win.kernel[axis]
        t = affine([(o, 1), (tap, -d)], offset=pad)
        qs.append(t if s == 1 else t // s)
        low, out = pad - (k - 1) * d, outs[axis]
        # the high side is guarded unless the geometry never crosses it (run-time: always)
        crosses = (not (isinstance(out, int) and isinstance(size, int))
                   or out - 1 + pad > (size - 1) * s)
        conds.append(all_of([
            t >= 0 if low < 0 else None,
            (t % s).eq(0) if s > 1 else None,
            t <= (size - 1) * s if crosses else None,
        ]))
    return _wrap(win.kernel, taps, conds, inner(taps, qs))


def define_extents(ctx: LowerContext,
                   pairs: Sequence[tuple[Extent, Sequence[Extent]]]) -> list[Kernel]:
    """A kernel defining each output extent of ``pairs`` that depends on the run (an input
    extent the type rules left unknown, or operands with different symbols on a broadcast axis)
    as the numpy broadcast of its input extents (one: a copy), reported when they do not
    broadcast; none when no extent needs it. Kernels after it may take the output."""
    stmts: list[Stmt] = []
    for number, (extent, sources) in enumerate(pairs):
        if isinstance(extent, Expr) and any(extent is u for u in ctx.undefined_dims):
            declared, value = broadcast_extent(sources, ctx.node.describe(), f"extent{number}")
            stmts += [*declared, define_dim(extent, value)]
    return [ctx.kernel(block(stmts), outputs=[], scratch=[])] if stmts else []


def by_image(fn: Lowering, index_output: int | None = None, generic: bool = False) -> Lowering:
    """``fn`` (written for static shapes), also for a batch known only at run time: the
    operands whose axis 0 is input 0's run-time batch are lowered as one image, and the node
    becomes one kernel looping over the images at run time around ``fn``'s kernels, their
    accesses to those operands moved to the image. Output ``index_output`` holds flat indices
    into input 0 (MaxPool's Indices): its values move to the image too. Input 0 with another
    run-time extent raises, unless ``generic``: ``fn`` then takes every extent as it is (its
    generic loop nests, e.g. over ``runtime_window``)."""

    @functools.wraps(fn)
    def lower(ctx: LowerContext) -> list[Kernel]:
        operands = [b for b in (*ctx.inputs, *ctx.outputs) if b is not None]
        if all(b.is_static for b in operands):
            return fn(ctx)
        if generic and not Buffer("", DType.F32, ctx.input(0).shape[1:]).is_static:
            return fn(ctx)
        return _per_image(ctx, fn, index_output)

    return lower


def runtime_window(ctx: LowerContext, x: Buffer, kernel: Sequence[int],
                   ceil_mode: bool = False) -> tuple[Window, list[Kernel]]:
    """The window of a conv or pool of input ``x`` whose spatial extents are known only at run
    time (explicit or VALID padding: SAME pads depend on the extents), over the output's
    spatial extents, and the kernel defining those the type rules left unknown (ONNX's window
    count: floor, or ceil with the last window starting inside the input or its begin pad)."""
    rank = len(kernel)
    mode = auto_pad_of(ctx.attrs, ctx.fail)
    if mode.startswith("SAME"):
        raise ctx.fail(f"auto_pad {mode} needs the spatial extents at compile time; the shape "
                       f"of %{x.name} is known only at run time")
    strides = int_list(ctx.attrs, "strides", rank, 1, ctx.fail)
    dilations = int_list(ctx.attrs, "dilations", rank, 1, ctx.fail)
    pads = ((0,) * 2 * rank if mode == "VALID"
            else int_list(ctx.attrs, "pads", 2 * rank, 0, ctx.fail, minimum=0))
    out = ctx.output()
    pairs: list[tuple[Extent, Sequence[Extent]]] = []
    for axis in range(rank):
        size, stride, begin = as_index(x.shape[2 + axis]), strides[axis], pads[axis]
        span = size + (begin + pads[rank + axis] - (kernel[axis] - 1) * dilations[axis] - 1)
        count: Expr = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
        if ceil_mode:
            count = select(((count - 1) * stride) >= size + begin, count - 1, count)
        pairs += [(o.shape[2 + axis], [select(span < 0, 0, count)]) for o in ctx.outputs
                  if o is not None]  # MaxPool's Indices too
    window = Window(tuple(kernel), strides, dilations, pads, tuple(out.shape[2:]))  # type: ignore[arg-type]
    return window, define_extents(ctx, pairs)


def runtime_transpose_window(ctx: LowerContext, x: Buffer,
                             kernel: Sequence[int]) -> tuple[Window, list[Kernel]]:
    """``runtime_window`` of a transposed window (ConvTranspose): explicit pads and
    output_padding only (output_shape and SAME pads need static extents); each output extent
    is (size - 1) * stride + output_padding + the dilated kernel - the pads."""
    rank = len(kernel)
    if auto_pad_of(ctx.attrs, ctx.fail) != "NOTSET" or ctx.attr("output_shape") is not None:
        raise ctx.fail(f"auto_pad and output_shape need the spatial extents at compile time; "
                       f"the shape of %{x.name} is known only at run time")
    strides = int_list(ctx.attrs, "strides", rank, 1, ctx.fail)
    dilations = int_list(ctx.attrs, "dilations", rank, 1, ctx.fail)
    pads = int_list(ctx.attrs, "pads", 2 * rank, 0, ctx.fail, minimum=0)
    extra = int_list(ctx.attrs, "output_padding", rank, 0, ctx.fail, minimum=0)
    out = ctx.output()
    pairs: list[tuple[Extent, Sequence[Extent]]] = []
    for axis in range(rank):
        grown = (as_index(x.shape[2 + axis]) - 1) * strides[axis] + (
            extra[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - pads[axis]
            - pads[rank + axis])
        pairs.append((out.shape[2 + axis], [grown]))
    window = Window(tuple(kernel), strides, dilations, pads, tuple(out.shape[2:]))  # type: ignore[arg-type]
    return window, define_extents(ctx, pairs)


def _per_image(ctx: LowerContext, fn: Lowering, index_output: int | None) -> list[Kernel]:
    batch = ctx.input(0).shape[0] if ctx.input(0).shape else 0
    if isinstance(batch, int):
        ctx.require_static(*ctx.inputs, *ctx.outputs)

    def batched(buffer: Buffer | None) -> bool:
        return buffer is not None and bool(buffer.shape) and (
            buffer.shape[0] is batch or any(buffer.shape[0] is u for u in ctx.undefined_dims))

    full: dict[str, Buffer] = {}
    for buffer in (*ctx.inputs, *ctx.outputs):
        if batched(buffer):
            assert buffer is not None
            if not Buffer("", buffer.dtype, buffer.shape[1:]).is_static:
                raise ctx.fail(f"%{buffer.name} has a run-time extent past the batch axis; "
                               f"this lowering of {ctx.op.value} needs those at compile time")
            full[buffer.name] = buffer
        elif buffer is not None:
            ctx.require_static(buffer)

    def image(buffer: Buffer | None) -> Buffer | None:
        if buffer is None or buffer.name not in full:
            return buffer
        return Buffer(buffer.name, buffer.dtype, (1, *buffer.shape[1:]))

    one = LowerContext(ctx.node, ctx.attrs, [image(b) for b in ctx.inputs],
                       [image(b) for b in ctx.outputs], ctx.consts, ctx.name, ctx.machine,
                       (), ctx.dims)
    kernels = fn(one)
    ctx.scratch_buffers.extend(one.scratch_buffers)
    ctx.derived.update(one.derived)
    n = Var("image")
    indexed = ctx.outputs[index_output] if index_output is not None and len(
        ctx.outputs) > index_output else None
    shift = _ImageShift(full, n, None if indexed is None else indexed.name,
                        _image_numel(ctx.input(0)))
    body = Block(tuple(shift.stmt(k.body) for k in kernels))

    def params(group: Callable[[Kernel], tuple[Buffer, ...]]) -> list[Buffer]:
        found: dict[str, Buffer] = {}
        for kernel in kernels:
            for buffer in group(kernel):
                found.setdefault(buffer.name, full.get(buffer.name, buffer))
        return list(found.values())

    defined = define_extents(ctx, [(b.shape[0], [batch]) for b in ctx.outputs
                                   if b is not None and batched(b)])
    return [*defined, ctx.kernel(Loop(n, as_index(batch), body),
                                 params(lambda k: k.inputs), params(lambda k: k.outputs),
                                 params(lambda k: k.scratch))]


def _image_numel(buffer: Buffer) -> int:
    """Elements per image (past axis 0) of a batched buffer (static by then)."""
    numel = Buffer("", buffer.dtype, buffer.shape[1:]).numel
    assert isinstance(numel, int)
    return numel


class _ImageShift(Rewriter):
    """Moves the accesses of one image's kernels to image ``n`` of the ``full`` buffers:
    index 0 + n on the image's own shape, ``n`` images further on a view of another shape
    (flat) or in a matmul tile (flat offsets); values stored to ``indexed`` (flat indices
    into an input of ``index_step`` elements per image) move ``n`` images too."""

    def __init__(self, full: dict[str, Buffer], n: Var, indexed: str | None,
                 index_step: int) -> None:
        super().__init__(on_load=self._load, on_store=self._store)
        self.full, self.n = full, n
        self.indexed, self.index_step = indexed, index_step

    def _moved(self, buffer: Buffer, indices: tuple[Expr, ...]) -> tuple[Buffer, list[Expr]]:
        big = self.full[buffer.name]
        if buffer.strides is None and buffer.shape == (1, *big.shape[1:]):
            return big, [indices[0] + self.n, *indices[1:]]
        strides = buffer.element_strides  # a view of one image: static
        flat = affine(list(zip(indices, strides, strict=True)))  # type: ignore[arg-type]
        whole = Buffer(big.name, big.dtype, (big.numel,))
        return whole, [flat + self.n * _image_numel(big)]

    def _load(self, load: Load) -> Expr | None:
        if load.buffer.name not in self.full:
            return None
        buffer, indices = self._moved(load.buffer, load.indices)
        return buffer.load(*indices)

    def _store(self, store: Store) -> Stmt | None:
        if store.buffer.name not in self.full:
            return None
        buffer, indices = self._moved(store.buffer, store.indices)
        value = store.value
        if buffer.name == self.indexed:  # a flat index into input 0: moved to image n
            value = value + (self.n * self.index_step).cast(value.dtype)
        return buffer.store(indices, value)

    def stmt(self, s: Stmt) -> Stmt:
        if not isinstance(s, MatmulTile):
            return super().stmt(s)
        tile = super().stmt(s)
        assert isinstance(tile, MatmulTile)
        moved: dict[str, Buffer | Expr] = {}
        for role in ("c", "a", "b"):
            buffer: Buffer = getattr(tile, role)
            if buffer.name in self.full:
                big = self.full[buffer.name]
                moved[role] = big
                moved[f"{role}_offset"] = (getattr(tile, f"{role}_offset")
                                           + self.n * _image_numel(big))
        return replace(tile, **moved)  # type: ignore[arg-type]
