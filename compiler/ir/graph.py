"""The graph IR's data structures: SSA values, nodes and graphs.

A ``Value`` is defined exactly once (graph input, constant node, or op result) and carries a
``TensorType``. A ``Node`` applies an ``Op`` to values; absent optional operands are ``None``.
Control-flow ops hold their bodies as ``Graph`` attributes; a body may read values of the
enclosing graphs defined before its node. Graphs are immutable: passes build new ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .op import Op
from .types import DType, TensorType


@dataclass(frozen=True)
class Value:
    """An SSA value: a unique name within its model and a type."""

    name: str
    type: TensorType

    def __str__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(frozen=True)
class ElidedTensor:
    """A constant whose data was left out of a printed IR text (only its digest remains)."""

    dtype: DType
    shape: tuple[int, ...]
    digest: str


@dataclass(frozen=True, eq=False)
class Node:
    """One application of an op; ``name`` is the source node's name, for messages."""

    op: Op
    inputs: tuple[Value | None, ...]
    outputs: tuple[Value | None, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    def describe(self) -> str:
        """``op 'name'`` for error messages."""
        return f"{self.op.value} {self.name!r}" if self.name else self.op.value

    def subgraphs(self) -> Iterator[Graph]:
        for value in self.attrs.values():
            if isinstance(value, Graph):
                yield value


@dataclass(frozen=True, eq=False)
class Graph:
    """A function: inputs, nodes in topological order, outputs."""

    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]

    def producers(self) -> dict[str, Node]:
        """Map from value name to the node of this graph that defines it."""
        return {v.name: n for n in self.nodes for v in n.outputs if v is not None}

    def constants(self) -> dict[str, np.ndarray]:
        """Values of this graph defined by constant nodes (elided ones left out)."""
        found: dict[str, np.ndarray] = {}
        for node in self.nodes:
            if node.op is Op.CONSTANT and isinstance(node.attrs["value"], np.ndarray):
                out = node.outputs[0]
                assert out is not None
                found[out.name] = node.attrs["value"]
        return found

    def walk(self) -> Iterator[Node]:
        """Every node of this graph and of its subgraphs, outer before inner."""
        for node in self.nodes:
            yield node
            for body in node.subgraphs():
                yield from body.walk()

    def input_named(self, name: str) -> Value:
        for value in self.inputs:
            if value.name == name:
                return value
        raise KeyError(name)
