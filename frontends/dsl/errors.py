"""Trace-time errors of the DSL, located at the user's source line.

``DSLError`` messages read ``path:line: expression: what: problem``, e.g.
``model.py:12: x @ w: f32[8,784] @ f32[100,10]: contraction dims 784 and 100 differ``:
the location is that of the first stack frame outside this package (so an error inside a
layer's ``forward`` in ``layers.py`` points at the user's line calling the layer), and the
expression is the source text Python 3.11 records for the instruction that frame was running.
"""

from __future__ import annotations

import itertools
import linecache
import os
import sys
from types import FrameType

from kiln.compiler.errors import KilnError

_PACKAGE = __name__.rpartition(".")[0]
# A source expression longer than this is cut (a whole statement spanning lines, say).
_EXPR_LIMIT = 80


class DSLError(KilnError):
    """A model could not be traced: the message starts with the user's ``file:line``."""


def user_frame() -> FrameType | None:
    """The innermost frame on the stack whose code is not part of this package."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != _PACKAGE and not module.startswith(_PACKAGE + "."):
            return frame
        frame = frame.f_back
    return None


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else as given."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith(os.pardir) else relative


def location() -> str:
    """``path:line`` of the user's code now running (``<unknown>`` when no frame is found)."""
    frame = user_frame()
    if frame is None:
        return "<unknown>"
    return f"{display_path(frame.f_code.co_filename)}:{frame.f_lineno}"


def _source_expression(frame: FrameType) -> str | None:
    """The source text of the expression the frame is evaluating, whitespace collapsed."""
    positions = next(itertools.islice(frame.f_code.co_positions(), frame.f_lasti // 2, None),
                     None)
    if positions is None or None in positions:
        return None
    first, last, start, end = positions
    assert first is not None and last is not None and start is not None and end is not None
    lines = [linecache.getline(frame.f_code.co_filename, n).encode()
             for n in range(first, last + 1)]
    if not any(lines):
        return None
    # Column offsets count UTF-8 bytes.
    if first == last:
        text = lines[0][start:end]
    else:
        text = lines[0][start:] + b"".join(lines[1:-1]) + lines[-1][:end]
    expression = " ".join(text.decode(errors="replace").split())
    if len(expression) > _EXPR_LIMIT:
        expression = expression[: _EXPR_LIMIT - 3] + "..."
    return expression or None


def dsl_error(what: str, problem: str) -> DSLError:
    """A DSLError for the user's current line: ``what`` names the operation and its operand
    types (``f32[8,784] @ f32[100,10]``), ``problem`` says what is wrong."""
    frame = user_frame()
    parts = []
    if frame is not None:
        parts.append(f"{display_path(frame.f_code.co_filename)}:{frame.f_lineno}")
        expression = _source_expression(frame)
        if expression and expression != what:
            parts.append(expression)
    else:
        parts.append("<unknown>")
    if what:
        parts.append(what)
    parts.append(problem)
    return DSLError(": ".join(parts))
