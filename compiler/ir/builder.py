"""Building graphs node by node, with type inference and on-the-fly constant folding.

Frontends and passes add nodes through a ``GraphBuilder``: it fills attribute defaults, checks
operand counts and attribute kinds, runs the op's type rule, and (unless told not to) folds a
node whose inputs are all constants into a constant, so shape computations such as
Shape -> Gather -> Concat -> Reshape collapse to static shapes while the graph is built. Where
such a chain depends on symbolic dims it is kept, and the builder records the symbolic values
of its small integer tensors (``kiln.compiler.ir.symbolic_values``) for the type rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import KilnError, TypeInferenceError
from .graph import Graph, Node, Value
from .op import Group, Op
from .schema import REQUIRED, AttrKind, InferContext, OpDef, op_def
from .symbolic_values import DimsValue, dims_of_array, propagate
from .types import DType, TensorType

# Folding evaluates an op at build time; above this many output elements we keep the node, as
# the result would bloat the graph (weights-sized folding is the optimizer's decision).
FOLD_LIMIT_ELEMENTS = 1 << 16
_NEVER_FOLDED = frozenset({Group.RANDOM, Group.CONTROL})
# Quantized weights stay quantized until the optimizer: its quant_fusion pass runs the layers
# reading them as integer ops (fold_constants folds the DequantizeLinear nodes it leaves).
_KEPT_QUANTIZED = frozenset({Op.DEQUANTIZE_LINEAR})


class NameTable:
    """Unique value names shared by a graph and all its subgraphs."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.counter = 0

    def claim(self, name: str) -> str:
        if name in self.used:
            raise KilnError(f"value name {name!r} is defined twice")
        self.used.add(name)
        return name

    def fresh(self, hint: str = "t") -> str:
        while True:
            self.counter += 1
            name = f"{hint}.{self.counter}"
            if name not in self.used:
                self.used.add(name)
                return name


