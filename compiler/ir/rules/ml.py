"""Type rules of the ai.onnx.ml ops the IR holds: TreeEnsemble.

``tree_ensemble(X) -> Y``: the ai.onnx.ml TreeEnsemble (ml opset 5) on rows of ``X`` [N, F]
(float types), giving ``Y`` [N, n_targets] of X's type. Attributes (arrays are ``TENSOR``
attributes, so the text form elides large ones and prints them in full on request):

- ``nodes_featureids``, ``nodes_modes`` (0 BRANCH_LEQ, 1 BRANCH_LT, 2 BRANCH_GTE, 3 BRANCH_GT,
  4 BRANCH_EQ, 5 BRANCH_NEQ, 6 BRANCH_MEMBER), ``nodes_splits`` (any float type, read as f64),
  ``nodes_truenodeids``, ``nodes_trueleafs``, ``nodes_falsenodeids``, ``nodes_falseleafs``, the
  optional ``nodes_missing_value_tracks_true``: one entry per interior node. A child id is a
  node index when its ``*leafs`` flag is 0, else a leaf index.
- ``tree_roots``: the root node of each tree (a tree of one leaf is a node whose two children
  are that leaf).
- ``leaf_targetids``, ``leaf_weights`` (f64): the (target, weight) entries of the leaves;
  ``membership_values``: the NaN-separated sets of the MEMBER nodes, in node order.
- ``aggregate_function`` (0 AVERAGE, 1 SUM, 2 MIN, 3 MAX), ``post_transform`` (0 NONE,
  1 SOFTMAX, 2 LOGISTIC, 3 SOFTMAX_ZERO, 4 PROBIT), ``n_targets``.

Two extensions carry the older TreeEnsembleRegressor/Classifier: ``leaf_sizes`` (leaf ``j`` owns
``leaf_sizes[j]`` consecutive entries; absent: one entry each, as in TreeEnsemble) and
``base_values`` (per target, added after aggregation, before the post transform).
:func:`forest` checks all of it (a cycle included: :func:`depth_of`) and gives the lowering and
the reference kernel one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..op import Group, Op
from ..schema import INT, TENSOR, InferContext, define
from ..types import DType, TensorType

MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ",
         "BRANCH_MEMBER")
MEMBER = MODES.index("BRANCH_MEMBER")
AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")
POST_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
_FLOATS = frozenset({DType.F16, DType.F32, DType.F64})
_NODE_ARRAYS = ("nodes_featureids", "nodes_modes", "nodes_splits", "nodes_truenodeids",
                "nodes_trueleafs", "nodes_falsenodeids", "nodes_falseleafs")


class ForestError(ValueError):
    """Inconsistent tree-ensemble attributes (the caller adds where)."""


@dataclass(frozen=True)
class Forest:
    """Checked tree-ensemble attributes. Children are encoded as one id space: ``c >= 0`` is
    node ``c``, ``c < 0`` is leaf ``-c - 1``. ``leaf_start[j]:leaf_start[j + 1]`` are leaf j's
    entries in ``targets``/``weights``."""

    features: np.ndarray  # i64 [nodes]
    modes: np.ndarray  # i64 [nodes]
    splits: np.ndarray  # f64 [nodes]
    true_child: np.ndarray  # i64 [nodes]
    false_child: np.ndarray  # i64 [nodes]
    missing_true: np.ndarray  # bool [nodes]
    roots: np.ndarray  # i64 [trees]
    leaf_start: np.ndarray  # i64 [leaves + 1]
    targets: np.ndarray  # i64 [entries]
    weights: np.ndarray  # f64 [entries]
    members: dict[int, np.ndarray]  # MEMBER node -> its set
    aggregate: str
    post_transform: str
    n_targets: int
    base_values: np.ndarray | None
    depth: int  # the most interior nodes on a root-to-leaf path: the descent's step count

    @property
    def n_nodes(self) -> int:
        return int(self.features.size)

    @property
    def n_leaves(self) -> int:
        return int(self.leaf_start.size - 1)

    @property
    def n_trees(self) -> int:
        return int(self.roots.size)


def _array(attrs: Mapping[str, Any], name: str, dtype: type, size: int | None = None,
           required: bool = True) -> np.ndarray | None:
    value = attrs.get(name)
    if value is None:
        if required:
            raise ForestError(f"attribute {name} is missing")
        return None
    array = np.asarray(value)
    if array.ndim != 1:
        raise ForestError(f"attribute {name} must be a 1-D array, got shape {array.shape}")
    if size is not None and array.size != size:
        raise ForestError(f"attribute {name} has {array.size} entries; nodes_featureids has "
                          f"{size}")
    return array.astype(dtype)


def _children(ids: np.ndarray, leafs: np.ndarray, n_nodes: int, n_leaves: int,
              which: str) -> np.ndarray:
    bad = np.flatnonzero((leafs != 0) & ((ids < 0) | (ids >= n_leaves))
                         | (leafs == 0) & ((ids < 0) | (ids >= n_nodes)))
    if bad.size:
        i = int(bad[0])
        kind, limit = ("leaf", n_leaves) if leafs[i] else ("node", n_nodes)
        raise ForestError(f"node {i}: {which} {kind} id {int(ids[i])} is out of range "
                          f"[0, {limit})")
    return np.where(leafs != 0, -ids - 1, ids)


def _member_sets(values: np.ndarray | None, modes: np.ndarray) -> dict[int, np.ndarray]:
    n_member = int((modes == MEMBER).sum())
    groups: list[np.ndarray] = []
    if values is not None and values.size:
        # NaN separates sets; a trailing separator closes the last one
        cuts = np.flatnonzero(np.isnan(values))
        bounds = [-1, *cuts.tolist()]
        if not np.isnan(values[-1]):
            bounds.append(values.size)
        groups = [values[a + 1:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    if len(groups) != n_member:
        raise ForestError(f"membership_values holds {len(groups)} sets for {n_member} "
                          f"BRANCH_MEMBER nodes")
    return dict(zip(np.flatnonzero(modes == MEMBER).tolist(), groups, strict=True))


def depth_of(true_child: np.ndarray, false_child: np.ndarray, roots: np.ndarray) -> int:
    """The most interior nodes on a path from a root (level by level from the roots); a cycle
    shows as more levels than nodes."""
    level, depth = np.unique(roots), 0
    while level.size:
        depth += 1
        if depth > true_child.size:
            raise ForestError("a node is its own descendant (the trees have a cycle)")
        children = np.concatenate([true_child[level], false_child[level]])
        level = np.unique(children[children >= 0])
    return depth


def forest(attrs: Mapping[str, Any]) -> Forest:
    """The checked forest of a tree_ensemble node's attributes; raises ForestError."""
    features = _array(attrs, "nodes_featureids", np.int64)
    assert features is not None
    n = features.size
    if n == 0:
        raise ForestError("the ensemble has no nodes")
    arrays = {name: _array(attrs, name, np.float64 if name == "nodes_splits" else np.int64, n)
              for name in _NODE_ARRAYS[1:]}
    missing = _array(attrs, "nodes_missing_value_tracks_true", np.int64, n, required=False)
    modes = arrays["nodes_modes"]
    assert modes is not None
    bad_mode = np.flatnonzero((modes < 0) | (modes >= len(MODES)))
    if bad_mode.size:
        raise ForestError(f"node {int(bad_mode[0])}: mode {int(modes[bad_mode[0]])} is not one "
                          f"of 0..{len(MODES) - 1} ({', '.join(MODES)})")
    if (features < 0).any():
        raise ForestError(f"node {int(np.flatnonzero(features < 0)[0])}: negative feature id")
    weights = _array(attrs, "leaf_weights", np.float64)
    targets = _array(attrs, "leaf_targetids", np.int64)
    assert weights is not None and targets is not None
    if targets.size != weights.size:
        raise ForestError(f"leaf_targetids has {targets.size} entries, leaf_weights "
                          f"{weights.size}")
    n_targets = int(attrs.get("n_targets") or 0)
    if n_targets < 1:
        raise ForestError(f"n_targets must be >= 1, got {n_targets}")
    if ((targets < 0) | (targets >= n_targets)).any():
        bad = int(targets[(targets < 0) | (targets >= n_targets)][0])
        raise ForestError(f"leaf target id {bad} is out of range [0, {n_targets})")
    sizes = _array(attrs, "leaf_sizes", np.int64, required=False)
    if sizes is None:
        sizes = np.ones(weights.size, np.int64)
    if (sizes < 0).any() or int(sizes.sum()) != weights.size:
        raise ForestError(f"leaf_sizes must be >= 0 and sum to the {weights.size} leaf entries")
    roots = _array(attrs, "tree_roots", np.int64)
    assert roots is not None
    if roots.size == 0 or ((roots < 0) | (roots >= n)).any():
        raise ForestError(f"tree_roots must be 1 or more node ids in [0, {n})")
    leaves = sizes.size
    true_child = _children(arrays["nodes_truenodeids"], arrays["nodes_trueleafs"], n, leaves,
                           "true")
    false_child = _children(arrays["nodes_falsenodeids"], arrays["nodes_falseleafs"], n,
                            leaves, "false")
    aggregate, post = int(attrs.get("aggregate_function", 1)), int(attrs.get("post_transform", 0))
    if not 0 <= aggregate < len(AGGREGATES):
        raise ForestError(f"aggregate_function {aggregate} is not one of 0..3 "
                          f"({', '.join(AGGREGATES)})")
    if not 0 <= post < len(POST_TRANSFORMS):
        raise ForestError(f"post_transform {post} is not one of 0..4 "
                          f"({', '.join(POST_TRANSFORMS)})")
    base = _array(attrs, "base_values", np.float64, required=False)
    if base is not None and base.size != n_targets:
        raise ForestError(f"base_values has {base.size} entries for {n_targets} targets")
    splits = arrays["nodes_splits"]
    assert splits is not None
    return Forest(
        features=features, modes=modes, splits=splits, true_child=true_child,
        false_child=false_child,
        missing_true=np.zeros(n, bool) if missing is None else missing != 0,
        roots=roots, leaf_start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        targets=targets, weights=weights,
        members=_member_sets(_array(attrs, "membership_values", np.float64, required=False),
                             modes),
        aggregate=AGGREGATES[aggregate], post_transform=POST_TRANSFORMS[post],
        n_targets=n_targets, base_values=base, depth=depth_of(true_child, false_child, roots))


