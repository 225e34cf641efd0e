"""Constant folding (a pass, Graph -> Graph).

Pre: a valid graph. Post: every node whose operands are all constants (and every Shape/Size of
a statically shaped value) is replaced by constants holding its results, computed by the
reference executor (the definition of each op), so chains fold in one sweep. Any size folds
(weights transposed, cast or dequantized at compile time), with these exceptions:

- random ops (each run draws anew) and control flow (If/Loop/Scan) are never folded;
- blow-up: a node whose results hold more than ``BLOWUP_FACTOR`` times the elements of its
  constant operands, and more than ``SMALL_RESULT`` elements, stays (an Expand, Tile,
  ConstantOfShape or Range would otherwise turn a few numbers into a weights-sized blob that
  the kernel computes faster than the library loads it) -- unless every read of its results is
  as a weight (MatMul/Gemm B, Conv W, RNN W/R, directly or through single-operand ops): weights
  fold whatever their size, because their kernels pack them at compile time and would
  otherwise refill and repack them on every run;
- results of non-static type, and nodes the executor fails on (that failure is the run's to
  report), stay.

The outputs keep their names; dead constant operands are left to ``dead_code``.

    before: %s = constant() {value=dense<i64[2]: [2, 3]>} : i64[2]
            %w = transpose(%v) {perm=[1,0]} : f32[3,2]     (%v a constant)
            %t = mul(%s, %s) : i64[2]
    after:  %w = constant() {value=...} : f32[3,2]
            %t = constant() {value=dense<i64[2]: [4, 9]>} : i64[2]
"""

from __future__ import annotations

from ..errors import KilnError
from ..ir.graph import Graph, Node
from ..ir.op import Group, Op
from ..ir.schema import op_def
from ..reference.executor import evaluate_node
from ..reference.kernels.registry import kernel_for
from .rewrite import Replacement, Rewriter, apply_rules, rule

BLOWUP_FACTOR = 16
SMALL_RESULT = 1024
_NEVER = frozenset({Group.RANDOM, Group.CONTROL})


# Operand positions that kernels read as weights (packed or re-read per output tile).
WEIGHT_OPERANDS: dict[Op, tuple[int, ...]] = {
    Op.MATMUL: (1,), Op.GEMM: (1, 2), Op.CONV: (1, 2), Op.CONV_TRANSPOSE: (1, 2),
    Op.LSTM: (1, 2, 3), Op.GRU: (1, 2, 3), Op.RNN: (1, 2, 3),
}


def fold_constants(graph: Graph) -> Graph:
    """``graph`` with constant subexpressions evaluated; the same object when there are none."""
    weights = weight_values(graph)

    @rule("fold_constants")
    def fold(rw: Rewriter, node: Node) -> Replacement:
        return _fold(rw, node, weights)

    return apply_rules(graph, [fold])


def weight_values(graph: Graph) -> frozenset[str]:
    """Names of the values of ``graph`` (bodies included) read only as weights: at a
    ``WEIGHT_OPERANDS`` position, or by a node with one operand whose results are all such
    values (a Cast or Transpose of a weight). Graph outputs are not weights."""
    readers: dict[str, list[tuple[Node, int]]] = {}
    order: list[Node] = []
    escaping = {v.name for v in graph.outputs}

    def scan(g: Graph) -> None:
        escaping.update(v.name for v in g.outputs)
        for node in g.nodes:
            order.append(node)
            for position, value in enumerate(node.inputs):
                if value is not None:
                    readers.setdefault(value.name, []).append((node, position))
            for body in node.subgraphs():
                scan(body)

    scan(graph)
    weights: set[str] = set()

    def is_weight(name: str) -> bool:
        uses = readers.get(name, [])
        return bool(uses) and name not in escaping and all(
            position in WEIGHT_OPERANDS.get(reader.op, ())
            or (sum(v is not None for v in reader.inputs) == 1
                and all(o is None or o.name in weights for o in reader.outputs)
                and any(o is not None for o in reader.outputs))
            for reader, position in uses)

    # readers come after their producers, so one reverse sweep settles every chain
    for node in reversed(order):
        weights.update(v.name for v in node.outputs if v is not None and is_weight(v.name))
    return frozenset(weights)


def _fold(rw: Rewriter, node: Node, weights: frozenset[str]) -> Replacement:
    if node.op is Op.CONSTANT or op_def(node.op).group in _NEVER or kernel_for(node.op) is None:
        return None
    outputs = [v for v in node.outputs if v is not None]
    if not all(v.type.is_static for v in outputs):
        return None
    present = [v for v in node.inputs if v is not None]
    shape_query = node.op in (Op.SHAPE, Op.SIZE) and present[0].type.is_static
    data = {v.name: rw.const(v) for v in present}
    if not shape_query and any(d is None for d in data.values()):
        return None
    operand_elements = 0 if shape_query else sum(d.size for d in data.values())  # type: ignore[union-attr]
    result_elements = sum(v.type.numel or 0 for v in outputs)
    if result_elements > max(BLOWUP_FACTOR * operand_elements, SMALL_RESULT) and not all(
        v.name in weights for v in outputs
    ):
        return None
    try:
        results = evaluate_node(node, {} if shape_query else data, shape_only=shape_query)
    except KilnError:
        return None
    return [
        None if value is None else rw.constant(result, value, node.name)
        for value, result in zip(node.outputs, results, strict=True)
    ]
