"""``load_onnx``: an ONNX model to a Kiln graph.

The import runs in stages: read the file (external weights resolved inside the model's folder),
inline model-local functions, refuse the model at once if any op is unsupported (one error
listing all), then walk each graph in topological order. Every node is converted to a
:class:`~.versions.Form`, normalized to the newest opset, and added through a ``GraphBuilder``
(which infers types and folds constant subgraphs such as Shape -> Gather -> Concat). Ops the IR
lacks but ONNX defines as functions are expanded into their bodies. Finally the types the model
declares (outputs, value_info) are compared with Kiln's where both are known.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx.inliner
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TypeProto,
    ValueInfoProto,
    helper,
    numpy_helper,
)

from kiln.compiler.errors import KilnError, TypeInferenceError, UnsupportedOpError
from kiln.compiler.ir import symbolic
from kiln.compiler.ir.builder import GraphBuilder, NameTable
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, Dim, DType, TensorType

from .attributes import attr_value, fit_schema, sparse_to_array, tensor_to_array
from .functions import function_body, schema_for
from .loading import read_model
from .mapping import (
    KILN_DOMAIN,
    KILN_OPS,
    UnsupportedTypeError,
    defined_op_for,
    dtype_of,
    is_kiln_dtype,
)
from .ml import ML_DOMAIN, MlNode
from .ml import convert as convert_ml
from .validation import check_supported, node_domain, opset_map, topological_order
from .versions import Form, normalize


def load_onnx(
    source: str | os.PathLike[str] | ModelProto,
    *,
    fold: bool = True,
    base_dir: str | os.PathLike[str] | None = None,
) -> Graph:
    """Import an ONNX model (a path or a ``ModelProto``) as a Kiln graph.

    ``fold`` folds nodes whose inputs are all constants while building. ``base_dir`` is where
    external data lives when ``source`` is a proto (default: the model file's folder). Graph
    inputs and outputs keep their ONNX names.
    """
    model = read_model(source, base_dir)
    if model.functions:
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as error:  # the inliner reports malformed functions as C++ errors
            raise UnsupportedOpError(
                f"cannot inline the model's local functions: {error}"
            ) from None
    check_supported(model)
    return _Importer(model, fold).run()


class _ModelNames(NameTable):
    """Value names of the whole model: ONNX names of the main graph are kept, and fresh names
    never take one of them."""

    def __init__(self, reserved: set[str]) -> None:
        super().__init__()
        self.reserved = reserved

    def fresh(self, hint: str = "t") -> str:
        while True:
            name = super().fresh(hint)
            if name not in self.reserved:
                return name
            self.used.discard(name)

    def spare(self, hint: str) -> str:
        """A fresh name kept for a later ``claim``."""
        name = self.fresh(hint)
        self.used.discard(name)
        self.reserved.add(name)
        return name


_ABSENT = object()


class _Scope:
    """ONNX names visible in one graph or function body, bound to Kiln values."""

    def __init__(
        self,
        builder: GraphBuilder,
        opsets: dict[str, int],
        parent: _Scope | None = None,
        attr_bindings: dict[str, Any] | None = None,
        out_names: dict[str, str] | None = None,
        keep_names: bool = False,
    ) -> None:
        self.builder = builder
        self.opsets = opsets
        self.parent = parent
        self.attr_bindings = attr_bindings
        self.out_names = out_names or {}
        self.keep_names = keep_names
        self.values: dict[str, Value | None] = {}

    def lookup(self, name: str) -> Value | None:
        scope: _Scope | None = self
        while scope is not None:
            found = scope.values.get(name, _ABSENT)
            if found is not _ABSENT:
                return found  # type: ignore[return-value]
            scope = scope.parent
        raise KilnError(f"value {name!r} is used but not defined")  # topological_order checks

    def visible(self) -> set[str]:
        names: set[str] = set()
        scope: _Scope | None = self
        while scope is not None:
            names.update(scope.values)
            scope = scope.parent
        return names

    def name_for(self, onnx_name: str) -> str:
        """The Kiln name for a value this scope defines."""
        if onnx_name in self.out_names:
            return self.out_names[onnx_name]
        names = self.builder.names
        assert isinstance(names, _ModelNames)
        if self.keep_names:
            return onnx_name
        if onnx_name not in names.used and onnx_name not in names.reserved:
            names.reserved.add(onnx_name)
            return onnx_name
        return names.spare(onnx_name)


class _Emitter:
    """Lets opset adapters add constants and helper nodes on behalf of one ONNX node."""

    def __init__(self, importer: _Importer, scope: _Scope, node: NodeProto) -> None:
        self.importer = importer
        self.scope = scope
        self.node = node

    def constant(self, data: np.ndarray) -> Value:
        return self.scope.builder.constant(data, node_name=self.node.name)

    def emit(self, op_type: str, inputs: list[Value | None], attrs: dict[str, Any]) -> Value:
        names = self.scope.builder.names
        assert isinstance(names, _ModelNames)
        values = self.importer.add_form(
            Form(op_type, inputs, attrs), [names.spare("t")], self.scope, self.node
        )
        assert values[0] is not None
        return values[0]


class _Importer:
    def __init__(self, model: ModelProto, fold: bool) -> None:
        self.model = model
        graph = model.graph
        main_names = {v.name for v in graph.input} | {t.name for t in graph.initializer}
        main_names |= {t.values.name for t in graph.sparse_initializer}
        main_names |= {o for n in graph.node for o in n.output if o}
        self.builder = GraphBuilder(graph.name or "main", _ModelNames(main_names), fold=fold)
        self.opsets = opset_map(model.opset_import)
        if "" not in self.opsets:  # IR version 2 models predate opset_import
            self.opsets[""] = 1

    def run(self) -> Graph:
        scope = _Scope(self.builder, self.opsets, keep_names=True)
        return self.import_graph(self.model.graph, scope, None)

    # -- graphs -------------------------------------------------------------------------------

    def import_graph(
        self, graph: GraphProto, scope: _Scope, context: list[TensorType | None] | None
    ) -> Graph:
        initialized = {t.name for t in graph.initializer}
        initialized |= {t.values.name for t in graph.sparse_initializer}
        inputs = [v for v in graph.input if v.name not in initialized]
        for index, info in enumerate(inputs):
            hint = context[index] if context is not None and index < len(context) else None
            type_ = _value_type(info, hint, f"graph {graph.name!r} input {info.name!r}")
            scope.values[info.name] = scope.builder.add_input(scope.name_for(info.name), type_)
        self._import_contents(graph, scope)
        outputs = [self._output(scope, info.name) for info in graph.output]
        return scope.builder.finish(outputs)

    def _import_contents(self, graph: GraphProto, scope: _Scope) -> None:
        """Initializers and nodes of ``graph`` into ``scope``, then the declared-type check."""
        builder = scope.builder
        for tensor in graph.initializer:
            data = tensor_to_array(tensor, f"initializer {tensor.name!r}")
            scope.values[tensor.name] = builder.constant(data, scope.name_for(tensor.name))
        for sparse in graph.sparse_initializer:
            name = sparse.values.name
            data = sparse_to_array(sparse, f"sparse initializer {name!r}")
            scope.values[name] = builder.constant(data, scope.name_for(name))
        for node in topological_order(list(graph.node), scope.visible(), graph.name):
            self.import_node(node, scope)
        _check_declared(list(graph.output) + list(graph.value_info), scope)

    def _output(self, scope: _Scope, name: str) -> Value:
        value = scope.lookup(name)
        if value is None:
            raise TypeInferenceError(f"graph output {name!r} is an absent optional value")
        return value

    # -- nodes --------------------------------------------------------------------------------

    def import_node(self, node: NodeProto, scope: _Scope) -> None:
        domain = node_domain(node)
        opset = scope.opsets.get(domain, 0)
        schema = schema_for(node.op_type, opset, domain)
        version = f"{node.op_type}-{schema.since_version}" if schema else node.op_type
        where = f"node {node.name!r} ({version}, opset {opset})"
        try:
            attrs = self._node_attrs(node, scope, where)
            if node.op_type == "Constant" and domain == "":
                self._constant(node, attrs, scope, where)
                return
            kiln_op = KILN_OPS.get(node.op_type) if domain == KILN_DOMAIN else None
            if schema is None and kiln_op is None:
                raise UnsupportedOpError(f"{where}: no such op in domain {domain or 'ai.onnx'!r}")
            inputs = [scope.lookup(name) if name else None for name in node.input]
            out_names = [scope.name_for(name) if name else None for name in node.output]
            condition = scope.builder.const_value(inputs[0]) if node.op_type == "If" else None
            if domain == ML_DOMAIN:
                ml_node = MlNode(node.op_type, node.name, opset, inputs, attrs, out_names, where)
                values = convert_ml(scope.builder, ml_node)
            elif kiln_op is not None:  # Kiln's own domain holds IR ops as they are
                fitted = fit_schema(kiln_op, node.op_type, attrs, f"node {node.name!r}")
                values = scope.builder.add(kiln_op, inputs, fitted, outputs=out_names,
                                           name=node.name)
            elif condition is not None and scope.builder.fold:
                branch = attrs["then_branch" if condition.any() else "else_branch"]
                values = self._inline_branch(branch, out_names, scope, node)
            else:
                assert schema is not None
                self._import_bodies(node, inputs, attrs, scope)
                form = Form(node.op_type, inputs, attrs, len(node.output))
                form = normalize(form, schema.since_version, _Emitter(self, scope, node))
                values = self.add_form(form, out_names, scope, node)
        except KilnError as error:
            raise _with_context(error, where) from error.__cause__
        for name, value in zip(node.output, values, strict=False):
            if name:
                scope.values[name] = value

    def _inline_branch(
        self, branch: GraphProto, out_names: list[str | None], scope: _Scope, node: NodeProto
    ) -> list[Value | None]:
        """An If whose condition is a constant becomes the branch it takes."""
        formals = [info.name for info in branch.output]
        inner = _Scope(
            scope.builder, scope.opsets, parent=scope, attr_bindings=scope.attr_bindings,
            out_names=_formal_names(formals, out_names),
        )
        self._import_contents(branch, inner)
        return _outputs_of(inner, formals, out_names, node)

    def add_form(
        self, form: Form, out_names: list[str | None], scope: _Scope, node: NodeProto
    ) -> list[Value | None]:
        """Add the normalized node, as its IR op or else as its ONNX function body."""
        op = defined_op_for(form.op_type)
        if op is None:
            return self._expand(form, out_names, scope, node)
        attrs = fit_schema(op, form.op_type, form.attrs, f"node {node.name!r}")
        return scope.builder.add(op, form.inputs, attrs, outputs=out_names, name=node.name)

    def _expand(
        self,
        form: Form,
        out_names: list[str | None],
        scope: _Scope,
        node: NodeProto,
    ) -> list[Value | None]:
        types = [None if v is None else v.type for v in form.inputs]
        call = helper.make_node(  # the normalized node, which context-dependent bodies read
            form.op_type,
            ["" if v is None else f"in{i}" for i, v in enumerate(form.inputs)],
            [f"out{i}" for i in range(len(out_names))],
            name=node.name,
            **{k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v
               for k, v in form.attrs.items()},
        )
        body = function_body(call, types, f"node {node.name!r}")
        bindings = {a.name: attr_value(a, f"function {body.name}") for a in body.attribute_proto}
        bindings.update(form.attrs)
        inner = _Scope(
            scope.builder,
            {**scope.opsets, **opset_map(body.opset_import)},
            attr_bindings=bindings,
            out_names=_formal_names(list(body.output), out_names),
        )
        for index, formal in enumerate(body.input):
            inner.values[formal] = form.inputs[index] if index < len(form.inputs) else None
        for inner_node in topological_order(list(body.node), inner.visible(), body.name):
            self.import_node(inner_node, inner)
        return _outputs_of(inner, list(body.output), out_names, node)

    def _node_attrs(self, node: NodeProto, scope: _Scope, where: str) -> dict[str, Any]:
        """Attributes as Python values (graphs left as protos), references resolved."""
        attrs: dict[str, Any] = {}
        for attr in node.attribute:
            if attr.ref_attr_name:
                bindings = scope.attr_bindings or {}
                if attr.ref_attr_name in bindings:
                    attrs[attr.name] = bindings[attr.ref_attr_name]
            elif attr.type == AttributeProto.GRAPH:
                attrs[attr.name] = attr.g
            else:
                attrs[attr.name] = attr_value(attr, where)
        return attrs

    def _import_bodies(
        self, node: NodeProto, inputs: list[Value | None], attrs: dict[str, Any], scope: _Scope
    ) -> None:
        """Replace graph attributes by imported subgraphs (their inputs typed from context)."""
        for name, value in attrs.items():
            if isinstance(value, GraphProto):
                body_scope = _Scope(
                    scope.builder.sub(value.name or f"{node.name}.{name}"), scope.opsets,
                    parent=scope, attr_bindings=scope.attr_bindings,
                )
                context = _body_context(node.op_type, inputs, attrs)
                attrs[name] = self.import_graph(value, body_scope, context)

    def _constant(
        self, node: NodeProto, attrs: dict[str, Any], scope: _Scope, where: str
    ) -> None:
        if "value" in attrs:
            data = np.asarray(attrs["value"])
        elif "sparse_value" in attrs:
            data = np.asarray(attrs["sparse_value"])
        elif "value_float" in attrs:
            data = np.array(attrs["value_float"], np.float32)
        elif "value_floats" in attrs:
            data = np.array(attrs["value_floats"], np.float32)
        elif "value_int" in attrs:
            data = np.array(attrs["value_int"], np.int64)
        elif "value_ints" in attrs:
            data = np.array(attrs["value_ints"], np.int64)
        elif "value_string" in attrs or "value_strings" in attrs:
            raise UnsupportedTypeError(f"{where}: string constants are not supported by Kiln")
        else:
            raise TypeInferenceError(f"{where}: Constant has no value attribute")
        name = node.output[0]
        scope.values[name] = scope.builder.constant(
            data, scope.name_for(name), node_name=node.name
        )


def _formal_names(formals: list[str], out_names: list[str | None]) -> dict[str, str]:
    """Body output name -> the calling node's output name (so the body defines it directly)."""
    return {f: n for f, n in zip(formals, out_names, strict=False) if n is not None}


def _outputs_of(
    inner: _Scope, formals: list[str], out_names: list[str | None], node: NodeProto
) -> list[Value | None]:
    """The calling node's outputs after an in-line body ran in ``inner``; a body output that
    the body did not define (an input or outer value passed through) gets an Identity."""
    results: list[Value | None] = []
    for formal, name in zip(formals, out_names, strict=False):
        value = inner.lookup(formal) if name is not None else None
        if value is not None and value.name != name:
            value = inner.builder.add1(Op.IDENTITY, [value], name=node.name, output=name)
        results.append(value)
    return results


def _with_context(error: KilnError, where: str) -> KilnError:
    """``error`` with the ONNX node (op version and opset) in front, once."""
    if getattr(error, "onnx_context", False):
        return error
    message = str(error)
    wrapped = type(error)(message if message.startswith(where) else f"{where}: {message}")
    wrapped.onnx_context = True  # type: ignore[attr-defined]
    return wrapped


def _body_context(
    op_type: str, inputs: list[Value | None], attrs: dict[str, Any]
) -> list[TensorType | None] | None:
    """Types of a Loop/Scan body's inputs implied by the node's inputs, used where the body
    leaves them undeclared. Loop-carried values keep only their rank: they may change shape
    from one iteration to the next."""
    if op_type == "Loop":
        carried = [
            None if v is None else TensorType(v.type.dtype, (UNKNOWN,) * v.type.rank)
            for v in inputs[2:]
        ]
        return [TensorType(DType.I64, ()), TensorType(DType.BOOL, ()), *carried]
    if op_type == "Scan":
        n_scan = int(attrs.get("num_scan_inputs", 0))
        n_state = len(inputs) - n_scan
        axes = list(attrs.get("scan_input_axes", [0] * n_scan))
        types: list[TensorType | None] = [None if v is None else v.type for v in inputs[:n_state]]
        for value, axis in zip(inputs[n_state:], axes, strict=False):
            if value is None:
                types.append(None)
                continue
            shape = list(value.type.shape)
            del shape[axis]
            types.append(TensorType(value.type.dtype, tuple(shape)))
        return types
    return None


def _declared(type_proto: TypeProto, what: str) -> tuple[int, tuple[Dim, ...] | None]:
    """Element type (0 when undeclared) and shape (None when undeclared) of a tensor type."""
    kind = type_proto.WhichOneof("value")
    if kind is None:
        return 0, None
    if kind != "tensor_type":
        raise UnsupportedTypeError(
            f"{what} has type {kind.removesuffix('_type')}; Kiln supports tensors only"
        )
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return tensor.elem_type, None
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(_symbolic_dim(dim.dim_param))
        else:
            dims.append(UNKNOWN)
    return tensor.elem_type, tuple(dims)


def _symbolic_dim(dim_param: str) -> Dim:
    """A dim_param as a symbolic dim: an expression such as ``2*s0`` (torch's dynamo export)
    becomes its polynomial, any other name an atom; never a static extent (a dim_param such as
    ``"3"`` is a name, not a size)."""
    # Words apart ("batch size") are one name, not a product or "batchsize".
    dim = None if re.search(r"\w\s+\w", dim_param) else symbolic.canonical(dim_param)
    return dim if isinstance(dim, str) else symbolic.atom_name(dim_param)


def _value_type(info: ValueInfoProto, hint: TensorType | None, what: str) -> TensorType:
    elem, shape = _declared(info.type, what)
    if elem == 0 and hint is None:
        raise TypeInferenceError(f"{what} declares no element type")
    dtype = dtype_of(elem, what) if elem else hint.dtype  # type: ignore[union-attr]
    if shape is None:
        if hint is None:
            raise TypeInferenceError(f"{what} declares no shape; Kiln needs at least its rank")
        shape = hint.shape
    return TensorType(dtype, shape)


def _check_declared(infos: Iterable[ValueInfoProto], scope: _Scope) -> None:
    """Raise where a declared type contradicts Kiln's inferred one (known parts only)."""
    for info in infos:
        value = scope.values.get(info.name)
        if value is None or info.type.WhichOneof("value") != "tensor_type":
            continue
        elem, shape = _declared(info.type, f"value {info.name!r}")
        inferred = value.type
        problem = elem != 0 and is_kiln_dtype(elem) and dtype_of(elem, "") != inferred.dtype
        if shape is not None:
            if len(shape) != inferred.rank:
                problem = True
            else:
                problem = problem or any(
                    isinstance(d, int) and isinstance(k, int) and d != k
                    for d, k in zip(shape, inferred.shape, strict=True)
                )
        if problem:
            shown = "" if shape is None else f"[{','.join(str(d) for d in shape)}]"
            declared_dtype = dtype_of(elem, "").value if is_kiln_dtype(elem) else "?"
            raise TypeInferenceError(
                f"value {info.name!r}: the model declares {declared_dtype}{shown} but Kiln "
                f"infers {inferred}"
            )
