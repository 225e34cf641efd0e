"""Sliding-window geometry shared by the conv, conv-transpose and pooling type rules and kernels.

One place resolves ``kernel_shape``/``strides``/``dilations``/``pads``/``auto_pad``/``ceil_mode``
into per-axis numbers, so the type rule and the numpy kernel can never disagree on an output
extent. Symbolic input extents give a symbolic (or ``UNKNOWN``) output extent; the kernel always
calls with static extents and also reads the resolved pads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import symbolic
from ..types import UNKNOWN, Dim

Fail = Callable[[str], Exception]
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class Window:
    """A resolved window over ``n`` spatial axes; ``pads`` is (begin..., end...) and only
    meaningful when every input extent is static."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    out: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.kernel)

    @property
    def extent(self) -> tuple[int, ...]:
        """Span of each dilated kernel axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations, strict=False))


def int_list(
    attrs: Mapping[str, Any], name: str, n: int, default: int, fail: Fail, minimum: int = 1
) -> tuple[int, ...]:
    """Attribute ``name`` as ``n`` ints (``default`` each when absent), each >= ``minimum``."""
    value = attrs.get(name)
    if value is None:
        return (default,) * n
    found = tuple(int(v) for v in value)
    if len(found) != n:
        raise fail(f"attribute {name} has {len(found)} values; expected {n} (one per spatial axis)")
    if any(v < minimum for v in found):
        raise fail(f"attribute {name}={list(found)} must hold values >= {minimum}")
    return found


def auto_pad_of(attrs: Mapping[str, Any], fail: Fail) -> str:
    mode = attrs.get("auto_pad") or "NOTSET"
    if mode not in AUTO_PADS:
        raise fail(f"auto_pad {mode!r} is not one of {', '.join(AUTO_PADS)}")
    return mode


def kernel_shape_of(
    attrs: Mapping[str, Any], inferred: Sequence[Dim] | None, n: int, fail: Fail
) -> tuple[int, ...]:
    """``kernel_shape``, or the weight's spatial extents when the attribute is absent."""
    given = attrs.get("kernel_shape")
    if given is not None:
        kernel = tuple(int(k) for k in given)
        if len(kernel) != n:
            raise fail(
                f"kernel_shape {list(kernel)} has {len(kernel)} axes; the input has {n} "
                "spatial axes"
            )
        if any(k < 1 for k in kernel):
            raise fail(f"kernel_shape {list(kernel)} must be positive")
        if inferred is not None:
            for k, w in zip(kernel, inferred, strict=False):
                if isinstance(w, int) and w != k:
                    raise fail(
                        f"kernel_shape {list(kernel)} does not match the weight's spatial "
                        f"shape {list(inferred)}"
                    )
        return kernel
    if inferred is None:
        raise fail("attribute kernel_shape is required")
    if not all(isinstance(k, int) for k in inferred):
        raise fail(f"the weight's spatial shape {list(inferred)} must be static")
    return tuple(int(k) for k in inferred)


def _same_pads(extent: int, stride: int, size: int, upper: bool) -> tuple[int, int, int]:
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + extent - size)
    small = total // 2
    begin = small if upper else total - small
    return begin, total - begin, out


