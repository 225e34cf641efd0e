"""numpy-like functions of the DSL (re-exported as ``dsl.<name>``).

Each takes tensors or values that become constants of the running trace (see ``tensor.py`` for
how numbers and arrays are lifted) and adds IR nodes. Where numpy and the IR differ the numpy
meaning is kept: ``split`` with an int makes that many equal parts, ``pad`` takes numpy's
``pad_width`` and modes, reductions take ``axis``/``keepdims``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType

from .errors import dsl_error
from .spec import as_dtype
from .tensor import (
    Tensor,
    binary,
    check_broadcast,
    check_same_dtype,
    describe,
    lift,
    normalize_axes,
    number_array,
    unary,
)
from .tensor import matmul as _matmul
from .tracing import Trace, current_trace

Axis = int | Sequence[int] | None


def _trace_of(what: str, *values: Any) -> Trace:
    """The trace of the first tensor among ``values``, else the one running."""
    for value in values:
        if isinstance(value, Tensor):
            return value.trace
    return current_trace(what)


def _dtype_of(*values: Any) -> DType | None:
    """The element type numbers among ``values`` take: that of the first tensor."""
    return next((v.dtype for v in values if isinstance(v, Tensor)), None)


def as_tensor(x: Any, what: str) -> Tensor:
    """``x`` as a tensor (a constant of the running trace when it is not one)."""
    return lift(_trace_of(what, x), x, None, what)



# ------------------------------------------------------------------------- constants

def constant(array: Any, dtype: Any = None) -> Tensor:
    """A constant: numpy arrays keep their element type unless ``dtype`` is given; Python
    numbers become f32 (floats) or i64 (ints) by default."""
    what = f"constant({describe(array)})"
    trace = current_trace(what)
    target = None if dtype is None else as_dtype(dtype)
    if isinstance(array, np.ndarray):
        return trace.constant(array if target is None else array.astype(target.numpy))
    return trace.constant(number_array(array, target, what))


def _filled(shape: Sequence[int], dtype: Any, fill: int, name: str) -> Tensor:
    target = as_dtype(dtype)
    what = f"{name}({list(shape)}, {target.value})"
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        raise dsl_error(what, "the shape must be static non-negative ints")
    trace = current_trace(what)
    # ConstantOfShape is folded into a constant unless the result is large.
    return trace.emit1(Op.CONSTANT_OF_SHAPE, [trace.ints(shape)],
                       {"value": np.full(1, fill, dtype=target.numpy)}, what=what)


def zeros(shape: Sequence[int], dtype: Any = DType.F32) -> Tensor:
    return _filled(shape, dtype, 0, "zeros")


def ones(shape: Sequence[int], dtype: Any = DType.F32) -> Tensor:
    return _filled(shape, dtype, 1, "ones")


def cast(x: Any, dtype: Any) -> Tensor:
    return as_tensor(x, "cast").astype(dtype)


# ---------------------------------------------------------------------------- shapes

def reshape(x: Any, shape: Sequence[int | str]) -> Tensor:
    return as_tensor(x, "reshape").reshape(shape)


def transpose(x: Any, perm: Sequence[int] | None = None) -> Tensor:
    return as_tensor(x, "transpose").transpose(*(perm or ()))


def _joined(name: str, xs: Sequence[Any], axis: int) -> tuple[Trace, list[Tensor]]:
    """The trace and the tensors (numbers and arrays lifted) that concat/stack join."""
    items = list(xs)
    what = f"{name}([{', '.join(describe(x) for x in items)}], axis={axis})"
    if not items:
        raise dsl_error(what, "needs at least one tensor")
    trace, dtype = _trace_of(what, *items), _dtype_of(*items)
    return trace, [lift(trace, x, dtype, what) for x in items]


def concat(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """Tensors joined along ``axis``; the other dims must agree."""
    trace, tensors = _joined("concat", xs, axis)
    what = f"concat([{', '.join(str(t.type) for t in tensors)}], axis={axis})"
    check_same_dtype(what, *tensors)
    rank = tensors[0].ndim
    if any(t.ndim != rank for t in tensors):
        raise dsl_error(what, "the tensors differ in rank")
    at = normalize_axes([axis], rank, what)[0]
    for d in range(rank):
        static = sorted({t.shape[d] for t in tensors if isinstance(t.shape[d], int)})
        if d != at and len(static) > 1:
            raise dsl_error(what, f"dims {' and '.join(map(str, static))} at axis {d} differ")
    return trace.emit1(Op.CONCAT, tensors, {"axis": at}, what=what)


def stack(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """Tensors of one shape joined along a new axis."""
    trace, tensors = _joined("stack", xs, axis)
    what = f"stack([{', '.join(str(t.type) for t in tensors)}], axis={axis})"
    if len({t.shape for t in tensors}) > 1:
        raise dsl_error(what, "the tensors differ in shape")
    at = normalize_axes([axis], tensors[0].ndim + 1, what)[0]
    return concat([t.unsqueeze(at) for t in tensors], at)


def split(x: Any, sizes_or_count: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """Pieces along ``axis``: ``count`` equal ones, or ones of the given sizes."""
    tensor = as_tensor(x, "split")
    what = f"split({tensor.type}, {sizes_or_count}, axis={axis})"
    at = normalize_axes([axis], tensor.ndim, what)[0]
    dim = tensor.shape[at]
    trace = tensor.trace
    if isinstance(sizes_or_count, (int, np.integer)):
        count = int(sizes_or_count)
        if count < 1 or (isinstance(dim, int) and dim % count):
            raise dsl_error(what, f"extent {dim} cannot be split into {count} equal parts")
        return trace.emit(Op.SPLIT, [tensor], {"axis": at, "num_outputs": count}, what=what,
                          outputs=count)
    sizes = [int(s) for s in sizes_or_count]
    if not sizes or builtins.min(sizes) < 0 or (isinstance(dim, int)
                                                and builtins.sum(sizes) != dim):
        raise dsl_error(what, f"sizes {sizes} do not add up to the extent {dim}")
    return trace.emit(Op.SPLIT, [tensor, trace.ints(sizes)], {"axis": at}, what=what,
                      outputs=len(sizes))


def gather(x: Any, indices: Any, axis: int = 0) -> Tensor:
    """``numpy.take(x, indices, axis)``: slices along ``axis`` picked by integer indices."""
    tensor = as_tensor(x, "gather")
    what = f"gather({tensor.type}, {describe(indices)}, axis={axis})"
    at = normalize_axes([axis], tensor.ndim, what)[0]
    picked = lift(tensor.trace, indices, DType.I64, what)
    if not picked.dtype.is_int:
        raise dsl_error(what, f"indices must be integers, not {picked.dtype.value}")
    known = tensor.trace.builder.const_value(picked.value)
    dim = tensor.shape[at]
    if known is not None and isinstance(dim, int) and known.size and (
            known.min() < -dim or known.max() >= dim):
        raise dsl_error(what, f"indices {known.tolist()} are out of range for extent {dim}")
    return tensor.trace.emit1(Op.GATHER, [tensor, picked], {"axis": at}, what=what)


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad(x: Any, pads: Any, mode: str = "constant", value: Any = 0) -> Tensor:
    """``numpy.pad``: ``pads`` is an int, a (before, after) pair for every axis, or one pair
    per axis; modes constant (with ``value``), reflect, edge and wrap."""
    tensor = as_tensor(x, "pad")
    what = f"pad({tensor.type}, {pads}, mode={mode!r})"
    if mode not in _PAD_MODES:
        raise dsl_error(what, f"mode must be one of {', '.join(_PAD_MODES)}")
    try:
        widths = np.broadcast_to(np.asarray(pads), (tensor.ndim, 2))
    except ValueError:
        widths = np.zeros((0, 0))
    if widths.size != 2 * tensor.ndim or widths.dtype.kind not in "iu":
        raise dsl_error(what, f"pads must give (before, after) ints for each of the "
                              f"{tensor.ndim} axes")
    trace = tensor.trace
    fill = lift(trace, value, tensor.dtype, what) if mode == "constant" else None
    return trace.emit1(Op.PAD, [tensor, trace.ints([*widths[:, 0], *widths[:, 1]]), fill],
                       {"mode": mode}, what=what)


# ---------------------------------------------------------------------- elementwise

def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` (bool) holds, else ``b``; all three broadcast."""
    what = f"where({describe(condition)}, {describe(a)}, {describe(b)})"
    trace = _trace_of(what, condition, a, b)
    dtype = _dtype_of(a, b)
    c = lift(trace, condition, DType.BOOL, what)
    x, y = lift(trace, a, dtype, what), lift(trace, b, dtype, what)
    what = f"where({c.type}, {x.type}, {y.type})"
    if c.dtype is not DType.BOOL:
        raise dsl_error(what, f"the condition must be bool, not {c.dtype.value}")
    check_same_dtype(what, x, y)
    check_broadcast(what, c.shape, x.shape, y.shape)
    return trace.emit1(Op.WHERE, [c, x, y], what=what)


