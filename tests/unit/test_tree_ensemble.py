"""TreeEnsemble, TreeEnsembleRegressor and TreeEnsembleClassifier, node by node: random forests
(every node mode, missing-value tracks, aggregates, post transforms, base values, the binary
classifier cases) run by onnxruntime, by the numpy reference executor, and compiled (batch 1,
the walk over trees, and a batch whose last row block is short); the type rule's errors; the IR
text round trip of the op's attributes (every graph built under pytest is also round-tripped by
conftest)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from kiln.compiler.driver import build
from kiln.compiler.errors import KilnError, TypeInferenceError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.parser import parse_graph
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.rules.ml import MODES
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.reference import run as reference_run
from kiln.frontends.onnx import load_onnx

ML = "ai.onnx.ml"
RTOL, ATOL = 1e-5, 1e-5
FEATURES = 4
ORT_POST = {0: 0, 1: 2, 2: 1, 3: 3, 4: 4}
LEGACY_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ",
                "BRANCH_NEQ")


def data(rows: int, seed: int = 1, nan: bool = True) -> np.ndarray:
    """Small integers (so EQ / NEQ / MEMBER splits are hit) and some NaNs."""
    x = np.random.default_rng(seed).integers(0, 5, size=(rows, FEATURES)).astype(np.float32)
    if nan:
        x[::5, 1] = np.nan
    return x


def legacy_trees(seed: int, n_trees: int, depth: int, modes: tuple[str, ...], targets: int,
                 votes_per_leaf: int = 1, signed: bool = True) -> dict[str, list[Any]]:
    """Attributes of a TreeEnsembleRegressor-3 forest of random trees (prefix ``target_``):
    the root splits, any other node above the depth limit with probability 0.8."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_modes", "nodes_featureids", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids", "target_weights")}
    for tree in range(n_trees):
        count = 0

        def grow(level: int, tree: int = tree) -> int:
            nonlocal count
            me = count
            count += 1
            row = len(cols["nodes_treeids"])
            cols["nodes_treeids"].append(tree)
            cols["nodes_nodeids"].append(me)
            for key in ("nodes_modes", "nodes_featureids", "nodes_values", "nodes_truenodeids",
                        "nodes_falsenodeids", "nodes_missing_value_tracks_true"):
                cols[key].append(None)
            if level < depth and (level == 0 or rng.random() < 0.8):
                cols["nodes_modes"][row] = str(rng.choice(modes))
                cols["nodes_featureids"][row] = int(rng.integers(0, FEATURES))
                cols["nodes_values"][row] = float(rng.integers(0, 5)) + float(
                    rng.choice([0.0, 0.5]))
                cols["nodes_missing_value_tracks_true"][row] = int(rng.integers(0, 2))
                cols["nodes_truenodeids"][row] = grow(level + 1)
                cols["nodes_falsenodeids"][row] = grow(level + 1)
            else:
                cols["nodes_modes"][row] = "LEAF"
                cols["nodes_featureids"][row] = 0
                cols["nodes_values"][row] = 0.0
                cols["nodes_missing_value_tracks_true"][row] = 0
                cols["nodes_truenodeids"][row] = 0
                cols["nodes_falsenodeids"][row] = 0
                for target in rng.choice(targets, size=min(votes_per_leaf, targets),
                                         replace=False).tolist():
                    cols["target_treeids"].append(tree)
                    cols["target_nodeids"].append(me)
                    cols["target_ids"].append(int(target))
                    weight = rng.normal() if signed else rng.random()
                    cols["target_weights"].append(float(np.float32(weight)))
            return me

        grow(0)
    return cols


def model_of(op: str, attrs: dict[str, Any], outputs: list[tuple[str, int]],
             ml_opset: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES])
    outs = [helper.make_tensor_value_info(name, kind, None) for name, kind in outputs]
    node = helper.make_node(op, ["X"], [name for name, _ in outputs], domain=ML,
                            name="trees", **attrs)
    graph = helper.make_graph([node], "trees", [x], outs)
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", 18), helper.make_opsetid(ML, ml_opset)])


