"""The IR text form, reading side: ``parse_graph(text) -> Graph`` inverts ``print_graph``.

The parser rebuilds nodes exactly as printed (no folding, no re-inference): the printed types
are taken as given and ``verify`` checks them. Attribute literals are read by the kind the op's
schema declares, so ``1`` is an int for ``group`` and a float for ``alpha``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import KilnError, ParseError
from . import symbolic
from .builder import check_attrs
from .graph import ElidedTensor, Graph, Node, Value
from .op import Op
from .schema import AttrKind, op_def
from .types import UNKNOWN, Dim, DType, TensorType

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<value>%(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.]+))
  | (?P<func>@(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.]+))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:(?:inf|nan)\b|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<arrow>->)
  | (?P<punct>[()\[\]{}<>,:=?*+-])
    """,
    re.VERBOSE,
)


def _unquoted(name: str) -> str:
    """A value or function name as written after its sigil: plain, or a JSON string."""
    return json.loads(name) if name.startswith('"') else name


class _Token:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind: str, text: str, line: int) -> None:
        self.kind, self.text, self.line = kind, text, line


def _tokens(text: str) -> Iterator[_Token]:
    pos, line = 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            yield _Token(kind, match.group(), line)
        line += match.group().count("\n")
        pos = match.end()
    yield _Token("end", "", line)


