"""Constant folding (a pass, Graph -> Graph).

Pre: a valid graph. Post: every node whose operands are all constants (and every Shape/Size of
a statically shaped value) is replaced by constants holding its results, computed by the
reference executor (the definition of each op), so chains fold in one sweep. Any size folds
(weights transposed, cast or dequantized at compile time), with these exceptions:

- random ops (each run draws anew) and control flow (If/Loop/Scan) are never folded;
- blow-up: a node whose results hold more than ``BLOWUP_FACTOR`` times the elements of its
  constant operands, and more than ``SMALL_RESULT`` elements, stays (an Expand, Tile,
  ConstantOfShape or Range would otherwise turn a few numbers into a weights-sized blob that
  the kernel computes faster than the library loads it);
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


def fold_constants(graph: Graph) -> Graph:
    """``graph`` with constant subexpressions evaluated; the same object when there are none."""
    return apply_rules(graph, [_fold])


@rule("fold_constants")
def _fold(rw: Rewriter, node: Node) -> Replacement:
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
    if result_elements > max(BLOWUP_FACTOR * operand_elements, SMALL_RESULT):
        return None
    try:
        results = evaluate_node(node, {} if shape_query else data, shape_only=shape_query)
    except KilnError:
        return None
    return [
        None if value is None else rw.constant(result, value, node.name)
        for value, result in zip(node.outputs, results, strict=True)
    ]