class GraphBuilder:
    """Accumulates inputs, nodes and outputs of one graph (or subgraph)."""

    def __init__(
        self,
        name: str = "main",
        names: NameTable | None = None,
        outer: GraphBuilder | None = None,
        fold: bool = True,
    ) -> None:
        self.name = name
        self.names = names if names is not None else NameTable()
        self.outer = outer
        self.fold = fold
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self._consts: dict[str, np.ndarray] = {}
        self._dims: dict[str, DimsValue] = {}

    def sub(self, name: str) -> GraphBuilder:
        """A builder for a subgraph that may read this graph's values."""
        return GraphBuilder(name, self.names, outer=self, fold=self.fold)

    def add_input(self, name: str | None, type_: TensorType, hint: str = "in") -> Value:
        """A new graph input named ``name``, or a fresh name from ``hint`` when it is None."""
        value = Value(self._claim(name, hint), type_)
        self.inputs.append(value)
        return value

    def const_value(self, value: Value | None) -> np.ndarray | None:
        """The data of ``value`` when a constant node of this or an enclosing graph defines it."""
        builder: GraphBuilder | None = self
        while builder is not None and value is not None:
            if value.name in builder._consts:
                return builder._consts[value.name]
            builder = builder.outer
        return None

    def dims_value(self, value: Value | None) -> DimsValue | None:
        """The symbolic shape value of ``value`` (``kiln.compiler.ir.symbolic_values``): its
        elements as dims when it is a small integer tensor the analysis follows, else None."""
        data = self.const_value(value)
        if data is not None:
            return dims_of_array(data)
        builder: GraphBuilder | None = self
        while builder is not None and value is not None:
            if value.name in builder._dims:
                return builder._dims[value.name]
            builder = builder.outer
        return None

    def constant(self, data: np.ndarray, name: str | None = None, node_name: str = "") -> Value:
        data = np.asarray(data)
        value = Value(self._claim(name, "c"), TensorType.of(data))
        self.nodes.append(Node(Op.CONSTANT, (), (value,), {"value": data}, node_name))
        self._consts[value.name] = data
        return value

    def add(
        self,
        op: Op,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        outputs: Sequence[str | None] | int = 1,
        name: str = "",
    ) -> list[Value | None]:
        """Add ``op`` applied to ``inputs``; ``outputs`` gives output names (None: absent) or a
        count of fresh ones. Returns the output values (None where absent)."""
        definition = op_def(op)
        inputs = _trim_absent(inputs)
        full_attrs = check_attrs(definition, attrs or {}, name)
        out_names: list[str | None] = (
            [self._claim(None, "t") for _ in range(outputs)]
            if isinstance(outputs, int)
            else [None if n is None else self._claim(n, "t") for n in outputs]
        )
        check_arity(definition, len(inputs), len(out_names), name)
        dims = [self.dims_value(v) for v in inputs]
        types = infer_types(
            definition, name, inputs, full_attrs, [self.const_value(v) for v in inputs],
            len(out_names), dims,
        )
        values = [None if n is None else Value(n, t) for n, t in zip(out_names, types, strict=True)]
        node = Node(op, tuple(inputs), tuple(values), full_attrs, name)
        in_types = [None if v is None else v.type for v in inputs]
        out_types = [None if v is None else v.type for v in values]
        for value, found in zip(values, propagate(op, full_attrs, in_types, dims, out_types),
                                strict=True):
            if value is not None and found is not None:
                self._dims[value.name] = found
        if not self._try_fold(node):
            self.nodes.append(node)
        return values

    def add1(
        self, op: Op, inputs: Sequence[Value | None], attrs: Mapping[str, Any] | None = None,
        *, name: str = "", output: str | None = None,
    ) -> Value:
        """``add`` for the common single-output case."""
        result = self.add(op, inputs, attrs, outputs=1 if output is None else [output], name=name)
        assert result[0] is not None
        return result[0]

    def finish(self, outputs: Sequence[Value]) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), tuple(outputs))

    def _claim(self, name: str | None, hint: str) -> str:
        return self.names.fresh(hint) if name is None else self.names.claim(name)

    def _try_fold(self, node: Node) -> bool:
        if (not self.fold or op_def(node.op).group in _NEVER_FOLDED
                or node.op in _KEPT_QUANTIZED):
            return False
        if self._fold_known_value(node):
            return True
        present = [v for v in node.inputs if v is not None]
        static_shape_query = node.op in (Op.SHAPE, Op.SIZE) and present[0].type.is_static
        if not static_shape_query and not all(self.const_value(v) is not None for v in present):
            return False
        sizes = [v.type.numel for v in node.outputs if v is not None]
        if any(s is None or s > FOLD_LIMIT_ELEMENTS for s in sizes):
            return False
        from ..reference.executor import evaluate_node

        data = {} if static_shape_query else {v.name: self.const_value(v) for v in present}
        results = evaluate_node(node, data, shape_only=static_shape_query)
        for value, result in zip(node.outputs, results, strict=True):
            if value is not None:
                self.nodes.append(Node(Op.CONSTANT, (), (value,), {"value": result}, node.name))
                self._consts[value.name] = result
        return True

    def _fold_known_value(self, node: Node) -> bool:
        """Fold a node whose one output the shape-value analysis knows to be all static
        (``Shape(x)[1:]`` of an ``f32[batch,3,4]``: ``[3, 4]``) into a constant."""
        value = node.outputs[0] if len(node.outputs) == 1 else None
        known = None if value is None else self._dims.get(value.name)
        if value is None or known is None or not all(isinstance(d, int) for d in known):
            return False
        data = np.array(known, dtype=value.type.dtype.numpy).reshape(
            tuple(int(d) for d in value.type.shape))
        self.nodes.append(Node(Op.CONSTANT, (), (value,), {"value": data}, node.name))
        self._consts[value.name] = data
        return True


def _trim_absent(inputs: Sequence[Value | None]) -> list[Value | None]:
    trimmed = list(inputs)
    while trimmed and trimmed[-1] is None:
        trimmed.pop()
    return trimmed


