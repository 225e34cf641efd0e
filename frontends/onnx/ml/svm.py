"""ai.onnx.ml converters of the support vector machines: SVMClassifier and SVMRegressor.

The kernel between the inputs and the support vectors is one MatMul plus elementwise ops
(RBF expands ||x - v||^2 as |x|^2 - 2 x.v + |v|^2, clamped at 0, so no [N, V, F] tensor is
made). The classifier's one-vs-one decision values are one more MatMul against a [V, pairs]
matrix gathering each pair's coefficients, and its votes a MatMul of the signs against the
pair -> class incidence. With prob_a/prob_b (SVC(probability=True)) the scores are libsvm's
pairwise-coupled probabilities, iterated in a Loop. Labels and scores follow onnxruntime's
SVMClassifier (the oracle).
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import Dim, DType, TensorType

from . import MlNode, converter
from .post import (
    argmax_labels,
    binary_scores,
    check_kind,
    class_labels,
    f32,
    float_attr,
    float_input,
    i64,
    named,
    pick,
    post_transform,
)

KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")
# Integer POLY degrees up to this are repeated multiplications (exact for negative bases).
_MAX_UNROLLED_DEGREE = 16
# onnxruntime's pairwise probabilities are clamped to [1e-7, 1 - 1e-7], and its
# multiclass_probability runs at most 100 rounds, stopping below an error of 0.005 / C.
_PROBABILITY_FLOOR = 1e-7
_COUPLING_ROUNDS = 100
_COUPLING_TOLERANCE = 0.005


def _kernel(builder: GraphBuilder, node: MlNode, x: Value, vectors: np.ndarray,
            kernel: str) -> Value:
    """kernel(x_n, v_j) for every row of x [N, F] and of vectors [V, F]: [N, V]."""
    if kernel not in KERNELS:
        raise node.fail(f"unknown kernel_type {kernel!r} (one of {', '.join(KERNELS)})")
    params = tuple(node.attrs.get("kernel_params", ())) or (0.0, 0.0, 0.0)
    if len(params) != 3:
        raise node.fail(f"kernel_params must hold gamma, coef0 and degree, got {params}")
    gamma, coef0, degree = (float(np.float32(p)) for p in params)
    if isinstance(x.type.shape[1], int) and x.type.shape[1] != vectors.shape[1]:
        raise node.fail(f"the input has {x.type.shape[1]} features, the support vectors "
                        f"{vectors.shape[1]}")
    dot = builder.add1(Op.MATMUL, [x, builder.constant(np.ascontiguousarray(vectors.T))])
    if kernel == "LINEAR":
        return dot
    if kernel == "RBF":
        x_sq = builder.add1(Op.REDUCE_SUM_SQUARE, [x, i64(builder, [1])], {"keepdims": 1})
        v_sq = f32(builder, np.square(vectors.astype(np.float64)).sum(axis=1))
        twice = builder.add1(Op.MUL, [dot, f32(builder, 2.0)])
        dist = builder.add1(Op.ADD, [builder.add1(Op.SUB, [x_sq, twice]), v_sq])
        dist = builder.add1(Op.MAX, [dist, f32(builder, 0.0)])
        return builder.add1(Op.EXP, [builder.add1(Op.MUL, [dist, f32(builder, -gamma)])])
    affine = builder.add1(Op.ADD, [builder.add1(Op.MUL, [dot, f32(builder, gamma)]),
                                   f32(builder, coef0)])
    if kernel == "SIGMOID":
        return builder.add1(Op.TANH, [affine])
    if degree.is_integer() and 1 <= degree <= _MAX_UNROLLED_DEGREE:
        power = affine
        for _ in range(int(degree) - 1):
            power = builder.add1(Op.MUL, [power, affine])
        return power
    return builder.add1(Op.POW, [affine, f32(builder, degree)])


def _pairs(n_classes: int) -> list[tuple[int, int]]:
    """The one-vs-one classifiers in onnxruntime's order: (0,1), (0,2), ..., (1,2), ..."""
    return [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]


