"""Dead code elimination (a pass, Graph -> Graph).

Pre: a valid graph. Post: every node left (constants included) has an output that a graph
output needs, directly or through later nodes or through the values a control-flow body reads;
the bodies of the nodes left are cleaned the same way (their outputs are the roots). Graph
inputs stay (they are the model's interface) even when nothing reads them. Ops have no side
effects in the IR, so an unread random op goes too.

    before: func @main(%x: f32[4]) -> (f32[4]) {
              %c = constant() {value=dense<f32[]: 2.0>} : f32[]
              %a = mul(%x, %c) : f32[4]
              %b = relu(%x) : f32[4]
              return %b
            }
    after:  func @main(%x: f32[4]) -> (f32[4]) { %b = relu(%x) : f32[4]  return %b }
"""

from __future__ import annotations

import dataclasses

from ..ir.graph import Graph


def dead_code(graph: Graph) -> Graph:
    """``graph`` without the nodes no output needs; the same object when there are none."""
    live = {v.name for v in graph.outputs}
    kept = []
    changed = False
    for node in reversed(graph.nodes):
        if not any(v is not None and v.name in live for v in node.outputs):
            changed = True
            continue
        attrs = {k: dead_code(v) if isinstance(v, Graph) else v for k, v in node.attrs.items()}
        if any(attrs[k] is not node.attrs[k] for k in attrs):
            node = dataclasses.replace(node, attrs=attrs)
            changed = True
        live.update(v.name for v in node.inputs if v is not None)
        for body in node.subgraphs():
            # Values of enclosing graphs that the body reads (its own names are unique, so
            # adding them too is harmless).
            live.update(v.name for inner in body.walk() for v in inner.inputs if v is not None)
            live.update(v.name for v in body.outputs)
        kept.append(node)
    if not changed:
        return graph
    return Graph(graph.name, graph.inputs, tuple(reversed(kept)), graph.outputs)
