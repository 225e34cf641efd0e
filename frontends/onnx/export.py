"""``to_onnx`` / ``save_onnx``: a frontend-level Kiln graph written as an ONNX model.

The inverse of ``load_onnx``. An IR op is the ONNX op of the same name at the newest opset, with
the same operands and attributes, so nodes map one to one (``mapping.op_for`` read backwards).
Attributes equal to their schema default are left out, as in the IR text form; ``DType``
attributes become ``TensorProto`` element types; graph attributes (If/Loop/Scan bodies) become
subgraphs exported the same way. Constants of the main graph become initializers, those of
bodies ``Constant`` nodes; every value carries its Kiln type (symbolic dims as ``dim_param``,
unknown ones left empty): graph inputs and outputs as such, the others as ``value_info``.

Opset: ``DEFAULT_OPSET`` (26) is the newest the installed onnxruntime (1.31) loads, and the IR
version is the lowest that holds it (13). Any opset from ``MIN_OPSET`` to onnx's newest may be
asked for: across that range ops only gained attributes, operands and element types, so each
node is checked against its schema at the chosen opset, and one that uses something the opset
lacks is refused, naming the opset that has it. Before ``MIN_OPSET`` some ops changed meaning
under the same signature (GroupNormalization-18's per-group scale, GridSample-16's mode names,
Softmax-11's 2-D coercion), which a schema check cannot see.

``custom_elementwise`` (a user's scalar function as LLVM IR) and ``tree_ensemble`` (TreeEnsemble-5
extended with multi-vote leaves and base values) become nodes of Kiln's domain ``ai.kiln`` (op
types ``CustomElementwise`` and ``TreeEnsemble``, the same attributes), which ``load_onnx``
reads back and onnxruntime cannot run. Kiln's own ops made by the optimizer (``fused``,
``layout_transform``, the ``*_nchwc`` ops) have no ONNX form: export the graph as the frontend
produced it, before ``build``.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx.defs
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    ValueInfoProto,
    helper,
    numpy_helper,
)

from kiln.compiler.errors import KilnError, UnsupportedOpError
from kiln.compiler.ir.graph import ElidedTensor, Graph, Node, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.schema import AttrKind, op_def
from kiln.compiler.ir.types import DType

from .functions import LATEST, schema_for, type_proto
from .mapping import DTYPE_TO_ONNX, KILN_DOMAIN, KILN_DOMAIN_VERSION, KILN_OPS, op_for

DEFAULT_OPSET = 26
MIN_OPSET = 21

_ONNX_OP_TYPES: dict[Op, str] = {
    op: schema.name
    for schema in onnx.defs.get_all_schemas()
    if schema.domain == "" and (op := op_for(schema.name)) is not None
}
_KILN_OP_TYPES = {op: op_type for op_type, op in KILN_OPS.items()}
_ATTRIBUTE_TYPES = {
    AttrKind.INT: AttributeProto.INT,
    AttrKind.FLOAT: AttributeProto.FLOAT,
    AttrKind.STRING: AttributeProto.STRING,
    AttrKind.INTS: AttributeProto.INTS,
    AttrKind.FLOATS: AttributeProto.FLOATS,
    AttrKind.STRINGS: AttributeProto.STRINGS,
    AttrKind.TENSOR: AttributeProto.TENSOR,
    AttrKind.GRAPH: AttributeProto.GRAPH,
    AttrKind.DTYPE: AttributeProto.INT,
}


def to_onnx(graph: Graph, opset: int | None = None) -> ModelProto:
    """``graph`` as an ONNX model of the default domain at ``opset`` (default
    ``DEFAULT_OPSET``); raises ``UnsupportedOpError`` naming the node that ONNX (or that opset)
    cannot express."""
    opset = DEFAULT_OPSET if opset is None else opset
    if not MIN_OPSET <= opset <= LATEST:
        raise KilnError(f"ONNX export supports opsets {MIN_OPSET} to {LATEST}, not {opset}")
    exporter = _Exporter(graph, opset)
    body = exporter.graph(graph, top=True)
    imports = [helper.make_opsetid("", opset)]
    if exporter.uses_kiln_domain:
        imports.append(helper.make_opsetid(KILN_DOMAIN, KILN_DOMAIN_VERSION))
    return helper.make_model(
        body,
        opset_imports=imports,
        producer_name="kiln",
        ir_version=helper.find_min_ir_version_for(imports, ignore_unknown=True),
    )


def save_onnx(
    graph: Graph, path: str | os.PathLike[str] | None = None, *, opset: int | None = None
) -> ModelProto:
    """``to_onnx(graph, opset)``, also written to ``path`` when one is given."""
    model = to_onnx(graph, opset)
    if path is not None:
        onnx.save_model(model, os.fspath(path))
    return model


class _Exporter:
    """Converts one model's graphs; knows every value name, to make fresh ones."""

    def __init__(self, graph: Graph, opset: int) -> None:
        self.opset = opset
        self.used = _names(graph)
        self.uses_kiln_domain = False

    def fresh(self, hint: str) -> str:
        return _unused(hint, self.used)

    def graph(self, graph: Graph, top: bool) -> GraphProto:
        """``graph`` as a GraphProto; ``top`` for the main graph (constants as initializers)."""
        initializers: list[TensorProto] = []
        nodes: list[NodeProto] = []
        typed: list[Value] = []
        defined = {v.name for v in graph.inputs}
        node_names = {n.name for n in graph.nodes}
        named: set[str] = set()
        for node in graph.nodes:
            outputs = [v for v in node.outputs if v is not None]
            defined.update(v.name for v in outputs)
            if top and node.op is Op.CONSTANT:
                initializers.append(_tensor(node.attrs["value"], outputs[0].name, node))
                continue
            proto = self.node(node)
            if proto.name and proto.name in named:  # ONNX wants them unique within a graph
                proto.name = _unused(proto.name, node_names)
            named.add(proto.name)
            nodes.append(proto)
            typed += outputs
        outputs = []
        for value in graph.outputs:
            if value.name not in defined:  # a body may not return an outer value directly
                copy = Value(self.fresh(value.name), value.type)
                nodes.append(helper.make_node("Identity", [value.name], [copy.name]))
                value = copy
            outputs.append(value)
        returned = {v.name for v in outputs}
        return helper.make_graph(
            nodes,
            graph.name,
            [_value_info(v) for v in graph.inputs],
            [_value_info(v) for v in outputs],
            initializer=initializers,
            value_info=[_value_info(v) for v in typed if v.name not in returned],
        )

    def node(self, node: Node) -> NodeProto:
        outputs = ["" if v is None else v.name for v in node.outputs]
        if node.op is Op.CONSTANT:
            value = _tensor(node.attrs["value"], "", node)
            return helper.make_node("Constant", [], outputs, name=node.name, value=value)
        inputs = ["" if v is None else v.name for v in node.inputs]
        if node.op in _KILN_OP_TYPES:
            self.uses_kiln_domain = True
            proto = helper.make_node(_KILN_OP_TYPES[node.op], inputs, outputs, name=node.name,
                                     domain=KILN_DOMAIN)
            proto.attribute.extend(self.attributes(node))
            return proto
        op_type = _ONNX_OP_TYPES.get(node.op)
        if op_type is None:
            raise UnsupportedOpError(
                f"{_describe(node)}: Kiln's {node.op.value} op has no ONNX counterpart (the "
                "optimizer makes it); export the graph as the frontend produced it, before "
                "optimization"
            )
        proto = helper.make_node(op_type, inputs, outputs, name=node.name)
        proto.attribute.extend(self.attributes(node))
        self.check_opset(proto, node)
        return proto

    def attributes(self, node: Node) -> list[AttributeProto]:
        specs = op_def(node.op).attrs
        protos = []
        for name, value in node.attrs.items():
            spec = specs[name]
            if type(value) is type(spec.default) and value == spec.default:
                continue
            kind = spec.kind
            if kind is AttrKind.GRAPH:
                value = self.graph(value, top=False)
            elif kind is AttrKind.TENSOR:
                value = _tensor(value, "", node)
            elif kind is AttrKind.DTYPE:
                value = DTYPE_TO_ONNX[value]
            protos.append(helper.make_attribute(name, value, attr_type=_ATTRIBUTE_TYPES[kind]))
        return protos

    def check_opset(self, proto: NodeProto, node: Node) -> None:
        """Refuse a node that uses an op, attribute, operand or type the opset lacks."""
        problem = _misfit(proto, node, self.opset)
        if problem is None:
            return
        later = next((v for v in range(self.opset + 1, LATEST + 1)
                      if _misfit(proto, node, v) is None), None)
        hint = f"; opset {later} has it: pass opset={later}" if later else ""
        raise UnsupportedOpError(f"{_describe(node)}: ONNX opset {self.opset} {problem}{hint}")


