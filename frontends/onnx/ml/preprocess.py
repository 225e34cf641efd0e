"""ai.onnx.ml converters of the preprocessing ops: Scaler, Normalizer, Imputer, Binarizer,
OneHotEncoder, ArrayFeatureExtractor, LabelEncoder (numeric keys and values), FeatureVectorizer,
and ZipMap, which Kiln rejects with the documented way round it.

Semantics follow onnxruntime's CPU kernels (the oracle of Kiln's tests) where the ONNX
reference differs: Normalizer MAX divides by the row maximum (not of magnitudes) and leaves a
row whose norm is 0 unchanged. Kiln has no string type, so string keys, values or categories
are refused with a clear error.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType

from . import MlNode, converter
from .post import f32, float_input, i64, named, required_input

ZIPMAP_HINT = (
    "ZipMap makes a sequence of maps, which Kiln does not support; convert the classifier "
    "with skl2onnx's zipmap option off: to_onnx(model, X, options={id(model): {'zipmap': "
    "False}}) (or options={type(model): {'zipmap': False}}), which outputs the "
    "probabilities as a [N, classes] float tensor"
)


def _no_strings(node: MlNode, *names: str) -> None:
    for name in names:
        if node.attrs.get(name):
            raise node.fail(f"string attribute {name!r} is not supported: Kiln has no string "
                            "type (use numeric keys, values and categories)")


def _per_feature(node: MlNode, name: str, values: np.ndarray, x: Value) -> np.ndarray:
    """An attribute holding one value for all features or one per feature."""
    features = x.type.shape[-1] if x.type.rank else 1
    if values.size != 1 and isinstance(features, int) and values.size != features:
        raise node.fail(f"{name} holds {values.size} values for {features} features")
    return values


@converter("Scaler")
def scaler(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    x = required_input(node)
    if not x.type.dtype.is_float or x.type.dtype is DType.F16:
        x = builder.add1(Op.CAST, [x], {"to": DType.F32})
    dtype = x.type.dtype.numpy
    offset = _per_feature(node, "offset", np.asarray(node.attrs.get("offset", (0.0,)), dtype), x)
    scale = _per_feature(node, "scale", np.asarray(node.attrs.get("scale", (1.0,)), dtype), x)
    y = builder.add1(Op.MUL, [builder.add1(Op.SUB, [x, builder.constant(offset)]),
                              builder.constant(scale)])
    if y.type.dtype is not DType.F32:
        y = builder.add1(Op.CAST, [y], {"to": DType.F32})
    return [named(builder, y, node.out_names[0])]


@converter("Normalizer")
def normalizer(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    norm = str(node.attrs.get("norm", "MAX"))
    source = required_input(node)
    x = float_input(builder, node)
    axes = i64(builder, [1])
    if norm == "MAX":
        divisor = builder.add1(Op.REDUCE_MAX, [x, axes], {"keepdims": 1})
    elif norm == "L1":
        divisor = builder.add1(Op.REDUCE_L1, [x, axes], {"keepdims": 1})
    elif norm == "L2":
        divisor = builder.add1(Op.REDUCE_L2, [x, axes], {"keepdims": 1})
    else:
        raise node.fail(f"unknown norm {norm!r} (one of MAX, L1, L2)")
    # A row whose norm is 0 stays as it is.
    zero = builder.add1(Op.EQUAL, [divisor, f32(builder, 0.0)])
    divisor = builder.add1(Op.WHERE, [zero, f32(builder, 1.0), divisor])
    y = builder.add1(Op.DIV, [x, divisor])
    if source.type.rank == 1:
        y = builder.add1(Op.SQUEEZE, [y, i64(builder, [0])])
    return [named(builder, y, node.out_names[0])]


@converter("Imputer")
def imputer(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    x = required_input(node)
    floats = node.attrs.get("imputed_value_floats", ())
    ints = node.attrs.get("imputed_value_int64s", ())
    if floats:
        values = np.asarray(floats, dtype=x.type.dtype.numpy)
        replaced = float(node.attrs.get("replaced_value_float", 0.0))
    elif ints:
        values = np.asarray(ints, dtype=x.type.dtype.numpy)
        replaced = int(node.attrs.get("replaced_value_int64", 0))
    else:
        raise node.fail("neither imputed_value_floats nor imputed_value_int64s is set")
    if x.type.dtype.is_float != bool(floats):
        raise node.fail(f"imputed values of the wrong kind for an input of type "
                        f"{x.type.dtype.value}")
    values = _per_feature(node, "the imputed values", values, x)
    if isinstance(replaced, float) and np.isnan(replaced):
        missing = builder.add1(Op.IS_NAN, [x])
    else:
        missing = builder.add1(Op.EQUAL, [x, builder.constant(
            np.asarray(replaced, dtype=x.type.dtype.numpy))])
    y = builder.add1(Op.WHERE, [missing, builder.constant(values), x])
    return [named(builder, y, node.out_names[0])]


@converter("Binarizer")
def binarizer(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    x = required_input(node)
    threshold = builder.constant(np.asarray(node.attrs.get("threshold", 0.0),
                                            dtype=x.type.dtype.numpy))
    above = builder.add1(Op.GREATER, [x, threshold])
    y = builder.add1(Op.CAST, [above], {"to": x.type.dtype})
    return [named(builder, y, node.out_names[0])]


@converter("OneHotEncoder")
def one_hot_encoder(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    _no_strings(node, "cats_strings")
    categories = np.asarray(node.attrs.get("cats_int64s", ()), dtype=np.int64)
    if categories.size == 0:
        raise node.fail("cats_int64s is empty")
    x = required_input(node)
    if x.type.dtype is not DType.I64:
        x = builder.add1(Op.CAST, [x], {"to": DType.I64})
    # onnxruntime fails at run time on an unknown category when zeros=0; Kiln cannot raise from
    # compiled code, so such a value encodes as all zeros in both modes.
    expanded = builder.add1(Op.UNSQUEEZE, [x, i64(builder, [-1])])
    hits = builder.add1(Op.EQUAL, [expanded, builder.constant(categories)])
    y = builder.add1(Op.CAST, [hits], {"to": DType.F32})
    return [named(builder, y, node.out_names[0])]


@converter("ArrayFeatureExtractor")
def array_feature_extractor(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    data, indices = required_input(node, 0), required_input(node, 1)
    if data.type.rank == 1:  # a vector is one row, as in onnxruntime
        data = builder.add1(Op.UNSQUEEZE, [data, i64(builder, [0])])
    if indices.type.dtype is not DType.I64:
        raise node.fail(f"indices must be int64, got {indices.type.dtype.value}")
    flat = builder.add1(Op.RESHAPE, [indices, i64(builder, [-1])])
    y = builder.add1(Op.GATHER, [data, flat], {"axis": -1})
    return [named(builder, y, node.out_names[0])]


def _label_table(node: MlNode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys, values and the default of a LabelEncoder (numeric only)."""
    _no_strings(node, "keys_strings", "values_strings", "classes_strings")
    attrs = node.attrs
    keys_tensor, values_tensor = attrs.get("keys_tensor"), attrs.get("values_tensor")
    if keys_tensor is not None and keys_tensor.dtype.kind in "OUS" or (
            values_tensor is not None and values_tensor.dtype.kind in "OUS"):
        raise node.fail("string keys or values are not supported: Kiln has no string type")
    if keys_tensor is not None:
        keys = np.asarray(keys_tensor).reshape(-1)
    elif attrs.get("keys_floats"):
        keys = np.asarray(attrs["keys_floats"], dtype=np.float32)
    else:
        keys = np.asarray(attrs.get("keys_int64s", ()), dtype=np.int64)
    if values_tensor is not None:
        values = np.asarray(values_tensor).reshape(-1)
        default_tensor = attrs.get("default_tensor")
        default = (np.zeros((), values.dtype) if default_tensor is None
                   else np.asarray(default_tensor, values.dtype).reshape(()))
    elif attrs.get("values_floats"):
        values = np.asarray(attrs["values_floats"], dtype=np.float32)
        default = np.asarray(attrs.get("default_float", -0.0), dtype=np.float32)
    else:
        values = np.asarray(attrs.get("values_int64s", ()), dtype=np.int64)
        default = np.asarray(attrs.get("default_int64", -1), dtype=np.int64)
    if keys.size == 0 or keys.size != values.size:
        raise node.fail(f"{keys.size} keys for {values.size} values")
    return keys, values, default


