"""``Tensor``: a symbolic tensor during tracing, with numpy-like operators and methods.

Each operator adds IR nodes to the tensor's trace. Operands other than tensors are lifted to
constants: Python numbers (and NumPy scalars, and lists of numbers) take the element type of
the tensor they meet, and fail when they cannot be represented in it (``i32_tensor + 0.5``);
NumPy arrays keep their own element type, so ``f32 + float64-array`` fails with a message
rather than computing in a type nobody asked for. Element types never change implicitly.

The common shape errors (broadcasting, matmul, reshape, indexing) are checked here before the
builder sees the node, so that the message names the dims that clash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.compiler.ir.graph import Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import Dim, DType, TensorType

from .errors import dsl_error
from .spec import as_dtype

if TYPE_CHECKING:
    from .tracing import Trace


class Tensor:
    """A value of the graph being traced; operators and methods add nodes to that graph."""

    # NumPy arrays on the left of an operator defer to the reflected methods below.
    __array_ufunc__ = None
    __hash__ = object.__hash__

    def __init__(self, trace: Trace, value: Value) -> None:
        self.trace = trace
        self.value = value

    @property
    def type(self) -> TensorType:
        return self.value.type

    @property
    def dtype(self) -> DType:
        return self.value.type.dtype

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.value.type.shape

    @property
    def ndim(self) -> int:
        return self.value.type.rank

    def __repr__(self) -> str:
        return f"dsl.Tensor({self.type})"

    def __bool__(self) -> bool:
        raise dsl_error(f"bool({self.type})", "a traced tensor has no truth value while tracing "
                        "(Python control flow cannot depend on it; use dsl.where)")

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise dsl_error(f"numpy.asarray({self.type})", "a traced tensor has no data while "
                        "tracing; only dsl operations apply to it")

    def __len__(self) -> int:
        if not self.shape or not isinstance(self.shape[0], int):
            raise dsl_error(f"len({self.type})", "needs a static first dim")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    # ---------------------------------------------------------------------- arithmetic
    def __add__(self, other: Any) -> Tensor:
        return binary(Op.ADD, self, other, "+")

    def __radd__(self, other: Any) -> Tensor:
        return binary(Op.ADD, other, self, "+")

    def __sub__(self, other: Any) -> Tensor:
        return binary(Op.SUB, self, other, "-")

    def __rsub__(self, other: Any) -> Tensor:
        return binary(Op.SUB, other, self, "-")

    def __mul__(self, other: Any) -> Tensor:
        return binary(Op.MUL, self, other, "*")

    def __rmul__(self, other: Any) -> Tensor:
        return binary(Op.MUL, other, self, "*")

    def __truediv__(self, other: Any) -> Tensor:
        return _divide(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _divide(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return binary(Op.POW, self, other, "**")

    def __rpow__(self, other: Any) -> Tensor:
        return binary(Op.POW, other, self, "**")

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(other, self)

    def __neg__(self) -> Tensor:
        return unary(Op.NEG, self, "-")

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return unary(Op.ABS, self, "abs")

    # --------------------------------------------------------------- comparisons, logic
    def __lt__(self, other: Any) -> Tensor:
        return binary(Op.LESS, self, other, "<")

    def __le__(self, other: Any) -> Tensor:
        return binary(Op.LESS_OR_EQUAL, self, other, "<=")

    def __gt__(self, other: Any) -> Tensor:
        return binary(Op.GREATER, self, other, ">")

    def __ge__(self, other: Any) -> Tensor:
        return binary(Op.GREATER_OR_EQUAL, self, other, ">=")

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return binary(Op.EQUAL, self, other, "==")

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return unary(Op.NOT, binary(Op.EQUAL, self, other, "!="), "!=")

    def __and__(self, other: Any) -> Tensor:
        return _logical("&", self, other)

    def __rand__(self, other: Any) -> Tensor:
        return _logical("&", other, self)

    def __or__(self, other: Any) -> Tensor:
        return _logical("|", self, other)

    def __ror__(self, other: Any) -> Tensor:
        return _logical("|", other, self)

    def __xor__(self, other: Any) -> Tensor:
        return _logical("^", self, other)

    def __rxor__(self, other: Any) -> Tensor:
        return _logical("^", other, self)

    def __invert__(self) -> Tensor:
        return unary(Op.NOT if self.dtype is DType.BOOL else Op.BITWISE_NOT, self, "~")

    # -------------------------------------------------------------------- indexing
    def __getitem__(self, key: Any) -> Tensor:
        """numpy basic indexing plus one integer array index (see indexing.py)."""
        from .indexing import getitem  # indexing builds on this module's helpers

        return getitem(self, key)

    # ------------------------------------------------------------------ shape methods
    def reshape(self, *shape: Any) -> Tensor:
        """numpy reshape (one -1 is inferred); a symbolic dim may stay at its own axis."""
        target = _varargs(shape)
        what = f"reshape({self.type}, {list(target)})"
        entries: list[int] = []
        copies = False
        for i, d in enumerate(target):
            if isinstance(d, str):
                if i >= self.ndim or self.shape[i] != d:
                    raise dsl_error(what, f"symbolic dim {d!r} can stand only at its own axis "
                                          "of the input; use -1 elsewhere")
                entries.append(0)  # Reshape copies the input's extent for a 0
                copies = True
            elif is_int(d) and d >= -1:
                entries.append(int(d))
            else:
                raise dsl_error(what, f"target entry {d!r} is neither a non-negative int, -1 nor "
                                      "a symbolic dim")
        zeros = any(d == 0 for d in target if not isinstance(d, str))
        if entries.count(-1) > 1:
            raise dsl_error(what, "only one -1 can be inferred")
        if copies and zeros:
            raise dsl_error(what, "a zero extent cannot be combined with symbolic dims")
        if self.type.is_static:
            count = self.type.numel
            rest = int(np.prod([d for d in entries if d != -1]))
            assert count is not None
            if (-1 in entries and (rest == 0 or count % rest)) or (
                    -1 not in entries and rest != count):
                raise dsl_error(what, f"{count} elements cannot take the shape {list(target)}")
        return self.trace.emit1(Op.RESHAPE, [self, self.trace.ints(entries)],
                                {"allowzero": int(zeros)}, what=what)

    def transpose(self, *perm: int) -> Tensor:
        """Axes permuted (reversed when no perm is given)."""
        order = list(_varargs(perm)) or list(range(self.ndim))[::-1]
        what = f"transpose({self.type}, {order})"
        perm_axes = normalize_axes(order, self.ndim, what)  # in range, none repeated
        if len(perm_axes) != self.ndim:
            raise dsl_error(what, f"{order} is not a permutation of {self.ndim} axes")
        return self.trace.emit1(Op.TRANSPOSE, [self], {"perm": perm_axes}, what=what)

    @property
    def T(self) -> Tensor:  # noqa: N802 - numpy's name
        return self.transpose()

    def astype(self, dtype: Any) -> Tensor:
        target = as_dtype(dtype)
        return self.trace.emit1(Op.CAST, [self], {"to": target},
                                what=f"{self.type}.astype({target.value})")

    def flatten(self, start_dim: int = 1) -> Tensor:
        """Axes from ``start_dim`` on folded into one (torch.flatten to the last axis)."""
        what = f"flatten({self.type}, start_dim={start_dim})"
        start = normalize_axes([start_dim], max(self.ndim, 1), what)[0]
        # 0 copies an extent, so symbolic leading dims survive; -1 takes the rest.
        return self.trace.emit1(Op.RESHAPE, [self, self.trace.ints([0] * start + [-1])],
                                what=what)

    def unsqueeze(self, axis: int) -> Tensor:
        what = f"unsqueeze({self.type}, {axis})"
        at = normalize_axes([axis], self.ndim + 1, what)
        return self.trace.emit1(Op.UNSQUEEZE, [self, self.trace.ints(at)], what=what)

    def squeeze(self, axis: int | Sequence[int] | None = None) -> Tensor:
        """Axes of extent 1 removed: those given, or every static one."""
        what = f"squeeze({self.type}, {axis})"
        if axis is None:
            return self.trace.emit1(Op.SQUEEZE, [self], what=what)
        axes = normalize_axes(_axis_list(axis), self.ndim, what)
        for a in axes:
            if self.shape[a] != 1 and isinstance(self.shape[a], int):
                raise dsl_error(what, f"axis {a} has extent {self.shape[a]}, not 1")
        return self.trace.emit1(Op.SQUEEZE, [self, self.trace.ints(axes)], what=what)

    def expand(self, *shape: Any) -> Tensor:
        """torch expand: extents of 1 broadcast to ``shape``; -1 (or the same symbol) keeps
        an axis; new leading axes may be added."""
        target = _varargs(shape)
        what = f"expand({self.type}, {list(target)})"
        lead = len(target) - self.ndim
        if lead < 0:
            raise dsl_error(what, f"the target has fewer axes than the tensor ({self.ndim})")
        entries = []
        for i, d in enumerate(target):
            own = self.shape[i - lead] if i >= lead else None
            if (d == -1 or isinstance(d, str)) and own is not None and (d == -1 or own == d):
                entries.append(1)  # Expand broadcasts: 1 keeps the tensor's extent
            elif is_int(d) and d >= 0 and (own in (None, 1, d) or isinstance(own, str)):
                entries.append(int(d))
            else:
                raise dsl_error(what, f"cannot expand axis {i} (extent {own}) to {d!r}")
        return self.trace.emit1(Op.EXPAND, [self, self.trace.ints(entries)], what=what)

    # --------------------------------------------------------------------- reductions
    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce(Op.REDUCE_SUM, "sum", axis, keepdims)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce(Op.REDUCE_MEAN, "mean", axis, keepdims)

    def max(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce(Op.REDUCE_MAX, "max", axis, keepdims)

    def min(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce(Op.REDUCE_MIN, "min", axis, keepdims)

    def prod(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce(Op.REDUCE_PROD, "prod", axis, keepdims)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return self._arg_reduce(Op.ARGMAX, "argmax", axis, keepdims)

    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return self._arg_reduce(Op.ARGMIN, "argmin", axis, keepdims)

    def _reduce(self, op: Op, name: str, axis: int | Sequence[int] | None,
                keepdims: bool) -> Tensor:
        what = f"{name}({self.type}, axis={axis}{', keepdims=True' if keepdims else ''})"
        attrs = {"keepdims": int(keepdims)}
        if axis is None:
            return self.trace.emit1(op, [self], attrs, what=what)
        axes = normalize_axes(_axis_list(axis), self.ndim, what)
        if not axes:  # an empty axis tuple reduces nothing, as in numpy
            attrs["noop_with_empty_axes"] = 1
        return self.trace.emit1(op, [self, self.trace.ints(axes)], attrs, what=what)

    def _arg_reduce(self, op: Op, name: str, axis: int | None, keepdims: bool) -> Tensor:
        what = f"{name}({self.type}, axis={axis})"
        if axis is None:  # numpy: the index into the flattened tensor
            flat = self.trace.emit1(Op.RESHAPE, [self, self.trace.ints([-1])], what=what)
            found = flat._arg_reduce(op, name, 0, False)
            return found.reshape([1] * self.ndim) if keepdims else found
        at = normalize_axes([axis], self.ndim, what)[0]
        return self.trace.emit1(op, [self], {"axis": at, "keepdims": int(keepdims)}, what=what)


# ----------------------------------------------------------------- operands and checks

def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _varargs(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``f(2, 3)`` and ``f((2, 3))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return args


def _axis_list(axis: int | Sequence[int]) -> list[int]:
    return list(axis) if isinstance(axis, Sequence) else [axis]


def normalize_axes(axes: Sequence[Any], rank: int, what: str) -> tuple[int, ...]:
    """Axes mapped into ``[0, rank)``; a DSLError for one out of range, repeated or not int."""
    found = []
    for axis in axes:
        if not is_int(axis) or not -rank <= axis < rank:
            raise dsl_error(what, f"axis {axis!r} is out of range for {rank} axes")
        found.append(int(axis) % rank)
    if len(set(found)) != len(found):
        raise dsl_error(what, f"repeated axis in {list(axes)}")
    return tuple(found)


def number_array(value: Any, dtype: DType | None, what: str) -> np.ndarray:
    """Python numbers (or nested lists of them) as an array of ``dtype``, exactly; without a
    dtype, floats become f32 and ints i64."""
    raw = np.asarray(value)
    if raw.dtype.kind not in "biuf":
        raise dsl_error(what, f"cannot use {type(value).__name__} {value!r} as a tensor")
    if dtype is None:
        dtype = DType.F32 if raw.dtype.kind == "f" else DType.from_numpy(raw.dtype)
    if raw.dtype.kind == "b" and dtype is not DType.BOOL:
        # numpy would read True as 1 (and a bool index list as a mask): neither is meant here.
        raise dsl_error(what, f"{value!r} is boolean where {dtype.value} values are expected")
    with np.errstate(all="ignore"):
        converted = raw.astype(dtype.numpy)
    if not dtype.is_float and not np.array_equal(converted, raw):
        raise dsl_error(what, f"{value!r} cannot be represented as {dtype.value}")
    return converted


def lift(trace: Trace, value: Any, dtype: DType | None, what: str) -> Tensor:
    """``value`` as a tensor of ``trace``: a Tensor as is, a numpy array as a constant of its
    own type, Python numbers as a constant of ``dtype``."""
    if isinstance(value, Tensor):
        return value  # Trace.emit checks that it belongs to ``trace``
    if isinstance(value, np.ndarray):
        return trace.constant(value)
    if isinstance(value, (bool, int, float, np.generic, list, tuple)):
        return trace.constant(number_array(value, dtype, what))
    raise dsl_error(what, f"cannot use a {type(value).__name__} as a tensor")


def check_same_dtype(what: str, *tensors: Tensor) -> None:
    dtypes = sorted({t.dtype.value for t in tensors})
    if len(dtypes) > 1:
        raise dsl_error(what, f"element types {' and '.join(dtypes)} differ (convert with "
                              ".astype)")


def check_broadcast(what: str, *shapes: tuple[Dim, ...]) -> None:
    """numpy broadcasting: per trailing-aligned axis, static extents other than 1 agree."""
    rank = max(len(s) for s in shapes)
    for back in range(1, rank + 1):
        dims = {s[-back] for s in shapes if len(s) >= back}
        static = sorted(d for d in dims if isinstance(d, int) and d != 1)
        if len(static) > 1:
            raise dsl_error(what, f"dims {' and '.join(map(str, static))} at axis -{back} do "
                                  "not broadcast")


def pair(a: Any, b: Any, what: str) -> tuple[Tensor, Tensor]:
    """Two operands as tensors of one trace; numbers take the other's element type."""
    anchor = a if isinstance(a, Tensor) else b
    assert isinstance(anchor, Tensor)
    return (lift(anchor.trace, a, anchor.dtype, what), lift(anchor.trace, b, anchor.dtype, what))