def _misfit(proto: NodeProto, node: Node, opset: int) -> str | None:
    """What ``proto``'s schema at ``opset`` lacks for it, or None when the node fits."""
    schema = schema_for(proto.op_type, opset)
    if schema is None:
        return f"has no {proto.op_type} op"
    extra = [a.name for a in proto.attribute if a.name not in schema.attributes]
    if extra:
        return f"has no attribute {extra[0]!r} of {proto.op_type}"
    if len(proto.input) > schema.max_input:
        return f"gives {proto.op_type} at most {schema.max_input} inputs, not {len(proto.input)}"
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    for formals, values in ((schema.inputs, node.inputs), (schema.outputs, node.outputs)):
        for index, value in enumerate(values):
            if value is None or not formals:
                continue
            formal = formals[min(index, len(formals) - 1)]  # the last may be variadic
            if _type_string(value.type.dtype) not in allowed.get(formal.type_str,
                                                                  {formal.type_str}):
                return (f"does not allow element type {value.type.dtype.value} for "
                        f"{proto.op_type} operand {formal.name!r}")
    return None


def _type_string(dtype: DType) -> str:
    """The spelling of ONNX schema type constraints: ``tensor(float)``, ``tensor(int64)``..."""
    return f"tensor({TensorProto.DataType.Name(DTYPE_TO_ONNX[dtype]).lower()})"


