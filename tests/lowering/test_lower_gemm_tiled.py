"""The tiled f32 MatMul / Gemm lowerings (compiler/lower/ops/nn_matmul.py) and their schedules
(compiler/lower/schedules/gemm.py): the kernel-IR interpreter against the reference executor
on tiny shapes (tails in M, N and K, batches, broadcasting, 1-D operands, Gemm's attributes,
constant and non-constant B) under the cost model's schedule and every candidate, and the
kernels' structure (packed constant B, parallel tasks, fused epilogues in place)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nodegraph import lowered_matches_reference as check  # noqa: E402
from nodegraph import node_graph, tiles  # noqa: E402

from kiln.compiler import reference  # noqa: E402
from kiln.compiler.ir.builder import GraphBuilder  # noqa: E402
from kiln.compiler.ir.graph import Graph  # noqa: E402
from kiln.compiler.ir.op import Op  # noqa: E402
from kiln.compiler.ir.types import DType, TensorType  # noqa: E402
from kiln.compiler.lower import schedules  # noqa: E402
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph  # noqa: E402
from kiln.compiler.lower.inline import walk  # noqa: E402
from kiln.compiler.lower.kernel_ir import Load, Loop, LoopKind, Store  # noqa: E402
from kiln.compiler.lower.schedules import gemm  # noqa: E402
from kiln.compiler.machine import DEFAULT_MACHINE, Machine  # noqa: E402
from kiln.compiler.passes.pipeline import optimize  # noqa: E402

AVX512 = Machine(512, 32, 32 * 1024, 1024 * 1024)
NEON = Machine(128, 32, 64 * 1024, 1024 * 1024)
MACHINES = [DEFAULT_MACHINE, AVX512, NEON]
RNG = np.random.default_rng(5)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def product(op: Op, shapes: Sequence[tuple[int, ...] | None], const_b: bool,
            attrs: Mapping[str, Any] | None = None) -> tuple[Graph, dict[str, np.ndarray]]:
    arrays = [None if s is None else rand(*s) for s in shapes]
    return node_graph(op, arrays, attrs, consts=(1,) if const_b else ())


MATMUL_SHAPES = [
    ((1, 1), (1, 1)),
    ((5, 7), (7, 9)),
    ((13, 3), (3, 29)),
    ((7, 33), (33, 67)),
    ((2, 3, 5, 7), (7, 19)),  # batch folded into M
    ((3, 5, 7), (3, 7, 9)),
    ((2, 1, 5, 7), (3, 7, 9)),  # broadcast batch
    ((5, 7), (2, 7, 9)),  # A broadcast over B's batch
    ((7,), (7, 9)),
    ((5, 7), (7,)),
    ((7,), (2, 7, 9)),
    ((2, 4, 7), (7,)),
    ((7,), (7,)),
]


@pytest.mark.parametrize("machine", MACHINES, ids=["avx2", "avx512", "neon"])
@pytest.mark.parametrize("const_b", [False, True], ids=["var", "const"])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_matches_reference(shapes: tuple[tuple[int, ...], ...], const_b: bool,
                                  machine: Machine) -> None:
    graph, feeds = product(Op.MATMUL, shapes, const_b)
    assert tiles(check(graph, feeds, machine))


GEMM_CASES = [
    ((5, 7), (7, 9), None, {}),
    ((7, 5), (7, 9), (9,), {"transA": 1}),
    ((5, 7), (9, 7), (5, 1), {"transB": 1, "alpha": 0.5}),
    ((7, 13), (30, 7), (13, 30), {"transA": 1, "transB": 1, "alpha": -1.5, "beta": 2.0}),
    ((13, 7), (7, 30), (), {"beta": 0.0}),
    ((3, 40), (40, 1), (1, 1), {"beta": 3.0}),
]


@pytest.mark.parametrize("machine", [DEFAULT_MACHINE, AVX512], ids=["avx2", "avx512"])
@pytest.mark.parametrize("const_b", [False, True], ids=["var", "const"])
@pytest.mark.parametrize("case", GEMM_CASES, ids=str)
def test_gemm_matches_reference(case: tuple, const_b: bool, machine: Machine) -> None:
    a, b, c, attrs = case
    graph, feeds = product(Op.GEMM, [a, b, c], const_b, attrs)
    assert tiles(check(graph, feeds, machine))


CANDIDATE_CASES = [
    (Op.MATMUL, [(14, 9), (9, 35)], {}),
    (Op.MATMUL, [(2, 7, 20), (2, 20, 17)], {}),
    (Op.GEMM, [(19, 6), (33, 19), (33,)], {"transA": 1, "transB": 1, "alpha": 2.0}),
]


@pytest.mark.parametrize("machine", [DEFAULT_MACHINE, AVX512], ids=["avx2", "avx512"])
@pytest.mark.parametrize("const_b", [False, True], ids=["var", "const"])
@pytest.mark.parametrize("case", CANDIDATE_CASES, ids=str)
def test_every_candidate_schedule_is_correct(case: tuple, const_b: bool,
                                             machine: Machine) -> None:
    op, shapes, attrs = case
    graph, feeds = product(op, shapes, const_b, attrs)
    with schedules.collect() as decisions:
        lower_graph(graph, machine)
    (decision,) = decisions
    assert decision.chosen in decision.candidates
    assert len(decision.candidates) > 1
    n = graph.outputs[0].type.shape[-1]
    for params in decision.candidates:
        found = tiles(check(graph, feeds, machine.with_tuned({decision.signature: params})))
        assert max(t.rows for t in found) == params["rows"]
        assert max(t.cols for t in found) == min(params["cols"], n)


@pytest.mark.parametrize("machine", MACHINES, ids=["avx2", "avx512", "neon"])
@pytest.mark.parametrize("mnk", [(1, 768, 3072), (128, 64, 128), (1024, 1024, 1024),
                                 (384, 3072, 768), (7, 5, 3), (64, 16, 2)])
def test_schedules_fit_the_machine(machine: Machine, mnk: tuple[int, int, int]) -> None:
    m, n, k = mnk
    lanes = machine.f32_lanes
    found = gemm.candidates(machine, 1, m, n, k, False)
    assert gemm.default(machine, 1, m, n, k, False) in found and len(found) <= 12
    for s in found:
        vectors = -(-s.cols // lanes)
        assert s.rows * vectors + vectors + 1 <= machine.vector_registers
        assert s.cols % lanes == 0 and 1 <= s.rows <= m
        assert 1 <= s.k_block <= k and s.n_block % s.cols == 0
    best = gemm.default(machine, 1, m, n, k, True)
    if m * n * k > gemm.SPLIT_WORK:
        tasks = -(-m // best.rows) * -(-n // best.n_block)
        assert tasks >= min(gemm.MIN_TASKS, m * -(-n // best.cols))
    if m >= 64 and n >= 64:  # big products keep the A micro-panel within L1
        assert best.rows * best.k_block * 4 <= machine.l1_bytes


def test_tuned_candidate_is_used_and_anything_else_ignored() -> None:
    graph, feeds = product(Op.MATMUL, [(10, 12), (12, 100)], True)
    with schedules.collect() as decisions:
        lower_graph(graph, AVX512)
    (decision,) = decisions
    # a candidate with several K blocks and several column blocks
    pick = next(c for c in decision.candidates if c["k_block"] < 12 and c["n_block"] < 100)
    lowered = check(graph, feeds, AVX512.with_tuned({decision.signature: pick}))
    (step,) = lowered.steps
    (kernel,) = step.kernels
    blocks = -(-12 // pick["k_block"])
    assert {t.axes[0].extent for t in tiles(lowered)} == {12 - (blocks - 1) * pick["k_block"],
                                                           pick["k_block"]}
    rows = -(-10 // pick["rows"])
    assert kernel.body.extent.value == rows * -(-100 // pick["n_block"])  # type: ignore
    # a hand-edited entry that is no candidate leaves the cost model's choice
    bad = {**decision.chosen, "rows": 7, "k_block": 5}
    assert bad not in decision.candidates
    found = tiles(check(graph, feeds, AVX512.with_tuned({decision.signature: bad})))
    assert max(t.rows for t in found) == decision.chosen["rows"]


def test_constant_b_is_packed_into_panels() -> None:
    graph, feeds = product(Op.GEMM, [(6, 10), (37, 10)], True, {"transB": 1})
    lowered = check(graph, feeds, AVX512)
    (step,) = lowered.steps
    (kernel,) = step.kernels
    weight = step.node.inputs[1].name
    names = {b.name for b in kernel.inputs}
    assert weight not in names
    (packed,) = [b for b in kernel.inputs if b.name in lowered.constants]
    cols = packed.shape[-1]
    assert cols % AVX512.f32_lanes == 0 and packed.shape == (1, -(-37 // cols), 10, cols)
    assert all(t.b.name == packed.name for t in tiles(lowered))


@pytest.mark.parametrize("case", [
    (Op.GEMM, [(6, 10), (37, 10)], {"transB": 1}, True),  # transposed: always packed
    (Op.MATMUL, [(3, 200, 9), (3, 9, 40)], {}, False),  # B fits the caches
    (Op.MATMUL, [(2, 200, 40), (2, 40, 4000)], {}, True),  # a big B reused by many rows
], ids=str)
def test_non_constant_b_is_packed_at_run_time_when_worth_it(case: tuple) -> None:
    op, shapes, attrs, packed = case
    graph, feeds = product(op, shapes, False, attrs)
    big = shapes[1][-1] > 100  # too big for the interpreter: structure only
    lowered = lower_graph(graph, AVX512) if big else check(graph, feeds, AVX512)
    (step,) = lowered.steps
    read = {t.b.name for t in tiles(lowered)}
    assert read == ({s.name for s in step.scratch} if packed else {step.node.inputs[1].name})


def test_large_products_are_parallel_small_ones_not() -> None:
    for shapes, kind in (([(64, 64), (64, 64)], LoopKind.PARALLEL),
                         ([(4, 8), (8, 4)], LoopKind.SERIAL)):
        graph, _ = product(Op.MATMUL, shapes, True)
        (step,) = lower_graph(graph, AVX512).steps
        (kernel,) = step.kernels
        assert isinstance(kernel.body, Loop) and kernel.body.kind is kind


def test_gemv_is_split_across_column_blocks() -> None:
    graph, _ = product(Op.MATMUL, [(1, 768), (768, 3072)], True)
    (step,) = lower_graph(graph, AVX512).steps
    (kernel,) = step.kernels
    assert isinstance(kernel.body, Loop) and kernel.body.kind is LoopKind.PARALLEL
    assert kernel.body.extent.value >= gemm.MIN_TASKS  # type: ignore[attr-defined]


def _mlp(const_w: bool) -> tuple[Graph, dict[str, np.ndarray]]:
    """relu(x @ w + bias) + residual, x batched (the batch folds into M)."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (2, 9, 20)))
    feeds = {"x": rand(2, 9, 20), "res": rand(2, 9, 70)}
    if const_w:
        w = b.constant(rand(20, 70))
    else:
        w = b.add_input("w", TensorType(DType.F32, (20, 70)))
        feeds["w"] = rand(20, 70)
    res = b.add_input("res", TensorType(DType.F32, (2, 9, 70)))
    y = b.add1(Op.MATMUL, [x, w])
    y = b.add1(Op.RELU, [b.add1(Op.ADD, [y, b.constant(rand(70))])])
    return b.finish([b.add1(Op.ADD, [y, res])]), feeds


