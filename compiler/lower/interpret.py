"""A scalar interpreter of the kernel IR: the executable definition of its semantics.

Buffers are indexed logically (``Buffer.strides`` describe the physical layout a backend uses;
the arrays given here are the logical tensors).

Slow (one Python step per scalar operation) and meant for small tests of lowerings and
schedules, independent of any backend. Out-of-bounds loads and stores raise instead of reading
garbage, so an indexing bug in a lowering shows up here first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import ExecutionError
from ..ir.types import DType
from .kernel_ir import (
    Assign,
    Binary,
    Block,
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
    MatmulTile,
    Report,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
)


def run_kernel(kernel: Kernel, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``kernel`` on arrays by buffer name; returns its outputs and scratch by name.

    Inputs must be given; outputs and scratch start from the given arrays when present (a node's
    kernels share scratch), else from zeros. A ``Report`` executed by the kernel raises
    ExecutionError with its message at the end."""
    memory: dict[str, np.ndarray] = {}
    for buffer in kernel.params:
        if buffer.name in arrays:
            data = np.asarray(arrays[buffer.name])
            if data.shape != buffer.shape or data.dtype != buffer.dtype.numpy:
                raise ExecutionError(
                    f"kernel {kernel.name}: buffer {buffer.name} wants {buffer.dtype.value}"
                    f"{list(buffer.shape)}, got {data.dtype}{list(data.shape)}"
                )
            memory[buffer.name] = data.copy()
        elif buffer in kernel.inputs:
            raise ExecutionError(f"kernel {kernel.name}: input buffer {buffer.name} not given")
        else:
            memory[buffer.name] = np.zeros(buffer.shape, buffer.dtype.numpy)
    interpreter = _Interpreter(memory)
    interpreter.stmt(kernel.body, {})
    if interpreter.reported:
        raise ExecutionError(f"kernel {kernel.name}: {interpreter.reported[0]}")
    return {b.name: memory[b.name] for b in kernel.outputs + kernel.scratch}


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


class _Interpreter:
    def __init__(self, memory: dict[str, np.ndarray]) -> None:
        self.memory = memory
        self.reported: list[str] = []

    def stmt(self, node: Stmt, env: dict[str, np.generic]) -> None:
        if isinstance(node, Block):
            scope = dict(env)
            for inner in node.body:
                self.stmt(inner, scope)
            for name in env:
                env[name] = scope[name]
        elif isinstance(node, Loop):
            extent = int(self.expr(node.extent, env))
            for index in range(extent):
                env[node.var.name] = np.int64(index)
                self.stmt(node.body, env)
            env.pop(node.var.name, None)
        elif isinstance(node, Store):
            self.array(node.buffer)[self.position(node.buffer, node.indices, env)] = (
                self.expr(node.value, env)
            )
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

    def array(self, buffer: Buffer) -> np.ndarray:
        """The memory of ``buffer``, viewed in the shape the access uses (a flat view)."""
        data = self.memory[buffer.name]
        return data if data.shape == buffer.shape else data.reshape(buffer.shape)

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
        a_index = a_at + rows[:, None] * tile.a_row_stride + a_k[None, :]
        b_index = b_at + b_k[:, None] + cols[None, :]
        c_index = c_at + rows[:, None] * tile.c_row_stride + column[None, :]
        flat = {}
        for buffer, index in ((tile.a, a_index), (tile.b, b_index), (tile.c, c_index)):
            data = self.memory[buffer.name].reshape(-1)
            if index.size and (index.min() < 0 or index.max() >= data.size):
                raise ExecutionError(f"matmul tile index out of bounds of {buffer.name}"
                                     f"{list(buffer.shape)}")
            flat[buffer.name] = data
        c_data = flat[tile.c.name]
        product = flat[tile.a.name][a_index] @ flat[tile.b.name][b_index]
        c_data[c_index] = (c_data[c_index] + product) if tile.accumulate else product

    def position(self, buffer: Buffer, indices: tuple[Expr, ...], env: dict) -> tuple[int, ...]:  # type: ignore[type-arg]
        position = tuple(int(self.expr(i, env)) for i in indices)
        for axis, (index, extent) in enumerate(zip(position, buffer.shape, strict=True)):
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
            return self.array(node.buffer)[self.position(node.buffer, node.indices, env)]  # type: ignore[no-any-return]
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