@define(Op.TREE_ENSEMBLE, ["X"], ["Y"], {
    "nodes_featureids": TENSOR(), "nodes_modes": TENSOR(), "nodes_splits": TENSOR(),
    "nodes_truenodeids": TENSOR(), "nodes_trueleafs": TENSOR(), "nodes_falsenodeids": TENSOR(),
    "nodes_falseleafs": TENSOR(), "nodes_missing_value_tracks_true": TENSOR(),
    "tree_roots": TENSOR(), "leaf_targetids": TENSOR(), "leaf_weights": TENSOR(),
    "leaf_sizes": TENSOR(), "membership_values": TENSOR(), "base_values": TENSOR(),
    "aggregate_function": INT(1), "post_transform": INT(0), "n_targets": INT(),
}, Group.MISC)
def _tree_ensemble(ctx: InferContext) -> list[TensorType]:
    """Rows of X through a forest of decision trees, aggregated per target (ai.onnx.ml
    TreeEnsemble-5)."""
    x = ctx.input(0)
    ctx.require_dtype(0, _FLOATS)
    if x.rank != 2:
        raise ctx.fail(f"X must be [N, F], got {x}")
    try:
        checked = forest(ctx.attrs)
    except ForestError as error:
        raise ctx.fail(str(error)) from None
    features = x.shape[1]
    if isinstance(features, int) and int(checked.features.max()) >= features:
        raise ctx.fail(f"a node reads feature {int(checked.features.max())} but X has "
                       f"{features}")
    return [TensorType(x.dtype, (x.shape[0], checked.n_targets))]