@pytest.mark.parametrize("const_w", [False, True], ids=["var", "const"])
def test_fused_epilogue_is_applied_in_place(const_w: bool) -> None:
    """MatMul + bias Add + Relu + residual Add: one kernel, no scratch, the tiles accumulate
    in the group's output and its only store is the finish loop's (no second pass)."""
    graph, feeds = _mlp(const_w)
    fused = optimize(graph, 2, machine=AVX512)
    lowered = check(fused, feeds, AVX512)
    (step,) = [s for s in lowered.steps if s.node.op is Op.FUSED]
    assert len(lowered.steps) == 1 + sum(s.node.op is Op.CONSTANT for s in lowered.steps)
    (kernel,) = step.kernels
    assert not step.scratch and not kernel.scratch
    (out,) = kernel.outputs
    stores = [n for n in walk(kernel.body) if isinstance(n, Store)]
    assert [s.buffer.name for s in stores] == [out.name]
    assert {t.c.name for t in tiles(lowered)} == {out.name}
    reads = [n for n in walk(kernel.body) if isinstance(n, Load) and n.buffer.name == out.name]
    assert all(r.indices == stores[0].indices for r in reads)
    np.testing.assert_allclose(interpret_lowered(lowered, feeds)[0],
                               reference.run(graph, feeds)[0], rtol=1e-4, atol=1e-5)


def test_fused_body_value_read_by_tiles_is_materialized() -> None:
    """A one-element weight is copied into the fused body (a body constant, not a buffer):
    the tiles read it from scratch filled first."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (7, 1)))
    y = b.add1(Op.MATMUL, [x, b.constant(rand(1, 1))])
    graph = b.finish([b.add1(Op.RELU, [y])])
    feeds = {"x": rand(7, 1)}
    lowered = check(optimize(graph, 2, machine=AVX512), feeds, AVX512)
    (step,) = [s for s in lowered.steps if s.node.op is Op.FUSED]
    (scratch,) = step.scratch
    assert {t.b.name for t in tiles(lowered)} == {scratch.name}
