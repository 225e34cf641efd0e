"""A readable text form of the kernel IR (``print_kernel``), for ``kiln compile --dump``.

    kernel k2_fused
      source: fc, relu
      in %x: f32[1,64]
      in %w: f32[64,10]
      out %y: f32[1,10]
      view %y: f32[10]
    {
      parallel for j in 0..10 {
        let acc: f32 = 0.0
        for k in 0..64 {
          acc = acc + %x[0, k] * %w[k, j]
        }
        %y[j] = max(acc, 0.0)
      }
    }

Buffers print with the graph IR's value syntax (``%name``, quoted when the name needs it) and
type syntax; a ``view`` line lists each other shape under which the body addresses a parameter
(its indices are in that shape). Loops are ``for`` (serial), ``parallel for``, ``vectorize for``
(``vectorize<8> for`` with a set width), ``unroll for`` and ``gpu_block`` / ``gpu_thread for``;
``let`` declares a local, ``report`` records a data error, ``matmul_tile`` lists the tile's
fields, and ``v = block_reduce<add>(%partial)`` is a GPU block reduction. A GPU kernel's
``shared`` and ``thread_local`` arrays are listed after its parameters.

Infix operators follow C's precedence, and parentheses appear only where the tree needs
them, except that a right operand of equal precedence keeps its parentheses (float ``+`` does
not reassociate) and so does any operator under a shift. Other operations print as calls
(``min``, ``exp``, ``select``), casts as the target type applied (``f16(x)``), calls of custom
scalar functions as ``@name(...)``, and constants of a type other than i64 / f32 / bool with a
``:type`` suffix.
"""

from __future__ import annotations

import json

