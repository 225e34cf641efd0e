"""Tables from ONNX names to Kiln's: op types to ``Op`` members, tensor element types to ``DType``.

ONNX op types map onto the ``Op`` whose value is the op type in snake case; matching ignores
case and underscores, so ``IsNaN`` finds ``is_nan`` and ``TopK`` finds ``topk``. Kiln ops that
ONNX lacks but a model may carry (a user's custom elementwise function) live in Kiln's own
domain, ``KILN_DOMAIN``, under the op types of ``KILN_OPS``.
"""

from __future__ import annotations

from onnx import TensorProto

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.schema import defined_ops
from kiln.compiler.ir.types import DType


class UnsupportedTypeError(KilnError):
    """A tensor of the model has an element type Kiln has no ``DType`` for (string, float8...)."""


_OPS_BY_KEY = {op.value.replace("_", ""): op for op in Op}

KILN_DOMAIN = "ai.kiln"
KILN_DOMAIN_VERSION = 1
# The IR's tree_ensemble extends ai.onnx.ml's TreeEnsemble-5 (several votes per leaf, base
# values: what the older TreeEnsembleClassifier/Regressor carry), so it is written in Kiln's
# domain, which keeps every attribute.
KILN_OPS: dict[str, Op] = {"CustomElementwise": Op.CUSTOM_ELEMENTWISE,
                           "TreeEnsemble": Op.TREE_ENSEMBLE}


def op_for(op_type: str) -> Op | None:
    """The ``Op`` an ONNX op type of the default domain maps to, if Kiln has one at all."""
    return _OPS_BY_KEY.get(op_type.lower())


def defined_op_for(op_type: str) -> Op | None:
    """Like :func:`op_for`, but only when the IR defines that op (it has a type rule)."""
    op = op_for(op_type)
    return op if op is not None and op in defined_ops() else None


ONNX_TO_DTYPE: dict[int, DType] = {
    TensorProto.FLOAT: DType.F32,
    TensorProto.DOUBLE: DType.F64,
    TensorProto.FLOAT16: DType.F16,
    TensorProto.BFLOAT16: DType.BF16,
    TensorProto.INT8: DType.I8,
    TensorProto.INT16: DType.I16,
    TensorProto.INT32: DType.I32,
    TensorProto.INT64: DType.I64,
    TensorProto.UINT8: DType.U8,
    TensorProto.UINT16: DType.U16,
    TensorProto.UINT32: DType.U32,
    TensorProto.UINT64: DType.U64,
    TensorProto.BOOL: DType.BOOL,
}
DTYPE_TO_ONNX: dict[DType, int] = {v: k for k, v in ONNX_TO_DTYPE.items()}


def onnx_type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"unknown element type {elem_type}"


def is_kiln_dtype(elem_type: int) -> bool:
    return elem_type in ONNX_TO_DTYPE


def dtype_of(elem_type: int, what: str) -> DType:
    """The ``DType`` of an ONNX element type; ``what`` names the tensor for the error."""
    found = ONNX_TO_DTYPE.get(elem_type)
    if found is None:
        raise UnsupportedTypeError(
            f"{what} has element type {onnx_type_name(elem_type)}, which Kiln does not support "
            f"(supported: {', '.join(onnx_type_name(t) for t in ONNX_TO_DTYPE)})"
        )
    return found