@converter("LabelEncoder")
def label_encoder(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    keys, values, default = _label_table(node)
    x = required_input(node)
    if x.type.dtype.numpy != keys.dtype:
        raise node.fail(f"input of type {x.type.dtype.value} for keys of type {keys.dtype}")
    # Compare each element with every key; the first matching key's value, else the default.
    expanded = builder.add1(Op.UNSQUEEZE, [x, i64(builder, [-1])])
    hits = builder.add1(Op.EQUAL, [expanded, builder.constant(keys)])
    as_int = builder.add1(Op.CAST, [hits], {"to": DType.I32})
    last = x.type.rank
    found = builder.add1(Op.REDUCE_MAX, [as_int, i64(builder, [last])], {"keepdims": 0})
    index = builder.add1(Op.ARGMAX, [as_int], {"axis": last, "keepdims": 0})
    mapped = builder.add1(Op.GATHER, [builder.constant(values), index], {"axis": 0})
    present = builder.add1(Op.CAST, [found], {"to": DType.BOOL})
    y = builder.add1(Op.WHERE, [present, mapped, builder.constant(default)])
    return [named(builder, y, node.out_names[0])]


@converter("FeatureVectorizer")
def feature_vectorizer(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    widths = [int(d) for d in node.attrs.get("inputdimensions", ())]
    if len(widths) != len(node.inputs) or not widths:
        raise node.fail(f"inputdimensions has {len(widths)} entries for "
                        f"{len(node.inputs)} inputs")
    parts = []
    for index, width in enumerate(widths):
        x = float_input(builder, node, index)
        have = x.type.shape[1]
        if not isinstance(have, int):
            raise node.fail(f"input {index} needs a static number of columns")
        if have > width:  # extra columns are cut, missing ones padded with zeros
            x = builder.add1(Op.SLICE, [x, i64(builder, [0]), i64(builder, [width]),
                                        i64(builder, [1])])
        elif have < width:
            x = builder.add1(Op.PAD, [x, i64(builder, [0, 0, 0, width - have])])
        parts.append(x)
    y = parts[0] if len(parts) == 1 else builder.add1(Op.CONCAT, parts, {"axis": 1})
    return [named(builder, y, node.out_names[0])]


@converter("ZipMap")
def zip_map(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    raise node.fail(ZIPMAP_HINT)