def describe(value: Any) -> str:
    """An operand in messages: its type for tensors and arrays, else its Python type."""
    if isinstance(value, Tensor):
        return str(value.type)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return str(TensorType(DType.from_numpy(value.dtype), value.shape))
    return type(value).__name__


def _describe(symbol: str, a: Any, b: Any) -> str:
    """``f32[2] + f32[3]`` for an operator, ``maximum(f32[2], f32[3])`` for a function."""
    texts = (describe(a), describe(b))
    if symbol.isidentifier():
        return f"{symbol}({texts[0]}, {texts[1]})"
    return f"{texts[0]} {symbol} {texts[1]}"


def binary(op: Op, a: Any, b: Any, symbol: str) -> Tensor:
    """A broadcasting binary op, infix (``+``) or named (``maximum``)."""
    x, y = pair(a, b, _describe(symbol, a, b))
    what = _describe(symbol, x, y)
    if op is not Op.POW:  # Pow's exponent may have another numeric type
        check_same_dtype(what, x, y)
    check_broadcast(what, x.shape, y.shape)
    return x.trace.emit1(op, [x, y], what=what)


def unary(op: Op, x: Tensor, name: str, attrs: dict[str, Any] | None = None) -> Tensor:
    return x.trace.emit1(op, [x], attrs, what=f"{name}({x.type})")


