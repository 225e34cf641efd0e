"""The kernel IR: loop nests over buffers, the one place where ops get loop semantics.

Lowering turns each graph node into ``Kernel``s; schedules transform them; the LLVM (CPU) and
NVPTX (GPU) emitters read them. Everything is an immutable dataclass.

- ``Buffer``: a named, typed, statically shaped array, row-major with element strides.
- Expressions (``Expr``): constants, variables (loop indices and scalar locals), loads, unary
  and binary arithmetic, comparisons, selects, casts, and calls of an ``ExternalFunction`` (a
  scalar function carried as LLVM IR: a custom elementwise op); each has a ``dtype``. Index
  arithmetic is ``i64``. Python operators build expressions: ``i * 4 + j``, ``x.load(i, j) + 1.0``.
- Statements (``Stmt``): ``Loop`` (annotated serial / parallel / vectorize / unroll, or bound
  to GPU blocks / threads), ``Store``, ``Block``, ``If``, ``Declare`` / ``Assign`` of scalar
  locals (accumulators), ``Report`` of a run-time failure in the data, and ``MatmulTile``: a
  register-blocked multiply-accumulate of a small output tile, the one statement that names a
  schedule rather than scalar work (its meaning is the scalar loop nest ``expanded`` returns; CPU
  code generation keeps the tile's accumulators in vector registers); ``BlockReduce``, a fold
  across the threads of a GPU block (GPU form, below).

Semantics of the operators (what every backend must implement):
- ``div`` on floats is IEEE division; on integers it truncates toward zero (C, and ONNX Div);
  integer division or remainder by zero gives 0, and ``INT_MIN / -1`` wraps (never a trap).
- ``rem`` is C's remainder (sign of the dividend): ``fmod`` for floats, ``srem``/``urem`` ints.
- ``min``/``max`` on floats propagate NaN (ONNX Min/Max), unlike C's fmin/fmax.
- ``shl``/``shr``: logical shifts for unsigned, arithmetic right shift for signed; a shift
  count >= the bit width gives 0 (ONNX BitShift), never undefined behaviour.
- ``Select`` may evaluate both operands (backends emit a branch-free select): a load in either
  operand must be in bounds whatever the condition; guard a load that may not be with ``If``.
- ``Loop`` extents may be run-time expressions; an extent <= 0 runs no iteration.
- ``Call`` is pure and total: it reads and writes no memory and returns a value for every
  argument (backends may evaluate, duplicate or inline it freely).
- ``round`` rounds half to even; ``cast`` from float to int truncates toward zero and saturates
  (NaN gives 0), from anything to bool is ``x != 0``.

GPU form (what the NVPTX emitter takes; ``kiln.compiler.lower.gpu.check_gpu_form`` enforces it):
the body is one ``Loop(b, Const(grid), GPU_BLOCK, ...)`` (blockIdx.x). Inside it, statements
outside any GPU_THREAD loop are *uniform*: every thread of the block runs them identically
(serial loops, ``If`` on uniform conditions, uniform scalar locals, ``BlockReduce``); they never
store. Each ``Loop(t, Const(threads), GPU_THREAD, phase)`` is a *phase* run by thread t
(threadIdx.x); all phases of a kernel have one constant extent (the block size, <= 1024), and
locals declared in a phase are the thread's own. A block-wide barrier separates every two phases
in execution order and precedes and follows every ``BlockReduce``. Within a phase a thread reads
shared or global data written in earlier phases or by itself only, and no two threads write one
location. ``Kernel.shared`` are block-shared arrays (``__shared__``); ``Kernel.thread_local``
are per-thread arrays of shape (threads, ...) whose every access's first index is the enclosing
GPU_THREAD loop's variable (registers or local memory of that thread). ``BlockReduce`` folds a
thread_local array of shape (threads,) into a uniform scalar local visible to every thread.
Sequential semantics (the interpreter): blocks run one after another, and within a block a phase
runs t = 0, 1, ... threads - 1 in turn; with the barriers and the race rule this is the CUDA
execution. Shared and thread-local arrays start undefined in each block.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ir.types import DType

UNARY_OPS = frozenset({
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "erf", "sigmoid", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "floor", "ceil", "round",
    "trunc", "not", "isnan", "isinf", "sign",
})
BINARY_OPS = frozenset({
    "add", "sub", "mul", "div", "rem", "min", "max", "pow", "and", "or", "xor", "shl", "shr",
    "atan2",
})
COMPARE_OPS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
_BOOL_RESULT_UNARY = frozenset({"isnan", "isinf"})


class LoopKind(enum.Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"
    VECTORIZE = "vectorize"
    UNROLL = "unroll"
    GPU_BLOCK = "gpu_block"
    GPU_THREAD = "gpu_thread"


@dataclass(frozen=True)
class Buffer:
    """A kernel operand: element type, shape; row-major unless ``strides`` is given.

    An extent is an ``int`` or, for a shape known only at run time, an i64 ``Expr`` of the
    run's dims (loads of ``DIMS``); strides, ``numel`` and ``nbytes`` are then expressions too.
    """

    name: str
    dtype: DType
    shape: tuple[int | Expr, ...]
    strides: tuple[int | Expr, ...] | None = None

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def element_strides(self) -> tuple[int | Expr, ...]:
        if self.strides is not None:
            return self.strides
        strides: list[int | Expr] = []
        step: int | Expr = 1
        for extent in reversed(self.shape):
            strides.append(step)
            step = extent_mul(step, extent)
        return tuple(reversed(strides))

    @property
    def numel(self) -> int | Expr:
        n: int | Expr = 1
        for extent in self.shape:
            n = extent_mul(n, extent)
        return n

    @property
    def nbytes(self) -> int | Expr:
        return extent_mul(self.numel, self.dtype.itemsize)

    def load(self, *indices: ExprLike) -> Load:
        if len(indices) != len(self.shape):
            raise ValueError(f"buffer {self.name} has rank {len(self.shape)}, got {len(indices)}")
        return Load(self, tuple(as_index(i) for i in indices))

    def store(self, indices: Sequence[ExprLike], value: ExprLike) -> Store:
        if len(indices) != len(self.shape):
            raise ValueError(f"buffer {self.name} has rank {len(self.shape)}, got {len(indices)}")
        return Store(self, tuple(as_index(i) for i in indices), as_expr(value, self.dtype))


def extent_mul(a: int | Expr, b: int | Expr) -> int | Expr:
    """``a * b`` for static or run-time extents, folding the static cases."""
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if isinstance(a, int) and a in (0, 1):
        return b if a == 1 else 0
    if isinstance(b, int) and b in (0, 1):
        return a if b == 1 else 0
    return as_index(a) * b if isinstance(a, int) else a * b


def extent_add(a: int | Expr, b: int | Expr) -> int | Expr:
    """``a + b`` for static or run-time extents, folding the static cases."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, int) and a == 0:
        return b
    if isinstance(b, int) and b == 0:
        return a
    return as_index(a) + b if isinstance(a, int) else a + b


