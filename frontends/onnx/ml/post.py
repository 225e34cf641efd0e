"""Shared pieces of the ai.onnx.ml classifiers and regressors: score post-transforms, the
two-column expansion of binary scores, class labels, and small IR-building helpers.

The post-transforms follow onnxruntime's CPU kernels (the oracle Kiln's tests compare with),
which differ from the ONNX reference implementation in corners: SOFTMAX_ZERO sums only the
entries it exponentiated, PROBIT uses the Winitzki approximation of erf^-1, and a single score
column only ever takes PROBIT (``LOGISTIC`` and the softmaxes leave one column as it is).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType

from . import MlNode

POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")
# onnxruntime's ComputeSoftmaxZero treats |v| <= 1e-7 as a zero that is scaled, not exponentiated.
_SOFTMAX_ZERO_EPS = 1e-7
# Winitzki's constant a of the erf^-1 approximation and the pi onnxruntime's ErfInv uses.
_ERFINV_A = 0.147
_ERFINV_PI = 3.14159


def f32(builder: GraphBuilder, data: float | Sequence[float] | np.ndarray) -> Value:
    """A float32 constant."""
    return builder.constant(np.asarray(data, dtype=np.float32))


def i64(builder: GraphBuilder, data: int | Sequence[int] | np.ndarray) -> Value:
    """An int64 constant."""
    return builder.constant(np.asarray(data, dtype=np.int64))


def named(builder: GraphBuilder, value: Value, name: str | None) -> Value:
    """``value`` under the ONNX output name ``name`` (unchanged when the output is unused)."""
    if name is None:
        return value
    return builder.add1(Op.IDENTITY, [value], output=name)


def required_input(node: MlNode, index: int = 0) -> Value:
    """Input ``index`` of ``node``, which must be present."""
    x = node.inputs[index] if index < len(node.inputs) else None
    if x is None:
        raise node.fail(f"input {index} is required")
    return x


def float_input(builder: GraphBuilder, node: MlNode, index: int = 0) -> Value:
    """Input ``index`` as float32, a 1-D input taken as one row (as onnxruntime does)."""
    x = required_input(node, index)
    if x.type.dtype is not DType.F32:
        if x.type.dtype not in (DType.F64, DType.I32, DType.I64):
            raise node.fail(f"input of type {x.type.dtype.value} is not supported "
                            "(float, double, int32 or int64)")
        x = builder.add1(Op.CAST, [x], {"to": DType.F32})
    if x.type.rank == 1:
        x = builder.add1(Op.UNSQUEEZE, [x, i64(builder, [0])])
    if x.type.rank != 2:
        raise node.fail(f"input must be 1-D or 2-D, got {x.type}")
    return x


def check_kind(kind: str, node: MlNode) -> str:
    """``kind`` when it names a post_transform, else a clear error."""
    if kind not in POST_TRANSFORMS:
        raise node.fail(f"unknown post_transform {kind!r} (one of {', '.join(POST_TRANSFORMS)})")
    return kind


def post_transform(builder: GraphBuilder, scores: Value, kind: str, node: MlNode) -> Value:
    """``scores`` [N, C] (float32) after the post_transform ``kind`` along the last axis. A
    single column (C == 1) takes only PROBIT, as in onnxruntime; for the two-column form of
    binary classifiers use :func:`binary_scores`."""
    check_kind(kind, node)
    width = scores.type.shape[-1]
    if kind == "NONE" or (width == 1 and kind != "PROBIT"):
        return scores
    if kind == "LOGISTIC":
        return builder.add1(Op.SIGMOID, [scores])
    if kind == "SOFTMAX":
        return builder.add1(Op.SOFTMAX, [scores], {"axis": -1})
    if kind == "SOFTMAX_ZERO":
        return _softmax_zero(builder, scores)
    return probit(builder, scores)


def _softmax_zero(builder: GraphBuilder, scores: Value) -> Value:
    """Softmax where the (near-)zero entries are scaled by exp(-max) instead of exponentiated
    and left out of the sum (onnxruntime's ComputeSoftmaxZero)."""
    axes = i64(builder, [-1])
    v_max = builder.add1(Op.REDUCE_MAX, [scores, axes], {"keepdims": 1})
    magnitude = builder.add1(Op.ABS, [scores])
    nonzero = builder.add1(Op.GREATER, [magnitude, f32(builder, _SOFTMAX_ZERO_EPS)])
    exp = builder.add1(Op.EXP, [builder.add1(Op.SUB, [scores, v_max])])
    scale = builder.add1(Op.EXP, [builder.add1(Op.NEG, [v_max])])
    scaled = builder.add1(Op.MUL, [scores, scale])
    counted = builder.add1(Op.WHERE, [nonzero, exp, f32(builder, 0.0)])
    total = builder.add1(Op.REDUCE_SUM, [counted, axes], {"keepdims": 1})
    values = builder.add1(Op.WHERE, [nonzero, exp, scaled])
    return builder.add1(Op.DIV, [values, total])


def probit(builder: GraphBuilder, scores: Value) -> Value:
    """sqrt(2) * erfinv(2 p - 1) with onnxruntime's approximation of erfinv."""
    x = builder.add1(Op.SUB, [builder.add1(Op.MUL, [scores, f32(builder, 2.0)]),
                              f32(builder, 1.0)])
    sign = builder.add1(Op.WHERE, [builder.add1(Op.LESS, [x, f32(builder, 0.0)]),
                                   f32(builder, -1.0), f32(builder, 1.0)])
    one_minus = builder.add1(Op.SUB, [f32(builder, 1.0), x])
    one_plus = builder.add1(Op.ADD, [f32(builder, 1.0), x])
    log = builder.add1(Op.LOG, [builder.add1(Op.MUL, [one_minus, one_plus])])
    half_log = builder.add1(Op.MUL, [log, f32(builder, 0.5)])
    v = builder.add1(Op.ADD, [f32(builder, 2.0 / (_ERFINV_PI * _ERFINV_A)), half_log])
    v2 = builder.add1(Op.MUL, [log, f32(builder, 1.0 / _ERFINV_A)])
    root = builder.add1(Op.SQRT, [builder.add1(Op.SUB, [builder.add1(Op.MUL, [v, v]), v2])])
    v3 = builder.add1(Op.SUB, [root, v])
    erfinv = builder.add1(Op.MUL, [sign, builder.add1(Op.SQRT, [v3])])
    return builder.add1(Op.MUL, [erfinv, f32(builder, float(np.float32(np.sqrt(2.0))))])


def binary_scores(
    builder: GraphBuilder, score: Value, kind: str, mode: str, node: MlNode
) -> Value:
    """The [N, 2] scores of a binary classifier that computed one score column [N, 1]
    (onnxruntime's add_second_class): ``mode`` "complement" writes [1 - p, p] with p the
    logistic of s under LOGISTIC and s itself otherwise; "negate" writes [-s, s], or
    [logistic(-s), logistic(s)] under LOGISTIC."""
    check_kind(kind, node)
    if kind == "PROBIT":
        # onnxruntime fills only the first column here, leaving the second unset.
        raise node.fail("post_transform PROBIT with a single binary score column is not "
                        "supported (onnxruntime leaves the second score unset)")
    if mode == "complement":
        second = builder.add1(Op.SIGMOID, [score]) if kind == "LOGISTIC" else score
        first = builder.add1(Op.SUB, [f32(builder, 1.0), second])
    elif kind == "LOGISTIC":
        first = builder.add1(Op.SIGMOID, [builder.add1(Op.NEG, [score])])
        second = builder.add1(Op.SIGMOID, [score])
    else:
        first = builder.add1(Op.NEG, [score])
        second = score
    return builder.add1(Op.CONCAT, [first, second], {"axis": 1})


def float_attr(node: MlNode, name: str) -> np.ndarray:
    """Attribute ``name`` of ``node`` (a list of floats, empty when absent) as float32."""
    return np.asarray(node.attrs.get(name, ()), dtype=np.float32)


def class_labels(node: MlNode) -> np.ndarray:
    """The integer class labels of a classifier node (a clear error for string labels)."""
    if node.attrs.get("classlabels_strings"):
        raise node.fail("string class labels (classlabels_strings) are not supported: Kiln "
                        "has no string type and supports integer class labels "
                        "(classlabels_ints); train the classifier on integer labels")
    return np.asarray(node.attrs.get("classlabels_ints", ()), dtype=np.int64)


def argmax_labels(builder: GraphBuilder, scores: Value, labels: np.ndarray) -> Value:
    """labels[argmax(scores, axis=1)] ([N] int64; the first maximum wins, as in onnxruntime)."""
    index = builder.add1(Op.ARGMAX, [scores], {"axis": 1, "keepdims": 0})
    return builder.add1(Op.GATHER, [i64(builder, labels), index], {"axis": 0})


def pick(builder: GraphBuilder, condition: Value, if_true: Value | int,
         if_false: Value | int) -> Value:
    """Where(condition, a, b) for int64 labels, where a and b may be Python ints."""
    a = i64(builder, if_true) if isinstance(if_true, int) else if_true
    b = i64(builder, if_false) if isinstance(if_false, int) else if_false
    return builder.add1(Op.WHERE, [condition, a, b])