from ..ir.printer import format_scalar, value_ref
from ..ir.types import DType, TensorType
from .inline import walk
from .kernel_ir import (
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

INDENT = "  "

# operator -> (symbol, precedence); higher binds tighter, as in C, except that all comparisons
# share one level (they never chain, so a comparison of comparisons keeps its parentheses)
_INFIX: dict[str, tuple[str, int]] = {
    "mul": ("*", 80), "div": ("/", 80), "rem": ("%", 80),
    "add": ("+", 70), "sub": ("-", 70),
    "shl": ("<<", 60), "shr": (">>", 60),
    "lt": ("<", 50), "le": ("<=", 50), "gt": (">", 50), "ge": (">=", 50),
    "eq": ("==", 50), "ne": ("!=", 50),
    "and": ("&", 40), "xor": ("^", 30), "or": ("|", 20),
}
_ATOM = 100
_PREFIX = 90  # unary minus (and negative constants, which print with one)
_PLAIN_CONSTANTS = (DType.I64, DType.F32, DType.BOOL)


def print_kernel(kernel: Kernel) -> str:
    """The text form of ``kernel``: header (name, source ops, buffers), then the body."""
    lines = [f"kernel {kernel.name}"]
    if kernel.source:
        lines.append(f"{INDENT}source: {', '.join(kernel.source)}")
    for role, buffers in (("in", kernel.inputs), ("out", kernel.outputs),
                          ("scratch", kernel.scratch), ("shared", kernel.shared),
                          ("thread_local", kernel.thread_local)):
        lines += [f"{INDENT}{role} {format_buffer(b)}" for b in buffers]
    lines += [f"{INDENT}view {format_buffer(b)}" for b in _views(kernel)]
    lines.append("{")
    lines += _stmt_lines(kernel.body, 1)
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_buffer(buffer: Buffer) -> str:
    """``%name: dtype[shape]``, with ``strides [...]`` when they are explicit."""
    extents = tuple(_extent(d) for d in buffer.shape)
    text = f"{value_ref(buffer.name)}: {TensorType(buffer.dtype, extents)}"  # type: ignore[arg-type]
    if buffer.strides is not None:
        text += f" strides [{', '.join(_extent(s) for s in buffer.strides)}]"
    return text


def _extent(extent: int | Expr) -> str:
    """A static extent, or a run-time one as its expression in parentheses."""
    return str(extent) if isinstance(extent, int) else f"({format_expr(extent)})"


def format_expr(expr: Expr) -> str:
    return _expr(expr)[0]


def _views(kernel: Kernel) -> list[Buffer]:
    """Buffers the body addresses under a type other than their parameter's, sorted."""
    params = {(b.name, b.dtype, b.shape, b.strides)
              for b in kernel.params + kernel.shared + kernel.thread_local}
    found: dict[tuple, Buffer] = {}
    for node in walk(kernel.body):
        used = ((node.buffer,) if isinstance(node, Load | Store)
                else (node.c, node.a, node.b) if isinstance(node, MatmulTile) else ())
        for buffer in used:
            key = (buffer.name, buffer.dtype, buffer.shape, buffer.strides)
            if key not in params:
                found.setdefault(key, buffer)
    return [found[key] for key in sorted(found, key=str)]


def _stmt_lines(stmt: Stmt, depth: int) -> list[str]:
    pad = INDENT * depth
    if isinstance(stmt, Block):
        # a nested block only scopes its locals: its statements print in line
        return [line for inner in stmt.body for line in _stmt_lines(inner, depth)]
    if isinstance(stmt, Store):
        return [f"{pad}{_access(stmt.buffer, stmt.indices)} = {format_expr(stmt.value)}"]
    if isinstance(stmt, Declare):
        return [f"{pad}let {stmt.var.name}: {stmt.var.dtype.value} = {format_expr(stmt.init)}"]
    if isinstance(stmt, Assign):
        return [f"{pad}{stmt.var.name} = {format_expr(stmt.value)}"]
    if isinstance(stmt, Report):
        return [f"{pad}report {json.dumps(stmt.message)}"]
    if isinstance(stmt, Loop):
        head = f"for {stmt.var.name} in 0..{format_expr(stmt.extent)}"
        return [f"{pad}{_loop_kind(stmt)}{head} {{", *_stmt_lines(stmt.body, depth + 1),
                f"{pad}}}"]
    if isinstance(stmt, If):
        lines = [f"{pad}if {format_expr(stmt.cond)} {{", *_stmt_lines(stmt.then, depth + 1)]
        if stmt.otherwise is not None:
            lines += [f"{pad}}} else {{", *_stmt_lines(stmt.otherwise, depth + 1)]
        return [*lines, f"{pad}}}"]
    if isinstance(stmt, MatmulTile):
        return _matmul_tile_lines(stmt, pad)
    if isinstance(stmt, BlockReduce):
        return [f"{pad}{stmt.var.name} = block_reduce<{stmt.op}>({value_ref(stmt.source.name)})"]
    raise TypeError(f"cannot print statement {type(stmt).__name__}")


def _loop_kind(loop: Loop) -> str:
    if loop.kind is LoopKind.SERIAL:
        return ""
    if loop.kind is LoopKind.VECTORIZE and loop.vector_width > 0:
        return f"vectorize<{loop.vector_width}> "
    return f"{loop.kind.value} "


def _matmul_tile_lines(tile: MatmulTile, pad: str) -> list[str]:
    inner = pad + INDENT
    c_line = (f"{inner}c: {value_ref(tile.c.name)} at {format_expr(tile.c_offset)}, "
              f"row stride {tile.c_row_stride}")
    if tile.c_group > 0:
        c_line += f", columns in groups of {tile.c_group} every {tile.c_group_stride}"
    axes = ", ".join(f"{axis.extent} (a stride {axis.a_stride}, b stride {axis.b_stride})"
                     for axis in tile.axes)
    # the integer form's steps are 4-byte dot products with B's columns in quads
    form = f" in quads ({tile.a.dtype.value} x {tile.b.dtype.value})" if tile.is_integer else ""
    return [
        f"{pad}matmul_tile {tile.rows}x{tile.cols} c {'+=' if tile.accumulate else '='} "
        f"a @ b{form} {{",
        c_line,
        f"{inner}a: {value_ref(tile.a.name)} at {format_expr(tile.a_offset)}, "
        f"row stride {tile.a_row_stride}",
        f"{inner}b: {value_ref(tile.b.name)} at {format_expr(tile.b_offset)}",
        f"{inner}k: {axes or 'none'}",
        f"{pad}}}",
    ]


def _access(buffer: Buffer, indices: tuple[Expr, ...]) -> str:
    return f"{value_ref(buffer.name)}[{', '.join(format_expr(i) for i in indices)}]"


def _call(name: str, args: tuple[Expr, ...]) -> tuple[str, int]:
    return f"{name}({', '.join(format_expr(a) for a in args)})", _ATOM


def _expr(expr: Expr) -> tuple[str, int]:
    """The text of ``expr`` and the precedence of its outermost operator."""
    if isinstance(expr, Const):
        text = format_scalar(expr.value, expr.dtype)
        if expr.dtype not in _PLAIN_CONSTANTS:
            text += f":{expr.dtype.value}"
        return text, _PREFIX if text.startswith("-") else _ATOM
    if isinstance(expr, Var):
        return expr.name, _ATOM
    if isinstance(expr, Load):
        return _access(expr.buffer, expr.indices), _ATOM
    if isinstance(expr, Unary):
        if expr.op == "neg":
            return "-" + _operand(expr.x, _PREFIX, tight=True), _PREFIX
        return _call(expr.op, (expr.x,))
    if isinstance(expr, Binary | Compare):
        if expr.op not in _INFIX:
            return _call(expr.op, (expr.a, expr.b))
        symbol, level = _INFIX[expr.op]
        if expr.op in ("shl", "shr"):
            # C's shift precedence surprises readers (as -Wparentheses says): always explicit
            return f"{_operand(expr.a, _PREFIX, False)} {symbol} " \
                   f"{_operand(expr.b, _PREFIX, False)}", level
        # comparisons do not chain: both operands of one keep their parentheses
        left = _operand(expr.a, level, tight=isinstance(expr, Compare))
        return f"{left} {symbol} {_operand(expr.b, level, tight=True)}", level
    if isinstance(expr, Select):
        return _call("select", (expr.cond, expr.a, expr.b))
    if isinstance(expr, Cast):
        return _call(expr.dtype.value, (expr.x,))
    if isinstance(expr, Call):
        return _call(f"@{expr.function.name}", expr.args)
    raise TypeError(f"cannot print expression {type(expr).__name__}")


def _operand(expr: Expr, level: int, tight: bool) -> str:
    """``expr`` as an operand of an operator of precedence ``level``: parenthesized when it
    binds more loosely (or equally, when ``tight``)."""
    text, inner = _expr(expr)
    return f"({text})" if inner < level or (tight and inner == level) else text
