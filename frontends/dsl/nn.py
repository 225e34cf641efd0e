"""Neural-network functions of the DSL (``dsl.nn``), with torch.nn.functional's semantics.

Layouts are torch's: NCHW activations, OIHW convolution weights, ``linear`` weights
``[out, in]``. Weights given as numpy arrays become constants; tensors stay tensors. Each
function maps onto one IR op where the IR has it (conv, pools, batch/layer normalization,
softmax, gelu...). ``scaled_dot_product_attention`` is built from MatMul, Mul, Add/Where,
Softmax and MatMul rather than the IR's Attention op, which takes only 3-D or 4-D operands
(torch's takes any ``[..., L, E]``) and which older ONNX runtimes lack; the fusion pass then
sees ordinary ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import Dim, DType

from .errors import dsl_error
from .ops import as_tensor, gather, where
from .tensor import (
    Tensor,
    check_broadcast,
    check_same_dtype,
    describe,
    lift,
    matmul,
    normalize_axes,
    unary,
)


def _weight(x: Tensor, value: Any, what: str) -> Tensor:
    """A weight operand of ``x``'s trace with ``x``'s element type."""
    found = lift(x.trace, value, x.dtype, what)
    check_same_dtype(what, x, found)
    return found


def _fits(a: Dim, b: Dim) -> bool:
    """Dims that may be equal (symbols are bound later)."""
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


def _ints(value: int | Sequence[int], n: int, name: str, what: str) -> tuple[int, ...]:
    """An int or n ints, as n non-negative ints (torch's int-or-pair arguments)."""
    found = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(found) != n or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in found):
        raise dsl_error(what, f"{name} must be a non-negative int or {n} of them, got {value!r}")
    return tuple(int(v) for v in found)


# -------------------------------------------------------------------------- activations

def relu(x: Any) -> Tensor:
    return unary(Op.RELU, as_tensor(x, "relu"), "relu")


