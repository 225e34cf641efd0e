"""Operator fusion: groups of ops that run as one kernel become FUSED nodes (a pass).

Pre: a verified graph. Post: a verified graph computing the same values, where each fused group
is one ``fused`` node whose ``body`` holds the group's original nodes (node names kept) and whose
``kind`` names the pattern:

- ``elementwise``: a DAG of elementwise ops whose results all have the group's output shape
  (their operands may broadcast);
- ``epilogue``: an anchor that stores each output element once (Conv, ConvTranspose, MatMul,
  Gemm, pools, BatchNormalization...) followed by elementwise ops on its result (bias, residual
  add, activation, clip...) of the anchor's output shape;
- ``reduction``: a reduction anchor (Reduce*, ArgMax/ArgMin, Softmax, LogSoftmax, LayerNorm,
  RMSNorm...) with the elementwise prologue that computes its data input and an epilogue.

A value computed inside a group and read outside it stays available: an epilogue or anchor
value becomes one more output of the fused node; a prologue or elementwise-group value used
outside ends the group there. Body inputs and values the node outputs are renamed inside the
body (names are unique in a model); one-element constants (and the small integer operands of
the anchor: axes...) are copied into the body, others stay node inputs. Nodes of control-flow
bodies are left alone. Returns ``graph`` itself when nothing fuses.

    before: %y = conv(%x, %w, %b) : f32[1,8,4,4]
            %z = add(%y, %r) : f32[1,8,4,4]
            %o = relu(%z) : f32[1,8,4,4]
    after:  %o = fused(%x, %w, %b, %r) {body=func @fused_0(%x.f1, %w.f1, %b.f1, %r.f1) {
                %y = conv(...) ; %z = add(%y, %r.f1) ; %o.f1 = relu(%z) ; return %o.f1 },
                kind="epilogue"} : f32[1,8,4,4]
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.types import UNKNOWN, Dim
from ..lower.ops.elementwise import SCALAR

# Anchors whose lowering computes each output element once; elementwise ops on their result
# are folded into that computation.
EPILOGUE_ANCHORS = frozenset({
    Op.CONV, Op.CONV_NCHWC, Op.CONV_TRANSPOSE, Op.MATMUL, Op.GEMM, Op.AVERAGE_POOL, Op.MAX_POOL,
    Op.LP_POOL, Op.MAX_POOL_NCHWC, Op.AVERAGE_POOL_NCHWC, Op.LRN_NCHWC,
    Op.GLOBAL_AVERAGE_POOL, Op.GLOBAL_MAX_POOL, Op.GLOBAL_LP_POOL, Op.BATCH_NORMALIZATION,
    Op.INSTANCE_NORMALIZATION, Op.GROUP_NORMALIZATION,
})
# Reductions: an elementwise prologue computing their data input is recomputed where they
# read it, so the prologue's result never goes to memory.
REDUCTION_ANCHORS = frozenset({
    Op.REDUCE_L1, Op.REDUCE_L2, Op.REDUCE_LOG_SUM, Op.REDUCE_LOG_SUM_EXP, Op.REDUCE_MAX,
    Op.REDUCE_MEAN, Op.REDUCE_MIN, Op.REDUCE_PROD, Op.REDUCE_SUM, Op.REDUCE_SUM_SQUARE,
    Op.ARGMAX, Op.ARGMIN, Op.SOFTMAX, Op.LOG_SOFTMAX, Op.LAYER_NORMALIZATION,
    Op.RMS_NORMALIZATION, Op.LP_NORMALIZATION,
})
# A bound on a group's nodes, so expressions stay of a size the emitter handles quickly.
MAX_GROUP_NODES = 24
# Integer operands of an anchor (axes...) up to this size are copied into the body, where its
# type rule needs their values.
BODY_INT_CONSTANT_ELEMENTS = 64


@dataclass
class _Group:
    kind: str
    members: set[int]
    anchor: int | None = None
    order: list[int] = field(default_factory=list)


class _Fuser:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = graph.nodes
        self.index_of = {v.name: i for i, n in enumerate(self.nodes)
                         for v in n.outputs if v is not None}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for value in node.inputs:
                if value is not None:
                    self.consumers.setdefault(value.name, []).append(i)
            for body in node.subgraphs():
                for inner in body.walk():
                    for value in inner.inputs:
                        if value is not None:
                            self.consumers.setdefault(value.name, []).append(i)
        self.graph_outputs = {v.name for v in graph.outputs}
        self.assigned: dict[int, int] = {}
        self.groups: list[_Group] = []

    # -- eligibility -------------------------------------------------------------------------

    def single_output(self, i: int) -> Value | None:
        present = [v for v in self.nodes[i].outputs if v is not None]
        if len(present) != 1 or UNKNOWN in present[0].type.shape:
            return None
        return present[0]

    def elementwise(self, i: int, shape: tuple[Dim, ...] | None = None) -> bool:
        """An unassigned elementwise node (of output ``shape`` when given)."""
        if i in self.assigned or self.nodes[i].op not in SCALAR:
            return False
        out = self.single_output(i)
        return out is not None and (shape is None or out.type.shape == shape)

    def uses(self, value: Value) -> list[int]:
        return self.consumers.get(value.name, [])

    # -- growing groups ----------------------------------------------------------------------

    def absorb_producers(self, values: Iterable[Value | None], members: set[int],
                         shape: tuple[Dim, ...]) -> None:
        """Add to ``members`` the elementwise producers (of ``shape``) of ``values``, and
        theirs, whose results are read only by members and are not graph outputs. Candidates
        are decided latest first, so every consumer of a candidate is decided before it."""
        heap: list[int] = []
        seen: set[int] = set()

        def push(vals: Iterable[Value | None]) -> None:
            for value in vals:
                i = None if value is None else self.index_of.get(value.name)
                if i is not None and i not in seen and i not in members:
                    seen.add(i)
                    heapq.heappush(heap, -i)

        push(values)
        while heap and len(members) < MAX_GROUP_NODES:
            i = -heapq.heappop(heap)
            out = self.single_output(i)
            if (not self.elementwise(i, shape) or out is None or out.name in self.graph_outputs
                    or not all(c in members for c in self.uses(out))):
                continue
            members.add(i)
            push(self.nodes[i].inputs)

    def absorb_consumers(self, anchor: int, members: set[int], shape: tuple[Dim, ...]) -> bool:
        """Add the elementwise epilogue of ``anchor``: later nodes of ``shape`` reading group
        values and nothing computed from the group outside it (which would make a cycle)."""
        inside: set[str] = {v.name for i in members for v in self.nodes[i].outputs
                            if v is not None}
        outside: set[str] = set()
        limit = max((c for name in inside for c in self.consumers.get(name, [])), default=-1)
        grown = False
        j = anchor + 1
        while j <= limit and len(members) < MAX_GROUP_NODES:
            reads = {v.name for v in self.nodes[j].inputs if v is not None}
            outs = [v for v in self.nodes[j].outputs if v is not None]
            if reads & inside and not reads & outside and self.elementwise(j, shape):
                members.add(j)
                grown = True
                inside.update(v.name for v in outs)
                limit = max([limit, *(c for v in outs for c in self.uses(v))])
            elif reads & (inside | outside):
                outside.update(v.name for v in outs)
            j += 1
        return grown

    def find_groups(self) -> None:
        for i, node in enumerate(self.nodes):
            reduction = node.op in REDUCTION_ANCHORS
            if i in self.assigned or not (reduction or node.op in EPILOGUE_ANCHORS):
                continue
            out = self.single_output(i)
            data = node.inputs[0] if node.inputs else None
            if out is None or data is None:
                continue
            members = {i}
            if reduction and UNKNOWN not in data.type.shape:
                self.absorb_producers([data], members, data.type.shape)
            prologue = len(members) > 1
            if not self.absorb_consumers(i, members, out.type.shape) and not prologue:
                continue
            self.add_group(_Group("reduction" if reduction else "epilogue", members, i))
        for i in reversed(range(len(self.nodes))):
            if not self.elementwise(i):
                continue
            out = self.single_output(i)
            assert out is not None
            members = {i}
            self.absorb_producers(self.nodes[i].inputs, members, out.type.shape)
            if len(members) > 1:
                self.add_group(_Group("elementwise", members))

    def add_group(self, group: _Group) -> None:
        if self.makes_cycle(group.members):
            return
        group.order = sorted(group.members)
        for i in group.members:
            self.assigned[i] = len(self.groups)
        self.groups.append(group)

    def makes_cycle(self, members: set[int]) -> bool:
        """Whether some path leaves ``members`` and comes back once the groups made so far
        are contracted to single nodes (each group is cycle-free with the original graph, but
        two groups may each read what the other computes)."""
        stack = [c for i in members for v in self.nodes[i].outputs if v is not None
                 for c in self.uses(v) if c not in members]
        seen: set[int] = set()
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            if i in members:
                return True
            seen.add(i)
            group = self.assigned.get(i)
            reached = self.groups[group].members if group is not None else {i}
            for j in reached:
                seen.add(j)
                stack.extend(c for v in self.nodes[j].outputs if v is not None
                             for c in self.uses(v))
        return False


def fuse_operators(graph: Graph) -> Graph:
    """``graph`` with its fusible groups replaced by FUSED nodes (the same object if none)."""
    fuser = _Fuser(graph)
    fuser.find_groups()
    if not fuser.groups:
        return graph
    names = _Names(graph)
    fused: dict[int, Node] = {}
    for number, group in enumerate(fuser.groups):
        fused[max(group.members)] = _fused_node(fuser, group, f"fused_{number}", names)
    kept = [n for i, n in enumerate(graph.nodes) if i not in fuser.assigned]
    nodes = _topological([*kept, *fused.values()],
                         [*(i for i in range(len(graph.nodes)) if i not in fuser.assigned),
                          *fused])
    return Graph(graph.name, graph.inputs,
                 tuple(_drop_unused_constants(nodes, graph, names.copied)), graph.outputs)


class _Names:
    """Fresh value names, unique in the whole model."""

    def __init__(self, graph: Graph) -> None:
        self.copied: set[str] = set()  # constants copied into bodies
        self.taken = {v.name for v in graph.inputs}
        for node in graph.walk():
            self.taken.update(v.name for v in node.outputs if v is not None)
            for body in node.subgraphs():
                self.taken.update(v.name for v in body.inputs)

    def fresh(self, hint: str) -> str:
        n = 1
        while f"{hint}.f{n}" in self.taken:
            n += 1
        name = f"{hint}.f{n}"
        self.taken.add(name)
        return name


def _fused_node(fuser: _Fuser, group: _Group, name: str, names: _Names) -> Node:
    nodes = [fuser.nodes[i] for i in group.order]
    produced = {v.name for n in nodes for v in n.outputs if v is not None}
    member_set = group.members
    outputs = [v for i in group.order for v in fuser.nodes[i].outputs if v is not None and (
        v.name in fuser.graph_outputs or any(c not in member_set for c in fuser.uses(v)))]
    builder = GraphBuilder(name, fold=False)
    mapping: dict[str, Value] = {}
    inputs: list[Value] = []
    anchor = None if group.anchor is None else fuser.nodes[group.anchor]
    for node in nodes:
        for position, value in enumerate(node.inputs):
            if value is None or value.name in produced or value.name in mapping:
                continue
            data = _body_constant(fuser, value, node is anchor and position > 0)
            if data is not None:
                source = fuser.nodes[fuser.index_of[value.name]]
                mapping[value.name] = builder.constant(data, names.fresh(value.name),
                                                       source.name)
                names.copied.add(value.name)
            else:
                inputs.append(value)
                mapping[value.name] = builder.add_input(names.fresh(value.name), value.type)
    out_names = {v.name for v in outputs}
    for node in nodes:
        results = builder.add(
            node.op, [None if v is None else mapping[v.name] for v in node.inputs], node.attrs,
            outputs=[None if v is None else names.fresh(v.name) if v.name in out_names
                     else v.name for v in node.outputs],
            name=node.name,
        )
        for old, new in zip(node.outputs, results, strict=True):
            if old is not None and new is not None:
                mapping[old.name] = new
    body = builder.finish([mapping[v.name] for v in outputs])
    return Node(Op.FUSED, tuple(inputs), tuple(outputs), {"body": body, "kind": group.kind},
                name)


def _body_constant(fuser: _Fuser, value: Value, anchor_operand: bool) -> np.ndarray | None:
    """The data of ``value`` when it is a constant to copy into a body, else None."""
    i = fuser.index_of.get(value.name)
    if i is None or fuser.nodes[i].op is not Op.CONSTANT:
        return None
    data = fuser.nodes[i].attrs["value"]
    if not isinstance(data, np.ndarray):
        return None  # elided
    small_int = anchor_operand and data.dtype.kind in "iu" and \
        data.size <= BODY_INT_CONSTANT_ELEMENTS
    return data if data.size == 1 or small_int else None


def _topological(nodes: list[Node], keys: list[int]) -> list[Node]:
    """``nodes`` in an order where each is after the producers of what it reads; ties by key
    (the original position), so untouched stretches keep their order."""
    producer: dict[str, int] = {}
    for k, node in enumerate(nodes):
        for value in node.outputs:
            if value is not None:
                producer[value.name] = k
    waiting = [0] * len(nodes)
    readers: list[list[int]] = [[] for _ in nodes]
    for k, node in enumerate(nodes):
        deps = {producer[v.name] for v in _reads(node) if v.name in producer}
        deps.discard(k)
        waiting[k] = len(deps)
        for d in deps:
            readers[d].append(k)
    ready = [(keys[k], k) for k in range(len(nodes)) if waiting[k] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        _, k = heapq.heappop(ready)
        order.append(nodes[k])
        for r in readers[k]:
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, (keys[r], r))
    if len(order) != len(nodes):
        raise AssertionError("fusion made a cycle (a Kiln bug)")
    return order


def _reads(node: Node) -> list[Value]:
    found = [v for v in node.inputs if v is not None]
    for body in node.subgraphs():
        for inner in body.walk():
            found.extend(v for v in inner.inputs if v is not None)
    return found


def _drop_unused_constants(nodes: list[Node], graph: Graph, copied: set[str]) -> list[Node]:
    """Constants copied into bodies and left without other readers are dropped."""
    read = {v.name for n in nodes for v in _reads(n)} | {v.name for v in graph.outputs}
    return [n for n in nodes if n.op is not Op.CONSTANT or any(
        v is not None and (v.name in read or v.name not in copied) for v in n.outputs)]