def _divide(a: Any, b: Any) -> Tensor:
    anchor = a if isinstance(a, Tensor) else b
    if not anchor.dtype.is_float:
        raise dsl_error(f"{describe(a)} / {describe(b)}",
                        "true division of integer tensors; cast them with .astype first")
    return binary(Op.DIV, a, b, "/")


_LOGIC = {"&": (Op.AND, Op.BITWISE_AND), "|": (Op.OR, Op.BITWISE_OR),
          "^": (Op.XOR, Op.BITWISE_XOR)}


def _logical(symbol: str, a: Any, b: Any) -> Tensor:
    """Logical ops on bool tensors, bitwise ones on integers (as numpy's operators)."""
    anchor = a if isinstance(a, Tensor) else b
    logical, bitwise = _LOGIC[symbol]
    return binary(logical if anchor.dtype is DType.BOOL else bitwise, a, b, symbol)


def matmul(a: Any, b: Any) -> Tensor:
    """numpy matmul with batch broadcasting; contraction and batch dims checked here."""
    x, y = pair(a, b, _describe("@", a, b))
    what = _describe("@", x, y)
    check_same_dtype(what, x, y)
    if x.ndim == 0 or y.ndim == 0:
        raise dsl_error(what, "matmul needs operands of rank >= 1")
    k1, k2 = x.shape[-1], y.shape[-2] if y.ndim > 1 else y.shape[0]
    if isinstance(k1, int) and isinstance(k2, int) and k1 != k2:
        raise dsl_error(what, f"contraction dims {k1} and {k2} differ")
    if x.ndim > 2 and y.ndim > 2:  # the batch dims (the matrix dims count as 1s)
        check_broadcast(what, (*x.shape[:-2], 1, 1), (*y.shape[:-2], 1, 1))
    return x.trace.emit1(Op.MATMUL, [x, y], what=what)