def matmul(a: Any, b: Any) -> Tensor:
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = as_tensor(a, "matmul")
    return _matmul(a, b)


def _named_binary(op: Op, name: str, a: Any, b: Any) -> Tensor:
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = as_tensor(a, name)
    return binary(op, a, b, name)


def maximum(a: Any, b: Any) -> Tensor:
    return _named_binary(Op.MAX, "maximum", a, b)


def minimum(a: Any, b: Any) -> Tensor:
    return _named_binary(Op.MIN, "minimum", a, b)


def clip(x: Any, lo: Any = None, hi: Any = None) -> Tensor:
    """Values clamped to the scalar bounds ``lo`` and ``hi`` (either may be None)."""
    tensor = as_tensor(x, "clip")
    what = f"clip({tensor.type}, {lo}, {hi})"
    bounds = [None if v is None else lift(tensor.trace, v, tensor.dtype, what) for v in (lo, hi)]
    if any(b is not None and b.type.numel != 1 for b in bounds):
        raise dsl_error(what, "the bounds must be scalars (use maximum/minimum for arrays)")
    return tensor.trace.emit1(Op.CLIP, [tensor, *bounds], what=what)


def _unary_function(op: Op, name: str) -> Any:
    def apply(x: Any) -> Tensor:
        return unary(op, as_tensor(x, name), name)

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"Elementwise {name} (IR op {op.value})."
    return apply


exp = _unary_function(Op.EXP, "exp")
log = _unary_function(Op.LOG, "log")
sqrt = _unary_function(Op.SQRT, "sqrt")
abs = _unary_function(Op.ABS, "abs")
tanh = _unary_function(Op.TANH, "tanh")
sin = _unary_function(Op.SIN, "sin")
cos = _unary_function(Op.COS, "cos")
erf = _unary_function(Op.ERF, "erf")
floor = _unary_function(Op.FLOOR, "floor")
ceil = _unary_function(Op.CEIL, "ceil")


# ------------------------------------------------------------------------ reductions
# numpy's names shadow the builtins in this module: the code above says builtins.min etc.

def sum(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return as_tensor(x, "sum").sum(axis, keepdims)


def mean(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return as_tensor(x, "mean").mean(axis, keepdims)


def max(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return as_tensor(x, "max").max(axis, keepdims)


def min(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return as_tensor(x, "min").min(axis, keepdims)


def prod(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return as_tensor(x, "prod").prod(axis, keepdims)


def argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    return as_tensor(x, "argmax").argmax(axis, keepdims)


def argmin(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    return as_tensor(x, "argmin").argmin(axis, keepdims)
