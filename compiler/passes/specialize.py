"""Bind symbolic input dimensions to sizes and re-infer the graph (a pass, Graph -> Graph).

Pre: any graph. Post: the inputs have the given static shapes, every node (and every node of
the control-flow bodies) is re-typed by its type rule, and nodes whose inputs became constant
(a Shape of a now-static tensor and the arithmetic behind it) are folded into constants.

    before: func @main(%x: f32[batch,4]) { %s = shape(%x) : i64[2] ... reshape(%x, %s) }
    after (batch=2): func @main(%x: f32[2,4]) { %s = constant() {value=dense<i64[2]: [2, 4]>} ... }
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import KilnError
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.types import TensorType


def specialize(graph: Graph, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """``graph`` with input shapes bound (by input name) and every symbol resolved."""
    shapes = dict(input_shapes or {})
    unknown = sorted(set(shapes) - {v.name for v in graph.inputs})
    if unknown:
        raise KilnError(
            f"input_shapes names {unknown}, which are not inputs; the inputs are "
            f"{[v.name for v in graph.inputs]}"
        )
    builder = GraphBuilder(graph.name)
    mapping: dict[str, Value] = {}
    for value in graph.inputs:
        mapping[value.name] = builder.add_input(value.name, _bind(value, shapes.get(value.name)))
    copy_nodes(graph.nodes, builder, mapping)
    return builder.finish([mapping[v.name] for v in graph.outputs])


def _bind(value: Value, shape: Sequence[int] | None) -> TensorType:
    declared = value.type.shape
    if shape is None:
        symbols = [d for d in declared if not isinstance(d, int)]
        if symbols:
            raise KilnError(
                f"input {value.name!r} has shape [{','.join(map(str, declared))}] with unbound "
                f"dimension {symbols[0]!r}; give its shape, e.g. input_shapes={{{value.name!r}: "
                f"(...)}} or --input-shape {value.name}=D0,D1,..."
            )
        return value.type
    shape = tuple(int(d) for d in shape)
    if len(shape) != len(declared) or any(
        isinstance(d, int) and d != s for d, s in zip(declared, shape, strict=True)
    ):
        raise KilnError(
            f"input {value.name!r}: shape {list(shape)} does not fit the declared "
            f"[{','.join(map(str, declared))}]"
        )
    if any(s < 0 for s in shape):
        raise KilnError(f"input {value.name!r}: negative extent in {list(shape)}")
    return value.type.with_shape(shape)


def copy_nodes(nodes: Sequence[Node], builder: GraphBuilder, mapping: dict[str, Value]) -> None:
    """Re-add ``nodes`` through ``builder`` (re-inferring types, folding constants), reading
    operands through ``mapping`` (old name -> new value) and recording their results there.
    Nested bodies are rebuilt too, so the enclosing values they read carry the new types."""
    for node in nodes:
        if node.op is Op.CONSTANT:
            out = node.outputs[0]
            assert out is not None
            mapping[out.name] = builder.constant(node.attrs["value"], out.name, node.name)
            continue
        attrs = {
            key: _rebuild_nested(value, builder, mapping) if isinstance(value, Graph) else value
            for key, value in node.attrs.items()
        }
        outputs = builder.add(
            node.op, [None if v is None else mapping[v.name] for v in node.inputs], attrs,
            outputs=[None if v is None else v.name for v in node.outputs], name=node.name,
        )
        for old, new in zip(node.outputs, outputs, strict=True):
            if old is not None and new is not None:
                mapping[old.name] = new


def _rebuild_nested(graph: Graph, outer: GraphBuilder, mapping: dict[str, Value]) -> Graph:
    sub = outer.sub(graph.name)
    inner = dict(mapping)
    for value in graph.inputs:
        inner[value.name] = sub.add_input(value.name, value.type)
    copy_nodes(graph.nodes, sub, inner)
    return sub.finish([inner[v.name] for v in graph.outputs])
