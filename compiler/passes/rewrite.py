"""The rewriting machinery of the optimizer: one graph rebuilder and the one rule driver.

A ``Rewriter`` rebuilds one graph (or control-flow body) node by node. A *visitor* looks at each
node, whose operands already read the rewritten values, and either keeps it or gives replacement
values for its outputs: existing values, or values of nodes it emits through the rewriter
(``emit``, ``constant``). The rewriter then reads every later use of an old output as its
replacement, inside nested bodies too. Invariants it enforces for every visitor:

- type preservation: a replacement has exactly the type of the value it replaces. A visitor
  breaking this with static types is a compiler bug and raises; a replacement whose type differs
  only in symbolic or unknown dims (the rules could not prove the extents equal) is refused,
  and so is one whose new nodes the type rules reject where the replaced node has symbolic
  dims (a broadcast they cannot prove valid): the graph stays as it was;
- interface preservation: a graph output keeps its name. A replacement for an output must be a
  value computed in the same graph (not an input, not an enclosing value, not another output);
  the value is then renamed to the output's name. Otherwise the rewrite is refused (undone);
- "changed" is identity: ``transform`` returns the very same ``Graph`` when nothing changed.

``apply_rules`` is the rule driver: a list of named ``Rule``s (per op) applied in forward sweeps
until a sweep changes nothing, dead nodes removed between sweeps.

    rule identity:  %y = identity(%x)       ->  (uses of %y read %x)
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import KilnError, TypeInferenceError
from ..ir.builder import NameTable, check_attrs, infer_types
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.schema import op_def
from ..ir.symbolic_values import DimsValue, dims_of_array, followed, propagate
from ..ir.types import TensorType

Replacement = Sequence[Value | None] | None
Visitor = Callable[["Rewriter", Node], Replacement]

# A rewrite that keeps re-enabling others would loop; every rule shrinks or canonicalizes the
# graph, so a handful of sweeps reach the fixpoint and this bound only guards against bugs.
MAX_SWEEPS = 32


def model_names(graph: Graph) -> NameTable:
    """A name table holding every value name of ``graph`` and its bodies (for fresh names)."""
    table = NameTable()

    def collect(g: Graph) -> None:
        table.used.update(v.name for v in g.inputs)
        for node in g.nodes:
            table.used.update(v.name for v in node.outputs if v is not None)
            for body in node.subgraphs():
                collect(body)

    collect(graph)
    return table


def count_uses(graph: Graph) -> Counter[str]:
    """Reads of each value by the nodes of ``graph`` (reads from nested bodies included) and
    by its outputs."""
    uses: Counter[str] = Counter(v.name for v in graph.outputs)
    for node in graph.nodes:
        uses.update(v.name for v in node.inputs if v is not None)
        for body in node.subgraphs():
            uses.update(count_uses(body))
    return uses


class Rewriter:
    """Rebuilds one graph; ``parent`` is the rewriter of the enclosing graph, if any."""

    def __init__(self, graph: Graph, names: NameTable, parent: Rewriter | None = None) -> None:
        self.graph = graph
        self.names = names
        self.parent = parent
        self.nodes: list[Node] = []
        self.subst: dict[str, Value] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.producers: dict[str, Node] = {}
        # The symbolic shape values (``kiln.compiler.ir.symbolic_values``) of this graph's
        # values, so that a re-emitted Reshape or Expand fed by a Shape chain keeps the symbols
        # of its output type instead of coming back as ``?``.
        self.dims: dict[str, DimsValue] = {}
        # An over-approximation of each value's readers: counted on the input graph and raised
        # by every read a rewrite adds (removed reads are not subtracted), so a "single user"
        # test can only err on the side of not rewriting.
        self.uses = count_uses(graph)
        self.inputs = {v.name for v in graph.inputs}
        self.outputs = {v.name for v in graph.outputs}
        self.changed = False
        self.memo: dict[Any, Any] = {}  # per-graph state of a visitor (e.g. CSE's table)

    # -- queries a visitor uses -------------------------------------------------------------
    def resolve(self, value: Value | None) -> Value | None:
        """The current value standing for ``value`` (after replacements)."""
        while value is not None and value.name in self.subst:
            value = self.subst[value.name]
        if value is not None and self.parent is not None and value.name not in self.producers:
            return self.parent.resolve(value)
        return value

    def const(self, value: Value | None) -> np.ndarray | None:
        """The data of a constant value of this graph or an enclosing one, else None."""
        if value is None:
            return None
        if value.name in self.consts:
            return self.consts[value.name]
        return self.parent.const(value) if self.parent is not None else None

    def dims_of(self, value: Value | None) -> DimsValue | None:
        """The symbolic shape value of ``value`` (its elements as dims) where known: a
        constant's data, else what the analysis found in this graph or an enclosing one."""
        if value is None:
            return None
        data = self.const(value)
        if data is not None:
            return dims_of_array(data) if followed(value.type) else None
        if value.name in self.dims:
            return self.dims[value.name]
        return self.parent.dims_of(value) if self.parent is not None else None

    def producer(self, value: Value | None) -> Node | None:
        """The (rewritten) node of this graph defining ``value``, else None."""
        return None if value is None else self.producers.get(value.name)

    def single_use(self, value: Value) -> bool:
        """True when one node reads ``value`` and it is not an output of the graph."""
        return self.uses[value.name] <= 1 and value.name not in self.outputs

    # -- building -----------------------------------------------------------------------------
    def emit(self, op: Op, inputs: Sequence[Value | None], attrs: Mapping[str, Any] | None = None,
             *, name: str = "", outputs: int = 1) -> list[Value]:
        """Append a new node (attributes normalized, outputs typed by the op's rule)."""
        definition = op_def(op)
        full = check_attrs(definition, attrs or {}, name)
        types = infer_types(definition, name, inputs, full, [self.const(v) for v in inputs],
                            outputs, [self.dims_of(v) for v in inputs])
        values = [Value(self.names.fresh("opt"), t) for t in types]
        self._append(Node(op, tuple(inputs), tuple(values), full, name))
        self.uses.update(v.name for v in inputs if v is not None)
        return values

    def constant(self, data: np.ndarray, value: Value | None = None, name: str = "") -> Value:
        """A constant node holding ``data``, defining ``value`` when given (the value of a
        node being replaced, whose type must then match) or a fresh value."""
        data = np.asarray(data)
        out = value if value is not None else Value(self.names.fresh("c"), TensorType.of(data))
        if out.type != TensorType.of(data):
            raise KilnError(f"internal: constant {out} given data of type {TensorType.of(data)}")
        self._append(Node(Op.CONSTANT, (), (out,), {"value": data}, name))
        return out

    def keep(self, node: Node) -> None:
        self._append(node)

    def _append(self, node: Node) -> None:
        self.nodes.append(node)
        for out in node.outputs:
            if out is not None:
                self.producers[out.name] = node
        if node.op is Op.CONSTANT:
            out = node.outputs[0]
            assert out is not None
            if isinstance(node.attrs["value"], np.ndarray):
                self.consts[out.name] = node.attrs["value"]
            return
        found = propagate(node.op, node.attrs, [None if v is None else v.type for v in node.inputs],
                          [self.dims_of(v) for v in node.inputs],
                          [None if v is None else v.type for v in node.outputs])
        for out, value in zip(node.outputs, found, strict=True):
            if out is not None and value is not None:
                self.dims[out.name] = value

    # -- the sweep ----------------------------------------------------------------------------
    def operands_of(self, node: Node, body: Callable[[Graph, Rewriter], Graph]) -> Node:
        """``node`` reading current values, its bodies rebuilt by ``body``."""
        inputs = tuple(self.resolve(v) for v in node.inputs)
        attrs = {k: body(v, self) if isinstance(v, Graph) else v for k, v in node.attrs.items()}
        same_inputs = all(a is b for a, b in zip(inputs, node.inputs, strict=True))
        if same_inputs and all(attrs[k] is node.attrs[k] for k in attrs):
            return node
        self.uses.update(v.name for v in inputs if v is not None)
        return dataclasses.replace(node, inputs=inputs, attrs=attrs)

    def offer(self, node: Node, visit: Visitor, what: str = "") -> bool:
        """Let ``visit`` rewrite ``node``; True when it did (its replacements accepted)."""
        mark, changed, outputs = len(self.nodes), self.changed, set(self.outputs)
        try:
            replacement = visit(self, node)
        except TypeInferenceError:
            if _is_static(node):
                raise
            replacement = None
        if replacement is not None and self._accept(node, list(replacement), what):
            self.changed = True
            return True
        del self.nodes[mark:]  # refused: forget whatever the visitor emitted
        self.changed, self.outputs = changed, outputs
        return False

    def _accept(self, node: Node, values: list[Value | None], what: str) -> bool:
        if len(values) != len(node.outputs):
            raise KilnError(f"internal: {what} gave {len(values)} values for {node.describe()}")
        for old, new in zip(node.outputs, values, strict=True):
            if old is None:
                continue
            if new is None:
                if self.uses[old.name] or old.name in self.outputs:
                    return False
                continue
            if new.type != old.type:
                if _differ_in_symbols(old.type, new.type):
                    return False
                raise KilnError(
                    f"internal: {what} replaced %{old.name}: {old.type} of {node.describe()} "
                    f"by %{new.name}: {new.type} (rewrites must keep types)"
                )
            if old.name in self.outputs and new.name != old.name:
                if new.name not in self.producers or new.name in self.outputs:
                    return False
                self.outputs.discard(old.name)
                self.outputs.add(new.name)
        for old, new in zip(node.outputs, values, strict=True):
            if old is not None and new is not None and new.name != old.name:
                self.subst[old.name] = new
        return True

    def finish(self) -> Graph:
        """The rebuilt graph, or the original object when nothing changed."""
        if not self.changed:
            return self.graph
        renames: dict[str, str] = {}
        outputs = []
        for value in self.graph.outputs:
            current = self.resolve(value)
            assert current is not None
            if current.name != value.name:
                renames[current.name] = value.name
            outputs.append(value)
        graph = Graph(self.graph.name, self.graph.inputs, tuple(self.nodes), tuple(outputs))
        return rename_values(graph, renames) if renames else graph