def parse_graph(text: str) -> Graph:
    """Parse the text form of one function into a Graph."""
    parser = _Parser(text)
    graph = parser.function({})
    parser.expect("end")
    return graph


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.pos = 0
        self.defined: set[str] = set()

    # -- token plumbing
    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def next(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, message: str) -> ParseError:
        token = self.peek()
        return ParseError(f"line {token.line}: {message} (at {token.text or 'end of text'!r})")

    def expect(self, kind: str, text: str | None = None) -> _Token:
        token = self.peek()
        if token.kind != kind or (text is not None and token.text != text):
            raise self.fail(f"expected {text or kind}")
        return self.next()

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind in ("punct", "arrow", "word"):
            self.pos += 1
            return True
        return False

    # -- grammar
    def function(self, scope: dict[str, Value]) -> Graph:
        self.expect("word", "func")
        name = _unquoted(self.expect("func").text[1:])
        scope = dict(scope)
        self.expect("punct", "(")
        inputs: list[Value] = []
        while not self.accept(")"):
            if inputs:
                self.expect("punct", ",")
            value_name = self.value_name()
            self.expect("punct", ":")
            inputs.append(self.define(scope, value_name, self.tensor_type()))
        self.expect("arrow")
        self.expect("punct", "(")
        result_types = self.type_list(")")
        self.expect("punct", "{")
        nodes: list[Node] = []
        while not self.accept("return"):
            nodes.append(self.node(scope))
        outputs = [self.use(scope)]
        while self.accept(","):
            outputs.append(self.use(scope))
        self.expect("punct", "}")
        if [v.type for v in outputs] != result_types:
            raise self.fail(f"@{name} returns values whose types differ from its signature")
        return Graph(name, tuple(inputs), tuple(nodes), tuple(outputs))

    def node(self, scope: dict[str, Value]) -> Node:
        out_names: list[str | None] = [self.optional_name()]
        while self.accept(","):
            out_names.append(self.optional_name())
        self.expect("punct", "=")
        op_text = self.expect("word").text
        try:
            op = Op(op_text)
        except ValueError:
            raise self.fail(f"unknown op {op_text!r}") from None
        self.expect("punct", "(")
        inputs: list[Value | None] = []
        while not self.accept(")"):
            if inputs:
                self.expect("punct", ",")
            inputs.append(None if self.accept("_") else self.use(scope))
        raw_attrs: dict[str, Any] = {}
        if self.accept("{"):
            while not self.accept("}"):
                if raw_attrs:
                    self.expect("punct", ",")
                key = self.expect("word").text
                self.expect("punct", "=")
                raw_attrs[key] = self.attr_value(op, key, scope)
        self.expect("punct", ":")
        types: list[TensorType | None] = [self.optional_type()]
        while self.accept(","):
            types.append(self.optional_type())
        name = ""
        if self.accept("loc"):
            self.expect("punct", "(")
            name = json.loads(self.expect("string").text)
            self.expect("punct", ")")
        if len(types) != len(out_names):
            raise self.fail(f"{op_text}: {len(out_names)} results but {len(types)} types")
        try:
            attrs = check_attrs(op_def(op), raw_attrs, name)
        except KilnError as error:
            raise self.fail(str(error)) from None
        outputs = []
        for out_name, out_type in zip(out_names, types, strict=True):
            if (out_name is None) != (out_type is None):
                raise self.fail("an absent result '_' must have the type '_'")
            outputs.append(
                None if out_name is None or out_type is None
                else self.define(scope, out_name, out_type)
            )
        return Node(op, tuple(inputs), tuple(outputs), attrs, name)

    def attr_value(self, op: Op, key: str, scope: dict[str, Value]) -> Any:
        spec = op_def(op).attrs.get(key)
        if spec is None:
            raise self.fail(f"{op.value} has no attribute {key!r}")
        if spec.kind is AttrKind.GRAPH:
            return self.function(scope)
        if spec.kind is AttrKind.TENSOR:
            return self.tensor_literal()
        if spec.kind is AttrKind.DTYPE:
            return DType.parse(self.expect("word").text)
        return self.literal()

    def literal(self) -> Any:
        token = self.next()
        if token.kind == "number":
            return _number(token.text)
        if token.kind == "string":
            return json.loads(token.text)
        if token.kind == "punct" and token.text == "[":
            items: list[Any] = []
            while not self.accept("]"):
                if items:
                    self.expect("punct", ",")
                items.append(self.literal())
            return tuple(items)
        self.pos -= 1
        raise self.fail("expected an attribute value")

    def tensor_literal(self) -> np.ndarray | ElidedTensor:
        form = self.expect("word").text
        self.expect("punct", "<")
        type_ = self.tensor_type()
        if any(not isinstance(d, int) for d in type_.shape):
            raise self.fail("a constant must have a static shape")
        shape = tuple(int(d) for d in type_.shape)
        if form == "elided":
            digest = json.loads(self.expect("string").text)
            self.expect("punct", ">")
            return ElidedTensor(type_.dtype, shape, digest)
        if form != "dense":
            raise self.fail("expected dense<...> or elided<...>")
        self.expect("punct", ":")
        self.expect("punct", "[")
        items: list[str] = []
        while not self.accept("]"):
            if items:
                self.expect("punct", ",")
            items.append(self.next().text)
        self.expect("punct", ">")
        if type_.dtype is DType.BOOL:
            data = np.array([t == "true" for t in items], dtype=np.bool_)
        elif type_.dtype.is_int:
            data = np.array([int(t) for t in items], dtype=type_.dtype.numpy)
        else:
            data = np.array([float(t) for t in items], dtype=np.float64).astype(type_.dtype.numpy)
        if data.size != int(np.prod(shape)):
            raise self.fail(f"{type_} needs {int(np.prod(shape))} elements, got {data.size}")
        return data.reshape(shape)

    def tensor_type(self) -> TensorType:
        dtype = DType.parse(self.expect("word").text)
        self.expect("punct", "[")
        dims: list[Dim] = []
        while not self.accept("]"):
            if dims:
                self.expect("punct", ",")
            dims.append(self.dim())
        return TensorType(dtype, tuple(dims))

    def dim(self) -> Dim:
        """One dimension: an extent, ``?``, or a polynomial such as ``2*seq+1`` or ``b*s-1``
        (read back in canonical form)."""
        if self.accept(UNKNOWN):
            return UNKNOWN
        parts = []
        while self.peek().kind in ("word", "number") or self.peek().text in ("*", "+", "-"):
            parts.append(self.next().text)
        text = "".join(parts)
        if text.isdigit():
            return int(text)
        if symbolic.poly(text) is None:
            raise self.fail("expected a dimension")
        return symbolic.canonical(text)

    def type_list(self, closer: str) -> list[TensorType]:
        types: list[TensorType] = []
        while not self.accept(closer):
            if types:
                self.expect("punct", ",")
            types.append(self.tensor_type())
        return types

    def optional_type(self) -> TensorType | None:
        return None if self.accept("_") else self.tensor_type()

    def value_name(self) -> str:
        return _unquoted(self.expect("value").text[1:])

    def optional_name(self) -> str | None:
        return None if self.accept("_") else self.value_name()

    def define(self, scope: dict[str, Value], name: str, type_: TensorType) -> Value:
        if name in self.defined:
            raise self.fail(f"value %{name} is defined twice")
        self.defined.add(name)
        value = Value(name, type_)
        scope[name] = value
        return value

    def use(self, scope: dict[str, Value]) -> Value:
        name = self.value_name()
        if name not in scope:
            self.pos -= 1
            raise self.fail(f"value %{name} is used before it is defined")
        return scope[name]


def _number(text: str) -> int | float:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return float(text)