class Expr:
    """Base of expressions; subclasses define ``dtype``. Operators build new expressions."""

    dtype: DType

    def __bool__(self) -> bool:
        # ``if extent > 8`` on a run-time extent builds a Compare, which would otherwise be
        # truthy: a lowering that branches on an extent must not silently take one branch.
        raise TypeError(f"an expression ({type(self).__name__}) has no truth value at compile "
                        "time; compare extents only when they are static")

    def _bin(self, op: str, other: ExprLike, reverse: bool = False) -> Binary:
        other_expr = as_expr(other, self.dtype)
        return Binary(op, other_expr, self) if reverse else Binary(op, self, other_expr)

    def __add__(self, other: ExprLike) -> Binary:
        return self._bin("add", other)

    def __radd__(self, other: ExprLike) -> Binary:
        return self._bin("add", other, True)

    def __sub__(self, other: ExprLike) -> Binary:
        return self._bin("sub", other)

    def __rsub__(self, other: ExprLike) -> Binary:
        return self._bin("sub", other, True)

    def __mul__(self, other: ExprLike) -> Binary:
        return self._bin("mul", other)

    def __rmul__(self, other: ExprLike) -> Binary:
        return self._bin("mul", other, True)

    def __truediv__(self, other: ExprLike) -> Binary:
        return self._bin("div", other)

    def __floordiv__(self, other: ExprLike) -> Binary:
        # Index arithmetic only (non-negative operands), where truncation equals flooring.
        return self._bin("div", other)

    def __mod__(self, other: ExprLike) -> Binary:
        return self._bin("rem", other)

    def __neg__(self) -> Unary:
        return Unary("neg", self)

    def eq(self, other: ExprLike) -> Compare:
        return Compare("eq", self, as_expr(other, self.dtype))

    def ne(self, other: ExprLike) -> Compare:
        return Compare("ne", self, as_expr(other, self.dtype))

    def __lt__(self, other: ExprLike) -> Compare:  # type: ignore[override]
        return Compare("lt", self, as_expr(other, self.dtype))

    def __le__(self, other: ExprLike) -> Compare:  # type: ignore[override]
        return Compare("le", self, as_expr(other, self.dtype))

    def __gt__(self, other: ExprLike) -> Compare:  # type: ignore[override]
        return Compare("gt", self, as_expr(other, self.dtype))

    def __ge__(self, other: ExprLike) -> Compare:  # type: ignore[override]
        return Compare("ge", self, as_expr(other, self.dtype))

    def cast(self, dtype: DType) -> Expr:
        return self if dtype == self.dtype else Cast(self, dtype)


