"""The IR verifier: the invariants every pass receives and must leave intact.

``verify(graph)`` checks, for the graph and every subgraph:
- single definition: each value name is defined once in the whole model;
- definition before use: a node reads only graph inputs, values defined by earlier nodes, or
  values of enclosing graphs defined before the node that holds the subgraph;
- operands: the op is defined, operand counts fit its signature;
- attributes: known names, right kinds, defaults filled in (what ``GraphBuilder`` produces);
- types: each output's type equals what the op's type rule infers (an inferred ``?`` accepts any
  stored extent: the builder may know more, e.g. from a folded constant since elided).
It raises ``VerificationError`` naming the node and the broken invariant; it returns nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import KilnError, VerificationError
from .builder import check_arity, check_attrs, infer_types
from .graph import Graph, Node, Value
from .op import Op
from .schema import op_def
from .types import UNKNOWN, TensorType


def verify(graph: Graph) -> None:
    """Raise ``VerificationError`` if ``graph`` breaks an IR invariant."""
    _Verifier().graph(graph, {}, {})


class _Verifier:
    def __init__(self) -> None:
        self.defined: set[str] = set()

    def graph(
        self, graph: Graph, scope: Mapping[str, Value], consts: Mapping[str, np.ndarray]
    ) -> None:
        local = dict(scope)
        local_consts = dict(consts)
        for value in graph.inputs:
            self.define(value, local, f"input of graph @{graph.name}")
        for node in graph.nodes:
            self.node(node, local, local_consts)
            for value in node.outputs:
                if value is not None:
                    self.define(value, local, node.describe())
            if node.op is Op.CONSTANT and isinstance(node.attrs.get("value"), np.ndarray):
                out = node.outputs[0]
                assert out is not None
                local_consts[out.name] = node.attrs["value"]
        for value in graph.outputs:
            self.use(value, local, f"output of graph @{graph.name}")

    def define(self, value: Value, scope: dict[str, Value], where: str) -> None:
        if value.name in self.defined:
            raise VerificationError(f"{where}: value %{value.name} is defined more than once")
        self.defined.add(value.name)
        scope[value.name] = value

    def use(self, value: Value, scope: Mapping[str, Value], where: str) -> None:
        found = scope.get(value.name)
        if found is None:
            raise VerificationError(f"{where}: reads %{value.name} before it is defined")
        if found.type != value.type:
            raise VerificationError(
                f"{where}: reads %{value.name} as {value.type}, but it is defined as {found.type}"
            )

    def node(
        self, node: Node, scope: dict[str, Value], consts: Mapping[str, np.ndarray]
    ) -> None:
        where = node.describe()
        for value in node.inputs:
            if value is not None:
                self.use(value, scope, where)
        definition = op_def(node.op)
        try:
            check_arity(definition, len(node.inputs), len(node.outputs), node.name)
            normalized = check_attrs(definition, node.attrs, node.name)
        except KilnError as error:
            raise VerificationError(str(error)) from None
        if not _same_attrs(normalized, node.attrs):
            raise VerificationError(f"{where}: attributes are not normalized (defaults missing)")
        for body in node.subgraphs():
            self.graph(body, scope, consts)
        try:
            inferred = infer_types(
                definition, node.name, node.inputs, node.attrs,
                [None if v is None else consts.get(v.name) for v in node.inputs],
                len(node.outputs),
            )
        except KilnError as error:
            raise VerificationError(f"{where}: type rule fails: {error}") from None
        for value, expected in zip(node.outputs, inferred, strict=True):
            if value is not None and not _fits(value.type, expected):
                raise VerificationError(
                    f"{where}: output %{value.name} is typed {value.type}, "
                    f"but the type rule gives {expected}"
                )


def _fits(stored: TensorType, inferred: TensorType) -> bool:
    if stored.dtype != inferred.dtype or stored.rank != inferred.rank:
        return False
    return all(i == UNKNOWN or s == i for s, i in zip(stored.shape, inferred.shape, strict=True))


def _same_attrs(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(x is y or _eq(x, y) for x, y in ((a[k], b[k]) for k in a))


def _eq(x: object, y: object) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return False
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True  # NaN attributes (a Clip bound, say) equal themselves
    try:
        return bool(x == y)
    except Exception:  # objects without a total equality (graphs) compare by identity above
        return False