def check(model: onnx.ModelProto, rows: tuple[int, ...] = (1, 131), compiled: bool = True,
          seed: int = 1, oracle: onnx.ModelProto | None = None) -> None:
    """onnxruntime (on ``oracle``, by default ``model``) vs the reference executor (and compiled
    code) on ``data(rows)``."""
    session = ort.InferenceSession((oracle or model).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    graph = load_onnx(model)
    for n in rows:
        x = data(n, seed)
        expected = session.run(None, {"X": x})
        runs = [reference_run(graph, {"X": x})]
        if compiled:
            runs.append(build(graph, input_shapes={"X": (n, FEATURES)}).run({"X": x}))
        for got in runs:
            for g, e in zip(got, expected, strict=True):
                assert g.shape == e.shape
                if e.dtype.kind == "i":
                    np.testing.assert_array_equal(g, e)
                else:
                    np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def regressor(cols: dict[str, list[Any]], targets: int, **attrs: Any) -> onnx.ModelProto:
    return model_of("TreeEnsembleRegressor", {**cols, "n_targets": targets, **attrs},
                    [("Y", TensorProto.FLOAT)], 3)


def classifier(cols: dict[str, list[Any]], classes: int, **attrs: Any) -> onnx.ModelProto:
    renamed = {k.replace("target_", "class_"): v for k, v in cols.items()}
    return model_of("TreeEnsembleClassifier",
                    {**renamed, "classlabels_int64s": list(range(10, 10 + classes)), **attrs},
                    [("label", TensorProto.INT64), ("scores", TensorProto.FLOAT)], 3)


@pytest.mark.parametrize("mode", LEGACY_MODES)
def test_regressor_each_mode(mode: str) -> None:
    check(regressor(legacy_trees(3, 4, 4, (mode,), 1), 1))


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
def test_regressor_aggregates_mixed_modes(aggregate: str) -> None:
    cols = legacy_trees(5, 5, 5, LEGACY_MODES, 3, votes_per_leaf=2)
    check(regressor(cols, 3, aggregate_function=aggregate, base_values=[0.5, -1.0, 2.0]))


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
def test_regressor_post_transforms(post: str) -> None:
    cols = legacy_trees(7, 6, 4, ("BRANCH_LEQ", "BRANCH_GT"), 3)
    check(regressor(cols, 3, post_transform=post), rows=(131,))


def test_regressor_probit() -> None:
    # probit wants scores in (0, 1): averaged positive votes
    cols = legacy_trees(8, 6, 4, ("BRANCH_LEQ",), 1, signed=False)
    check(regressor(cols, 1, post_transform="PROBIT", aggregate_function="AVERAGE"), rows=(7,))


def test_regressor_single_leaf_tree_and_larger_forest() -> None:
    cols = legacy_trees(11, 40, 8, ("BRANCH_LEQ",), 1)
    for key, value in (("nodes_treeids", 40), ("nodes_nodeids", 0), ("nodes_modes", "LEAF"),
                       ("nodes_featureids", 0), ("nodes_values", 0.0),
                       ("nodes_truenodeids", 0), ("nodes_falsenodeids", 0),
                       ("nodes_missing_value_tracks_true", 0), ("target_treeids", 40),
                       ("target_nodeids", 0), ("target_ids", 0), ("target_weights", 1.5)):
        cols[key].append(value)
    check(regressor(cols, 1), rows=(1, 300))


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"])
def test_classifier_multiclass(post: str) -> None:
    cols = legacy_trees(13, 5, 4, ("BRANCH_LEQ", "BRANCH_LT"), 4, votes_per_leaf=4)
    check(classifier(cols, 4, post_transform=post, base_values=[0.1, 0.2, -0.3, 0.0]),
          rows=(1, 131) if post == "NONE" else (131,))


def _one_class(cols: dict[str, list[Any]], cls: int) -> dict[str, list[Any]]:
    return {**cols, "target_ids": [cls] * len(cols["target_ids"])}


@pytest.mark.parametrize(("case", "attrs"), [
    ("positive votes for class 0", {"signed": False, "cls": 0}),  # random forests
    ("mixed votes, logistic, one base", {"signed": True, "cls": 0, "post_transform": "LOGISTIC",
                                         "base_values": [-0.2]}),  # gradient boosting
    ("mixed votes, no transform", {"signed": True, "cls": 0}),
    ("votes for both classes", {"signed": True, "both": True}),
    ("votes for class 1, two bases", {"signed": True, "cls": 1, "base_values": [0.3, 0.3]}),
    ("votes for class 0, two bases", {"signed": True, "cls": 0, "base_values": [0.3, -0.1]}),
])
def test_classifier_binary_cases(case: str, attrs: dict[str, Any]) -> None:
    attrs = dict(attrs)
    signed, both, cls = attrs.pop("signed"), attrs.pop("both", False), attrs.pop("cls", 0)
    cols = legacy_trees(17, 4, 3, ("BRANCH_LEQ",), 2, votes_per_leaf=2 if both else 1,
                        signed=signed)
    if not both:
        cols = _one_class(cols, cls)
    check(classifier(cols, 2, **attrs), rows=(131,), compiled=case.startswith("mixed votes, l"))


def tree_ensemble_model(seed: int, aggregate: int, post: int, member: bool) -> onnx.ModelProto:
    """A TreeEnsemble-5 forest built from :func:`legacy_trees` (MEMBER nodes where asked)."""
    cols = legacy_trees(seed, 4, 4, LEGACY_MODES, 2)
    leaf_of = {}
    inner: list[int] = []
    for k, mode in enumerate(cols["nodes_modes"]):
        if mode == "LEAF":
            leaf_of[(cols["nodes_treeids"][k], cols["nodes_nodeids"][k])] = len(leaf_of)
        else:
            inner.append(k)
    node_of = {(cols["nodes_treeids"][k], cols["nodes_nodeids"][k]): i
               for i, k in enumerate(inner)}

    def child(k: int, key: str) -> tuple[int, int]:
        at = (cols["nodes_treeids"][k], cols[key][k])
        return (leaf_of[at], 1) if at in leaf_of else (node_of[at], 0)

    modes = [MODES.index(cols["nodes_modes"][k]) for k in inner]
    members: list[float] = []
    if member:
        for i in range(0, len(modes), 3):
            modes[i] = MODES.index("BRANCH_MEMBER")
            members += [float(v) for v in sorted({i % 5, (i + 2) % 5})] + [np.nan]
    trues, falses = [child(k, "nodes_truenodeids") for k in inner], [
        child(k, "nodes_falsenodeids") for k in inner]
    roots = [node_of[(t, 0)] for t in range(4)]
    leaf_entries = sorted((leaf_of[(t, n)], c, w) for t, n, c, w in zip(
        cols["target_treeids"], cols["target_nodeids"], cols["target_ids"],
        cols["target_weights"], strict=True))
    attrs: dict[str, Any] = {
        "nodes_featureids": [cols["nodes_featureids"][k] for k in inner],
        "nodes_modes": helper.make_tensor("modes", TensorProto.UINT8, [len(modes)], modes),
        "nodes_splits": helper.make_tensor("splits", TensorProto.FLOAT, [len(inner)],
                                           [cols["nodes_values"][k] for k in inner]),
        "nodes_truenodeids": [c for c, _ in trues], "nodes_trueleafs": [f for _, f in trues],
        "nodes_falsenodeids": [c for c, _ in falses],
        "nodes_falseleafs": [f for _, f in falses],
        "nodes_missing_value_tracks_true": [cols["nodes_missing_value_tracks_true"][k]
                                            for k in inner],
        "tree_roots": roots, "leaf_targetids": [c for _, c, _ in leaf_entries],
        "leaf_weights": helper.make_tensor("w", TensorProto.FLOAT, [len(leaf_entries)],
                                           [w for _, _, w in leaf_entries]),
        "n_targets": 2, "aggregate_function": aggregate, "post_transform": post,
    }
    if members:
        attrs["membership_values"] = helper.make_tensor("m", TensorProto.FLOAT, [len(members)],
                                                        members)
    return model_of("TreeEnsemble", attrs, [("Y", TensorProto.FLOAT)], 5)


@pytest.mark.parametrize(("aggregate", "post", "member"), [
    (1, 0, False), (0, 2, True), (2, 1, True), (3, 3, False), (1, 0, True),
])
def test_tree_ensemble_5(aggregate: int, post: int, member: bool) -> None:
    # onnxruntime reads TreeEnsemble's post_transform 1 as LOGISTIC and 2 as SOFTMAX (its own
    # enum's order); the standard says 1 SOFTMAX, 2 LOGISTIC, which Kiln follows
    oracle = tree_ensemble_model(19 + aggregate, aggregate, ORT_POST[post], member)
    check(tree_ensemble_model(19 + aggregate, aggregate, post, member), oracle=oracle)


def test_double_input() -> None:
    model = regressor(legacy_trees(23, 3, 3, ("BRANCH_LEQ", "BRANCH_EQ"), 1), 1)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = data(9).astype(np.float64)
    expected = session.run(None, {"X": x})[0]
    graph = load_onnx(model)
    np.testing.assert_allclose(reference_run(graph, {"X": x})[0], expected, RTOL, ATOL)
    got = build(graph, input_shapes={"X": (9, FEATURES)}).run({"X": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, RTOL, ATOL)


def test_string_labels_rejected() -> None:
    cols = legacy_trees(29, 2, 2, ("BRANCH_LEQ",), 2)
    model = classifier(cols, 2)
    node = model.graph.node[0]
    del node.attribute[[a.name for a in node.attribute].index("classlabels_int64s")]
    node.attribute.append(helper.make_attribute("classlabels_strings", ["a", "b"]))
    with pytest.raises(KilnError, match="TreeEnsembleClassifier.*string class labels"):
        load_onnx(model)


def _forest_attrs(**changes: Any) -> dict[str, Any]:
    """One tree: node 0 splits feature 1 at 0.5 into leaves 0 (true) and 1 (false)."""
    attrs: dict[str, Any] = {
        "nodes_featureids": [1], "nodes_modes": [0], "nodes_splits": [0.5],
        "nodes_truenodeids": [0], "nodes_trueleafs": [1], "nodes_falsenodeids": [1],
        "nodes_falseleafs": [1], "tree_roots": [0], "leaf_targetids": [0, 0],
        "leaf_weights": [1.0, 2.0], "n_targets": 1,
    }
    attrs.update(changes)
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in attrs.items()}


def _add(attrs: dict[str, Any], features: int = 3) -> Any:
    builder = GraphBuilder()
    x = builder.add_input("x", TensorType(DType.F32, ("n", features)))
    return builder, builder.add1(Op.TREE_ENSEMBLE, [x], attrs, name="forest")


@pytest.mark.parametrize(("changes", "message"), [
    ({"nodes_splits": [0.5, 1.0]}, "nodes_splits has 2 entries; nodes_featureids has 1"),
    ({"nodes_modes": [9]}, "mode 9 is not one of"),
    ({"nodes_truenodeids": [2]}, "node 0: true leaf id 2 is out of range"),
    ({"nodes_trueleafs": [0]}, "a node is its own descendant"),
    ({"nodes_featureids": [3]}, "reads feature 3 but X has 3"),
    ({"leaf_targetids": [0, 1]}, "leaf target id 1 is out of range"),
    ({"tree_roots": [1]}, "tree_roots must be"),
    ({"aggregate_function": 7}, "aggregate_function 7"),
    ({"nodes_modes": [6]}, "membership_values holds 0 sets for 1 BRANCH_MEMBER"),
    ({"base_values": [1.0, 2.0]}, "base_values has 2 entries for 1 targets"),
])
def test_rule_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeInferenceError, match=f"tree_ensemble \\(node 'forest'\\): .*"
                                                 f"{message}"):
        _add(_forest_attrs(**changes))


def test_text_round_trip_runs_the_same() -> None:
    builder, y = _add(_forest_attrs(
        nodes_modes=[6], membership_values=[0.0, 2.0, np.nan], leaf_sizes=[2, 0],
        leaf_targetids=[0, 0], nodes_missing_value_tracks_true=[1], base_values=[0.25]))
    graph = builder.finish([y])
    text = print_graph(graph, full_constants=True)
    again = parse_graph(text)
    assert print_graph(again, full_constants=True) == text
    x = np.array([[0, 0, 0], [0, 1, 0], [0, 2, 0], [0, np.nan, 0]], np.float32)
    expected = np.array([[3.25], [0.25], [3.25], [3.25]], np.float32)
    np.testing.assert_array_equal(reference_run(again, {"x": x})[0], expected)
    compiled = build(again, input_shapes={"x": (4, 3)}).run({"x": x})[0]
    np.testing.assert_array_equal(compiled, expected)
