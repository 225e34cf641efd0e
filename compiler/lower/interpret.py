"""A scalar interpreter of the kernel IR: the executable definition of its semantics.

Buffers are indexed logically (``Buffer.strides`` describe the physical layout a backend uses;
the arrays given here are the logical tensors).

Slow (one Python step per scalar operation) and meant for small tests of lowerings and
schedules, independent of any backend. Out-of-bounds loads and stores raise instead of reading
garbage, so an indexing bug in a lowering shows up here first.

Kernels in GPU form run with the sequential semantics of the kernel IR's docstring: blocks in
order, each phase thread by thread. Shared and thread-local arrays start each block filled with
garbage (NaN for floats), and the race rule is checked: a location written by one thread of a
phase and read or written by another thread of that phase raises, as does a global location
written by one block and accessed by another (blocks never synchronize) and a thread-local
access whose first index is not the running thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import ExecutionError
from ..ir.types import DType
from .kernel_ir import (
    DIMS,
    Assign,
    Binary,
    Block,
    BlockReduce,
    Buffer,
    Call,
    Cast,
    Compare,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Load,
    Loop,
    LoopKind,
    MatmulTile,
    Report,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
)


def run_kernel(kernel: Kernel, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``kernel`` on arrays by buffer name; returns its outputs and scratch by name (and
    ``DIMS``, which a kernel may write, when it is a parameter).

    Inputs must be given; outputs and scratch start from the given arrays when present (a node's
    kernels share scratch), else from zeros. Run-time extents are read from ``arrays[DIMS]``. A
    ``Report`` executed by the kernel raises ExecutionError with its message at the end."""
    memory: dict[str, np.ndarray] = {}
    dims = arrays.get(DIMS.name)
    for buffer in kernel.params:
        shape = concrete_shape(buffer.shape, dims)
        if buffer.name in arrays:
            data = np.asarray(arrays[buffer.name])
            if buffer.name != DIMS.name and (
                    data.shape != shape or data.dtype != buffer.dtype.numpy):
                raise ExecutionError(
                    f"kernel {kernel.name}: buffer {buffer.name} wants {buffer.dtype.value}"
                    f"{list(shape)}, got {data.dtype}{list(data.shape)}"
                )
            memory[buffer.name] = data.copy()
        elif buffer in kernel.inputs:
            raise ExecutionError(f"kernel {kernel.name}: input buffer {buffer.name} not given")
        else:
            memory[buffer.name] = np.zeros(shape, buffer.dtype.numpy)
    interpreter = _Interpreter(memory, kernel.shared + kernel.thread_local,
                               {b.name for b in kernel.thread_local})
    interpreter.stmt(kernel.body, {})
    if interpreter.reported:
        raise ExecutionError(f"kernel {kernel.name}: {interpreter.reported[0]}")
    written = kernel.outputs + kernel.scratch + tuple(b for b in kernel.inputs if b == DIMS)
    return {b.name: memory[b.name] for b in written}


def concrete_shape(shape: tuple[int | Expr, ...], dims: np.ndarray | None) -> tuple[int, ...]:
    """``shape`` with its run-time extents evaluated from the run's ``dims`` array."""
    if all(isinstance(d, int) for d in shape):
        return shape  # type: ignore[return-value]
    if dims is None:
        raise ExecutionError(f"shape {list(shape)} has run-time extents but no dims were given")
    evaluator = _Interpreter({DIMS.name: dims})
    memo: dict[int, np.generic] = {}
    return tuple(d if isinstance(d, int) else int(_extent(d, evaluator, memo)) for d in shape)


def _extent(node: Expr, evaluator: _Interpreter, memo: dict[int, np.generic]) -> np.generic:
    """The value of an extent expression, each shared part once (a plan's arena size is a DAG
    of maxima over every tensor's end: evaluated as a tree it would take exponential time)."""
    found = memo.get(id(node))
    if found is None:
        if isinstance(node, Binary):
            a, b = _extent(node.a, evaluator, memo), _extent(node.b, evaluator, memo)
            with np.errstate(all="ignore"):
                found = scalar(_binary(node.op, a, b, node.dtype), node.dtype)
        else:
            found = evaluator.expr(node, {})
        memo[id(node)] = found
    return found


def scalar(value: object, dtype: DType) -> np.generic:
    return np.array(value).astype(dtype.numpy)[()]  # type: ignore[no-any-return]


