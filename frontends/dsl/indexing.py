"""Indexing of DSL tensors: numpy basic indexing (ints, slices with steps, ``...``, ``None``)
plus one integer-array index, as Slice, then Gather, then Squeeze of the int axes, then
Unsqueeze. Static axes follow Python exactly; on a symbolic axis a start before the front with
a negative step follows ONNX's clamping.
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import Dim, DType

from .errors import dsl_error
from .tensor import Tensor, is_int, lift

# Slice bounds meaning "to the end" (ONNX clamps them to the extent, symbolic or not).
INT_MAX, INT_MIN = 2**63 - 1, -(2**63)


def getitem(tensor: Tensor, key: Any) -> Tensor:
    """``tensor[key]``."""
    items = key if isinstance(key, tuple) else (key,)
    what = f"{tensor.type}[{', '.join(_index_text(i) for i in items)}]"
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if consumed > tensor.ndim:
        raise dsl_error(what, f"{consumed} indices for {tensor.ndim} axes")
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise dsl_error(what, "an index can have only one ellipsis (...)")
    fill = (slice(None),) * (tensor.ndim - consumed)
    at = next((n for n, i in enumerate(items) if i is Ellipsis), len(items))
    items = items[:at] + fill + items[at + 1:]
    windows: list[tuple[int, int, int, int]] = []  # (axis, start, end, step)
    squeeze: list[int] = []  # positions after the gather
    unsqueeze: list[int] = []  # positions in the result
    gather: tuple[int, Tensor] | None = None
    axis = middle = out = 0
    for item in items:
        if item is None:
            unsqueeze.append(out)
            out += 1
            continue
        dim = tensor.shape[axis]
        if isinstance(item, slice):
            window = _slice_window(item, dim, what)
            if window is not None:
                windows.append((axis, *window))
            middle, out = middle + 1, out + 1
        elif is_int(item):
            windows.append((axis, *_int_window(int(item), dim, axis, what)))
            squeeze.append(middle)
            middle += 1
        else:
            if gather is not None:
                raise dsl_error(what, "only one integer-array index is supported")
            indices = lift(tensor.trace, item, DType.I64, what)
            if not indices.dtype.is_int:
                raise dsl_error(what, f"an array index must hold integers, not "
                                      f"{indices.dtype.value} (boolean masks are not "
                                      "supported; use dsl.where)")
            gather = (axis, indices)
            middle, out = middle + indices.ndim, out + indices.ndim
        axis += 1
    result = tensor
    if windows:
        axes, starts, ends, steps = zip(*windows, strict=True)
        t = tensor.trace
        result = t.emit1(Op.SLICE, [result, t.ints(starts), t.ints(ends), t.ints(axes),
                                    t.ints(steps)], what=what)
    if gather is not None:
        result = tensor.trace.emit1(Op.GATHER, [result, gather[1]], {"axis": gather[0]},
                                  what=what)
    if squeeze:
        result = tensor.trace.emit1(Op.SQUEEZE, [result, tensor.trace.ints(squeeze)], what=what)
    if unsqueeze:
        result = tensor.trace.emit1(Op.UNSQUEEZE, [result, tensor.trace.ints(unsqueeze)],
                                  what=what)
    return result


def _index_text(item: Any) -> str:
    if item is Ellipsis:
        return "..."
    if isinstance(item, slice):
        text = ":".join("" if v is None else str(v) for v in (item.start, item.stop))
        return text + ("" if item.step is None else f":{item.step}")
    if isinstance(item, Tensor):
        return str(item.type)
    return repr(item)


def _slice_window(item: slice, dim: Dim, what: str) -> tuple[int, int, int] | None:
    """(start, end, step) for ONNX Slice giving Python's slice of an axis; None: all of it."""
    for bound in (item.start, item.stop, item.step):
        if bound is not None and not is_int(bound):
            raise dsl_error(what, f"slice bounds must be ints, not {type(bound).__name__}")
    step = 1 if item.step is None else int(item.step)
    if step == 0:
        raise dsl_error(what, "slice step cannot be zero")
    if isinstance(dim, int):
        picked = range(*item.indices(dim))
        if step == 1 and len(picked) == dim:
            return None
        if not picked:
            return 0, 0, 1
        end = picked[-1] + (1 if step > 0 else -1)
        # An end of -1 would count from the back in ONNX; INT_MIN means "past the front".
        return picked[0], end if end >= 0 else INT_MIN, step
    if item.start is None and item.stop is None and step == 1:
        return None
    start = item.start if item.start is not None else (0 if step > 0 else INT_MAX)
    stop = item.stop if item.stop is not None else (INT_MAX if step > 0 else INT_MIN)
    return int(start), int(stop), step


def _int_window(index: int, dim: Dim, axis: int, what: str) -> tuple[int, int, int]:
    """The one-element window of an int index (its axis is squeezed afterwards)."""
    if isinstance(dim, int) and not -dim <= index < dim:
        raise dsl_error(what, f"index {index} is out of range for axis {axis} of extent {dim}")
    return index, index + 1 if index != -1 else INT_MAX, 1
