"""The Python DSL frontend: trace functions over symbolic tensors into Kiln graph IR.

    from kiln.frontends import dsl

    @dsl.model
    def mlp(x: dsl.f32["batch", 784]):
        return dsl.nn.relu(x @ w1 + b1) @ w2

    mlp.graph                                   # the kiln Graph
    mlp.build(input_shapes={"x": (8, 784)})     # compiled Executable

Specs (``spec``), tensors and their operators (``tensor``; indexing in ``indexing``), tracing
(``tracing``), numpy-like functions (``ops``, re-exported here), neural-network functions
(``dsl.nn``), torch-style layers holding numpy weights (``layers``, re-exported), custom
elementwise ops compiled by numba (``custom.elementwise``), loading models from a Python file
(``loading``) and trace-time errors (``errors``).
"""

from __future__ import annotations

from . import layers, nn
from .custom import elementwise
from .errors import DSLError
from .layers import (
    GELU,
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool2d,
    Module,
    MultiHeadAttention,
    ReLU,
    Sequential,
    TransformerBlock,
)
from .ops import (
    abs,
    argmax,
    argmin,
    cast,
    ceil,
    clip,
    concat,
    constant,
    cos,
    erf,
    exp,
    floor,
    gather,
    log,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    ones,
    pad,
    prod,
    reshape,
    sin,
    split,
    sqrt,
    stack,
    sum,
    tanh,
    transpose,
    where,
    zeros,
)
from .spec import DTypeSpec, TensorSpec, bool_, f16, f32, f64, i32, i64
from .tensor import Tensor
from .tracing import Model, model, trace

__all__ = [
    "GELU", "AvgPool2d", "BatchNorm2d", "Conv2d", "Dropout", "Embedding", "Flatten", "LayerNorm",
    "Linear", "MaxPool2d", "Module", "MultiHeadAttention", "ReLU", "Sequential",
    "TransformerBlock", "elementwise", "layers",
    "DSLError", "DTypeSpec", "Model", "Tensor", "TensorSpec", "abs", "argmax", "argmin",
    "bool_", "cast", "ceil", "clip", "concat", "constant", "cos", "erf", "exp", "f16", "f32",
    "f64", "floor", "gather", "i32", "i64", "log", "matmul", "max", "maximum", "mean", "min",
    "minimum", "model", "nn", "ones", "pad", "prod", "reshape", "sin", "split", "sqrt", "stack",
    "sum", "tanh", "trace", "transpose", "where", "zeros",
]
