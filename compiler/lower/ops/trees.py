"""Lowering of TreeEnsemble to kernel IR: a branch-free, fixed-depth descent of many independent
walks at once (across trees at batch 1, across rows otherwise).

The interior nodes become constant tables, ordered level by level across the trees so the top
levels share cache lines: thresholds, and (feature, true child, false child) triples. A walk's
state is a slot: a node, or ``n_nodes + leaf`` once it has reached a leaf, which then stays put;
so every walk can take the same number of steps, the forest's depth, and one step is
``s = s >= n ? s : link[s][cond(X[row, link[s][0]], threshold[s]) ? 1 : 2]`` (a finished walk
reads the stand-in slot n), no branch and no data-dependent trip count. A loop runs one step of
many independent walks, whose loads out-of-order execution overlaps (a VECTORIZE loop: gathers
where ``WALK_LANES`` > 1). MEMBER nodes are first rewritten into chains of EQ nodes (one per
member).

- One row (batch 1): the walks of all trees advance together, step by step.
- Many rows: blocks of rows (in parallel when there are enough); within a block, tree by tree
  (its nodes stay in cache), the walks of the block's rows advance together; then the reached
  leaves are added to the rows' outputs in tree order.

Leaf values: with one entry per leaf, a target and weight table; with several, a dense
[leaves, targets] table (and which targets each leaf votes for, for MIN / MAX). After the trees:
the average's division, base values, then the post transform with onnxruntime's formulas (as
the reference kernel computes them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...ir.op import Op
from ...ir.rules.ml import MEMBER, MODES, Forest, depth_of, forest
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Buffer,
    Compare,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Select,
    Stmt,
    Unary,
    Var,
    as_index,
    block,
    select,
)
from ..registry import LowerContext, lowering
from ..schedules.conv import lanes_of
from .common import PARALLEL_WORK, const, idx, work_estimate
from .nn_window import define_extents

EQ = MODES.index("BRANCH_EQ")
# Rows a block walks together: enough independent walks to hide load latency, few enough
# that the block's walk states and output rows stay in L1.
BLOCK_ROWS = 128
# Lanes of the vectorized walks. 1: independent scalar walks, which out-of-order cores overlap,
# beat gathers on AVX-512 (Zen 4, 100 trees of depth 12: 2.3 us at batch 1 against 3.2 us with
# 8-lane and 3.5 us with 16-lane gathers; at batch 1000, 2.9 ms against 3.5 ms with 16 lanes).
# With more lanes the walk loops become VECTORIZE loops of that width (gathers).
WALK_LANES = 1
_COMPARE = ("le", "lt", "ge", "gt", "eq", "ne")


def _without_members(trees: Forest) -> Forest:
    """``trees`` with each MEMBER node replaced by a chain of EQ nodes, one per member: the
    first keeps the node's place (and its missing-value track), each one's false child is the
    next, the last one's false child the node's."""
    if not (trees.modes == MEMBER).any():
        return trees
    feats, modes = list(trees.features), list(trees.modes)
    splits, trues = list(trees.splits), list(trees.true_child)
    falses, missing = list(trees.false_child), list(trees.missing_true)
    for node in np.flatnonzero(trees.modes == MEMBER).tolist():
        members = trees.members[node].tolist() or [math.nan]  # an empty set: never equal
        modes[node], splits[node] = EQ, members[0]
        last = node
        for value in members[1:]:
            fresh = len(feats)
            feats.append(feats[node])
            modes.append(EQ)
            splits.append(value)
            trues.append(trees.true_child[node])
            falses.append(trees.false_child[node])
            missing.append(False)
            falses[last] = fresh
            last = fresh
    true_child, false_child = np.asarray(trues), np.asarray(falses)
    return Forest(np.asarray(feats), np.asarray(modes), np.asarray(splits), true_child,
                  false_child, np.asarray(missing, bool), trees.roots, trees.leaf_start,
                  trees.targets, trees.weights, {},
                  trees.aggregate, trees.post_transform, trees.n_targets, trees.base_values,
                  depth_of(true_child, false_child, trees.roots))


def _level_order(trees: Forest) -> np.ndarray:
    """Interior nodes level by level across all trees (the roots, then their children...): the
    slots the walks of a step read lie close together, the top levels in a few cache lines."""
    order: list[int] = []
    level = trees.roots.tolist()
    seen = np.zeros(trees.n_nodes, bool)
    while level:
        fresh = [v for v in dict.fromkeys(level) if not seen[v]]
        seen[fresh] = True
        order += fresh
        level = [int(c) for v in fresh for c in (trees.true_child[v], trees.false_child[v])
                 if c >= 0]
    # nodes no root reaches still need slots (they are never visited)
    return np.concatenate([order, np.flatnonzero(~seen)]).astype(np.int64)


class _Tables:
    """The forest's constant buffers and the expression of one descent step."""

    def __init__(self, ctx: LowerContext, trees: Forest, dtype: DType) -> None:
        self.trees = trees
        self.dtype = dtype
        n, leaves = trees.n_nodes, trees.n_leaves
        key = f"{ctx.name}.forest"
        order = _level_order(trees)
        slot_of = np.empty(n, np.int64)
        slot_of[order] = np.arange(n)

        def slot(child: np.ndarray) -> np.ndarray:
            return np.where(child >= 0, slot_of[np.maximum(child, 0)], n - child - 1)

        # Per interior node (level order) its threshold, and its feature and two children side
        # by side; slot n is the stand-in a finished walk (a leaf: n + leaf) reads, whose loads
        # are harmless.
        links = np.zeros((n + 1, 3), np.int64)
        links[:n, 0] = trees.features[order]
        links[:n, 1] = slot(trees.true_child[order])
        links[:n, 2] = slot(trees.false_child[order])
        links[n, 1:] = n
        if n + leaves >= 1 << 31:
            raise ctx.fail(f"{n + leaves} nodes and leaves: more than i32 indices reach")
        self.links = ctx.derived_constant(f"{key}.links", links.astype(np.int32))
        self.threshold = ctx.derived_constant(f"{key}.threshold", np.append(
            trees.splits[order], 0.0).astype(dtype.numpy))
        # padded to whole vectors with finished walks, so the walk over trees has no remainder
        self.lanes = min(lanes_of(ctx.machine, DType.I32), WALK_LANES)
        self.walks = -(-trees.n_trees // self.lanes) * self.lanes
        roots = np.full(self.walks, n, np.int32)
        roots[:trees.n_trees] = slot_of[trees.roots]
        self.roots = ctx.derived_constant(f"{key}.roots", roots)
        modes = sorted(set(trees.modes.tolist()))
        self.modes = modes
        self.mode = (ctx.derived_constant(f"{key}.mode", np.append(
            trees.modes[order], 0).astype(np.int32)) if len(modes) > 1 else None)
        self.missing = (ctx.derived_constant(f"{key}.missing", np.append(
            trees.missing_true[order], False).astype(np.int32))
            if trees.missing_true.any() else None)
        self.n_nodes = n
        self.depth = trees.depth
        sizes = np.diff(trees.leaf_start)
        self.single = bool((sizes == 1).all())
        if self.single:
            self.target = ctx.derived_constant(f"{key}.target", trees.targets.astype(np.int32))
            self.weight = ctx.derived_constant(f"{key}.weight", trees.weights.astype(dtype.numpy))
        else:  # dense [leaves, targets]: the summed votes, and which targets get one
            dense = np.zeros((leaves, trees.n_targets))
            votes = np.zeros((leaves, trees.n_targets), np.int32)
            owner = np.repeat(np.arange(leaves), sizes)
            np.add.at(dense, (owner, trees.targets), trees.weights)
            votes[owner, trees.targets] = 1
            self.weight = ctx.derived_constant(f"{key}.dense", dense.astype(dtype.numpy))
            self.votes = ctx.derived_constant(f"{key}.votes", votes)

    def step(self, x: Buffer, row: Expr, state: Expr) -> Expr:
        """The slot after ``state`` (i32) for row ``row`` of ``x``: a leaf (>= n_nodes) stays,
        its loads read the stand-in slot n_nodes."""
        done = state >= const(self.n_nodes, DType.I32)
        s = Binary("min", state, const(self.n_nodes, DType.I32)).cast(DType.I64)
        value = x.load(row, self.links.load(s, idx(0)).cast(DType.I64))
        threshold = self.threshold.load(s)
        tests = {m: Compare(_COMPARE[m], value, threshold) for m in self.modes}
        cond: Expr = tests[self.modes[-1]]
        if self.mode is not None:
            mode = self.mode.load(s)
            for m in reversed(self.modes[:-1]):
                cond = Select(mode.eq(const(m, DType.I32)), tests[m], cond)
        if self.missing is not None:
            nan_true = Binary("and", Unary("isnan", value),
                              self.missing.load(s).ne(const(0, DType.I32)))
            cond = Binary("or", cond, nan_true)
        way = select(cond, idx(1), idx(2))
        return select(done, state, self.links.load(s, way))

    def vote(self, y: Buffer, row: Expr, state: Expr, has: Callable[[Expr], Expr] | None,
             set_has: Callable[[Expr], Stmt] | None) -> Stmt:
        """Add the leaf at slot ``state`` to row ``row`` of ``y`` (``has(k)`` / ``set_has(k)``
        read and mark target k as voted for, for MIN / MAX)."""
        leaf = state.cast(DType.I64) - self.n_nodes
        aggregate = self.trees.aggregate
        targets = range(self.trees.n_targets)

        def combine(k: Expr, weight: Expr) -> list[Stmt]:
            old = y.load(row, k)
            if aggregate in ("SUM", "AVERAGE"):
                return [y.store((row, k), old + weight)]
            assert has is not None and set_has is not None
            better = weight < old if aggregate == "MIN" else weight > old
            first = Unary("not", has(k).ne(const(0, DType.I32)))
            return [y.store((row, k), select(Binary("or", first, better), weight, old)),
                    set_has(k)]

        if self.single:
            k = (idx(0) if self.trees.n_targets == 1
                 else self.target.load(leaf).cast(DType.I64))
            return block(combine(k, self.weight.load(leaf)))
        stmts: list[Stmt] = []
        for t in targets:
            update = block(combine(idx(t), self.weight.load(leaf, idx(t))))
            if aggregate in ("SUM", "AVERAGE"):
                stmts.append(update)  # adding a zero changes nothing
            else:
                stmts.append(If(self.votes.load(leaf, idx(t)).ne(const(0, DType.I32)), update))
        return block(stmts)


def _logistic(v: Expr) -> Expr:
    one = const(1.0, v.dtype)
    e = one / (one + Unary("exp", -Unary("abs", v)))
    return select(v < const(0.0, v.dtype), one - e, e)


def _probit(v: Expr) -> Expr:
    def c(value: float) -> Expr:
        return const(value, v.dtype)

    x = v * c(2.0) - c(1.0)
    sign = select(x < c(0.0), c(-1.0), c(1.0))
    log = Unary("log", (c(1.0) - x) * (c(1.0) + x))
    a = c(2.0) / (c(3.14159) * c(0.147)) + c(0.5) * log
    b = c(1.0) / c(0.147) * log
    return c(1.41421356) * sign * Unary("sqrt", -a + Unary("sqrt", a * a - b))


def _finish(trees: Forest, y: Buffer, row: Expr, has: Callable[[Expr], Expr] | None,
            name: str) -> Stmt:
    """Average, base values and post transform of row ``row`` of ``y``."""
    dtype = y.dtype
    k_count = trees.n_targets
    stmts: list[Stmt] = []
    for k in range(k_count):
        value: Expr = y.load(row, idx(k))
        if trees.aggregate == "AVERAGE":
            value = value / const(float(trees.n_trees), dtype)
        if has is not None:
            value = select(has(idx(k)).ne(const(0, DType.I32)), value, const(0.0, dtype))
        if trees.base_values is not None:
            value = value + const(float(trees.base_values[k]), dtype)
        if trees.post_transform == "LOGISTIC":
            value = _logistic(value)
        elif trees.post_transform == "PROBIT":
            value = _probit(value)
        stmts.append(y.store((row, idx(k)), value))
    if trees.post_transform in ("SOFTMAX", "SOFTMAX_ZERO"):
        zero_out = trees.post_transform == "SOFTMAX_ZERO"
        top, total = Var(f"{name}_max", dtype), Var(f"{name}_sum", dtype)
        stmts += [Declare(top, y.load(row, idx(0))), Declare(total, const(0.0, dtype))]
        stmts += [Assign(top, select(y.load(row, idx(k)) > top, y.load(row, idx(k)), top))
                  for k in range(1, k_count)]
        for k in range(k_count):
            v = y.load(row, idx(k))
            e: Expr = Unary("exp", v - top)
            if zero_out:  # zeros stay zero and stay out of the sum
                e = select(v.eq(const(0.0, dtype)), const(0.0, dtype), e)
            stmts += [y.store((row, idx(k)), e), Assign(total, total + y.load(row, idx(k)))]
        stmts += [y.store((row, idx(k)), y.load(row, idx(k)) / total) for k in range(k_count)]
    return block(stmts)


def _walk_loop(var: Var, extent: Expr, body: Stmt, lanes: int) -> Loop:
    """A loop over independent walks: vectorized (gathers) when ``lanes`` > 1; else serial, as
    a VECTORIZE hint of width 1 makes LLVM warn that it could not interleave."""
    if lanes > 1:
        return Loop(var, extent, body, LoopKind.VECTORIZE, lanes)
    return Loop(var, extent, body)


def _one_row(ctx: LowerContext, tables: _Tables, x: Buffer, y: Buffer) -> Stmt:
    """Batch 1: every tree's walk advances together; the loop over trees is vectorized."""
    trees = tables.trees
    n_trees = trees.n_trees
    state = ctx.scratch("walk", DType.I32, [tables.walks])
    has_buf = (ctx.scratch("voted", DType.I32, [trees.n_targets])
               if trees.aggregate in ("MIN", "MAX") else None)
    t, d, k = Var("tree"), Var("depth"), Var("target")
    row = idx(0)
    walks, width = idx(tables.walks), tables.lanes
    stmts: list[Stmt] = [
        _walk_loop(t, walks, state.store((t,), tables.roots.load(t)), width),
        Loop(d, idx(tables.depth), _walk_loop(t, walks, state.store(
            (t,), tables.step(x, row, state.load(t))), width)),
        Loop(k, idx(trees.n_targets), y.store((row, k), const(0.0, y.dtype))),
    ]
    has, set_has = None, None
    if has_buf is not None:
        stmts.append(Loop(k, idx(trees.n_targets), has_buf.store((k,), const(0, DType.I32))))

        def has(j: Expr) -> Expr:
            return has_buf.load(j)

        def set_has(j: Expr) -> Stmt:
            return has_buf.store((j,), const(1, DType.I32))

    stmts.append(Loop(t, idx(n_trees), tables.vote(y, row, state.load(t), has, set_has)))
    stmts.append(_finish(trees, y, row, has, "tree1"))
    return block(stmts)


def _many_rows(ctx: LowerContext, tables: _Tables, x: Buffer, y: Buffer) -> Stmt:
    """Blocks of rows; per block, tree by tree, the rows' walks advance together (the loop over
    rows vectorized), then the leaves vote in tree order."""
    trees = tables.trees
    rows = x.shape[0]
    # a run-time batch: blocks of BLOCK_ROWS, the last one partial
    size = min(BLOCK_ROWS, rows) if isinstance(rows, int) else BLOCK_ROWS
    blocks = -(-rows // size) if isinstance(rows, int) else (rows + (size - 1)) // size
    work = work_estimate(rows) * trees.n_trees * tables.depth
    parallel = (not isinstance(blocks, int) or blocks > 1) and work > PARALLEL_WORK
    state = ctx.scratch("walk", DType.I32, [blocks, size])
    has_buf = (ctx.scratch("voted", DType.I32, [blocks, size, trees.n_targets])
               if trees.aggregate in ("MIN", "MAX") else None)
    b, r, t, d, k = Var("blk"), Var("r"), Var("tree"), Var("depth"), Var("target")
    count: Expr = (idx(size) if isinstance(rows, int) and rows % size == 0
                   else Binary("min", idx(size), rows - b * size))
    row = b * size + r
    width = tables.lanes

    def rows_loop(body: Stmt, vector: bool = False) -> Loop:
        return _walk_loop(r, count, body, width if vector else 1)

    has, set_has = None, None
    init: list[Stmt] = [rows_loop(Loop(k, idx(trees.n_targets),
                                       y.store((row, k), const(0.0, y.dtype))))]
    if has_buf is not None:
        init.append(rows_loop(Loop(k, idx(trees.n_targets),
                                   has_buf.store((b, r, k), const(0, DType.I32)))))

        def has(j: Expr) -> Expr:
            return has_buf.load(b, r, j)

        def set_has(j: Expr) -> Stmt:
            return has_buf.store((b, r, j), const(1, DType.I32))

    per_tree = block(
        rows_loop(state.store((b, r), tables.roots.load(t)), vector=True),
        Loop(d, idx(tables.depth), rows_loop(
            state.store((b, r), tables.step(x, row, state.load(b, r))), vector=True)),
        rows_loop(tables.vote(y, row, state.load(b, r), has, set_has)),
    )
    body = block(init, Loop(t, idx(trees.n_trees), per_tree),
                 rows_loop(_finish(trees, y, row, has, "trees")))
    return Loop(b, as_index(blocks), body, LoopKind.PARALLEL if parallel else LoopKind.SERIAL)


@lowering(Op.TREE_ENSEMBLE)
def _tree_ensemble(ctx: LowerContext) -> list[Kernel]:
    x, y = ctx.input(0), ctx.output(0)
    trees = _without_members(forest(ctx.attrs))
    if not isinstance(x.shape[1], int):
        raise ctx.fail("the number of features (X's axis 1) is known only at run time; the "
                       "lowering of tree_ensemble needs it at compile time")
    if int(trees.features.max()) >= x.shape[1]:
        raise ctx.fail(f"a node reads feature {int(trees.features.max())} but X has "
                       f"{x.shape[1]}")
    tables = _Tables(ctx, trees, x.dtype)
    rows = x.shape[0]
    if isinstance(rows, int) and rows == 0:
        return []
    one = isinstance(rows, int) and rows == 1
    body = _one_row(ctx, tables, x, y) if one else _many_rows(ctx, tables, x, y)
    # Y's rows are X's (an unnamed batch axis may leave Y's extent to define)
    return [*define_extents(ctx, [(y.shape[0], [rows])]), ctx.kernel(body)]
