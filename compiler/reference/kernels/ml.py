"""Numpy kernels of the ai.onnx.ml ops the IR holds: TreeEnsemble.

Vectorized over rows: all rows descend one tree together, one level per step, and the trees'
leaf values are aggregated in tree order in X's type (as onnxruntime accumulates). The post
transforms follow onnxruntime's formulas (its logistic, softmax-zero and probit
approximation), which :mod:`kiln.compiler.lower.ops.trees` computes the same way.
"""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from ...ir.rules.ml import MEMBER, MODES, Forest, forest
from .registry import KernelContext, kernel

_COMPARE = {
    "BRANCH_LEQ": np.less_equal, "BRANCH_LT": np.less, "BRANCH_GTE": np.greater_equal,
    "BRANCH_GT": np.greater, "BRANCH_EQ": np.equal, "BRANCH_NEQ": np.not_equal,
}


def _descend(trees: Forest, x: np.ndarray, root: int) -> np.ndarray:
    """The leaf each row of ``x`` reaches from node ``root``."""
    at = np.full(x.shape[0], root, np.int64)
    rows = np.arange(x.shape[0])
    splits = trees.splits.astype(x.dtype)
    while (at >= 0).any():
        live = np.flatnonzero(at >= 0)
        node = at[live]
        value = x[rows[live], trees.features[node]]
        go_true = np.zeros(live.size, bool)
        for mode in np.unique(trees.modes[node]).tolist():
            pick = trees.modes[node] == mode
            if mode == MEMBER:
                go_true[pick] = [v in trees.members[n] for v, n in
                                 zip(value[pick].tolist(), node[pick].tolist(), strict=True)]
            else:
                go_true[pick] = _COMPARE[MODES[mode]](value[pick], splits[node[pick]])
        go_true |= trees.missing_true[node] & np.isnan(value)
        at[live] = np.where(go_true, trees.true_child[node], trees.false_child[node])
    return -at - 1


def logistic(v: np.ndarray) -> np.ndarray:
    """onnxruntime's logistic: exp of -|v| only (no overflow), mirrored for negative v."""
    e = (1 / (1 + np.exp(-np.abs(v)))).astype(v.dtype)
    return np.where(v < 0, v.dtype.type(1) - e, e)


def probit(v: np.ndarray) -> np.ndarray:
    """onnxruntime's probit: sqrt(2) * erfinv(2v - 1), erfinv by Winitzki's approximation."""
    t = v.dtype.type
    x = v * t(2) - t(1)
    sign = np.where(x < 0, t(-1), t(1))
    log = np.log((t(1) - x) * (t(1) + x))
    a = t(2) / (t(3.14159) * t(0.147)) + t(0.5) * log
    b = t(1) / t(0.147) * log
    return t(1.41421356) * sign * np.sqrt(-a + np.sqrt(a * a - b))


def post_transform(kind: str, scores: np.ndarray) -> np.ndarray:
    """Scores [N, K] after ``kind`` (the TreeEnsemble post transforms)."""
    if kind == "LOGISTIC":
        return logistic(scores)
    if kind == "PROBIT":
        return probit(scores)
    if kind in ("SOFTMAX", "SOFTMAX_ZERO"):
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        if kind == "SOFTMAX_ZERO":  # zeros stay zero and stay out of the sum
            shifted = np.where(scores == 0, scores.dtype.type(0), shifted)
        return shifted / shifted.sum(axis=1, keepdims=True)
    return scores


def evaluate(trees: Forest, x: np.ndarray) -> np.ndarray:
    """The ensemble's outputs [N, n_targets] for rows ``x`` [N, F]."""
    dtype = x.dtype
    n = x.shape[0]
    score = np.zeros((n, trees.n_targets), dtype)
    has = np.zeros((n, trees.n_targets), bool)
    rows = np.arange(n)
    entries = np.diff(trees.leaf_start)
    for root in trees.roots.tolist():
        leaf = _descend(trees, x, root)
        # the k-th entry of each row's leaf, for k up to the longest leaf
        for k in range(int(entries[leaf].max(initial=0))):
            live = np.flatnonzero(entries[leaf] > k)
            at = trees.leaf_start[leaf[live]] + k
            target, weight = trees.targets[at], trees.weights[at].astype(dtype)
            old = score[rows[live], target]
            if trees.aggregate in ("SUM", "AVERAGE"):
                new = old + weight
            else:
                better = weight < old if trees.aggregate == "MIN" else weight > old
                new = np.where(~has[rows[live], target] | better, weight, old)
            score[rows[live], target] = new
            has[rows[live], target] = True
    if trees.aggregate == "AVERAGE":
        score = score / dtype.type(trees.n_trees)
    if trees.base_values is not None:
        score = score + trees.base_values.astype(dtype)
    return post_transform(trees.post_transform, score).astype(dtype)


@kernel(Op.TREE_ENSEMBLE)
def tree_ensemble(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return evaluate(forest(ctx.attrs), x)