def check_arity(definition: OpDef, n_inputs: int, n_outputs: int, node_name: str) -> None:
    where = f"{definition.op.value} (node {node_name!r})" if node_name else definition.op.value
    if n_inputs < definition.min_inputs or (
        definition.max_inputs is not None and n_inputs > definition.max_inputs
    ):
        raise TypeInferenceError(
            f"{where}: takes {_range_text(definition.min_inputs, definition.max_inputs)} inputs, "
            f"got {n_inputs}"
        )
    min_out = 1 if definition.outputs else 0
    if n_outputs < min_out or (
        definition.max_outputs is not None and n_outputs > definition.max_outputs
    ):
        raise TypeInferenceError(
            f"{where}: has {_range_text(min_out, definition.max_outputs)} outputs, got {n_outputs}"
        )


def _range_text(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low}"
    return str(low) if low == high else f"{low} to {high}"


_KIND_CHECK: dict[AttrKind, Any] = {
    AttrKind.INT: lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
    AttrKind.FLOAT: lambda v: isinstance(v, (float, int, np.floating)),
    AttrKind.STRING: lambda v: isinstance(v, str),
    AttrKind.INTS: lambda v: isinstance(v, tuple) and all(isinstance(x, int) for x in v),
    AttrKind.FLOATS: lambda v: isinstance(v, tuple) and all(isinstance(x, float) for x in v),
    AttrKind.STRINGS: lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
    AttrKind.TENSOR: lambda v: isinstance(v, np.ndarray) or type(v).__name__ == "ElidedTensor",
    AttrKind.GRAPH: lambda v: isinstance(v, Graph),
    AttrKind.DTYPE: lambda v: isinstance(v, DType),
}


def normalize_attr(kind: AttrKind, value: Any) -> Any:
    """Coerce a Python value to the canonical representation of an attribute kind."""
    if kind is AttrKind.INT:
        return int(value)
    if kind is AttrKind.FLOAT:
        return float(value)
    if kind is AttrKind.INTS:
        return tuple(int(x) for x in value)
    if kind is AttrKind.FLOATS:
        return tuple(float(x) for x in value)
    if kind is AttrKind.STRINGS:
        return tuple(str(x) for x in value)
    return value


def check_attrs(definition: OpDef, attrs: Mapping[str, Any], node_name: str) -> dict[str, Any]:
    """Attributes normalized, with defaults filled; raises for unknown, missing or ill-kinded."""
    where = f"{definition.op.value} (node {node_name!r})" if node_name else definition.op.value
    result: dict[str, Any] = {}
    for key, value in attrs.items():
        spec = definition.attrs.get(key)
        if spec is None:
            raise TypeInferenceError(f"{where}: unknown attribute {key!r}")
        try:
            value = normalize_attr(spec.kind, value)
        except (TypeError, ValueError):
            raise TypeInferenceError(
                f"{where}: attribute {key!r} must be of kind {spec.kind.value}, got {value!r}"
            ) from None
        if not _KIND_CHECK[spec.kind](value):
            raise TypeInferenceError(
                f"{where}: attribute {key!r} must be of kind {spec.kind.value}, got {value!r}"
            )
        result[key] = value
    for key, spec in definition.attrs.items():
        if key in result:
            continue
        if spec.default is REQUIRED:
            raise TypeInferenceError(f"{where}: required attribute {key!r} is missing")
        if spec.default is not None:
            result[key] = spec.default
    return result


def infer_types(
    definition: OpDef,
    node_name: str,
    inputs: Sequence[Value | None],
    attrs: Mapping[str, Any],
    consts: Sequence[np.ndarray | None],
    n_outputs: int,
    dims_values: Sequence[DimsValue | None] = (),
) -> list[TensorType]:
    """The output types the op's rule gives; ``dims_values`` are the inputs' symbolic shape
    values where known (see ``InferContext.dims_value``)."""
    ctx = InferContext(
        definition.op, node_name, [None if v is None else v.type for v in inputs], attrs, consts,
        n_outputs, dims_values,
    )
    try:
        types = definition.infer(ctx)
    except TypeInferenceError as error:
        if not str(error).startswith(str(ctx.fail("")).rstrip()):
            raise ctx.fail(str(error)) from None
        raise
    if len(types) < n_outputs:
        raise ctx.fail(f"type rule gave {len(types)} output types for {n_outputs} outputs")
    return list(types[:n_outputs])
