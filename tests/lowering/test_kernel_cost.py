"""kernel_cost (compiler/analysis/kernel_cost.py) against hand-derived counts: the kernels the
lowerings make for MatMul (odd extents: tail tiles), batched MatMul, a fused epilogue, a 1x1
Conv and a fused elementwise chain; and hand-built kernels for each counting rule (index-driven
branches and extents walked exactly, data-driven ones bounded, the walk budget, MatmulTile,
which expressions count, bytes of distinct buffers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from kiln.compiler.analysis import kernel_cost as cost_module
from kiln.compiler.analysis.kernel_cost import KernelCost, kernel_cost
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import lower_graph
from kiln.compiler.lower.kernel_ir import (
    Assign,
    Block,
    Buffer,
    Call,
    Const,
    ContractAxis,
    Declare,
    ExternalFunction,
    If,
    Kernel,
    Loop,
    MatmulTile,
    Stmt,
    Var,
    binary,
    flat_view,
    select,
    unary,
)
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.specialize import specialize

F32 = DType.F32
I64 = DType.I64


def kernels_of(graph: Graph) -> list[Kernel]:
    lowered = lower_graph(optimize(specialize(graph, None), 2))
    return [k for step in lowered.steps for k in step.kernels]


def matmul_graph(a_shape: tuple[int, ...], k: int, n: int, relu: bool = False) -> Graph:
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(F32, a_shape))
    w = b.constant(np.ones((k, n), np.float32))
    y = b.add1(Op.MATMUL, [x, w])
    return b.finish([b.add1(Op.RELU, [y]) if relu else y])


@pytest.mark.parametrize(("m", "k", "n"), [(67, 45, 33), (1, 300, 7), (128, 64, 96)])
def test_matmul_is_two_m_n_k(m: int, k: int, n: int) -> None:
    (kernel,) = kernels_of(matmul_graph((m, k), k, n))
    assert kernel_cost(kernel).flops == 2 * m * n * k


def test_batched_matmul_with_fused_relu() -> None:
    (kernel,) = kernels_of(matmul_graph((3, 10, 20), 20, 30, relu=True))
    # one max per output element for the Relu
    assert kernel_cost(kernel).flops == 2 * 3 * 10 * 30 * 20 + 3 * 10 * 30


def test_pointwise_conv() -> None:
    n, c_in, c_out, h, w = 2, 24, 40, 9, 11
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(F32, (n, c_in, h, w)))
    weight = b.constant(np.ones((c_out, c_in, 1, 1), np.float32))
    graph = b.finish([b.add1(Op.CONV, [x, weight])])
    flops = sum(kernel_cost(k).flops for k in kernels_of(graph))
    assert flops == 2 * n * c_out * h * w * c_in


def test_padded_conv_counts_its_padded_rows() -> None:
    """A padded 3x3 Conv is computed over rows of the padded width: between the textbook count
    and that count scaled by the padded width."""
    c_in, c_out, h, w = 16, 24, 14, 14
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(F32, (1, c_in, h, w)))
    weight = b.constant(np.ones((c_out, c_in, 3, 3), np.float32))
    graph = b.finish([b.add1(Op.CONV, [x, weight], {"pads": (1, 1, 1, 1)})])
    flops = sum(kernel_cost(k).flops for k in kernels_of(graph))
    textbook = 2 * c_out * h * w * c_in * 9
    assert textbook <= flops <= textbook * (w + 2) // w


def test_fused_elementwise_chain() -> None:
    shape = (5, 7, 9)
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(F32, shape))
    y = b.add_input("y", TensorType(F32, shape))
    two = b.constant(np.array(2.0, np.float32))
    out = b.add1(Op.EXP, [b.add1(Op.ADD, [b.add1(Op.MUL, [x, two]), y])])
    (kernel,) = kernels_of(b.finish([out]))
    numel = 5 * 7 * 9
    # mul, add, exp per element; x and y read, the result written, 4 bytes each
    assert kernel_cost(kernel) == KernelCost(3 * numel, 3 * 4 * numel)


def _kernel(body: Stmt, inputs: Sequence[Buffer] = (), outputs: Sequence[Buffer] = (),
            scratch: Sequence[Buffer] = ()) -> Kernel:
    return Kernel("k", tuple(inputs), tuple(outputs), body, tuple(scratch))


def test_loop_extents_and_branches_from_indices_are_exact() -> None:
    """A triangular nest and a tail guard, as tiling makes them."""
    a = Buffer("a", F32, (40, 40))
    i, j, t = Var("i"), Var("j"), Var("t")
    triangle = Loop(i, Const(40, I64), Loop(j, i + 1, a.store([i, j], a.load(i, j) * 2.0)))
    assert kernel_cost(_kernel(triangle, outputs=[a])).flops == 40 * 41 // 2
    # 10 tiles of 4 rows over 37 rows: the last has 1 row, counted through a declared local
    rows = Var("rows")
    tile = Block((Declare(rows, Const(37, I64) - t * 4),
                  If(rows < 4,
                     Loop(i, rows, a.store([i, 0], a.load(i, 0) + 1.0)),
                     Loop(i, Const(4, I64), a.store([i, 0], a.load(i, 0) + 1.0)))))
    assert kernel_cost(_kernel(Loop(t, Const(10, I64), tile), outputs=[a])).flops == 37


def test_padded_window_counts_only_taps_in_bounds() -> None:
    """A direct 1-D convolution guarding its padded taps with If."""
    width, taps, pad = 13, 5, 2
    x, y = Buffer("x", F32, (width,)), Buffer("y", F32, (width,))
    o, r, p, acc = Var("o"), Var("r"), Var("p"), Var("acc", F32)
    tap = Block((Declare(p, o + r - pad),
                 If(binary("and", p >= 0, p < width), Assign(acc, acc + x.load(p) * 0.5))))
    body = Loop(o, Const(width, I64), Block((
        Declare(acc, Const(0.0, F32)), Loop(r, Const(taps, I64), tap), y.store([o], acc))))
    inside = sum(1 for out in range(width) for k in range(taps) if 0 <= out + k - pad < width)
    assert kernel_cost(_kernel(body, [x], [y])).flops == 2 * inside


def test_data_dependent_control_is_bounded() -> None:
    x, y, n = Buffer("x", F32, (8,)), Buffer("y", F32, (8,)), Buffer("n", I64, (1,))
    i = Var("i")
    # a branch on data counts its costlier side: exp and mul against one add
    branchy = Loop(i, Const(8, I64), If(x.load(i) > 0.0,
                                        y.store([i], unary("exp", x.load(i)) * 2.0),
                                        y.store([i], x.load(i) + 1.0)))
    assert kernel_cost(_kernel(branchy, [x], [y])).flops == 8 * 2
    # a trip count read from data: the known side of a min, else one iteration
    step = y.store([i], x.load(i) + 1.0)
    capped = Loop(i, binary("min", Const(6, I64), n.load(0)), step)
    assert kernel_cost(_kernel(capped, [x, n], [y])).flops == 6
    unknown = Loop(i, n.load(0), step)
    assert kernel_cost(_kernel(unknown, [x, n], [y])).flops == 1
    # a reassigned local is data too, even when it starts from a constant
    count = Var("count")
    reassigned = Block((Declare(count, Const(3, I64)), Assign(count, n.load(0)),
                        Loop(i, count, step)))
    assert kernel_cost(_kernel(reassigned, [x, n], [y])).flops == 1


def test_walk_budget_bounds_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    a = Buffer("a", F32, (30, 30))
    i, j = Var("i"), Var("j")
    triangle = Loop(i, Const(30, I64), Loop(j, Const(30, I64),
                                            If(j <= i, a.store([i, j], a.load(i, j) + 1.0))))
    kernel = _kernel(triangle, outputs=[a])
    assert kernel_cost(kernel).flops == 30 * 31 // 2
    # past the budget, each row counts its widest iteration: all 30 columns
    monkeypatch.setattr(cost_module, "WALK_BUDGET", 30)
    assert kernel_cost(kernel).flops == 30 * 30


def test_matmul_tile_counts_its_contraction() -> None:
    c, a, b = Buffer("c", F32, (8, 16)), Buffer("a", F32, (8, 30)), Buffer("b", F32, (30, 16))
    tile = MatmulTile(c, Const(0, I64), 16, a, Const(0, I64), 30, b, Const(0, I64), rows=4,
                      cols=16, axes=(ContractAxis(5, 6, 96), ContractAxis(6, 1, 16)))
    kernel = _kernel(Loop(Var("r"), Const(2, I64), tile), [a, b], [c])
    assert kernel_cost(kernel) == KernelCost(2 * 2 * 4 * 16 * 30, (8 * 16 + 8 * 30 + 30 * 16) * 4)
    # the scalar loop nest the tile means counts the same
    expanded = _kernel(Loop(Var("r"), Const(2, I64), tile.expanded()), [a, b], [c])
    assert kernel_cost(expanded).flops == kernel_cost(kernel).flops


def test_which_expressions_count() -> None:
    x, y = Buffer("x", F32, (10,)), Buffer("y", F32, (10,))
    flags = Buffer("flags", DType.BOOL, (10,))
    i = Var("i")
    square = ExternalFunction("square", "square", "", (F32,), F32)
    value = select(x.load(i) > 1.0, x.load(i) * 3.0, unary("neg", x.load(i)))  # mul and neg
    value = Call(square, (value + (i * 2 + 1).cast(F32),))  # add and the call; index math: 0
    body = Loop(i, Const(10, I64), Block((
        y.store([i], value), flags.store([i], unary("isnan", x.load(i))))))
    assert kernel_cost(_kernel(body, [x], [y, flags])).flops == 10 * 4


def test_bytes_count_each_touched_buffer_once() -> None:
    x, y = Buffer("x", F32, (4, 6)), Buffer("y", DType.F16, (24,))
    unused, scratch = Buffer("unused", F32, (100,)), Buffer("tmp", F32, (24,))
    flat, i = flat_view(x), Var("i")
    body = Loop(i, Const(24, I64), Block((
        scratch.store([i], flat.load(i) + flat.load(i)),
        y.store([i], scratch.load(i).cast(DType.F16)))))
    kernel = _kernel(body, [x, unused], [y], [scratch])
    assert kernel_cost(kernel).bytes == 24 * 4 + 24 * 2 + 24 * 4