def resolve_window(
    attrs: Mapping[str, Any],
    spatial: Sequence[Dim],
    kernel: Sequence[int],
    fail: Fail,
    ceil_mode: bool = False,
) -> Window:
    """Pads and output extents of a conv or pooling window over input extents ``spatial``."""
    n = len(spatial)
    kernel = tuple(kernel)
    strides = int_list(attrs, "strides", n, 1, fail)
    dilations = int_list(attrs, "dilations", n, 1, fail)
    explicit = int_list(attrs, "pads", 2 * n, 0, fail, minimum=0)
    mode = auto_pad_of(attrs, fail)
    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=False))
    begins, ends, outs = [], [], []
    for axis, (size, extent, stride) in enumerate(zip(spatial, extents, strides, strict=False)):
        out: Dim
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            if isinstance(size, int):
                begin, end, out = _same_pads(extent, stride, size, mode == "SAME_UPPER")
            else:
                # ceil(size / stride) of a symbolic extent where stride divides it; the total
                # padding (out - 1) * stride + extent - size is then extent - stride.
                out = symbolic.floordiv(size, stride)
                total = max(0, extent - stride) if out != UNKNOWN else 0
                small = total // 2
                begin = small if mode == "SAME_UPPER" else total - small
                end = total - begin
        else:
            begin, end = (0, 0) if mode == "VALID" else (explicit[axis], explicit[n + axis])
            out = _window_count(size, begin + end, extent, stride, ceil_mode, begin, fail)
        begins.append(begin)
        ends.append(end)
        outs.append(out)
    return Window(kernel, strides, dilations, tuple(begins + ends), tuple(outs))


def _window_count(
    size: Dim, padding: int, extent: int, stride: int, ceil_mode: bool, begin: int, fail: Fail
) -> Dim:
    if not isinstance(size, int):
        # floor(span / stride) + 1 where the division is exact (then floor and ceil agree; a
        # ceil-mode window past the input would need end padding >= the window's extent).
        span = symbolic.add(size, padding - extent)
        if ceil_mode and padding - begin >= extent:
            return UNKNOWN
        return symbolic.add(symbolic.floordiv(span, stride), 1)
    span = size + padding - extent
    if span < 0:
        raise fail(
            f"window of extent {extent} does not fit an input extent {size} padded by {padding}"
        )
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # A ceil-mode window must still start inside the input or its begin padding.
    if ceil_mode and (out - 1) * stride >= size + begin:
        out -= 1
    return out


def resolve_transpose_window(
    attrs: Mapping[str, Any], spatial: Sequence[Dim], kernel: Sequence[int], fail: Fail
) -> Window:
    """Pads and output extents of ConvTranspose (``output_shape`` and ``output_padding`` too)."""
    n = len(spatial)
    kernel = tuple(kernel)
    strides = int_list(attrs, "strides", n, 1, fail)
    dilations = int_list(attrs, "dilations", n, 1, fail)
    explicit = int_list(attrs, "pads", 2 * n, 0, fail, minimum=0)
    out_pad = int_list(attrs, "output_padding", n, 0, fail, minimum=0)
    mode = auto_pad_of(attrs, fail)
    given = attrs.get("output_shape")
    if given is not None:
        given = tuple(int(v) for v in given)[-n:]
        if len(given) != n:
            raise fail(f"output_shape {list(given)} needs {n} spatial extents")
    begins, ends, outs = [], [], []
    for axis, (size, k, s, d) in enumerate(zip(spatial, kernel, strides, dilations, strict=False)):
        if out_pad[axis] >= max(s, d):
            raise fail(
                f"output_padding {list(out_pad)} must be smaller than the stride or "
                "dilation of its axis"
            )
        full = symbolic.add(symbolic.mul(symbolic.sub(size, 1), s),
                            out_pad[axis] + (k - 1) * d + 1)
        if given is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
            target = given[axis] if given is not None else symbolic.mul(size, s)
            total = symbolic.sub(full, target)
            if not isinstance(total, int):
                # A given output extent over a symbolic input: the pads depend on the size.
                begins.append(0)
                ends.append(0)
                outs.append(target)
                continue
            small = total // 2
            begin = small if mode == "SAME_UPPER" else total - small
            end = total - begin
        elif mode == "VALID":
            begin, end = 0, 0
        else:
            begin, end = explicit[axis], explicit[n + axis]
        out = symbolic.sub(full, begin + end)
        if isinstance(out, int) and out < 1:
            raise fail(f"output extent {out} on spatial axis {axis} is not positive")
        begins.append(begin)
        ends.append(end)
        outs.append(out)
    return Window(kernel, strides, dilations, tuple(begins + ends), tuple(outs))

