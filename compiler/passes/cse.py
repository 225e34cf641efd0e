"""Common subexpression elimination (a pass, Graph -> Graph).

Pre: a valid graph. Post: no two nodes of one graph (or body) compute the same thing: a node
with the same op, the same operands, the same attributes and the same output types as an
earlier node reads the earlier node's outputs instead; two constants with the same element
type, shape and bytes become one. Random ops (two draws differ) and nodes holding bodies are
left alone. A graph output keeps its name (see ``rewrite``): when both duplicates are outputs
they both stay.

    before: %a = relu(%x) : f32[4]
            %b = relu(%x) : f32[4]
            %c = add(%a, %b) : f32[4]
    after:  %a = relu(%x) : f32[4]
            %c = add(%a, %a) : f32[4]
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any

import numpy as np

from ..ir.graph import ElidedTensor, Graph, Node
from ..ir.op import Group
from ..ir.schema import op_def
from .rewrite import Replacement, Rewriter, apply_rules, rule


def cse(graph: Graph) -> Graph:
    """``graph`` with duplicate computations merged; the same object when there are none."""
    return apply_rules(graph, [_merge_duplicates])


@rule("cse")
def _merge_duplicates(rw: Rewriter, node: Node) -> Replacement:
    key = _node_key(node)
    if key is None:
        return None
    table: dict[Hashable, Node] = rw.memo.setdefault("cse", {})
    earlier = table.get(key)
    if earlier is None:
        table[key] = node
        return None
    return list(earlier.outputs)


def _node_key(node: Node) -> Hashable | None:
    if op_def(node.op).group is Group.RANDOM or any(True for _ in node.subgraphs()):
        return None
    attrs = tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items()))
    return (
        node.op,
        tuple(None if v is None else v.name for v in node.inputs),
        attrs,
        tuple(None if v is None else v.type for v in node.outputs),
    )


def _attr_key(value: Any) -> Hashable:
    if isinstance(value, np.ndarray):
        flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        return ("tensor", value.dtype.str, value.shape, hashlib.sha256(flat).hexdigest())
    if isinstance(value, ElidedTensor):
        return ("elided", value.dtype, value.shape, value.digest)
    if isinstance(value, float):
        return ("float", repr(value))  # tells -0.0 from 0.0, and NaN equals itself
    if isinstance(value, tuple):
        return tuple(_attr_key(v) for v in value)
    return (type(value).__name__, value)
