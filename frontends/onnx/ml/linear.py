"""ai.onnx.ml converters of the linear models: LinearClassifier and LinearRegressor.

Both become ``X @ coefficients^T + intercepts`` (a MatMul and an Add on float32, as
onnxruntime casts every input type to float), then the post-transform of :mod:`.post`.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Value
from kiln.compiler.ir.op import Op

from . import MlNode, converter
from .post import (
    argmax_labels,
    binary_scores,
    class_labels,
    f32,
    float_attr,
    float_input,
    i64,
    named,
    pick,
    post_transform,
)


def _affine(builder: GraphBuilder, node: MlNode, x: Value, n_targets: int | None) -> Value:
    """x @ coefficients.reshape(n_targets, F).T + intercepts; ``n_targets`` None: one target
    per intercept."""
    coefficients = float_attr(node, "coefficients")
    intercepts = node.attrs.get("intercepts")
    if n_targets is None:
        n_targets = len(intercepts) if intercepts else None
    features = x.type.shape[1]
    if n_targets is None:
        if not isinstance(features, int):
            raise node.fail("without intercepts the number of features must be static")
        n_targets = coefficients.size // max(features, 1)
    if n_targets < 1 or coefficients.size % n_targets:
        raise node.fail(f"{coefficients.size} coefficients do not split into {n_targets} rows")
    weights = coefficients.reshape(n_targets, -1)
    if isinstance(features, int) and weights.shape[1] != features:
        raise node.fail(f"coefficients hold {weights.shape[1]} weights per row for an input of "
                        f"{features} features")
    scores = builder.add1(Op.MATMUL, [x, builder.constant(np.ascontiguousarray(weights.T))])
    if intercepts:
        if len(intercepts) != n_targets:
            raise node.fail(f"{len(intercepts)} intercepts for {n_targets} coefficient rows")
        scores = builder.add1(Op.ADD, [scores, f32(builder, intercepts)])
    return scores


@converter("LinearClassifier")
def linear_classifier(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    labels = class_labels(node)
    kind = str(node.attrs.get("post_transform", "NONE"))
    x = float_input(builder, node)
    scores = _affine(builder, node, x, None)
    n_targets = scores.type.shape[1]
    label_name, scores_name = (node.out_names + [None])[:2]
    if n_targets == 1:
        if len(labels) != 2:  # as onnxruntime requires
            raise node.fail(f"one row of coefficients needs two class labels, got {len(labels)}")
        # The second label when the score (before any transform) is > 0, as in onnxruntime.
        flat = builder.add1(Op.SQUEEZE, [scores, i64(builder, [1])])
        label = pick(builder, builder.add1(Op.GREATER, [flat, f32(builder, 0.0)]),
                     int(labels[1]), int(labels[0]))
        out = binary_scores(builder, scores, kind, "complement", node)
    else:
        if len(labels) != n_targets:
            raise node.fail(f"{len(labels)} class labels for {n_targets} score columns")
        label = argmax_labels(builder, scores, labels)
        out = post_transform(builder, scores, kind, node)
    return [named(builder, label, label_name), named(builder, out, scores_name)]


@converter("LinearRegressor")
def linear_regressor(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    kind = str(node.attrs.get("post_transform", "NONE"))
    x = float_input(builder, node)
    scores = _affine(builder, node, x, int(node.attrs.get("targets", 1)))
    return [named(builder, post_transform(builder, scores, kind, node), node.out_names[0])]
