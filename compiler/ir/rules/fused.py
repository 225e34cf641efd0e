"""Schema and type rule of Kiln's FUSED op: a group of ops that runs as one kernel.

A FUSED node holds its group as the ``body`` graph: the body's inputs match the node's inputs
one to one, its outputs are the node's outputs, and it reads nothing from enclosing graphs.
``kind`` names the fusion pattern ("elementwise", "epilogue", "reduction"); it is informative
(the lowering reads the body). Made by compiler/passes/fuse.py; see that module for an example.
"""

from __future__ import annotations

from ..graph import Graph, Value
from ..op import Group, Op
from ..schema import GRAPH, REQUIRED, STRING, InferContext, define
from ..types import TensorType

KINDS = ("elementwise", "epilogue", "reduction")


@define(Op.FUSED, ["inputs*"], ["outputs*"],
        {"body": GRAPH(REQUIRED), "kind": STRING("elementwise")}, Group.FUSED)
def _fused(ctx: InferContext) -> list[TensorType]:
    """The body's output types; a body typed for other input shapes (say before symbolic dims
    were bound) is re-typed for this node's inputs."""
    body: Graph = ctx.attr("body")
    kind = ctx.attr("kind")
    if kind not in KINDS:
        raise ctx.fail(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if len(body.inputs) != len(ctx.inputs):
        raise ctx.fail(f"body takes {len(body.inputs)} inputs, node has {len(ctx.inputs)}")
    if ctx.num_outputs != len(body.outputs):
        raise ctx.fail(f"node has {ctx.num_outputs} outputs, body yields {len(body.outputs)}")
    types = [ctx.input(i) for i in range(len(ctx.inputs))]
    for i, (value, type_) in enumerate(zip(body.inputs, types, strict=True)):
        if value.type.dtype != type_.dtype or value.type.rank != type_.rank:
            raise ctx.fail(f"input {i} is {type_}, but body input %{value.name} is {value.type}")
    if all(v.type == t for v, t in zip(body.inputs, types, strict=True)):
        return [v.type for v in body.outputs]
    return [v.type for v in retyped_body(body, types).outputs]


def retyped_body(body: Graph, input_types: list[TensorType]) -> Graph:
    """``body`` re-inferred with inputs of ``input_types`` (same value names)."""
    from ...passes.specialize import copy_nodes
    from ..builder import GraphBuilder  # the builder imports the rules: import on use

    builder = GraphBuilder(body.name, fold=False)
    mapping: dict[str, Value] = {
        v.name: builder.add_input(v.name, t) for v, t in zip(body.inputs, input_types, strict=True)
    }
    copy_nodes(body.nodes, builder, mapping)
    return builder.finish([mapping[v.name] for v in body.outputs])
