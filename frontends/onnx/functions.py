"""Function bodies of ONNX ops that the IR does not define.

ONNX defines some ops as functions of simpler ones (a static body, or a body generated from the
node and its input types). When the IR has no op of that name, the importer expands the node
into the body of the op's NEWEST version: nodes reach this point already normalized to the
newest form, and each body names the opset its own nodes use.
"""

from __future__ import annotations

from typing import Any

import onnx.defs
from onnx import FunctionProto, NodeProto, TypeProto, helper

from kiln.compiler.errors import UnsupportedOpError
from kiln.compiler.ir.types import UNKNOWN, TensorType

from .mapping import DTYPE_TO_ONNX


def schema_for(op_type: str, version: int, domain: str = "") -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(op_type, version, domain)
    except onnx.defs.SchemaError:
        return None


LATEST = onnx.defs.onnx_opset_version()
# onnx's type stubs omit OpSchema's function accessors (has_function...), hence ``Any`` below.
Schema = Any


def type_proto(type_: TensorType | None) -> TypeProto:
    if type_ is None:  # an absent optional input
        return TypeProto()
    dims = [d if isinstance(d, int) else (None if d == UNKNOWN else d) for d in type_.shape]
    return helper.make_tensor_type_proto(DTYPE_TO_ONNX[type_.dtype], dims)


def newest_schema(op_type: str) -> Schema | None:
    return schema_for(op_type, LATEST)


def static_body(schema: Schema) -> FunctionProto:
    """The op's newest context-independent body (empty when it has none)."""
    body = FunctionProto()
    if schema.has_function and schema.function_opset_versions:
        version = max(schema.function_opset_versions)
        body.ParseFromString(schema.get_function_with_opset_version(version))
    return body


def function_body(
    node: NodeProto, input_types: list[TensorType | None], where: str
) -> FunctionProto:
    """The newest body of ``node``'s op; UnsupportedOpError when ONNX defines none."""
    schema = newest_schema(node.op_type)
    body = static_body(schema) if schema is not None else FunctionProto()
    versions = list(schema.context_dependent_function_opset_versions) if schema else []
    if not body.node and schema is not None and schema.has_context_dependent_function and versions:
        body.ParseFromString(
            schema.get_context_dependent_function_with_opset_version(
                max(versions),
                node.SerializeToString(),
                [type_proto(t).SerializeToString() for t in input_types],
            )
        )
    if not body.node:
        raise UnsupportedOpError(
            f"{where}: Kiln has no {node.op_type} op and ONNX defines no function body for it"
        )
    return body
