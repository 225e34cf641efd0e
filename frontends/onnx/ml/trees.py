"""Converters of the ai.onnx.ml tree ensembles (TreeEnsemble, TreeEnsembleClassifier,
TreeEnsembleRegressor) onto the IR's TREE_ENSEMBLE.

TreeEnsemble (ml opset 5) maps attribute for attribute. The older regressor and classifier list
every node (leaves too) by (tree id, node id) and their leaf votes by the same pair; they become
the normalized form (interior nodes only, leaves with ``leaf_sizes`` entries each, roots, base
values). The regressor's base values and post transform go into the op. The classifier's label
and scores follow onnxruntime's TreeEnsembleClassifier, binary quirks included (see
:func:`_binary`): the op gives raw class scores and standard IR ops finish them (the post
transforms and the two-column form of one score come from :mod:`.post`, shared with the other
classifiers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.rules.ml import AGGREGATES, MODES, POST_TRANSFORMS
from kiln.compiler.ir.types import DType

from . import MlNode, converter
from .post import argmax_labels, binary_scores, post_transform

_INPUT_TYPES = (DType.F32, DType.F64, DType.I64, DType.I32)


def _floats(node: MlNode, name: str) -> np.ndarray | None:
    """A float attribute list, or its ``*_as_tensor`` (double) form."""
    for key in (f"{name}_as_tensor", name):
        if node.attrs.get(key) is not None:
            return np.asarray(node.attrs[key], np.float64).reshape(-1)
    return None


def _enum(node: MlNode, name: str, names: Sequence[str], default: str) -> int:
    value = node.attrs.get(name, default)
    if value not in names:
        raise node.fail(f"{name} {value!r} is not one of {', '.join(names)}")
    return names.index(value)


def _legacy_forest(node: MlNode, prefix: str) -> dict[str, Any]:
    """The TREE_ENSEMBLE attributes of a TreeEnsembleRegressor (prefix ``target``) or
    TreeEnsembleClassifier (``class``): leaves become leaf entries, each tree gets a root."""
    attrs = node.attrs
    tree_ids = np.asarray(attrs.get("nodes_treeids", ()), np.int64)
    node_ids = np.asarray(attrs.get("nodes_nodeids", ()), np.int64)
    n = tree_ids.size
    modes = list(attrs.get("nodes_modes", ()))
    columns = {name: np.asarray(attrs.get(name, ()), np.int64) for name in
               ("nodes_featureids", "nodes_truenodeids", "nodes_falsenodeids")}
    splits = _floats(node, "nodes_values")
    missing = np.asarray(attrs.get("nodes_missing_value_tracks_true", [0] * n), np.int64)
    if n == 0:
        raise node.fail("the ensemble has no nodes")
    for name, column in [("nodes_nodeids", node_ids), ("nodes_modes", modes),
                         ("nodes_values", splits if splits is not None else ()),
                         ("nodes_missing_value_tracks_true", missing), *columns.items()]:
        if len(column) != n:
            raise node.fail(f"{name} has {len(column)} entries; nodes_treeids has {n}")
    assert splits is not None
    for mode in set(modes):
        if mode != "LEAF" and mode not in MODES:
            raise node.fail(f"node mode {mode!r} is not one of LEAF, {', '.join(MODES)}")
    # (tree id, node id) pairs as one sortable key; lookups by binary search
    span = int(max(node_ids.max(), columns["nodes_truenodeids"].max(),
                   columns["nodes_falsenodeids"].max())) + 1
    if (node_ids < 0).any() or (tree_ids < 0).any():
        raise node.fail("negative tree or node id")
    keys = tree_ids * span + node_ids
    by_key = np.argsort(keys, kind="stable")
    if (np.diff(keys[by_key]) == 0).any():
        raise node.fail("a (tree id, node id) pair appears twice in the nodes")

    def find(trees: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
        """Positions of the nodes (trees, ids) in the node lists."""
        wanted = trees * span + ids
        at = np.minimum(np.searchsorted(keys[by_key], wanted), n - 1)
        found = by_key[at]
        missing = np.flatnonzero((keys[found] != wanted) | (ids < 0))
        if missing.size:
            k = int(missing[0])
            raise node.fail(f"{what} names node ({int(trees[k])}, {int(ids[k])}), which is "
                            f"not in the nodes")
        return found

    is_leaf = np.array([m == "LEAF" for m in modes])
    # interior nodes and leaves numbered in the order they are listed
    interior = np.cumsum(~is_leaf) - 1
    leaf = np.cumsum(is_leaf) - 1
    n_leaves = int(is_leaf.sum())

    vote_trees = np.asarray(attrs.get(f"{prefix}_treeids", ()), np.int64)
    vote_nodes = np.asarray(attrs.get(f"{prefix}_nodeids", ()), np.int64)
    vote_ids = np.asarray(attrs.get(f"{prefix}_ids", ()), np.int64)
    vote_weights = _floats(node, f"{prefix}_weights")
    vote_weights = np.zeros(0) if vote_weights is None else vote_weights
    if not (vote_trees.size == vote_nodes.size == vote_ids.size == vote_weights.size):
        raise node.fail(f"{prefix}_treeids, {prefix}_nodeids, {prefix}_ids and "
                        f"{prefix}_weights differ in length")
    voter = find(vote_trees, vote_nodes, f"a {prefix} vote")
    if not is_leaf[voter].all():
        k = int(np.flatnonzero(~is_leaf[voter])[0])
        raise node.fail(f"{prefix} vote {k} names node ({int(vote_trees[k])}, "
                        f"{int(vote_nodes[k])}), which is not a leaf")
    # votes grouped by leaf, in the order they are listed within a leaf
    order = np.argsort(leaf[voter], kind="stable")
    sizes = np.bincount(leaf[voter], minlength=n_leaves)

    inner = np.flatnonzero(~is_leaf)

    def children(column: str) -> tuple[np.ndarray, np.ndarray]:
        """Each interior node's child in ``column``: its index (leaf or interior) and leaf
        flag."""
        target = find(tree_ids[inner], columns[column][inner], f"a node's {column}")
        flags = is_leaf[target]
        return np.where(flags, leaf[target], interior[target]), flags.astype(np.int64)

    true_ids, true_leafs = children("nodes_truenodeids")
    false_ids, false_leafs = children("nodes_falsenodeids")
    # a tree's root is the one node no other node of the tree points at
    pointed = np.zeros(n, bool)
    pointed[find(tree_ids[inner], columns["nodes_truenodeids"][inner], "a child")] = True
    pointed[find(tree_ids[inner], columns["nodes_falsenodeids"][inner], "a child")] = True
    tree_list, heads_per_tree = np.unique(tree_ids[~pointed], return_counts=True)
    all_trees = np.unique(tree_ids)
    if tree_list.size != all_trees.size or (heads_per_tree != 1).any():
        bad = next(int(t) for t in all_trees if int(np.sum(tree_ids[~pointed] == t)) != 1)
        raise node.fail(f"tree {bad} has {int(np.sum(tree_ids[~pointed] == bad))} root "
                        f"nodes; expected 1")
    heads = np.flatnonzero(~pointed)
    heads = heads[np.argsort(tree_ids[heads], kind="stable")]
    # a tree of one leaf: an interior node both of whose ways lead to it
    lone = heads[is_leaf[heads]]
    roots = np.where(is_leaf[heads], inner.size + np.cumsum(is_leaf[heads]) - 1,
                     interior[heads])
    lone_leaf = leaf[lone]
    zeros = np.zeros(lone.size, np.int64)
    ones = np.ones(lone.size, np.int64)
    return {
        "nodes_featureids": np.concatenate([columns["nodes_featureids"][inner], zeros]),
        "nodes_modes": np.concatenate([np.array([MODES.index(modes[k]) for k in inner],
                                                np.int64), zeros]),
        "nodes_splits": np.concatenate([splits[inner], zeros.astype(np.float64)]),
        "nodes_truenodeids": np.concatenate([true_ids, lone_leaf]),
        "nodes_trueleafs": np.concatenate([true_leafs, ones]),
        "nodes_falsenodeids": np.concatenate([false_ids, lone_leaf]),
        "nodes_falseleafs": np.concatenate([false_leafs, ones]),
        "nodes_missing_value_tracks_true": np.concatenate([missing[inner], zeros]),
        "tree_roots": roots.astype(np.int64),
        "leaf_targetids": vote_ids[order],
        "leaf_weights": vote_weights[order],
        "leaf_sizes": sizes.astype(np.int64),
        "aggregate_function": _enum(node, "aggregate_function", AGGREGATES, "SUM"),
    }


def _features(builder: GraphBuilder, node: MlNode) -> Value:
    """X as a float tensor (the older ops also take integers, compared as floats)."""
    x = node.inputs[0] if node.inputs else None
    if x is None:
        raise node.fail("input X is missing")
    if x.type.dtype not in _INPUT_TYPES:
        raise node.fail(f"X has element type {x.type.dtype.value}; expected one of "
                        f"{', '.join(t.value for t in _INPUT_TYPES)}")
    if x.type.dtype.is_int:
        x = builder.add1(Op.CAST, [x], {"to": DType.F32})
    return x


def _ensemble(builder: GraphBuilder, node: MlNode, x: Value, attrs: dict[str, Any]) -> Value:
    return builder.add1(Op.TREE_ENSEMBLE, [x], attrs, name=node.name)


def _as_f32(builder: GraphBuilder, value: Value) -> Value:
    if value.type.dtype is DType.F32:
        return value
    return builder.add1(Op.CAST, [value], {"to": DType.F32})


@converter("TreeEnsemble")
def _tree_ensemble(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    x = _features(builder, node)
    # its int lists and tensors are all arrays here; nodes_hitrates (a hint) is dropped
    attrs = {k: (v if isinstance(v, int) else np.asarray(v).reshape(-1))
             for k, v in node.attrs.items() if k != "nodes_hitrates"}
    return [_ensemble(builder, node, x, attrs)]


@converter("TreeEnsembleRegressor")
def _regressor(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    x = _features(builder, node)
    attrs = _legacy_forest(node, "target")
    attrs["n_targets"] = int(node.attrs.get("n_targets", 1))
    attrs["post_transform"] = _enum(node, "post_transform", POST_TRANSFORMS, "NONE")
    base = _floats(node, "base_values")
    if base is not None and base.size:
        attrs["base_values"] = base
    return [_as_f32(builder, _ensemble(builder, node, x, attrs))]


# -- the classifier --------------------------------------------------------------------------


def _const(builder: GraphBuilder, data: Any, dtype: DType = DType.F32) -> Value:
    return builder.constant(np.asarray(data, dtype.numpy))


def _column(builder: GraphBuilder, scores: Value, k: int) -> Value:
    """Column ``k`` of [N, K] as [N, 1]."""
    return builder.add1(Op.GATHER, [scores, _const(builder, [k], DType.I64)], {"axis": 1})


def _binop(builder: GraphBuilder, op: Op, a: Value, b: Value | float) -> Value:
    other = b if isinstance(b, Value) else _const(builder, b, a.type.dtype)
    return builder.add1(op, [a, other])


def _concat(builder: GraphBuilder, columns: Sequence[Value]) -> Value:
    return builder.add1(Op.CONCAT, list(columns), {"axis": 1})


def _pick(builder: GraphBuilder, cond: Value, yes: Any, no: Any) -> Value:
    """Where(cond [N, 1], yes, no) flattened to [N] (the label output)."""
    picked = builder.add1(Op.WHERE, [cond, _const(builder, yes, DType.I64),
                                     _const(builder, no, DType.I64)])
    return builder.add1(Op.RESHAPE, [picked, _const(builder, [-1], DType.I64)])


def _binary(builder: GraphBuilder, node: MlNode, raw: Value, labels: np.ndarray,
            base: np.ndarray | None, scored: set[int], positive: bool,
            kind: str) -> tuple[Value, Value]:
    """Label and [N, 2] scores of a two-class classifier as onnxruntime computes them.

    ``scored`` is the set of classes with votes (onnxruntime assumes a class without votes has
    no score in any row). Its quirks, kept: base values of two classes where class 1 has votes
    give p1 = b1 + s0 and p0 = -p1; the score of a class without votes reads 0; when class 1
    has no votes (and there are not two base values) the one score p0 stands for the positive
    class (label by p0 > 0.5 when all votes are >= 0, else p0 > 0) and the other is made up
    (1 - p0, -p0, or logistic(-p0)); with votes for both classes the label is 1 when p1 > 0,
    else 0 (literally, whatever the labels).
    """
    s0, s1 = _column(builder, raw, 0), _column(builder, raw, 1)
    nb = 0 if base is None else base.size
    if nb == 2 and 1 in scored:
        p1 = _binop(builder, Op.ADD, s0, float(base[1]))
        p0 = builder.add1(Op.NEG, [p1])
    elif nb == 2:
        p0, p1 = _binop(builder, Op.ADD, s0, float(base[0])), _binop(builder, Op.ADD, s1,
                                                                      float(base[1]))
    else:
        p0, p1 = (s0 if nb == 0 else _binop(builder, Op.ADD, s0, float(base[0]))), s1
    pos = p1 if (1 in scored) else p0
    if len(scored) == 1:  # onnxruntime's binary case
        cond = _binop(builder, Op.GREATER, pos, 0.5 if positive else 0.0)
        label = _pick(builder, cond, labels[1], labels[0])
    else:
        cond = _binop(builder, Op.GREATER, pos, 0.0)
        label = _pick(builder, cond, 1, 0)
    if nb == 2 or 1 in scored:
        # two scores; a class without votes reads 0, which is its raw column
        columns = [p if k in scored else raw_k for k, (p, raw_k) in
                   enumerate(((p0, s0), (p1, s1)))]
        return label, post_transform(builder, _concat(builder, columns), kind, node)
    if positive and kind != "PROBIT":  # [1 - p0, p0], whatever the post transform
        return label, _concat(builder, [_binop(builder, Op.SUB, _const(builder, 1.0), p0), p0])
    return label, binary_scores(builder, p0, kind, "negate", node)


@converter("TreeEnsembleClassifier")
def _classifier(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    if node.attrs.get("classlabels_strings"):
        raise node.fail("string class labels (classlabels_strings) are not supported: Kiln "
                        "has no string tensors; export with integer labels")
    labels = np.asarray(node.attrs.get("classlabels_int64s", ()), np.int64)
    if labels.size < 2:
        raise node.fail(f"classlabels_int64s must list 2 or more classes, got {labels.size}")
    x = _features(builder, node)
    attrs = _legacy_forest(node, "class")
    attrs["n_targets"] = int(labels.size)
    attrs["aggregate_function"] = 1  # onnxruntime's classifier always sums the votes
    kind = POST_TRANSFORMS[_enum(node, "post_transform", POST_TRANSFORMS, "NONE")]
    base = _floats(node, "base_values")
    base = base if base is not None and base.size else None
    scored = set(attrs["leaf_targetids"].tolist())
    if not scored:
        raise node.fail("the classifier has no class votes")
    if labels.size == 2:
        raw = _as_f32(builder, _ensemble(builder, node, x, attrs))
        positive = bool((attrs["leaf_weights"] >= 0).all())
        label, scores = _binary(builder, node, raw, labels, base, scored, positive, kind)
        return [label, scores]
    if base is not None:
        if base.size != labels.size:
            raise node.fail(f"base_values has {base.size} entries for {labels.size} classes")
        attrs["base_values"] = base
    raw = _as_f32(builder, _ensemble(builder, node, x, attrs))
    ranked = raw
    unscored = [k for k in range(labels.size) if k not in scored]
    if unscored and base is None:  # onnxruntime's argmax skips classes without a score
        mask = np.zeros(labels.size, np.float32)
        mask[unscored] = -np.inf
        ranked = _binop(builder, Op.ADD, raw, _const(builder, mask))
    return [argmax_labels(builder, ranked, labels), post_transform(builder, raw, kind, node)]
