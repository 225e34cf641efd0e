"""The ai.onnx.ml converters (linear models, SVMs, preprocessing ops), node by node against
onnxruntime: each ONNX-ML node is imported, run by the numpy reference executor and, for one
case of each family, compiled with ``build``; labels must match exactly. Unsupported forms
(string labels or keys, ZipMap) must fail with a clear KilnError."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from kiln.compiler.driver import build
from kiln.compiler.errors import KilnError
from kiln.compiler.reference import run as reference_run
from kiln.frontends.onnx import load_onnx

ML = "ai.onnx.ml"
RTOL, ATOL = 1e-5, 1e-5


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def ml_model(op: str, attrs: dict[str, Any], inputs: dict[str, np.ndarray],
             out_types: list[int], batch_dim: bool = True) -> onnx.ModelProto:
    """One ai.onnx.ml node; the first input's leading dim is unnamed when ``batch_dim``."""
    infos = []
    for index, (name, array) in enumerate(inputs.items()):
        shape: list[int | None] = list(array.shape)
        if batch_dim and index == 0 and shape:
            shape[0] = None
        infos.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(array.dtype), shape))
    outs = [f"Y{i}" for i in range(len(out_types))]
    node = helper.make_node(op, list(inputs), outs, domain=ML, name=f"{op.lower()}_node",
                            **attrs)
    graph = helper.make_graph(
        [node], "g", infos, [helper.make_tensor_value_info(n, t, None)
                             for n, t in zip(outs, out_types, strict=True)])
    return helper.make_model(graph, ir_version=9, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(ML, 3)])


