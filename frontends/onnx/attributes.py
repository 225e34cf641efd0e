"""ONNX attributes to Kiln attribute values.

Conversion runs in two steps. :func:`attr_value` turns an ``AttributeProto`` into a plain Python
value (ints, floats, str, tuples, numpy arrays; graphs are imported by the caller). After opset
normalization, :func:`fit_schema` fits those values to the IR op's schema: INT attributes that
the schema holds as ``AttrKind.DTYPE`` become ``DType`` members, and attributes the schema lacks
are refused unless they are documented no-ops of old opsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from onnx import AttributeProto, SparseTensorProto, TensorProto, numpy_helper

from kiln.compiler.errors import ModelFormatError, TypeInferenceError
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.schema import AttrKind, op_def

from .mapping import UnsupportedTypeError, dtype_of, is_kiln_dtype, onnx_type_name

# Attributes that older opsets defined and that change nothing for inference; dropped silently.
# consumed_inputs: legacy in-place hints; is_test: inference is all Kiln does.
NO_OP_ATTRS = frozenset({"consumed_inputs", "is_test"})


def tensor_to_array(tensor: TensorProto, what: str) -> np.ndarray:
    """A TensorProto's data as numpy; unsupported element types are named in the error."""
    if not is_kiln_dtype(tensor.data_type):
        raise UnsupportedTypeError(
            f"{what} has element type {onnx_type_name(tensor.data_type)}, which Kiln does not "
            "support"
        )
    try:
        return np.array(numpy_helper.to_array(tensor))
    except Exception as error:  # a malformed tensor payload (wrong byte count...)
        raise ModelFormatError(f"{what}: cannot decode tensor data: {error}") from None


def sparse_to_array(sparse: SparseTensorProto, what: str) -> np.ndarray:
    """A sparse tensor made dense (indices either [nnz] linear or [nnz, rank] coordinates)."""
    values = tensor_to_array(sparse.values, what)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    shape = tuple(int(d) for d in sparse.dims)
    dense = np.zeros(shape, dtype=values.dtype)
    if indices.ndim == 2:
        dense[tuple(indices.T)] = values
    else:
        dense.reshape(-1)[indices] = values
    return dense


def attr_value(attr: AttributeProto, what: str) -> Any:
    """The Python value of a non-graph attribute."""
    kind = attr.type
    if kind == AttributeProto.INT:
        return int(attr.i)
    if kind == AttributeProto.FLOAT:
        return float(attr.f)
    if kind == AttributeProto.STRING:
        return attr.s.decode("utf-8")
    if kind == AttributeProto.INTS:
        return tuple(int(x) for x in attr.ints)
    if kind == AttributeProto.FLOATS:
        return tuple(float(x) for x in attr.floats)
    if kind == AttributeProto.STRINGS:
        return tuple(s.decode("utf-8") for s in attr.strings)
    if kind == AttributeProto.TENSOR:
        return tensor_to_array(attr.t, f"{what} attribute {attr.name!r}")
    if kind == AttributeProto.SPARSE_TENSOR:
        return sparse_to_array(attr.sparse_tensor, f"{what} attribute {attr.name!r}")
    raise ModelFormatError(
        f"{what}: attribute {attr.name!r} of kind {AttributeProto.AttributeType.Name(kind)} is "
        "not supported by Kiln"
    )


def fit_schema(op: Op, op_type: str, attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``attrs`` as the IR op's schema wants them (see the module docstring)."""
    specs = op_def(op).attrs
    fitted: dict[str, Any] = {}
    for name, value in attrs.items():
        spec = specs.get(name)
        if spec is None:
            if name in NO_OP_ATTRS:
                continue
            raise TypeInferenceError(
                f"{where}: attribute {name!r} of {op_type} is not supported by Kiln's "
                f"{op.value} op"
            )
        if spec.kind is AttrKind.DTYPE and isinstance(value, int):
            value = dtype_of(value, f"{where}: attribute {name!r}")
        fitted[name] = value
    return fitted