def _tensor(data: np.ndarray | ElidedTensor, name: str, node: Node) -> TensorProto:
    if isinstance(data, ElidedTensor):
        raise KilnError(
            f"{_describe(node)}: the tensor's data was elided from the IR text it was parsed "
            "from; ONNX export needs the data"
        )
    return numpy_helper.from_array(np.asarray(data), name)


def _value_info(value: Value) -> ValueInfoProto:
    return helper.make_value_info(value.name, type_proto(value.type))


def _describe(node: Node) -> str:
    """The node for messages: its name when it has one, else the first value it defines."""
    if node.name:
        return f"node {node.name!r} ({node.op.value})"
    first = next((v.name for v in node.outputs if v is not None), "?")
    return f"{node.op.value} node defining %{first}"


def _unused(hint: str, taken: set[str]) -> str:
    """``hint.N`` for the first N that is not in ``taken``, which then holds it."""
    count = 1
    while f"{hint}.{count}" in taken:
        count += 1
    name = f"{hint}.{count}"
    taken.add(name)
    return name


def _names(graph: Graph) -> set[str]:
    """Every value name of ``graph`` and its subgraphs."""
    found = {v.name for v in graph.inputs}
    for node in graph.nodes:
        found.update(v.name for v in node.outputs if v is not None)
        for body in node.subgraphs():
            found |= _names(body)
    return found