def check(model: onnx.ModelProto, inputs: dict[str, np.ndarray], compiled: bool = False) -> None:
    """Kiln (reference executor, and the compiled library when ``compiled``) vs onnxruntime."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, inputs)
    graph = load_onnx(model)
    runs = [reference_run(graph, inputs)]
    if compiled:
        shapes = {name: array.shape for name, array in inputs.items()}
        runs.append(build(graph, input_shapes=shapes).run(inputs))
    for got in runs:
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, g.dtype, e.shape, e.dtype)
            if e.dtype == np.int64:
                np.testing.assert_array_equal(g, e)
            else:
                np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


LABEL_AND_SCORES = [TensorProto.INT64, TensorProto.FLOAT]
FLOAT_OUT = [TensorProto.FLOAT]
X = rng().standard_normal((9, 4)).astype(np.float32)
KINDS = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]


# ------------------------------------------------------------------------------------ linear

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_classifier(kind: str, n_classes: int) -> None:
    x = X if kind != "PROBIT" else np.clip(X * 0.1 + 0.2, 0.01, 0.49)  # probit wants (0, 1)
    coefs = rng(1).standard_normal(n_classes * 4) * (0.5 if kind != "PROBIT" else 0.2)
    attrs = {"classlabels_ints": list(range(7, 7 + n_classes)), "coefficients": list(coefs),
             "intercepts": list(rng(2).standard_normal(n_classes) * 0.1 + 0.1),
             "post_transform": kind, "multi_class": 0}
    check(ml_model("LinearClassifier", attrs, {"X": x}, LABEL_AND_SCORES), {"X": x},
          compiled=kind in ("SOFTMAX", "SOFTMAX_ZERO"))


@pytest.mark.parametrize("kind", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("labels", [[4, 9], [1, 2, 3]])
def test_linear_classifier_one_score_column(kind: str, labels: list[int]) -> None:
    attrs = {"classlabels_ints": labels, "coefficients": list(rng(3).standard_normal(4)),
             "intercepts": [0.2], "post_transform": kind}
    if len(labels) != 2:  # onnxruntime refuses these too
        with pytest.raises(KilnError, match="linearclassifier_node.*needs two class labels"):
            load_onnx(ml_model("LinearClassifier", attrs, {"X": X}, LABEL_AND_SCORES))
        return
    check(ml_model("LinearClassifier", attrs, {"X": X}, LABEL_AND_SCORES), {"X": X},
          compiled=kind == "LOGISTIC")


def test_single_binary_score_column_with_probit_is_refused() -> None:
    """onnxruntime writes only the first of the two score columns here."""
    attrs = {"classlabels_ints": [0, 1], "coefficients": [1.0] * 4, "intercepts": [0.0],
             "post_transform": "PROBIT"}
    with pytest.raises(KilnError, match="linearclassifier_node.*PROBIT"):
        load_onnx(ml_model("LinearClassifier", attrs, {"X": X}, LABEL_AND_SCORES))
    with pytest.raises(KilnError, match="svmclassifier_node.*PROBIT"):
        load_onnx(ml_model("SVMClassifier", svc_attrs(2, "RBF", "PROBIT"), {"X": X},
                           LABEL_AND_SCORES))


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_linear_classifier_input_types(dtype: type) -> None:
    x = (X * 3).astype(dtype)
    attrs = {"classlabels_ints": [0, 1, 2], "coefficients": list(rng(4).standard_normal(12)),
             "intercepts": [0.1, 0.0, -0.1], "post_transform": "SOFTMAX"}
    check(ml_model("LinearClassifier", attrs, {"X": x}, LABEL_AND_SCORES), {"X": x})


@pytest.mark.parametrize("kind", ["NONE", "PROBIT"])
@pytest.mark.parametrize("targets", [1, 3])
def test_linear_regressor(kind: str, targets: int) -> None:
    x = X if kind == "NONE" else np.clip(X * 0.05 + 0.3, 0.05, 0.45)
    attrs = {"coefficients": list(rng(5).standard_normal(4 * targets) * 0.1),
             "intercepts": list(np.full(targets, 0.2)), "targets": targets,
             "post_transform": kind}
    check(ml_model("LinearRegressor", attrs, {"X": x}, FLOAT_OUT), {"X": x},
          compiled=targets == 3)


def test_linear_regressor_without_intercepts() -> None:
    attrs = {"coefficients": list(rng(6).standard_normal(4))}
    check(ml_model("LinearRegressor", attrs, {"X": X}, FLOAT_OUT), {"X": X})


def test_string_class_labels_are_refused() -> None:
    attrs = {"classlabels_strings": ["a", "b", "c"], "coefficients": list(np.ones(12)),
             "intercepts": [0.0, 0.0, 0.0]}
    model = ml_model("LinearClassifier", attrs, {"X": X}, [TensorProto.STRING, TensorProto.FLOAT])
    with pytest.raises(KilnError, match=r"linearclassifier_node.*integer class labels"):
        load_onnx(model)


# ---------------------------------------------------------------------------------------- svm

SV = rng(7).standard_normal((7, 4)).astype(np.float32)


def svc_attrs(n_classes: int, kernel: str, kind: str) -> dict[str, Any]:
    per_class = [2, 3, 2] if n_classes == 3 else [3, 4]
    return {"classlabels_ints": list(range(10, 10 + n_classes)),
            "coefficients": list(rng(8).standard_normal((n_classes - 1) * 7)),
            "kernel_params": [0.3, 0.5, 3.0], "kernel_type": kernel,
            "rho": list(rng(9).standard_normal(n_classes * (n_classes - 1) // 2)),
            "support_vectors": list(SV.ravel()), "vectors_per_class": per_class,
            "post_transform": kind}


@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "RBF", "SIGMOID"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_svm_classifier_kernels(kernel: str, n_classes: int) -> None:
    model = ml_model("SVMClassifier", svc_attrs(n_classes, kernel, "NONE"), {"X": X},
                     LABEL_AND_SCORES)
    check(model, {"X": X}, compiled=kernel == "RBF")


@pytest.mark.parametrize("kind", ["LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_svm_classifier_post_transforms(kind: str, n_classes: int) -> None:
    model = ml_model("SVMClassifier", svc_attrs(n_classes, "RBF", kind), {"X": X},
                     LABEL_AND_SCORES)
    check(model, {"X": X})


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_svm_classifier_liblinear_mode(positive: bool, n_classes: int) -> None:
    coefs = rng(10).standard_normal(n_classes * 4)
    coefs = np.abs(coefs) * 0.2 if positive else coefs
    attrs = {"classlabels_ints": list(range(n_classes)), "coefficients": list(coefs),
             "rho": [0.2], "kernel_type": "LINEAR", "kernel_params": [0.0, 0.0, 0.0],
             "post_transform": "LOGISTIC"}
    check(ml_model("SVMClassifier", attrs, {"X": X}, LABEL_AND_SCORES), {"X": X},
          compiled=n_classes == 2)


@pytest.mark.parametrize("kind", ["NONE", "SOFTMAX"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_svm_classifier_probabilities(kind: str, n_classes: int) -> None:
    pairs = n_classes * (n_classes - 1) // 2
    attrs = svc_attrs(n_classes, "RBF", kind) | {
        "prob_a": list(-1.0 - rng(16).random(pairs)), "prob_b": list(rng(17).random(pairs) * 0.2)}
    check(ml_model("SVMClassifier", attrs, {"X": X}, LABEL_AND_SCORES), {"X": X},
          compiled=n_classes == 3 and kind == "NONE")


@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "RBF", "SIGMOID"])
def test_svm_regressor(kernel: str) -> None:
    attrs = {"coefficients": list(rng(11).standard_normal(7)), "kernel_params": [0.3, 0.5, 2.0],
             "kernel_type": kernel, "rho": [0.4], "support_vectors": list(SV.ravel()),
             "n_supports": 7}
    check(ml_model("SVMRegressor", attrs, {"X": X}, FLOAT_OUT), {"X": X},
          compiled=kernel == "POLY")


def test_svm_regressor_post_transform_is_refused() -> None:
    attrs = {"coefficients": [1.0] * 4, "rho": [0.0], "n_supports": 0,
             "post_transform": "LOGISTIC"}
    with pytest.raises(KilnError, match="svmregressor_node.*post_transform LOGISTIC"):
        load_onnx(ml_model("SVMRegressor", attrs, {"X": X}, FLOAT_OUT))


@pytest.mark.parametrize("one_class", [0, 1])
def test_svm_regressor_liblinear_mode(one_class: int) -> None:
    attrs = {"coefficients": list(rng(12).standard_normal(4)), "rho": [0.4], "n_supports": 0,
             "one_class": one_class, "kernel_type": "LINEAR", "kernel_params": [0.0, 0.0, 0.0]}
    check(ml_model("SVMRegressor", attrs, {"X": X}, FLOAT_OUT), {"X": X})


# --------------------------------------------------------------------------------- preprocess

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_scaler(dtype: type) -> None:
    x = (X * 4).astype(dtype)
    for offset, scale in (([0.5], [2.0]), (list(np.arange(4.0)), list(np.linspace(0.5, 2, 4)))):
        attrs = {"offset": offset, "scale": scale}
        check(ml_model("Scaler", attrs, {"X": x}, FLOAT_OUT), {"X": x},
              compiled=dtype is np.float64 and len(offset) == 4)


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(norm: str) -> None:
    x = X.copy()
    x[2] = 0.0  # a zero row stays zero
    check(ml_model("Normalizer", {"norm": norm}, {"X": x}, FLOAT_OUT), {"X": x},
          compiled=norm == "L2")


@pytest.mark.parametrize("replaced", ["nan", "value", "int"])
def test_imputer(replaced: str) -> None:
    if replaced == "int":
        x = rng(13).integers(0, 4, (9, 3)).astype(np.int64)
        attrs = {"imputed_value_int64s": [7, 8, 9], "replaced_value_int64": 2}
    else:
        x = X.copy()
        x[::3, 1] = np.nan if replaced == "nan" else -1.0
        attrs = {"imputed_value_floats": [0.5] if replaced == "nan" else [1.0, 2.0, 3.0, 4.0],
                 "replaced_value_float": float("nan") if replaced == "nan" else -1.0}
    out = [TensorProto.INT64] if replaced == "int" else FLOAT_OUT
    check(ml_model("Imputer", attrs, {"X": x}, out), {"X": x}, compiled=replaced == "nan")


def test_binarizer() -> None:
    check(ml_model("Binarizer", {"threshold": 0.25}, {"X": X}, FLOAT_OUT), {"X": X},
          compiled=True)


@pytest.mark.parametrize("zeros", [0, 1])
@pytest.mark.parametrize("shape", [(9,), (9, 3)])
def test_one_hot_encoder(zeros: int, shape: tuple[int, ...]) -> None:
    x = rng(14).integers(0, 4, shape).astype(np.int64)
    if zeros:
        x.flat[::4] = 11  # not a category: all zeros
    attrs = {"cats_int64s": [3, 0, 2, 1], "zeros": zeros}
    check(ml_model("OneHotEncoder", attrs, {"X": x}, FLOAT_OUT), {"X": x},
          compiled=len(shape) == 2 and zeros == 1)


def test_one_hot_encoder_string_categories_are_refused() -> None:
    x = np.zeros((3, 1), np.int64)
    model = ml_model("OneHotEncoder", {"cats_strings": ["a", "b"]}, {"X": x}, FLOAT_OUT)
    with pytest.raises(KilnError, match="onehotencoder_node.*no string type"):
        load_onnx(model)


@pytest.mark.parametrize("indices", [[2], [3, 0, 3], [[1, 2]]])
def test_array_feature_extractor(indices: list[Any]) -> None:
    inputs = {"X": X, "I": np.asarray(indices, np.int64)}
    model = ml_model("ArrayFeatureExtractor", {}, inputs, FLOAT_OUT)
    check(model, inputs, compiled=len(indices) == 3)


@pytest.mark.parametrize("form", ["int_to_int", "int_to_float", "float_to_int", "tensor"])
def test_label_encoder(form: str) -> None:
    keys = [5, 1, 9, 3]
    if form == "float_to_int":
        x = np.asarray([[1.5, 3.0], [9.25, 7.0], [3.0, 1.5]], np.float32)
        attrs = {"keys_floats": [1.5, 3.0, 9.25], "values_int64s": [10, 20, 30],
                 "default_int64": 99}
    else:
        x = rng(15).choice([5, 1, 9, 3, 4], (6, 2)).astype(np.int64)
        attrs = ({"keys_int64s": keys, "values_int64s": [50, 10, 90, 30]}
                 if form == "int_to_int" else
                 {"keys_int64s": keys, "values_floats": [0.5, 0.1, 0.9, 0.3],
                  "default_float": -2.0})
    opset = 4 if form == "tensor" else 2
    if form == "tensor":
        attrs = {"keys_tensor": helper.make_tensor("k", TensorProto.INT64, [4], keys),
                 "values_tensor": helper.make_tensor("v", TensorProto.INT64, [4], [7, 6, 5, 4]),
                 "default_tensor": helper.make_tensor("d", TensorProto.INT64, [1], [-5])}
    out = [TensorProto.FLOAT] if form == "int_to_float" else [TensorProto.INT64]
    model = ml_model("LabelEncoder", attrs, {"X": x}, out)
    model.opset_import[1].version = opset
    check(model, {"X": x}, compiled=form == "int_to_int")


def test_label_encoder_strings_are_refused() -> None:
    x = np.zeros((3,), np.int64)
    attrs = {"keys_int64s": [1, 2], "values_strings": ["a", "b"]}
    model = ml_model("LabelEncoder", attrs, {"X": x}, [TensorProto.STRING])
    model.opset_import[1].version = 2
    with pytest.raises(KilnError, match="labelencoder_node.*no string type"):
        load_onnx(model)


def test_feature_vectorizer() -> None:
    inputs = {"A": X[:, :2].copy(), "B": X[:, 1:].copy(), "C": X[:, :1] * 5}
    model = ml_model("FeatureVectorizer", {"inputdimensions": [3, 2, 1]}, inputs, FLOAT_OUT,
                     batch_dim=False)
    check(model, inputs, compiled=True)


def test_zipmap_names_the_skl2onnx_option() -> None:
    node = helper.make_node("ZipMap", ["X"], ["Z"], domain=ML, name="zm",
                            classlabels_int64s=[0, 1])
    seq = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 2])],
                              [helper.make_value_info("Z", seq)])
    model = helper.make_model(graph, ir_version=9, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])
    with pytest.raises(KilnError, match=r"zm.*'zipmap': False"):
        load_onnx(model)