_FLOAT_UNARY = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "trunc": np.trunc, "erf": lambda x: math.erf(float(x)),
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-float(x))) if x >= 0
    else math.exp(float(x)) / (1.0 + math.exp(float(x))),
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
}


def _unary(op: str, x: np.generic, dtype: DType) -> object:
    if op == "neg":
        return -x
    if op == "abs":
        return np.abs(x)
    if op == "sign":
        return x if dtype is DType.BOOL else np.sign(x)
    if op == "not":
        return ~x if dtype is not DType.BOOL else not x
    if op == "isnan":
        return bool(np.isnan(x))
    if op == "isinf":
        return bool(np.isinf(x))
    if dtype.is_int or dtype is DType.BOOL:
        return x if op in ("floor", "ceil", "round", "trunc") else _FLOAT_UNARY[op](float(x))
    return _FLOAT_UNARY[op](np.float64(x))


def _binary(op: str, a: np.generic, b: np.generic, dtype: DType) -> object:
    integral = dtype.is_int or dtype is DType.BOOL
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        if integral:
            if b == 0:
                return 0
            q = abs(int(a)) // abs(int(b))
            return scalar(q if (int(a) < 0) == (int(b) < 0) else -q, dtype)
        return np.float64(a) / np.float64(b)
    if op == "rem":
        if integral and b == 0:
            return 0
        return np.fmod(a, b)
    if op in ("min", "max"):
        return np.minimum(a, b) if op == "min" else np.maximum(a, b)
    if op == "pow":
        if integral:
            base, exponent = int(a), int(b)
            return base**exponent if exponent >= 0 else int(1 / base**-exponent)
        return np.float64(a) ** np.float64(b)
    if op == "atan2":
        return math.atan2(float(a), float(b))
    if op in ("and", "or", "xor"):
        if dtype is DType.BOOL:
            return {"and": a and b, "or": a or b, "xor": a != b}[op]
        return {"and": a & b, "or": a | b, "xor": a ^ b}[op]
    bits = dtype.itemsize * 8
    if int(b) >= bits or int(b) < 0:
        return 0
    if op == "shl":
        return (int(a) << int(b)) & ((1 << bits) - 1)
    return int(a) >> int(b)


def _compare(op: str, a: np.generic, b: np.generic) -> bool:
    return bool({"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b,
                 "ge": a >= b}[op])


def _cast(x: np.generic, source: DType, target: DType) -> object:
    if target is DType.BOOL:
        return bool(x != 0)
    if target.is_int and source.is_float:
        value = float(x)
        if math.isnan(value):
            return 0
        info = np.iinfo(target.numpy)
        if math.isinf(value):
            return info.max if value > 0 else info.min
        return int(min(max(math.trunc(value), info.min), info.max))
    return x


def _garbage(buffer: Buffer) -> np.ndarray:
    """What an uninitialized GPU array holds here: NaN for floats, a pattern for integers."""
    fill = np.nan if buffer.dtype.is_float else (True if buffer.dtype is DType.BOOL else 0x5A)
    return np.full(buffer.shape, fill, buffer.dtype.numpy)


_SEVERAL = -1