ExprLike = Expr | int | float | bool


@dataclass(frozen=True, eq=False)
class Const(Expr):
    value: int | float | bool
    dtype: DType


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A loop index (i64) or a scalar local declared with ``Declare``."""

    name: str
    dtype: DType = DType.I64


@dataclass(frozen=True, eq=False)
class Load(Expr):
    buffer: Buffer
    indices: tuple[Expr, ...]

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.buffer.dtype


@dataclass(frozen=True, eq=False)
class Unary(Expr):
    op: str
    x: Expr

    def __post_init__(self) -> None:
        if self.op not in UNARY_OPS:
            raise ValueError(f"unknown unary op {self.op!r}")

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return DType.BOOL if self.op in _BOOL_RESULT_UNARY else self.x.dtype


@dataclass(frozen=True, eq=False)
class Binary(Expr):
    op: str
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if self.op not in BINARY_OPS:
            raise ValueError(f"unknown binary op {self.op!r}")
        if self.a.dtype != self.b.dtype:
            raise ValueError(
                f"{self.op}: operand types differ ({self.a.dtype.value} vs {self.b.dtype.value})"
            )

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.a.dtype


@dataclass(frozen=True, eq=False)
class Compare(Expr):
    op: str
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if self.op not in COMPARE_OPS:
            raise ValueError(f"unknown comparison {self.op!r}")
        if self.a.dtype != self.b.dtype:
            raise ValueError(
                f"{self.op}: operand types differ ({self.a.dtype.value} vs {self.b.dtype.value})"
            )

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return DType.BOOL


@dataclass(frozen=True, eq=False)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if self.cond.dtype is not DType.BOOL or self.a.dtype != self.b.dtype:
            raise ValueError("select needs a bool condition and operands of one type")

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.a.dtype


@dataclass(frozen=True, eq=False)
class Cast(Expr):
    x: Expr
    dtype: DType


@dataclass(frozen=True)
class ExternalFunction:
    """A scalar function defined by LLVM IR: ``symbol`` in the self-contained module ``llvm_ir``
    maps values of the ``args`` types to a ``result`` (the custom elementwise op's attributes;
    ``kiln.compiler.ir.rules.custom`` says what such a module may hold). ``name`` is the user's
    name for it, for messages."""

    name: str
    symbol: str
    llvm_ir: str
    args: tuple[DType, ...]
    result: DType

    @staticmethod
    def of_op(attrs: Mapping[str, Any], args: Sequence[DType]) -> ExternalFunction:
        """The function of a custom elementwise op with attributes ``attrs`` applied to
        operands of types ``args``."""
        return ExternalFunction(attrs["name"], attrs["symbol"], attrs["llvm_ir"], tuple(args),
                                attrs["dtype"])


@dataclass(frozen=True, eq=False)
class Call(Expr):
    """``function`` applied to ``args``, whose types are the function's argument types."""

    function: ExternalFunction
    args: tuple[Expr, ...]

    def __post_init__(self) -> None:
        found = tuple(a.dtype for a in self.args)
        if found != self.function.args:
            raise ValueError(
                f"call of {self.function.name}: arguments of types "
                f"({', '.join(t.value for t in found)}), expected "
                f"({', '.join(t.value for t in self.function.args)})")

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.function.result


