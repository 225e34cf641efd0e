"""Whole-model checks that run before any import work, and node ordering.

:func:`check_supported` walks every graph, subgraph and function body and raises ONE
``UnsupportedOpError`` listing every op type Kiln cannot import, with node names and opset.
:func:`topological_order` orders a graph's nodes (ONNX requires them sorted; some exporters do
not), reporting values nobody defines and cycles.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping

from onnx import GraphProto, ModelProto, NodeProto, OperatorSetIdProto

from kiln.compiler.errors import ModelFormatError, UnsupportedOpError

from .functions import newest_schema, schema_for, static_body
from .mapping import KILN_DOMAIN, KILN_OPS, defined_op_for
from .ml import ML_DOMAIN, converters
from .versions import REPLACED_BY, UNSUPPORTED_VERSIONS

DEFAULT_DOMAINS = ("", "ai.onnx")


def opset_map(entries: Iterable[OperatorSetIdProto]) -> dict[str, int]:
    """Domain -> version, with the default domain spelled ``""``."""
    found: dict[str, int] = {}
    for entry in entries:
        domain = "" if entry.domain in DEFAULT_DOMAINS else entry.domain
        found[domain] = int(entry.version)
    return found


def node_domain(node: NodeProto) -> str:
    return "" if node.domain in DEFAULT_DOMAINS else node.domain


def subgraphs(node: NodeProto) -> Iterator[GraphProto]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def check_supported(model: ModelProto) -> None:
    """Raise one UnsupportedOpError naming every op of ``model`` Kiln cannot import (model-local
    functions must have been inlined)."""
    found: dict[tuple[str, str, int], list[str]] = {}

    def visit(nodes: Iterable[NodeProto], opsets: Mapping[str, int]) -> None:
        for node in nodes:
            domain = node_domain(node)
            if not _supported(node.op_type, domain, opsets, visit):
                version = opsets.get(domain, 0)
                found.setdefault((domain, node.op_type, version), []).append(node.name)
            for body in subgraphs(node):
                visit(body.node, opsets)

    visit(model.graph.node, opset_map(model.opset_import))
    if found:
        parts = []
        for (domain, op_type, version), names in sorted(found.items()):
            where = f"domain {domain!r}, opset {version}" if domain else f"opset {version}"
            shown = ", ".join(repr(n) for n in names[:5])
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            parts.append(f"{op_type} ({where}) at node(s) {shown}{more}")
        raise UnsupportedOpError(
            f"the model uses {len(parts)} op type(s) Kiln does not support: " + "; ".join(parts)
        )


Visitor = Callable[[Iterable[NodeProto], Mapping[str, int]], None]


def _supported(op_type: str, domain: str, opsets: Mapping[str, int], visit: Visitor) -> bool:
    if domain == KILN_DOMAIN:
        return op_type in KILN_OPS
    if domain == ML_DOMAIN:
        return op_type in converters()
    if domain != "" or "" not in opsets:
        return False
    if op_type == "Constant":
        return True
    schema = schema_for(op_type, opsets[""])
    if schema is None or (op_type, schema.since_version) in UNSUPPORTED_VERSIONS:
        return False
    if defined_op_for(REPLACED_BY.get(op_type, op_type)) is not None:
        return True
    newest = newest_schema(op_type)  # normalized nodes expand into the newest body
    if newest is None:
        return False
    body = static_body(newest)
    if body.node:
        visit(body.node, {**opsets, **opset_map(body.opset_import)})
        return True
    return bool(newest.has_context_dependent_function)


def free_names(graph: GraphProto) -> set[str]:
    """Names a (sub)graph reads but does not define: values of enclosing scopes."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    read: set[str] = set()
    for node in graph.node:
        defined.update(o for o in node.output if o)
        read.update(i for i in node.input if i)
        for body in subgraphs(node):
            read |= free_names(body)
    read.update(o.name for o in graph.output)
    return read - defined


def topological_order(
    nodes: list[NodeProto], available: set[str], graph_name: str
) -> list[NodeProto]:
    """``nodes`` in an order where each value is defined before use (stable where possible).

    ``available`` holds the names defined outside the nodes (inputs, initializers, outer
    scopes). Raises ModelFormatError for a value defined twice, read but never defined, or a
    cycle."""
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if not name:
                continue
            if name in producer or name in available:
                raise ModelFormatError(
                    f"graph {graph_name!r}: value {name!r} is defined twice (node "
                    f"{_describe(node)})"
                )
            producer[name] = index
    needs: list[set[int]] = []
    for node in nodes:
        reads = {i for i in node.input if i}
        for body in subgraphs(node):
            reads |= free_names(body)
        deps = set()
        for name in reads:
            if name in producer:
                deps.add(producer[name])
            elif name not in available:
                raise ModelFormatError(
                    f"graph {graph_name!r}: node {_describe(node)} reads {name!r}, which is not "
                    "a graph input, an initializer or an output of any node"
                )
        needs.append(deps)
    users: list[list[int]] = [[] for _ in nodes]
    for index, deps in enumerate(needs):
        for dep in deps:
            users[dep].append(index)
    waiting = [len(deps) for deps in needs]
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for user in users[index]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) < len(nodes):
        cycle = _find_cycle(needs, {i for i, count in enumerate(waiting) if count > 0})
        path = " -> ".join(_describe(nodes[i]) for i in cycle)
        raise ModelFormatError(f"graph {graph_name!r}: nodes form a cycle: {path}")
    return [nodes[i] for i in order]


def _find_cycle(needs: list[set[int]], stuck: set[int]) -> list[int]:
    """A cycle among ``stuck`` nodes (each has an unfinished dependency), closed at both ends."""
    path: list[int] = []
    position: dict[int, int] = {}
    current = min(stuck)
    while current not in position:
        position[current] = len(path)
        path.append(current)
        current = min(d for d in needs[current] if d in stuck)
    return path[position[current]:] + [current]


def _describe(node: NodeProto) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"({node.op_type})"