def _is_static(node: Node) -> bool:
    """Whether every operand and result of ``node`` has a static type."""
    return all(v.type.is_static for v in (*node.inputs, *node.outputs) if v is not None)


def _differ_in_symbols(old: TensorType, new: TensorType) -> bool:
    """Whether two types of one element type and rank differ only where one of them has a
    symbolic or unknown dim (not a contradiction, just what the rules could prove)."""
    return old.dtype == new.dtype and old.rank == new.rank and all(
        a == b or not (isinstance(a, int) and isinstance(b, int))
        for a, b in zip(old.shape, new.shape, strict=True))


def rename_values(graph: Graph, renames: Mapping[str, str]) -> Graph:
    """``graph`` with values renamed (definitions and reads, nested bodies included)."""

    def value(v: Value | None) -> Value | None:
        return Value(renames[v.name], v.type) if v is not None and v.name in renames else v

    def node(n: Node) -> Node:
        attrs = {k: rename_values(a, renames) if isinstance(a, Graph) else a
                 for k, a in n.attrs.items()}
        return dataclasses.replace(n, inputs=tuple(value(v) for v in n.inputs),
                                   outputs=tuple(value(v) for v in n.outputs), attrs=attrs)

    outputs = tuple(value(v) for v in graph.outputs)
    return Graph(graph.name, graph.inputs, tuple(node(n) for n in graph.nodes),
                 tuple(v for v in outputs if v is not None))