def leaky_relu(x: Any, alpha: float = 0.01) -> Tensor:
    return unary(Op.LEAKY_RELU, as_tensor(x, "leaky_relu"), "leaky_relu", {"alpha": alpha})


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """GELU, exact (erf) or with torch's tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise dsl_error(f"gelu({describe(x)}, approximate={approximate!r})",
                        "approximate must be 'none' or 'tanh'")
    return unary(Op.GELU, as_tensor(x, "gelu"), "gelu", {"approximate": approximate})


def sigmoid(x: Any) -> Tensor:
    return unary(Op.SIGMOID, as_tensor(x, "sigmoid"), "sigmoid")


def tanh(x: Any) -> Tensor:
    return unary(Op.TANH, as_tensor(x, "tanh"), "tanh")


def silu(x: Any) -> Tensor:
    """x * sigmoid(x) (two ops the fusion pass joins; ONNX has no SiLU before opset 24)."""
    tensor = as_tensor(x, "silu")
    return tensor * sigmoid(tensor)


def softplus(x: Any) -> Tensor:
    return unary(Op.SOFTPLUS, as_tensor(x, "softplus"), "softplus")


def elu(x: Any, alpha: float = 1.0) -> Tensor:
    return unary(Op.ELU, as_tensor(x, "elu"), "elu", {"alpha": alpha})


def hardswish(x: Any) -> Tensor:
    return unary(Op.HARD_SWISH, as_tensor(x, "hardswish"), "hardswish")


def _along_axis(op: Op, name: str, x: Any, axis: int) -> Tensor:
    tensor = as_tensor(x, name)
    what = f"{name}({tensor.type}, axis={axis})"
    normalize_axes([axis], tensor.ndim, what)
    return tensor.trace.emit1(op, [tensor], {"axis": axis}, what=what)


def softmax(x: Any, axis: int = -1) -> Tensor:
    return _along_axis(Op.SOFTMAX, "softmax", x, axis)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    return _along_axis(Op.LOG_SOFTMAX, "log_softmax", x, axis)


def dropout(x: Any, p: float = 0.5) -> Tensor:
    """Identity: models are traced for inference (``p`` is accepted for torch's signature)."""
    if not 0 <= p < 1:
        raise dsl_error(f"dropout({describe(x)}, p={p})", "p must be in [0, 1)")
    return as_tensor(x, "dropout")


# ------------------------------------------------------------------------ linear, conv

def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """x @ weight.T + bias with ``weight`` [out, in] (torch's layout)."""
    tensor = as_tensor(x, "linear")
    what = f"linear({tensor.type}, {describe(weight)})"
    if np.ndim(weight) != 2 or tensor.ndim == 0:
        raise dsl_error(what, "needs an input with a feature axis and a weight [out_features, "
                              "in_features]")
    # A numpy weight is transposed once here rather than by a node at every run.
    transposed = (_weight(tensor, np.ascontiguousarray(weight.T), what)
                  if isinstance(weight, np.ndarray) else _weight(tensor, weight, what).transpose())
    features, out_features = transposed.shape
    if not _fits(tensor.shape[-1], features):
        raise dsl_error(what, f"the input has {tensor.shape[-1]} features, the weight "
                              f"[{out_features},{features}] expects {features}")
    result = matmul(tensor, transposed)
    if bias is None:
        return result
    b = _weight(tensor, bias, what)
    if b.ndim != 1 or not _fits(b.shape[0], out_features):
        raise dsl_error(what, f"the bias must be a vector of {out_features} features")
    return result + b


def conv2d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """torch.nn.functional.conv2d: NCHW input, OIHW weight; padding an int, a pair,
    'valid' or 'same' (stride 1; any extra padding goes after, as torch does)."""
    tensor = as_tensor(x, "conv2d")
    what = f"conv2d({tensor.type}, {describe(weight)})"
    w = _weight(tensor, weight, what)
    if tensor.ndim != 4 or w.ndim != 4 or not all(isinstance(d, int) for d in w.shape):
        raise dsl_error(what, "needs an [N, C, H, W] input and a static [O, C/groups, kH, kW] "
                              "weight")
    channels, out_channels, per_group = tensor.shape[1], w.shape[0], w.shape[1]
    if groups < 1 or out_channels % groups:
        raise dsl_error(what, f"{out_channels} output channels do not split into {groups} groups")
    if isinstance(channels, int) and channels != per_group * groups:
        raise dsl_error(what, f"the input has {channels} channels; the weight expects "
                              f"{per_group} x groups {groups} = {per_group * groups}")
    strides = _ints(stride, 2, "stride", what)
    dilations = _ints(dilation, 2, "dilation", what)
    kernel = tuple(int(k) for k in w.shape[2:])
    if padding == "same":
        if strides != (1, 1):
            raise dsl_error(what, "padding='same' needs stride 1")
        total = [d * (k - 1) for d, k in zip(dilations, kernel, strict=True)]
        pads = (*(t // 2 for t in total), *(t - t // 2 for t in total))
    else:
        pairs = (0, 0) if padding == "valid" else _ints(padding, 2, "padding", what)
        pads = (*pairs, *pairs)
    inputs = [tensor, w]
    if bias is not None:
        b = _weight(tensor, bias, what)
        if b.shape != (out_channels,):
            raise dsl_error(what, f"the bias must be a vector of {out_channels} channels, got "
                                  f"{b.type}")
        inputs.append(b)
    return tensor.trace.emit1(Op.CONV, inputs, {
        "kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
        "group": groups}, what=what)


# -------------------------------------------------------------------------------- pools

def _pool(op: Op, name: str, x: Any, kernel_size: Any, stride: Any, padding: Any,
          attrs: dict[str, Any]) -> Tensor:
    tensor = as_tensor(x, name)
    what = f"{name}({tensor.type}, kernel_size={kernel_size})"
    if tensor.ndim != 4:
        raise dsl_error(what, "needs an [N, C, H, W] input")
    kernel = _ints(kernel_size, 2, "kernel_size", what)
    strides = kernel if stride is None else _ints(stride, 2, "stride", what)
    pairs = _ints(padding, 2, "padding", what)
    if any(p > k // 2 for p, k in zip(pairs, kernel, strict=True)):
        raise dsl_error(what, f"padding {pairs} exceeds half the kernel {kernel}")
    return tensor.trace.emit1(op, [tensor], {"kernel_shape": kernel, "strides": strides,
                                             "pads": (*pairs, *pairs), **attrs}, what=what)


def max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Max over windows (padding never wins, as torch's -inf padding)."""
    return _pool(Op.MAX_POOL, "max_pool2d", x, kernel_size, stride, padding, {})


def avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True) -> Tensor:
    return _pool(Op.AVERAGE_POOL, "avg_pool2d", x, kernel_size, stride, padding,
                 {"count_include_pad": int(count_include_pad)})


def global_avg_pool2d(x: Any) -> Tensor:
    """Mean over H and W, keeping them as 1: [N, C, 1, 1]."""
    tensor = as_tensor(x, "global_avg_pool2d")
    what = f"global_avg_pool2d({tensor.type})"
    if tensor.ndim != 4:
        raise dsl_error(what, "needs an [N, C, H, W] input")
    return tensor.trace.emit1(Op.GLOBAL_AVERAGE_POOL, [tensor], what=what)


# ------------------------------------------------------------------------ normalization

def _filled_like(x: Tensor, shape: tuple[int, ...], fill: float) -> Tensor:
    return x.trace.constant(np.full(shape, fill, dtype=x.dtype.numpy))


def batch_norm(x: Any, mean: Any, var: Any, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    """Inference batch normalization over axis 1 with the given statistics."""
    tensor = as_tensor(x, "batch_norm")
    what = f"batch_norm({tensor.type}, {describe(mean)}, {describe(var)})"
    if tensor.ndim < 2 or not isinstance(tensor.shape[1], int):
        raise dsl_error(what, "needs an input [N, C, ...] with a static channel count")
    channels = tensor.shape[1]
    stats = [_weight(tensor, v, what) if v is not None else _filled_like(tensor, (channels,), f)
             for v, f in ((weight, 1.0), (bias, 0.0), (mean, 0.0), (var, 1.0))]
    for s in stats:
        if s.shape != (channels,):
            raise dsl_error(what, f"statistics must be vectors of {channels} channels, got "
                                  f"{s.type}")
    return tensor.trace.emit1(Op.BATCH_NORMALIZATION, [tensor, *stats], {"epsilon": eps},
                              what=what)


def layer_norm(x: Any, normalized_shape: int | Sequence[int], weight: Any = None,
               bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Normalization over the trailing ``normalized_shape`` axes, then scale and shift."""
    tensor = as_tensor(x, "layer_norm")
    shape = _ints(normalized_shape, 1, "normalized_shape", "layer_norm") if isinstance(
        normalized_shape, (int, np.integer)) else tuple(int(d) for d in normalized_shape)
    what = f"layer_norm({tensor.type}, {list(shape)})"
    if not shape or len(shape) > tensor.ndim or tensor.shape[-len(shape):] != shape:
        raise dsl_error(what, f"the trailing dims of the input must be {list(shape)}")
    scale = _filled_like(tensor, shape, 1.0) if weight is None else _weight(tensor, weight, what)
    shift = None if bias is None else _weight(tensor, bias, what)
    for param in (scale, shift):
        if param is not None and param.shape != shape:
            raise dsl_error(what, f"weight and bias must have the shape {list(shape)}, got "
                                  f"{param.type}")
    return tensor.trace.emit1(Op.LAYER_NORMALIZATION, [tensor, scale, shift],
                              {"axis": -len(shape), "epsilon": eps}, what=what)


def embedding(ids: Any, table: Any) -> Tensor:
    """Rows of ``table`` [num, dim] picked by the integer ``ids`` (any shape)."""
    if not isinstance(ids, Tensor) and not isinstance(table, Tensor):
        table = as_tensor(table, "embedding")
    anchor = ids if isinstance(ids, Tensor) else table
    what = f"embedding({describe(ids)}, {describe(table)})"
    rows = lift(anchor.trace, table, None, what)
    if rows.ndim != 2:
        raise dsl_error(what, f"the table must be [num_embeddings, dim], got {rows.type}")
    return gather(rows, ids, 0)


# ---------------------------------------------------------------------------- attention

def scaled_dot_product_attention(q: Any, k: Any, v: Any, mask: Any = None,
                                 causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v over [..., L, E] / [..., S, E] / [..., S, Ev]:
    a bool mask keeps the True positions, a float mask is added; ``causal`` keeps the lower
    triangle (upper-left aligned, as torch); ``scale`` defaults to 1/sqrt(E)."""
    query = as_tensor(q, "scaled_dot_product_attention")
    key, value = (_weight(query, t, "scaled_dot_product_attention") for t in (k, v))
    what = f"scaled_dot_product_attention({query.type}, {key.type}, {value.type})"
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise dsl_error(what, "q, k and v must have rank >= 2")
    depth, length = query.shape[-1], key.shape[-2]
    if not _fits(key.shape[-1], depth) or not _fits(value.shape[-2], length):
        raise dsl_error(what, "q, k must share the embedding dim E and k, v the length S")
    check_broadcast(what, query.shape[:-2], key.shape[:-2], value.shape[:-2])
    if scale is None and not isinstance(depth, int):
        raise dsl_error(what, "the default scale needs a static embedding dim; pass scale=")
    if causal and mask is not None:
        raise dsl_error(what, "give a mask or causal=True, not both (as torch)")
    factor = 1.0 / math.sqrt(depth) if scale is None else float(scale)
    trace = query.trace
    scores = matmul(query, key.transpose(*range(key.ndim - 2), key.ndim - 1, key.ndim - 2))
    scores = scores * factor
    minus_inf = np.full(1, -np.inf, dtype=query.dtype.numpy)
    if causal:
        # -inf strictly above the diagonal of a [L, S] block; built from the scores' shape so
        # symbolic lengths work (and folded to a constant when they are static).
        extent = trace.emit1(Op.SHAPE, [scores], {"start": -2}, what=what)
        filled = trace.emit1(Op.CONSTANT_OF_SHAPE, [extent], {"value": minus_inf}, what=what)
        upper = trace.emit1(Op.TRILU, [filled, trace.constant(np.array(1, np.int64))], {"upper": 1},
                            what=what)
        scores = scores + upper
    elif mask is not None:
        keep = lift(trace, mask, None, what)
        check_broadcast(what, keep.shape, scores.shape)
        if keep.dtype is DType.BOOL:
            scores = where(keep, scores, trace.constant(minus_inf.reshape(())))
        else:
            scores = scores + _weight(query, keep, what)
    return matmul(softmax(scores, -1), value)
