"""The ONNX frontend: opset normalization, external data, errors, folding, naming."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler import reference
from kiln.compiler.errors import (
    ModelFormatError,
    TypeInferenceError,
    UnsupportedOpError,
)
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType
from kiln.frontends.onnx import UnsupportedTypeError, load_onnx

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list | None]],
    outputs: list[tuple[str, int, list | None]],
    opset: int = 21,
    initializers: list[TensorProto] = (),  # type: ignore[assignment]
    functions: list[onnx.FunctionProto] = (),  # type: ignore[assignment]
    **kwargs: object,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=list(initializers), **kwargs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              functions=list(functions))
    model.ir_version = 8 if opset < 21 else 10
    return model


def run_kiln(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return reference.run(load_onnx(model), feeds)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_matches_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    for got, want in zip(run_kiln(model, feeds), run_ort(model, feeds), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# -- opset normalization, against onnxruntime --------------------------------------------------

X = ("x", F, [2, 3, 4])


def one_node(op_type: str, opset: int, *, inputs: list | None = None, outputs: int = 1,
             out_types: tuple[int, ...] = (F, F), **attrs: object) -> onnx.ModelProto:
    """A model of one ``op_type`` node reading ``x`` (default f32[2,3,4])."""
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op_type, ["x"], outs, name="n", **attrs)
    declared = [(o, t, None) for o, t in zip(outs, out_types, strict=False)]
    return make_model([node], inputs or [X], declared, opset)


OLD_FORMS = {
    "slice1": one_node("Slice", 9, starts=[0, 1], ends=[2, 3], axes=[1, 2]),
    "pad2": one_node("Pad", 10, pads=[0, 1, 0, 0, 1, 2], value=1.5),
    "squeeze1": one_node("Squeeze", 10, inputs=[("x", F, [2, 1, 4])], axes=[1]),
    "unsqueeze1": one_node("Unsqueeze", 10, axes=[0, 3]),
    "reducesum1": one_node("ReduceSum", 10, axes=[1], keepdims=0),
    "reducemean13": one_node("ReduceMean", 13, axes=[0, 2]),
    "reducemax_all": one_node("ReduceMax", 13),
    "split2": one_node("Split", 10, outputs=2, axis=2, split=[1, 3]),
    "split_equal11": one_node("Split", 11, outputs=2, axis=2),
    "clip6": one_node("Clip", 10, min=-0.5, max=0.5),
    "topk1": one_node("TopK", 9, outputs=2, out_types=(F, TensorProto.INT64), k=2, axis=2),
    "softmax1_axis1": one_node("Softmax", 10, axis=1),
    "logsoftmax11_default": one_node("LogSoftmax", 11),
    "hardmax11_last": one_node("Hardmax", 11, axis=2),
    "dropout7": one_node("Dropout", 7, ratio=0.3),
    "upsample7": one_node("Upsample", 8, scales=[1.0, 2.0, 3.0]),
    "upsample7_linear": one_node("Upsample", 8, inputs=[("x", F, [1, 1, 2, 3])],
                                 mode="linear", scales=[1.0, 1.0, 2.0, 2.0]),
}


@pytest.mark.parametrize("name", sorted(OLD_FORMS))
def test_old_op_versions_match_onnxruntime(name: str) -> None:
    model = OLD_FORMS[name]
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert_matches_ort(model, {"x": randn(*shape)})


def test_softmax_before_13_normalizes_over_the_flattened_tail() -> None:
    x = randn(2, 3, 4)
    (got,) = run_kiln(OLD_FORMS["softmax1_axis1"], {"x": x})
    flat = x.reshape(2, 12)
    want = np.exp(flat) / np.exp(flat).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, want.reshape(2, 3, 4), rtol=1e-5)


def test_reshape1_attribute_matches_reshape5_input() -> None:
    old = one_node("Reshape", 1, shape=[4, 0, -1])
    new = make_model(
        [helper.make_node("Reshape", ["x", "s"], ["y0"])], [X], [("y0", F, None)], 7,
        initializers=[numpy_helper.from_array(np.array([4, 0, -1], np.int64), "s")],
    )
    x = randn(2, 3, 4)
    np.testing.assert_array_equal(run_kiln(old, {"x": x})[0], run_ort(new, {"x": x})[0])


def test_upsample9_and_resize10_take_scales_as_input() -> None:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    x = randn(1, 2, 3, 3)
    for op_type, opset in (("Upsample", 9), ("Resize", 10)):
        model = make_model(
            [helper.make_node(op_type, ["x", "scales"], ["y"], mode="nearest")],
            [("x", F, [1, 2, 3, 3])], [("y", F, None)], opset, initializers=[scales],
        )
        assert_matches_ort(model, {"x": x})


def test_scatter_becomes_scatter_elements() -> None:
    model = make_model(
        [helper.make_node("Scatter", ["x", "i", "u"], ["y"], axis=1)],
        [("x", F, [2, 3]), ("i", TensorProto.INT64, [2, 2]), ("u", F, [2, 2])],
        [("y", F, None)], 10,
    )
    feeds = {"x": randn(2, 3), "i": np.array([[0, 2], [1, 0]], np.int64), "u": randn(2, 2)}
    assert_matches_ort(model, feeds)
    assert [n.op for n in load_onnx(model).nodes] == [Op.SCATTER_ELEMENTS]


def test_cast_like_becomes_cast_to_the_second_inputs_type() -> None:
    model = make_model(
        [helper.make_node("CastLike", ["x", "t"], ["y"])],
        [X, ("t", TensorProto.INT32, [1])], [("y", TensorProto.INT32, None)], 21,
    )
    graph = load_onnx(model)
    (cast,) = graph.nodes
    assert cast.op is Op.CAST and cast.attrs["to"] is DType.I32
    assert_matches_ort(model, {"x": randn(2, 3, 4) * 10, "t": np.zeros(1, np.int32)})


def test_batch_norm_spatial_and_is_test_attributes_are_dropped() -> None:
    params = [numpy_helper.from_array(np.abs(randn(3)) + 0.5, n) for n in "sbmv"]
    model = make_model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=1,
                          epsilon=1e-3)],
        [X], [("y", F, None)], 7, initializers=params,
    )
    assert_matches_ort(model, {"x": randn(2, 3, 4)})
    (spatial,) = [a for a in model.graph.node[0].attribute if a.name == "spatial"]
    spatial.i = 0
    with pytest.raises(UnsupportedOpError, match="spatial=0"):
        load_onnx(model)


# -- constants, initializers, names, symbols ----------------------------------------------------


def test_constant_node_forms() -> None:
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, 6.0], np.float32), "v"),
        numpy_helper.from_array(np.array([1, 3], np.int64), "i"), [2, 2],
    )
    forms = {
        "value_float": (1.5, np.array(1.5, np.float32)),
        "value_floats": ([1.0, 2.0], np.array([1.0, 2.0], np.float32)),
        "value_int": (3, np.array(3, np.int64)),
        "value_ints": ([3, 4], np.array([3, 4], np.int64)),
        "sparse_value": (sparse, np.array([[0, 5], [0, 6]], np.float32)),
        "value": (numpy_helper.from_array(np.eye(2, dtype=np.float64)), np.eye(2)),
    }
    for key, (value, want) in forms.items():
        model = make_model([helper.make_node("Constant", [], ["y"], **{key: value})], [],
                           [("y", numpy_helper.from_array(want).data_type, None)])
        (got,) = run_kiln(model, {})
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_initializer_listed_as_input_is_a_constant_and_names_are_kept() -> None:
    w = numpy_helper.from_array(randn(3, 4), "w")
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["out/y:0"])],
        [("x", F, ["batch", 3]), ("w", F, [3, 4])], [("out/y:0", F, ["batch", 4])],
        initializers=[w],
    )
    graph = load_onnx(model)
    assert [v.name for v in graph.inputs] == ["x"]
    assert [v.name for v in graph.outputs] == ["out/y:0"]
    assert graph.inputs[0].type == TensorType(DType.F32, ("batch", 3))
    assert graph.outputs[0].type == TensorType(DType.F32, ("batch", 4))


def test_dims_without_value_or_param_are_unknown() -> None:
    info = helper.make_tensor_value_info("x", F, [None, "n", 2])
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [], [("y", F, None)])
    model.graph.input.append(info)
    assert load_onnx(model).inputs[0].type.shape == (UNKNOWN, "n", 2)


def test_shape_subgraph_folds_to_a_static_reshape() -> None:
    i64 = TensorProto.INT64
    model = make_model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
            helper.make_node("Concat", ["b", "minus1"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"]),
        ],
        [X], [("y", F, [2, 12])],
        initializers=[numpy_helper.from_array(np.array([0], np.int64), "zero"),
                      numpy_helper.from_array(np.array([-1], np.int64), "minus1")],
        value_info=[helper.make_tensor_value_info("target", i64, [2])],
    )
    graph = load_onnx(model)
    assert [n.op for n in graph.nodes if n.op is not Op.CONSTANT] == [Op.RESHAPE]
    np.testing.assert_array_equal(graph.constants()["target"], [2, -1])
    assert graph.outputs[0].type == TensorType(DType.F32, (2, 12))
    unfolded = load_onnx(model, fold=False)
    assert Op.SHAPE in [n.op for n in unfolded.nodes]


def test_nodes_out_of_order_are_sorted() -> None:
    model = make_model(
        [helper.make_node("Neg", ["h"], ["y"]), helper.make_node("Relu", ["x"], ["h"])],
        [X], [("y", F, None)],
    )
    x = randn(2, 3, 4)
    np.testing.assert_array_equal(run_kiln(model, {"x": x})[0], -np.maximum(x, 0))


def test_if_with_constant_condition_imports_the_branch_taken() -> None:
    def branch(value: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Add", ["x", "c"], ["r"]),
             helper.make_node("Constant", [], ["c"], value_float=value)],
            "branch", [], [helper.make_tensor_value_info("r", F, None)],
        )

    model = make_model(
        [helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
         helper.make_node("If", ["cond"], ["y"], then_branch=branch(1.0),
                          else_branch=branch(2.0))],
        [X], [("y", F, [2, 3, 4])],
    )
    graph = load_onnx(model)
    assert Op.IF not in [n.op for n in graph.nodes]
    x = randn(2, 3, 4)
    np.testing.assert_allclose(reference.run(graph, {"x": x})[0], x + 1)
    assert Op.IF in [n.op for n in load_onnx(model, fold=False).nodes]


def test_loop_body_reads_outer_values() -> None:
    i64, b = TensorProto.INT64, TensorProto.BOOL
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", i64, []),
         helper.make_tensor_value_info("cond_in", b, []),
         helper.make_tensor_value_info("acc_in", F, None)],
        [helper.make_tensor_value_info("cond_out", b, []),
         helper.make_tensor_value_info("acc_out", F, None)],
    )
    model = make_model(
        [helper.make_node("Loop", ["n", "", "acc0"], ["acc"], body=body)],
        [X, ("n", i64, []), ("acc0", F, [2, 3, 4])], [("acc", F, [2, 3, 4])],
    )
    feeds = {"x": randn(2, 3, 4), "n": np.array(3, np.int64), "acc0": randn(2, 3, 4)}
    assert_matches_ort(model, feeds)


# -- functions ---------------------------------------------------------------------------------


def test_model_local_functions_are_inlined() -> None:
    function = helper.make_function(
        "local", "AddTwice", ["a", "b"], ["c"],
        [helper.make_node("Add", ["a", "b"], ["t"]), helper.make_node("Add", ["t", "b"], ["c"])],
        [helper.make_opsetid("", 21)],
    )
    model = make_model([helper.make_node("AddTwice", ["x", "x"], ["y"], domain="local")],
                       [X], [("y", F, None)], functions=[function])
    model.opset_import.append(helper.make_opsetid("local", 1))
    x = randn(2, 3, 4)
    np.testing.assert_allclose(run_kiln(model, {"x": x})[0], 3 * x, rtol=1e-6)


def test_ops_missing_from_the_ir_expand_into_their_onnx_function(monkeypatch) -> None:  # noqa: ANN001
    from kiln.frontends.onnx import importer, validation

    def without(op_types: set[str]):  # noqa: ANN202
        original = importer.defined_op_for
        return lambda op_type: None if op_type in op_types else original(op_type)

    hidden = without({"Softsign", "LayerNormalization", "LogSoftmax"})
    monkeypatch.setattr(importer, "defined_op_for", hidden)
    monkeypatch.setattr(validation, "defined_op_for", hidden)
    scale = numpy_helper.from_array(randn(4), "scale")
    model = make_model(
        [helper.make_node("Softsign", ["x"], ["s"]),
         helper.make_node("LayerNormalization", ["s", "scale"], ["y"], axis=-1)],
        [X], [("y", F, [2, 3, 4])], initializers=[scale],
    )
    graph = load_onnx(model)
    ops = {n.op for n in graph.nodes}
    assert Op.SOFTSIGN not in ops and Op.LAYER_NORMALIZATION not in ops
    assert [v.name for v in graph.outputs] == ["y"]
    assert_matches_ort(model, {"x": randn(2, 3, 4)})
    # an old version is normalized first (LogSoftmax-11 over the flattened tail), then expanded
    old = one_node("LogSoftmax", 11, axis=1)
    assert Op.LOG_SOFTMAX not in {n.op for n in load_onnx(old).nodes}
    assert_matches_ort(old, {"x": randn(2, 3, 4)})


# -- external data -----------------------------------------------------------------------------


def _weights_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(randn(4, 5), "w")
    return make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [X],
                      [("y", F, [2, 3, 5])], initializers=[w])


def test_external_data_is_read_from_the_models_folder(tmp_path: Path) -> None:
    model = _weights_model()
    x = randn(2, 3, 4)
    want = run_kiln(model, {"x": x})[0]
    path = tmp_path / "model.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    np.testing.assert_array_equal(reference.run(load_onnx(path), {"x": x})[0], want)
    with pytest.raises(ModelFormatError, match="load it from its path or pass base_dir"):
        load_onnx(model)
    np.testing.assert_array_equal(
        reference.run(load_onnx(model, base_dir=tmp_path), {"x": x})[0], want
    )


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 80)
    model = _weights_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFormatError) as error:
        load_onnx(path)
    assert str(error.value) == (
        f"external data of tensor 'w' is at {location!r}, outside the model's folder "
        f"{os.path.realpath(folder)!r}; Kiln refuses to read it"
    )


# -- errors ------------------------------------------------------------------------------------


def test_unsupported_ops_are_all_listed_in_one_error_before_any_work() -> None:
    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("StringNormalizer", ["s"], ["r"], name=name)], name, [],
            [helper.make_tensor_value_info("r", TensorProto.STRING, None)],
        )

    model = make_model(
        [helper.make_node("TfIdfVectorizer", ["x"], ["a"], name="tf1"),
         helper.make_node("TfIdfVectorizer", ["x"], ["b"], name="tf2"),
         helper.make_node("CategoryMapper", ["x"], ["c"], name="enc", domain="ai.onnx.ml"),
         helper.make_node("If", ["cond"], ["d"], name="if", then_branch=branch("deep"),
                          else_branch=branch("deeper"))],
        [X, ("cond", TensorProto.BOOL, [])], [("a", F, None)],
    )
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    with pytest.raises(UnsupportedOpError) as error:
        load_onnx(model)
    assert str(error.value) == (
        "the model uses 3 op type(s) Kiln does not support: "
        "StringNormalizer (opset 21) at node(s) 'deeper', 'deep'; "
        "TfIdfVectorizer (opset 21) at node(s) 'tf1', 'tf2'; "
        "CategoryMapper (domain 'ai.onnx.ml', opset 3) at node(s) 'enc'"
    )


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_a_format_error(tmp_path: Path, keep: float) -> None:
    data = _weights_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFormatError, match="corrupt or truncated"):
        load_onnx(path)


def test_garbage_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff\xfe not a model at all")
    with pytest.raises(ModelFormatError, match="corrupt or truncated"):
        load_onnx(path)


def test_missing_initializer_is_named() -> None:
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [X],
                       [("y", F, None)])
    with pytest.raises(ModelFormatError) as error:
        load_onnx(model)
    assert str(error.value) == (
        "graph 'g': node 'mm' (MatMul) reads 'w', which is not a graph input, an initializer "
        "or an output of any node"
    )


def test_cycle_is_reported_with_its_nodes() -> None:
    model = make_model(
        [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
         helper.make_node("Relu", ["a"], ["b"], name="second"),
         helper.make_node("Neg", ["a"], ["y"], name="third")],
        [X], [("y", F, None)],
    )
    with pytest.raises(ModelFormatError) as error:
        load_onnx(model)
    assert str(error.value) == (
        "graph 'g': nodes form a cycle: 'first' (Add) -> 'second' (Relu) -> 'first' (Add)"
    )


def test_declared_type_contradicting_inference_is_an_error() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [X],
                       [("y", F, [2, 3, 5])])
    with pytest.raises(TypeInferenceError) as error:
        load_onnx(model)
    assert str(error.value) == (
        "value 'y': the model declares f32[2,3,5] but Kiln infers f32[2,3,4]"
    )
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "n"
    with pytest.raises(TypeInferenceError, match=r"declares f64\[2,3,n\] but Kiln infers"):
        load_onnx(model)


def test_partially_declared_types_are_compared_where_known() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [X], [("y", F, ["a", None, 4])])
    load_onnx(model)


@pytest.mark.parametrize(
    ("elem_type", "name"),
    [(TensorProto.STRING, "STRING"), (TensorProto.FLOAT8E4M3FN, "FLOAT8E4M3FN"),
     (TensorProto.INT4, "INT4"), (TensorProto.COMPLEX64, "COMPLEX64")],
)
def test_unsupported_element_types_are_named(elem_type: int, name: str) -> None:
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], [("x", elem_type, [2])],
                       [("y", elem_type, [2])])
    with pytest.raises(UnsupportedTypeError) as error:
        load_onnx(model)
    assert str(error.value).startswith(
        f"graph 'g' input 'x' has element type {name}, which Kiln does not support"
    )


def test_cast_to_an_unsupported_type_is_named() -> None:
    model = make_model([helper.make_node("Cast", ["x"], ["y"], name="c",
                                         to=TensorProto.FLOAT8E5M2)],
                       [X], [("y", TensorProto.FLOAT8E5M2, None)])
    with pytest.raises(UnsupportedTypeError, match="'to' has element type FLOAT8E5M2"):
        load_onnx(model)


def test_sequence_input_is_refused() -> None:
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], [], [("y", F, None)])
    model.graph.input.append(helper.make_tensor_sequence_value_info("x", F, None))
    with pytest.raises(UnsupportedTypeError, match="has type sequence; Kiln supports tensors"):
        load_onnx(model)


def test_input_without_shape_is_refused() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, None)],
                       [("y", F, None)])
    with pytest.raises(TypeInferenceError, match="input 'x' declares no shape"):
        load_onnx(model)


def test_type_rule_errors_name_the_onnx_node_and_opset() -> None:
    model = make_model([helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")], [X],
                       [("y", F, None)], 17)
    with pytest.raises(TypeInferenceError, match=r"^node 'mm' \(MatMul-13, opset 17\): "):
        load_onnx(model)


def test_resize11_empty_roi_and_scales_become_absent() -> None:
    empty = numpy_helper.from_array(np.zeros(0, np.float32), "empty")
    sizes = numpy_helper.from_array(np.array([1, 2, 5, 7], np.int64), "sizes")
    model = make_model(
        [helper.make_node("Resize", ["x", "empty", "empty", "sizes"], ["y"], mode="linear")],
        [("x", F, [1, 2, 3, 4])], [("y", F, [1, 2, 5, 7])], 11, initializers=[empty, sizes],
    )
    (resize,) = [n for n in load_onnx(model).nodes if n.op is Op.RESIZE]
    assert resize.inputs[1] is None and resize.inputs[2] is None
    assert_matches_ort(model, {"x": randn(1, 2, 3, 4)})


def test_grid_sample16_mode_names_are_renamed() -> None:
    model = make_model(
        [helper.make_node("GridSample", ["x", "grid"], ["y"], mode="bicubic")],
        [("x", F, [1, 2, 4, 5]), ("grid", F, [1, 3, 3, 2])], [("y", F, [1, 2, 3, 3])], 16,
    )
    (node,) = load_onnx(model).nodes
    assert node.attrs["mode"] == "cubic"
    grid = np.clip(randn(1, 3, 3, 2), -1, 1)
    assert_matches_ort(model, {"x": randn(1, 2, 4, 5), "grid": grid})


def test_roi_align10_uses_output_half_pixel() -> None:
    model = make_model(
        [helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=2,
                          output_width=2, sampling_ratio=2)],
        [("x", F, [1, 1, 6, 6]), ("rois", F, [2, 4]), ("idx", TensorProto.INT64, [2])],
        [("y", F, [2, 1, 2, 2])], 10,
    )
    (node,) = load_onnx(model).nodes
    assert node.attrs["coordinate_transformation_mode"] == "output_half_pixel"
    feeds = {"x": randn(1, 1, 6, 6), "rois": np.array([[0, 0, 3, 3], [1, 1, 5, 4]], np.float32),
             "idx": np.zeros(2, np.int64)}
    assert_matches_ort(model, feeds)


def test_dft17_axis_attribute_becomes_an_input() -> None:
    model = make_model([helper.make_node("DFT", ["x"], ["y"], axis=1)],
                       [("x", F, [2, 8, 1])], [("y", F, [2, 8, 2])], 17)
    (node,) = [n for n in load_onnx(model).nodes if n.op is Op.DFT]
    assert len(node.inputs) == 3
    x = randn(2, 8, 1)
    (got,) = run_kiln(model, {"x": x})
    want = np.fft.fft(x[..., 0], axis=1)
    np.testing.assert_allclose(got, np.stack([want.real, want.imag], -1), rtol=1e-4, atol=1e-5)