@dataclass(frozen=True)
class Rule:
    """A named local rewrite: ``fn(rewriter, node)`` gives the node's replacement values or
    None. ``ops`` lists the ops it looks at (None: every op)."""

    name: str
    ops: frozenset[Op] | None
    fn: Visitor


def rule(name: str, *ops: Op) -> Callable[[Visitor], Rule]:
    """Decorator making a ``Rule`` of a function (no ops: it looks at every node)."""

    def wrap(fn: Visitor) -> Rule:
        return Rule(name, frozenset(ops) if ops else None, fn)

    return wrap


class _RuleTable:
    """Rules indexed by op, and how often each fired."""

    def __init__(self, rules: Iterable[Rule], fired: Counter[str] | None) -> None:
        rules = list(rules)
        self.by_op = {op: [r for r in rules if r.ops is None or op in r.ops] for op in Op}
        self.fired = fired


def transform(graph: Graph, rules: Iterable[Rule], fired: Counter[str] | None = None) -> Graph:
    """One forward sweep over ``graph`` (each node's bodies first): per node, the first rule
    whose replacement is accepted wins. ``fired`` counts applications per rule name."""
    return _sweep(graph, _RuleTable(rules, fired), model_names(graph), None)


def _sweep(graph: Graph, table: _RuleTable, names: NameTable, parent: Rewriter | None) -> Graph:
    rw = Rewriter(graph, names, parent)

    def body(sub: Graph, outer: Rewriter) -> Graph:
        return _sweep(sub, table, names, outer)

    for original in graph.nodes:
        node = rw.operands_of(original, body)
        if node is not original:
            rw.changed = True
        for candidate in table.by_op[node.op]:
            if rw.offer(node, candidate.fn, f"rule {candidate.name!r}"):
                if table.fired is not None:
                    table.fired[candidate.name] += 1
                break
        else:
            rw.keep(node)
    return rw.finish()


def apply_rules(graph: Graph, rules: Iterable[Rule], fired: Counter[str] | None = None) -> Graph:
    """The rule driver: sweeps of ``rules`` until one changes nothing, dead nodes removed
    between sweeps (so "single user" tests see the current graph)."""
    from .dead_code import dead_code

    rules = list(rules)
    current = graph
    for _ in range(MAX_SWEEPS):
        swept = transform(current, rules, fired)
        if swept is current:
            break
        current = dead_code(swept)
    return current