class Stmt:
    """Base of statements."""


@dataclass(frozen=True, eq=False)
class Store(Stmt):
    buffer: Buffer
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True, eq=False)
class Block(Stmt):
    body: tuple[Stmt, ...]


@dataclass(frozen=True, eq=False)
class Loop(Stmt):
    """``for var in range(extent)``; ``vector_width`` applies to VECTORIZE loops."""

    var: Var
    extent: Expr
    body: Stmt
    kind: LoopKind = LoopKind.SERIAL
    vector_width: int = 0


@dataclass(frozen=True, eq=False)
class If(Stmt):
    cond: Expr
    then: Stmt
    otherwise: Stmt | None = None


@dataclass(frozen=True, eq=False)
class Declare(Stmt):
    """Declare scalar local ``var`` (mutable, visible to the rest of the enclosing block)."""

    var: Var
    init: Expr


@dataclass(frozen=True, eq=False)
class Assign(Stmt):
    var: Var
    value: Expr


@dataclass(frozen=True, eq=False)
class Report(Stmt):
    """Record a run-time failure (bad data, e.g. an index out of range). Execution goes on; the
    run then fails with this message instead of returning outputs. Guard the offending access
    separately: a reported kernel must still never touch memory out of bounds."""

    message: str


BLOCK_REDUCE_OPS = frozenset({"add", "max", "min"})


@dataclass(frozen=True, eq=False)
class BlockReduce(Stmt):
    """GPU form: the uniform local ``var`` (declared before) becomes the fold by ``op`` ("add",
    "max", "min"; max/min propagate NaN) of ``source``, a thread_local array of shape
    (threads,): every thread's contribution. Uniform; barriers precede and follow it."""

    source: Buffer
    op: str
    var: Var

    def __post_init__(self) -> None:
        if self.op not in BLOCK_REDUCE_OPS:
            raise ValueError(f"unknown block reduction {self.op!r}")
        if len(self.source.shape) != 1 or self.source.dtype != self.var.dtype:
            raise ValueError("a block reduction folds a (threads,) array of its local's type")


@dataclass(frozen=True)
class ContractAxis:
    """One axis of a ``MatmulTile``'s contraction: ``extent`` steps of ``a_stride`` elements in A
    and ``b_stride`` elements in B."""

    extent: int
    a_stride: int
    b_stride: int