@converter("SVMClassifier")
def svm_classifier(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    labels = class_labels(node)
    n_classes = len(labels)
    if n_classes < 1:
        raise node.fail("classlabels_ints is empty")
    kind = check_kind(str(node.attrs.get("post_transform", "NONE")), node)
    x = float_input(builder, node)
    coefficients = float_attr(node, "coefficients")
    rho = float_attr(node, "rho")
    per_class = [int(c) for c in node.attrs.get("vectors_per_class", ())]
    has_proba = len(node.attrs.get("prob_a", ())) > 0
    label_name, scores_name = (node.out_names + [None])[:2]
    if sum(per_class) > 0:
        return _svc(builder, node, x, labels, per_class, coefficients, rho, kind, has_proba,
                    label_name, scores_name)
    # liblinear mode: one row of weights per class, rho[0] added to every score.
    if coefficients.size % n_classes or rho.size < 1:
        raise node.fail(f"{coefficients.size} coefficients and {rho.size} rho do not fit "
                        f"{n_classes} classes")
    weights = coefficients.reshape(n_classes, -1)
    scores = builder.add1(Op.MATMUL, [x, builder.constant(np.ascontiguousarray(weights.T))])
    scores = builder.add1(Op.ADD, [scores, f32(builder, rho[0])])
    label = argmax_labels(builder, scores, labels)
    if n_classes == 2 and not has_proba:
        # onnxruntime's ChooseClass for one classifier: the second label when the top score
        # passes 0.5 (all weights >= 0) or 0 (mixed weights).
        top = builder.add1(Op.REDUCE_MAX, [scores, i64(builder, [1])], {"keepdims": 0})
        threshold = 0.5 if bool(np.all(coefficients >= 0)) else 0.0
        compare = Op.GREATER_OR_EQUAL if threshold else Op.GREATER
        label = pick(builder, builder.add1(compare, [top, f32(builder, threshold)]),
                     int(labels[1]), label)
    out = post_transform(builder, scores, kind, node)
    return [named(builder, label, label_name), named(builder, out, scores_name)]


def _svc(builder: GraphBuilder, node: MlNode, x: Value, labels: np.ndarray,
         per_class: list[int], coefficients: np.ndarray, rho: np.ndarray, kind: str,
         has_proba: bool, label_name: str | None, scores_name: str | None) -> list[Value | None]:
    """SVMClassifier with support vectors: one-vs-one decision values and votes."""
    n_classes = len(labels)
    if len(per_class) != n_classes:
        raise node.fail(f"vectors_per_class has {len(per_class)} entries for {n_classes} classes")
    n_vectors = sum(per_class)
    pairs = _pairs(n_classes)
    if coefficients.size < (n_classes - 1) * n_vectors or rho.size < len(pairs):
        raise node.fail(f"{coefficients.size} coefficients and {rho.size} rho do not fit "
                        f"{n_classes} classes and {n_vectors} support vectors")
    vectors = float_attr(node, "support_vectors")
    if vectors.size % n_vectors:
        raise node.fail(f"{vectors.size} support vector values do not split into {n_vectors}")
    coefs = coefficients[: (n_classes - 1) * n_vectors].reshape(n_classes - 1, n_vectors)
    starts = np.concatenate([[0], np.cumsum(per_class)]).astype(int)
    # Pair (i, j) weighs class i's vectors by row j - 1 and class j's by row i.
    weights = np.zeros((n_vectors, len(pairs)), np.float32)
    wins = np.zeros((len(pairs), n_classes), np.float32)
    losses = np.zeros((len(pairs), n_classes), np.float32)
    for k, (i, j) in enumerate(pairs):
        weights[starts[i]:starts[i + 1], k] = coefs[j - 1, starts[i]:starts[i + 1]]
        weights[starts[j]:starts[j + 1], k] = coefs[i, starts[j]:starts[j + 1]]
        wins[k, i] = losses[k, j] = 1.0
    kernels = _kernel(builder, node, x, vectors.reshape(n_vectors, -1),
                      str(node.attrs.get("kernel_type", "LINEAR")))
    scores = builder.add1(Op.MATMUL, [kernels, builder.constant(weights)])
    scores = builder.add1(Op.ADD, [scores, f32(builder, rho[: len(pairs)])])
    # Class i wins pair (i, j) when its decision value is > 0; the first most-voted class wins.
    positive = builder.add1(Op.CAST, [builder.add1(Op.GREATER, [scores, f32(builder, 0.0)])],
                            {"to": DType.F32})
    negative = builder.add1(Op.SUB, [f32(builder, 1.0), positive])
    votes = builder.add1(Op.ADD, [builder.add1(Op.MATMUL, [positive, builder.constant(wins)]),
                                  builder.add1(Op.MATMUL, [negative, builder.constant(losses)])])
    label = argmax_labels(builder, votes, labels)
    if has_proba:
        probabilities = _probabilities(builder, node, scores, n_classes)
        out = post_transform(builder, probabilities, kind, node)
    elif len(pairs) == 1:
        mode = "negate" if kind == "NONE" else "complement"
        out = binary_scores(builder, scores, kind, mode, node)
    else:
        out = post_transform(builder, scores, kind, node)
    return [named(builder, label, label_name), named(builder, out, scores_name)]


def _probabilities(builder: GraphBuilder, node: MlNode, scores: Value,
                   n_classes: int) -> Value:
    """Class probabilities [N, C] from the pairwise decision values [N, pairs]: Platt's
    sigmoid per pair, then libsvm's multiclass_probability fixed-point iteration as onnxruntime
    runs it (at most 100 rounds, each sample stopping once its error is below 0.005 / C),
    as a Loop that freezes the samples that have converged."""
    q = _coupling_matrix(builder, node, scores, n_classes)
    diagonal = builder.add1(Op.REDUCE_SUM, [builder.add1(Op.MUL, [q, builder.constant(
        np.eye(n_classes, dtype=np.float32))]), i64(builder, [2])], {"keepdims": 0})
    body = _coupling_round(builder, q, diagonal, scores.type.shape[0], n_classes)
    # p starts at 1 / C and no sample is done (diagonal, finite and >= 0, gives the shape).
    start = builder.add1(Op.ADD, [builder.add1(Op.MUL, [diagonal, f32(builder, 0.0)]),
                                  f32(builder, 1.0 / n_classes)])
    first = builder.add1(Op.GATHER, [diagonal, i64(builder, [0])], {"axis": 1})
    none_done = builder.add1(Op.LESS, [first, f32(builder, -1.0)])
    results = builder.add(Op.LOOP, [i64(builder, _COUPLING_ROUNDS),
                                    builder.constant(np.array(True)), start, none_done],
                          {"body": body}, outputs=2)
    assert results[0] is not None
    return results[0]


def _coupling_matrix(builder: GraphBuilder, node: MlNode, scores: Value,
                     n_classes: int) -> Value:
    """libsvm's Q [N, C, C] of the pairwise probabilities r (r[i, j] = p_ij for each pair
    i < j, r[j, i] = 1 - p_ij): Q[t, t] = sum_j r[j, t]^2, Q[t, j] = -r[j, t] r[t, j]."""
    pairs = _pairs(n_classes)
    prob_a, prob_b = float_attr(node, "prob_a"), float_attr(node, "prob_b")
    if prob_a.size < len(pairs) or prob_b.size != prob_a.size:
        raise node.fail(f"prob_a and prob_b need {len(pairs)} values each, got {prob_a.size} "
                        f"and {prob_b.size}")
    platt = builder.add1(Op.MUL, [scores, f32(builder, prob_a[: len(pairs)])])
    platt = builder.add1(Op.ADD, [platt, f32(builder, prob_b[: len(pairs)])])
    pairwise = builder.add1(Op.SIGMOID, [builder.add1(Op.NEG, [platt])])
    pairwise = builder.add1(Op.CLIP, [pairwise, f32(builder, _PROBABILITY_FLOOR),
                                      f32(builder, 1 - _PROBABILITY_FLOOR)])
    upper = np.zeros((len(pairs), n_classes * n_classes), np.float32)
    lower = np.zeros_like(upper)
    for k, (i, j) in enumerate(pairs):
        upper[k, i * n_classes + j] = 1.0
        lower[k, j * n_classes + i] = 1.0
    complement = builder.add1(Op.SUB, [f32(builder, 1.0), pairwise])
    r = builder.add1(Op.ADD, [builder.add1(Op.MATMUL, [pairwise, builder.constant(upper)]),
                              builder.add1(Op.MATMUL, [complement, builder.constant(lower)])])
    r = builder.add1(Op.RESHAPE, [r, i64(builder, [-1, n_classes, n_classes])])
    column_sq = builder.add1(Op.REDUCE_SUM_SQUARE, [r, i64(builder, [1])], {"keepdims": 1})
    r_t = builder.add1(Op.TRANSPOSE, [r], {"perm": (0, 2, 1)})
    off_diagonal = builder.add1(Op.NEG, [builder.add1(Op.MUL, [r, r_t])])  # 0 on the diagonal
    on_diagonal = builder.add1(Op.MUL, [builder.add1(Op.TRANSPOSE, [column_sq], {
        "perm": (0, 2, 1)}), builder.constant(np.eye(n_classes, dtype=np.float32))])
    return builder.add1(Op.ADD, [off_diagonal, on_diagonal])


def _coupling_round(builder: GraphBuilder, q: Value, diagonal: Value, batch: Dim,
                    n_classes: int) -> Graph:
    """The Loop body: one round of multiclass_probability over carried (p [N, C], done
    [N, 1]); a sample whose error is already below the tolerance keeps its p."""
    body = builder.sub(builder.names.fresh("svm_probability"))
    body.add_input(None, TensorType(DType.I64, ()), hint="iteration")
    body.add_input(None, TensorType(DType.BOOL, ()), hint="condition")
    p_in = body.add_input(None, TensorType(DType.F32, (batch, n_classes)), hint="p")
    done_in = body.add_input(None, TensorType(DType.BOOL, (batch, 1)), hint="done")
    classes = i64(body, [1])
    expanded = body.add1(Op.UNSQUEEZE, [p_in, classes])
    qp = body.add1(Op.REDUCE_SUM, [body.add1(Op.MUL, [q, expanded]), i64(body, [2])],
                   {"keepdims": 0})
    pqp = body.add1(Op.REDUCE_SUM, [body.add1(Op.MUL, [p_in, qp]), classes], {"keepdims": 1})
    error = body.add1(Op.REDUCE_MAX, [body.add1(Op.ABS, [body.add1(Op.SUB, [qp, pqp])]),
                                      classes], {"keepdims": 1})
    converged = body.add1(Op.LESS, [error, f32(body, _COUPLING_TOLERANCE / n_classes)])
    done = body.add1(Op.OR, [done_in, converged])
    p = p_in
    for t in range(n_classes):  # onnxruntime updates the classes one after the other
        pick_t = i64(body, [t])
        qp_t = body.add1(Op.GATHER, [qp, pick_t], {"axis": 1})
        q_tt = body.add1(Op.GATHER, [diagonal, pick_t], {"axis": 1})
        q_t = body.add1(Op.GATHER, [q, i64(body, t)], {"axis": 1})
        diff = body.add1(Op.DIV, [body.add1(Op.SUB, [pqp, qp_t]), q_tt])
        p = body.add1(Op.ADD, [p, body.add1(Op.MUL, [diff, f32(body, np.eye(n_classes)[t])])])
        grow = body.add1(Op.ADD, [f32(body, 1.0), diff])
        twice_qp_t = body.add1(Op.MUL, [qp_t, f32(body, 2.0)])
        step = body.add1(Op.MUL, [diff, body.add1(Op.ADD, [body.add1(Op.MUL, [diff, q_tt]),
                                                           twice_qp_t])])
        pqp = body.add1(Op.DIV, [body.add1(Op.DIV, [body.add1(Op.ADD, [pqp, step]), grow]),
                                 grow])
        qp = body.add1(Op.DIV, [body.add1(Op.ADD, [qp, body.add1(Op.MUL, [diff, q_t])]), grow])
        p = body.add1(Op.DIV, [p, grow])
    p_out = body.add1(Op.WHERE, [done, p_in, p])
    all_done = body.add1(Op.REDUCE_MIN, [done, i64(body, [0, 1])], {"keepdims": 0})
    return body.finish([body.add1(Op.NOT, [all_done]), p_out, done])


@converter("SVMRegressor")
def svm_regressor(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    kind = check_kind(str(node.attrs.get("post_transform", "NONE")), node)
    if kind != "NONE":
        raise node.fail(f"post_transform {kind} is not supported for SVMRegressor (onnxruntime "
                        "ignores it and the ONNX reference rejects it)")
    x = float_input(builder, node)
    coefficients = float_attr(node, "coefficients")
    rho = float_attr(node, "rho")
    n_vectors = int(node.attrs.get("n_supports", 0))
    if rho.size < 1 or coefficients.size < max(n_vectors, 1):
        raise node.fail(f"{coefficients.size} coefficients and {rho.size} rho do not fit "
                        f"{n_vectors} support vectors")
    if n_vectors > 0:
        vectors = float_attr(node, "support_vectors").reshape(n_vectors, -1)
        kernels = _kernel(builder, node, x, vectors, str(node.attrs.get("kernel_type", "LINEAR")))
        weights = coefficients[:n_vectors].reshape(n_vectors, 1)
        y = builder.add1(Op.MATMUL, [kernels, builder.constant(weights)])
    else:  # liblinear mode: the coefficients are the weights of a linear kernel
        y = builder.add1(Op.MATMUL, [x, builder.constant(coefficients.reshape(-1, 1))])
    y = builder.add1(Op.ADD, [y, f32(builder, rho[:1])])
    if int(node.attrs.get("one_class", 0)):
        y = builder.add1(Op.WHERE, [builder.add1(Op.GREATER, [y, f32(builder, 0.0)]),
                                    f32(builder, 1.0), f32(builder, -1.0)])
    return [named(builder, y, node.out_names[0])]
