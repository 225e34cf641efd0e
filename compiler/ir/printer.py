"""The IR text form, printing side; ``parser.parse_graph`` reads it back.

    func @main(%x: f32[batch,3,8,8], %w: f32[4,3,3,3]) -> (f32[batch,4,6,6]) {
      %y = conv(%x, %w) {kernel_shape=[3,3]} : f32[batch,4,6,6] loc("conv1")
      %z = relu(%y) : f32[batch,4,6,6]
      return %z
    }

Attributes equal to their schema default are left out. Constants with more than
``INLINE_ELEMENTS`` elements print as ``elided<dtype[shape] "digest">`` unless
``full_constants`` is set; the output is deterministic, so ``print(parse(t)) == t``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np

from .graph import ElidedTensor, Graph, Node
from .schema import op_def
from .types import DType, TensorType

INLINE_ELEMENTS = 16
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.]+\Z")


def print_graph(graph: Graph, full_constants: bool = False) -> str:
    """The text form of ``graph``; constants printed whole when ``full_constants``."""
    return _Printer(full_constants).graph(graph, "") + "\n"


def value_ref(name: str) -> str:
    return _sigiled("%", name)


def _sigiled(sigil: str, name: str) -> str:
    """``name`` after ``sigil``, quoted as a JSON string unless it is a plain name."""
    return f"{sigil}{name}" if _PLAIN_NAME.match(name) else sigil + json.dumps(name)


def tensor_digest(data: np.ndarray) -> str:
    """A short content hash of a tensor (element type, shape and bytes)."""
    h = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return "sha256:" + h.hexdigest()[:16]


def format_scalar(value: Any, dtype: DType) -> str:
    """Shortest text that reads back to the same element of ``dtype``."""
    if dtype is DType.BOOL:
        return "true" if value else "false"
    if dtype.is_int:
        return str(int(value))
    number = float(value)
    if np.isnan(number):
        return "nan"
    if np.isinf(number):
        return "inf" if number > 0 else "-inf"
    text = str(dtype.numpy.type(value)) if dtype is not DType.F64 else repr(number)
    return text if any(c in text for c in ".en") else text + ".0"


def format_tensor(data: np.ndarray | ElidedTensor, full: bool) -> str:
    if isinstance(data, ElidedTensor):
        return f'elided<{TensorType(data.dtype, data.shape)} "{data.digest}">'
    type_ = TensorType.of(data)
    if not full and data.size > INLINE_ELEMENTS:
        return f'elided<{type_} "{tensor_digest(data)}">'
    items = ", ".join(format_scalar(x, type_.dtype) for x in data.reshape(-1).tolist())
    return f"dense<{type_}: [{items}]>"


class _Printer:
    def __init__(self, full_constants: bool) -> None:
        self.full = full_constants

    def graph(self, graph: Graph, indent: str) -> str:
        params = ", ".join(f"{value_ref(v.name)}: {v.type}" for v in graph.inputs)
        results = ", ".join(str(v.type) for v in graph.outputs)
        lines = [f"func {_sigiled('@', graph.name)}({params}) -> ({results}) {{"]
        lines += [self.node(n, indent + "  ") for n in graph.nodes]
        lines.append(f"{indent}  return " + ", ".join(value_ref(v.name) for v in graph.outputs))
        lines.append(indent + "}")
        return "\n".join(lines)

    def node(self, node: Node, indent: str) -> str:
        outs = ", ".join("_" if v is None else value_ref(v.name) for v in node.outputs)
        args = ", ".join("_" if v is None else value_ref(v.name) for v in node.inputs)
        text = f"{indent}{outs} = {node.op.value}({args})"
        attrs = self.attrs(node, indent)
        if attrs:
            text += " {" + attrs + "}"
        text += " : " + ", ".join("_" if v is None else str(v.type) for v in node.outputs)
        if node.name:
            text += f" loc({json.dumps(node.name)})"
        return text

    def attrs(self, node: Node, indent: str) -> str:
        specs = op_def(node.op).attrs
        parts = []
        for key in sorted(node.attrs):
            value = node.attrs[key]
            spec = specs.get(key)
            if spec is not None and _equal(value, spec.default):
                continue
            parts.append(f"{key}={self.attr_value(value, indent)}")
        return ", ".join(parts)

    def attr_value(self, value: Any, indent: str) -> str:
        if isinstance(value, Graph):
            return self.graph(value, indent + "  ")
        if isinstance(value, (np.ndarray, ElidedTensor)):
            return format_tensor(value, self.full)
        if isinstance(value, DType):
            return value.value
        if isinstance(value, str):
            return json.dumps(value)
        if isinstance(value, bool):
            return str(int(value))
        if isinstance(value, float):
            return format_scalar(value, DType.F64)
        if isinstance(value, (tuple, list)):
            return "[" + ", ".join(self.attr_value(v, indent) for v in value) + "]"
        return str(value)


def _equal(value: Any, default: Any) -> bool:
    if default is None or isinstance(value, (np.ndarray, Graph, ElidedTensor)):
        return False
    return type(value) is type(default) and value == default