@dataclass(frozen=True, eq=False)
class MatmulTile(Stmt):
    """A ``rows`` x ``cols`` tile of C += A @ B on flat (row-major) element offsets::

        C[c_offset + r * c_row_stride + col(j)] (=, or += when accumulate)
            sum over k of A[a_offset + r * a_row_stride + sum_d k_d * axes[d].a_stride]
                        * B[b_offset + sum_d k_d * axes[d].b_stride + j]

    for r < rows, j < cols, the multi-index k over ``axes`` (outermost first). Columns are
    contiguous in B; in C they are too unless ``c_group`` > 0, when column j lives at
    ``(j // c_group) * c_group_stride + j % c_group`` (channel blocks of a blocked layout). The sum
    starts from zero (or C) and adds the products in k order, each rounded (or fused) in f32.
    All three buffers are addressed flat whatever their shapes.

    Integer form (C int32, one of A and B uint8 and the other int8, no column groups): each
    contraction step is a dot product of 4 bytes, the A elements ``a + q`` with the B elements
    ``b + 4 * j + q`` for q < 4 (B packed in quads: the 4 bytes of a column are adjacent), the
    products and sums exact in int32 (wrapping): the u8 x s8 multiply-accumulate of x86's
    vpdpbusd (no saturation)."""

    c: Buffer
    c_offset: Expr
    c_row_stride: int
    a: Buffer
    a_offset: Expr
    a_row_stride: int
    b: Buffer
    b_offset: Expr
    rows: int
    cols: int
    axes: tuple[ContractAxis, ...]
    accumulate: bool = False
    c_group: int = 0
    c_group_stride: int = 0

    def __post_init__(self) -> None:
        if self.is_integer:
            if self.c_group > 0:
                raise ValueError("an integer matmul tile has contiguous columns")
        elif not (self.a.dtype == self.b.dtype == self.c.dtype and self.c.dtype.is_float):
            raise ValueError("a matmul tile multiplies floats of one type, or u8 by s8 into i32")
        if self.rows < 1 or self.cols < 1:
            raise ValueError("a matmul tile has at least one row and one column")

    @property
    def is_integer(self) -> bool:
        """The integer form: u8 x s8 (either way round) quads summed into int32."""
        return self.c.dtype is DType.I32 and {self.a.dtype, self.b.dtype} == {DType.U8, DType.I8}

    @property
    def offsets(self) -> tuple[Expr, Expr, Expr]:
        return (self.c_offset, self.a_offset, self.b_offset)

    def column(self, j: ExprLike) -> Expr:
        """The offset of column ``j`` from the start of a row of C."""
        if self.c_group <= 0:
            return as_index(j)
        return as_index(j) // self.c_group * self.c_group_stride + as_index(j) % self.c_group

    def expanded(self) -> Stmt:
        """The scalar loop nest this tile means, on the buffers' own (logical) indices: what
        simple backends run, and what code that rewrites loads and stores can transform."""
        r, j = Var("tile_r"), Var("tile_j")
        ks = [Var(f"tile_k{d}") for d in range(len(self.axes))]
        a_at = self.a_offset + r * self.a_row_stride
        b_at = self.b_offset + j
        for k, axis in zip(ks, self.axes, strict=True):
            a_at, b_at = a_at + k * axis.a_stride, b_at + k * axis.b_stride
        c_at = self.c_offset + r * self.c_row_stride + self.column(j)
        acc = Var("tile_acc", self.c.dtype)
        if self.is_integer:
            q = Var("tile_q")
            a_at, b_at = a_at + q, b_at + j * 3 + q  # B's column j starts at 4 * j
            step: Stmt = Loop(q, Const(4, DType.I64), Assign(acc, acc + (
                self.a.load(*unravel(a_at, self.a.shape)).cast(DType.I32)
                * self.b.load(*unravel(b_at, self.b.shape)).cast(DType.I32))))
        else:
            step = Assign(acc, acc + self.a.load(*unravel(a_at, self.a.shape))
                          * self.b.load(*unravel(b_at, self.b.shape)))
        for k, axis in reversed(list(zip(ks, self.axes, strict=True))):
            step = Loop(k, Const(axis.extent, DType.I64), step)
        c_index = unravel(c_at, self.c.shape)
        init = self.c.load(*c_index) if self.accumulate else Const(
            0 if self.is_integer else 0.0, self.c.dtype)
        element = Block((Declare(acc, init), step, self.c.store(c_index, acc)))
        return Loop(r, Const(self.rows, DType.I64),
                    Loop(j, Const(self.cols, DType.I64), element))


def operands(expr: Expr) -> tuple[Expr, ...]:
    """The expressions ``expr`` applies its operation to (a load's indices, an operator's
    operands, a call's arguments); none for constants and variables."""
    if isinstance(expr, Load):
        return expr.indices
    if isinstance(expr, Unary | Cast):
        return (expr.x,)
    if isinstance(expr, Binary | Compare):
        return (expr.a, expr.b)
    if isinstance(expr, Select):
        return (expr.cond, expr.a, expr.b)
    if isinstance(expr, Call):
        return expr.args
    return ()


def unravel(flat: Expr, shape: Sequence[int | Expr]) -> list[Expr]:
    """Row-major coordinates of the flat index ``flat`` in ``shape``."""
    coords: list[Expr] = []
    strides = Buffer("", DType.I64, tuple(shape)).element_strides
    for extent, stride in zip(shape, strides, strict=True):
        if isinstance(extent, int) and extent == 1:
            coords.append(Const(0, DType.I64))
            continue
        part = flat if isinstance(stride, int) and stride == 1 else flat // stride
        # The first axis needs no remainder: the flat index is within the shape.
        coords.append(part if not coords else part % extent)
    return coords