class _Owners:
    """The accesses of one GPU phase (by threads) or one GPU kernel (by blocks, to global
    memory): location -> who wrote it, and who read it (``_SEVERAL`` when more than one did).
    Every access is checked against the race rule: no location is written by one and read or
    written by another."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.current = 0
        self.written: dict[tuple[str, tuple[int, ...]], int] = {}
        self.read: dict[tuple[str, tuple[int, ...]], int] = {}

    def access(self, name: str, position: tuple[int, ...], write: bool) -> None:
        key, me = (name, position), self.current
        writer = self.written.get(key)
        if writer is not None and writer != me:
            raise ExecutionError(
                f"data race on {name}{list(position)}: {self.kind}s {writer} and {me} "
                f"({'both write' if write else 'one writes, the other reads'})")
        if write:
            reader = self.read.get(key)
            if reader is not None and reader != me:
                raise ExecutionError(f"data race on {name}{list(position)}: {self.kind} {me} "
                                     f"writes what another {self.kind} reads")
            self.written[key] = me
        else:
            seen = self.read.get(key)
            self.read[key] = me if seen is None or seen == me else _SEVERAL


class _Interpreter:
    def __init__(self, memory: dict[str, np.ndarray], block_arrays: tuple[Buffer, ...] = (),
                 thread_local: set[str] | None = None) -> None:
        self.memory = memory
        self.reported: list[str] = []
        self.block_arrays = block_arrays
        self.block_names = {b.name for b in block_arrays}
        self.thread_local = thread_local or set()
        self.phase: _Owners | None = None  # threads of the running GPU phase
        self.grid: _Owners | None = None  # blocks of the running GPU kernel (global memory)

    def stmt(self, node: Stmt, env: dict[str, np.generic]) -> None:
        if isinstance(node, Block):
            scope = dict(env)
            for inner in node.body:
                self.stmt(inner, scope)
            for name in env:
                env[name] = scope[name]
        elif isinstance(node, Loop):
            self.loop(node, env)
        elif isinstance(node, Store):
            position = self.position(node.buffer, node.indices, env)
            value = self.expr(node.value, env)
            self.track(node.buffer, position, write=True)
            self.array(node.buffer)[position] = value
        elif isinstance(node, BlockReduce):
            if self.phase is not None:
                raise ExecutionError("a block reduction inside a GPU phase (it is uniform)")
            data = self.memory[node.source.name]
            fold = {"add": np.add, "max": np.maximum, "min": np.minimum}[node.op]
            with np.errstate(all="ignore"):
                env[node.var.name] = scalar(fold.reduce(data), node.var.dtype)
        elif isinstance(node, MatmulTile):
            self.matmul_tile(node, env)
        elif isinstance(node, If):
            if self.expr(node.cond, env):
                self.stmt(node.then, env)
            elif node.otherwise is not None:
                self.stmt(node.otherwise, env)
        elif isinstance(node, Declare):
            env[node.var.name] = self.expr(node.init, env)
        elif isinstance(node, Report):
            self.reported.append(node.message)
        elif isinstance(node, Assign):
            if node.var.name not in env:
                raise ExecutionError(f"assignment to undeclared local {node.var.name}")
            env[node.var.name] = self.expr(node.value, env)
        else:
            raise ExecutionError(f"unknown statement {type(node).__name__}")

    def loop(self, node: Loop, env: dict[str, np.generic]) -> None:
        extent = int(self.expr(node.extent, env))
        owners = None
        if node.kind is LoopKind.GPU_THREAD:
            if self.phase is not None:
                raise ExecutionError(f"GPU thread loop {node.var.name} inside another one")
            owners = self.phase = _Owners("thread of one GPU phase")
        elif node.kind is LoopKind.GPU_BLOCK:
            owners = self.grid = _Owners("GPU block")
        try:
            for index in range(extent):
                if node.kind is LoopKind.GPU_BLOCK:
                    # each block starts with fresh (undefined) shared and thread-local arrays
                    self.memory.update({b.name: _garbage(b) for b in self.block_arrays})
                if owners is not None:
                    owners.current = index
                env[node.var.name] = np.int64(index)
                self.stmt(node.body, env)
        finally:
            if node.kind is LoopKind.GPU_THREAD:
                self.phase = None
            elif node.kind is LoopKind.GPU_BLOCK:
                self.grid = None
        env.pop(node.var.name, None)

    def track(self, buffer: Buffer, position: tuple[int, ...], write: bool) -> None:
        """Check one access of a GPU kernel against the race rule."""
        if buffer.name in self.thread_local:
            if self.phase is not None and position[0] != self.phase.current:
                raise ExecutionError(f"thread {self.phase.current} accesses thread-local "
                                     f"{buffer.name} of thread {position[0]}")
            return
        if self.phase is not None:
            self.phase.access(buffer.name, position, write)
        if self.grid is not None and buffer.name not in self.block_names:
            self.grid.access(buffer.name, position, write)

    def array(self, buffer: Buffer) -> np.ndarray:
        """The memory of ``buffer``, viewed in the shape the access uses (a flat view)."""
        data = self.memory[buffer.name]
        shape = self.shape(buffer)
        return data if data.shape == shape else data.reshape(shape)

    def shape(self, buffer: Buffer) -> tuple[int, ...]:
        if buffer.is_static:
            return buffer.shape  # type: ignore[return-value]
        return tuple(d if isinstance(d, int) else int(self.expr(d, {})) for d in buffer.shape)

    def matmul_tile(self, tile: MatmulTile, env: dict[str, np.generic]) -> None:
        """The tile by numpy on gathered operands (bounds-checked like every access)."""
        c_at, a_at, b_at = (int(self.expr(e, env)) for e in tile.offsets)
        a_k, b_k = np.zeros(1, np.int64), np.zeros(1, np.int64)
        for axis in tile.axes:
            steps = np.arange(axis.extent, dtype=np.int64)
            a_k = (a_k[:, None] + steps * axis.a_stride).reshape(-1)
            b_k = (b_k[:, None] + steps * axis.b_stride).reshape(-1)
        rows, cols = np.arange(tile.rows), np.arange(tile.cols)
        column = cols if tile.c_group <= 0 else (
            cols // tile.c_group * tile.c_group_stride + cols % tile.c_group)
        b_cols = cols
        if tile.is_integer:  # each step: 4 adjacent A bytes by a quad of B per column
            quad = np.arange(4, dtype=np.int64)
            a_k, b_k = ((k[:, None] + quad).reshape(-1) for k in (a_k, b_k))
            b_cols = cols * 4
        a_index = a_at + rows[:, None] * tile.a_row_stride + a_k[None, :]
        b_index = b_at + b_k[:, None] + b_cols[None, :]
        c_index = c_at + rows[:, None] * tile.c_row_stride + column[None, :]
        flat = {}
        for buffer, index in ((tile.a, a_index), (tile.b, b_index), (tile.c, c_index)):
            data = self.memory[buffer.name].reshape(-1)
            if index.size and (index.min() < 0 or index.max() >= data.size):
                raise ExecutionError(f"matmul tile index out of bounds of {buffer.name}"
                                     f"{list(buffer.shape)}")
            flat[buffer.name] = data
        c_data = flat[tile.c.name]
        a_data, b_data = flat[tile.a.name][a_index], flat[tile.b.name][b_index]
        if tile.is_integer:  # exact in int64, wrapped to int32 like the hardware's sums
            product = (a_data.astype(np.int64) @ b_data.astype(np.int64)).astype(np.int32)
        else:
            product = a_data @ b_data
        c_data[c_index] = (c_data[c_index] + product) if tile.accumulate else product

    def position(self, buffer: Buffer, indices: tuple[Expr, ...], env: dict) -> tuple[int, ...]:  # type: ignore[type-arg]
        position = tuple(int(self.expr(i, env)) for i in indices)
        for axis, (index, extent) in enumerate(zip(position, self.shape(buffer), strict=True)):
            if not 0 <= index < extent:
                raise ExecutionError(
                    f"index {index} out of bounds for axis {axis} of {buffer.name}"
                    f"{list(buffer.shape)}"
                )
        return position

    def expr(self, node: Expr, env: dict[str, np.generic]) -> np.generic:
        if isinstance(node, Const):
            return scalar(node.value, node.dtype)
        if isinstance(node, Var):
            if node.name not in env:
                raise ExecutionError(f"variable {node.name} is not defined here")
            return env[node.name]
        if isinstance(node, Load):
            position = self.position(node.buffer, node.indices, env)
            self.track(node.buffer, position, write=False)
            return self.array(node.buffer)[position]  # type: ignore[no-any-return]
        if isinstance(node, Unary):
            x = self.expr(node.x, env)
            return scalar(_unary(node.op, x, node.x.dtype), node.dtype)
        if isinstance(node, Binary):
            a, b = self.expr(node.a, env), self.expr(node.b, env)
            with np.errstate(all="ignore"):
                return scalar(_binary(node.op, a, b, node.dtype), node.dtype)
        if isinstance(node, Compare):
            return scalar(_compare(node.op, self.expr(node.a, env), self.expr(node.b, env)),
                          DType.BOOL)
        if isinstance(node, Select):
            # Both operands are evaluated, as compiled code may: a load in either must be valid.
            a, b = self.expr(node.a, env), self.expr(node.b, env)
            return a if self.expr(node.cond, env) else b
        if isinstance(node, Cast):
            with np.errstate(all="ignore"):
                return scalar(_cast(self.expr(node.x, env), node.x.dtype, node.dtype), node.dtype)
        if isinstance(node, Call):
            args = [np.asarray(self.expr(a, env)) for a in node.args]
            from ..codegen.llvm.external_jit import run_external  # LLVM only where a Call runs

            return scalar(run_external(node.function, args), node.dtype)
        raise ExecutionError(f"unknown expression {type(node).__name__}")