def flat_view(buffer: Buffer) -> Buffer:
    """``buffer`` seen as one row-major dimension (same name: the same memory)."""
    if buffer.strides is not None:
        raise ValueError(f"buffer {buffer.name} has explicit strides; it has no flat view")
    return Buffer(buffer.name, buffer.dtype, (buffer.numel,))


@dataclass(frozen=True, eq=False)
class Kernel:
    """One compiled function: reads ``inputs``, writes ``outputs``, may use ``scratch``.

    Buffers are bound by position in the order inputs, outputs, scratch. ``source`` names the
    graph nodes it implements (for profiles and messages). ``shared`` and ``thread_local`` are
    the GPU form's block-shared and per-thread arrays (not parameters: the kernel owns them)."""

    name: str
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    body: Stmt
    scratch: tuple[Buffer, ...] = ()
    source: tuple[str, ...] = field(default=())
    shared: tuple[Buffer, ...] = ()
    thread_local: tuple[Buffer, ...] = ()

    @property
    def params(self) -> tuple[Buffer, ...]:
        return self.inputs + self.outputs + self.scratch


def as_expr(value: ExprLike, dtype: DType) -> Expr:
    """An expression for ``value``; Python numbers become constants of ``dtype``."""
    if isinstance(value, Expr):
        return value
    if dtype is DType.BOOL:
        return Const(bool(value), dtype)
    if dtype.is_int:
        return Const(int(value), dtype)
    return Const(float(value), dtype)


def as_index(value: ExprLike) -> Expr:
    expr = as_expr(value, DType.I64)
    if expr.dtype is not DType.I64:
        raise ValueError(f"an index must be i64, got {expr.dtype.value}")
    return expr


def block(*stmts: Stmt | list[Stmt]) -> Block:
    """A block from statements and lists of statements (flattened)."""
    flat: list[Stmt] = []
    for item in stmts:
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)
    return Block(tuple(flat))


def unary(op: str, x: Expr) -> Unary:
    return Unary(op, x)


def binary(op: str, a: ExprLike, b: ExprLike) -> Binary:
    if isinstance(a, Expr):
        return Binary(op, a, as_expr(b, a.dtype))
    assert isinstance(b, Expr)
    return Binary(op, as_expr(a, b.dtype), b)


def select(cond: Expr, a: ExprLike, b: ExprLike) -> Select:
    if isinstance(a, Expr):
        return Select(cond, a, as_expr(b, a.dtype))
    assert isinstance(b, Expr)
    return Select(cond, as_expr(a, b.dtype), b)


def loop_nest(
    names: Sequence[str],
    extents: Sequence[int | Expr],
    make_body: Callable[[list[Var]], Stmt],
    kind: LoopKind = LoopKind.SERIAL,
) -> Stmt:
    """Nested loops ``for names[0] in extents[0]: for names[1] ...: make_body(vars)``."""
    variables = [Var(n) for n in names]
    body: Stmt = make_body(variables)
    for var, extent in reversed(list(zip(variables, extents, strict=True))):
        body = Loop(var, as_index(extent), body, kind)
    return body


# The run's dims: extents known only at run time live in this i64 array, one slot each. Slots of
# input extents are written before the plan runs; a lowering whose output extents depend on
# values stores them (``define_dim``) in a kernel that runs before the output is written.
DIMS = Buffer("kiln.dims", DType.I64, (1 << 16,))


@functools.cache
def dim(slot: int) -> Load:
    """The run-time extent in slot ``slot`` of ``DIMS`` (one object per slot: expressions
    compare by identity)."""
    return DIMS.load(slot)


def define_dim(extent: Expr, value: ExprLike) -> Store:
    """The store setting the run-time extent ``extent`` (a ``dim``) to ``value``."""
    if not (isinstance(extent, Load) and extent.buffer == DIMS):
        raise ValueError(f"{extent} is not a run-time extent")
    return Store(DIMS, extent.indices, as_index(value))


def dim_slot(expr: Expr) -> int | None:
    """The slot of ``expr`` if it is a plain ``dim`` load."""
    if isinstance(expr, Load) and expr.buffer == DIMS and isinstance(expr.indices[0], Const):
        return int(expr.indices[0].value)
    return None
