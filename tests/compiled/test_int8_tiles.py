"""Integer register tiles (``MatmulTile``'s u8 x s8 form: vpdpbusd with AVX-512 VNNI, a
widening multiply-add elsewhere) under MatMulInteger, QLinearMatMul, ConvInteger and
QLinearConv with constant weights, against the reference executor, bit for bit (atol 0).

Random shapes with tails in M, N and K (K not a multiple of 4), batched A, uint8 and int8
activations and weights, zero points (constant or run-time), padded / strided / dilated /
grouped windows, bias; the host (VNNI where it has it) and x86 targets without VNNI (the
portable fallback, run here). The kernel interpreter runs an integer tile kernel against numpy;
the host assembly holds vpdpbusd when the host has avx512_vnni; AArch64, ARMv7 and RISC-V
compile the tiles (the dump assembles for them in tests/codegen)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import llvmlite.binding as llvm
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.compiler import build, reference
from kiln.compiler.codegen.dump import write_dump
from kiln.compiler.codegen.target import Target
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import lower_graph
from kiln.compiler.lower.interpret import run_kernel
from kiln.compiler.lower.kernel_ir import Buffer, Const, ContractAxis, Kernel, MatmulTile
from kiln.compiler.plan.plan import make_plan

SETTINGS = settings(max_examples=10, derandomize=True, deadline=None)
# the host (VNNI here when it has it), then x86 targets without VNNI (the portable fallback)
RUNNABLE = ["host", "x86_64-avx2", "x86_64"]
CROSS = ["aarch64-linux-gnu", "armv7-linux-gnueabihf", "riscv64-linux-gnu"]
TYPES = {"u8": np.uint8, "s8": np.int8}


def _random(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _zero(rng: np.random.Generator, dtype: type, centred: bool) -> np.ndarray:
    """A zero point: int8 weights' symmetric 0 or uint8's 128 when ``centred``, else random."""
    if centred:
        return np.array(128 if dtype is np.uint8 else 0, dtype)
    return _random(rng, dtype, ())


def _graph(op: Op, x: np.ndarray, consts: list[np.ndarray | None],
           attrs: Mapping[str, Any] | None = None, runtime: int | None = None
           ) -> tuple[Graph, dict[str, np.ndarray]]:
    """op(x, *consts): x an input, and so is ``consts[runtime]`` when given."""
    b = GraphBuilder(fold=False)
    feeds = {"x": x}
    values = [b.add_input("x", TensorType.of(x))]
    for i, array in enumerate(consts):
        if array is None:
            values.append(None)
        elif i == runtime:
            values.append(b.add_input("runtime", TensorType.of(array)))
            feeds["runtime"] = array
        else:
            values.append(b.constant(array))
    return b.finish([b.add1(op, values, attrs or {})]), feeds


def _check(graph: Graph, feeds: dict[str, np.ndarray], targets: list[str]) -> None:
    want = reference.run(graph, feeds)[0]
    for target in targets:
        got = build(graph, target=target).run(feeds)[0]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=target)


def _tile_kernels(graph: Graph) -> list[Kernel]:
    """The lowered kernels holding an integer tile (the path under test was taken)."""
    plan = make_plan(lower_graph(graph, Target.parse("host").machine()))
    return [call.kernel for call in plan.calls if any(
        isinstance(node, MatmulTile) and node.is_integer for node in _walk(call.kernel.body))]


def _walk(stmt: Any) -> Any:
    from kiln.compiler.lower.inline import walk
    return walk(stmt)


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 70), st.integers(1, 45), st.sampled_from(list(TYPES)),
       st.sampled_from(list(TYPES)), st.booleans(), st.booleans(), st.integers(0, 2**31))
def test_matmul_integer(m: int, k: int, n: int, a_type: str, w_type: str, centred: bool,
                        batched: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a_dtype, w_dtype = TYPES[a_type], TYPES[w_type]
    x = _random(rng, a_dtype, (2, m, k) if batched else (m, k))
    w = _random(rng, w_dtype, (k, n))
    w_zero = _zero(rng, w_dtype, True)
    graph, feeds = _graph(Op.MATMUL_INTEGER, x,
                          [w, _zero(rng, a_dtype, centred), w_zero])
    assert _tile_kernels(graph), "the integer tiles were not used"
    _check(graph, feeds, RUNNABLE)


@pytest.mark.parametrize("a_type", list(TYPES))
def test_matmul_integer_zero_points(a_type: str) -> None:
    """A run-time activation zero point; absent zero points; per-column weight zero points."""
    rng = np.random.default_rng(7)
    dtype = TYPES[a_type]
    x, w = _random(rng, dtype, (9, 37)), _random(rng, np.uint8, (37, 19))
    w_zeros = np.clip(w.astype(np.int64).min(axis=0) + 100, 0, 255).astype(np.uint8)
    w = np.clip(w, w_zeros.astype(np.int64) - 100, w_zeros.astype(np.int64) + 100).astype(
        np.uint8)
    graph, feeds = _graph(Op.MATMUL_INTEGER, x, [w, _random(rng, dtype, ()), w_zeros],
                          runtime=1)
    assert _tile_kernels(graph)
    _check(graph, feeds, RUNNABLE[:2])
    signed = _random(rng, np.int8, (37, 19))
    graph, feeds = _graph(Op.MATMUL_INTEGER, x, [signed])
    assert _tile_kernels(graph)
    _check(graph, feeds, RUNNABLE[:2])


def test_matmul_integer_wide_weights_keep_the_f32_path() -> None:
    """uint8 weights with zero point 0 do not fit int8 once shifted: the exact f32 path."""
    rng = np.random.default_rng(3)
    x, w = _random(rng, np.uint8, (6, 21)), _random(rng, np.uint8, (21, 11))
    graph, feeds = _graph(Op.MATMUL_INTEGER, x, [w, np.array(3, np.uint8),
                                                 np.array(0, np.uint8)])
    assert not _tile_kernels(graph)
    _check(graph, feeds, ["host"])


@pytest.mark.parametrize("a_type", list(TYPES))
def test_qlinear_matmul(a_type: str) -> None:
    rng = np.random.default_rng(11)
    dtype = TYPES[a_type]
    x, w = _random(rng, dtype, (2, 13, 50)), _random(rng, np.int8, (50, 35))
    consts = [np.array(0.02, np.float32), _random(rng, dtype, ()), w,
              rng.uniform(0.001, 0.01, 35).astype(np.float32), np.zeros(35, np.int8),
              np.array(0.5, np.float32), _random(rng, dtype, ())]
    graph, feeds = _graph(Op.QLINEAR_MATMUL, x, consts)
    assert _tile_kernels(graph)
    _check(graph, feeds, RUNNABLE[:2])


CONVS = [  # (x shape, w shape, attrs)
    ((1, 8, 5, 6), (12, 8, 1, 1), {}),
    ((2, 6, 7, 9), (10, 6, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 8, 9, 11), (16, 4, 3, 3),
     {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2], "group": 2}),
    ((1, 3, 10, 10), (5, 3, 3, 3), {"strides": [2, 2]}),
    ((1, 33, 4, 5), (9, 33, 1, 2), {"pads": [0, 1, 0, 0]}),
]


@pytest.mark.parametrize("case", range(len(CONVS)))
@pytest.mark.parametrize(("x_type", "w_type"), [("u8", "s8"), ("s8", "s8"), ("u8", "u8")])
def test_conv_integer(case: int, x_type: str, w_type: str) -> None:
    rng = np.random.default_rng(case)
    x_shape, w_shape, attrs = CONVS[case]
    x_dtype, w_dtype = TYPES[x_type], TYPES[w_type]
    x, w = _random(rng, x_dtype, x_shape), _random(rng, w_dtype, w_shape)
    graph, feeds = _graph(Op.CONV_INTEGER, x, [w, _random(rng, x_dtype, ()),
                                               _zero(rng, w_dtype, True)], attrs)
    assert _tile_kernels(graph)
    _check(graph, feeds, RUNNABLE[:2] if case else RUNNABLE)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(per_channel: bool) -> None:
    rng = np.random.default_rng(5)
    x, w = _random(rng, np.uint8, (1, 16, 9, 9)), _random(rng, np.int8, (24, 16, 3, 3))
    scales = rng.uniform(0.001, 0.01, 24 if per_channel else 1).astype(np.float32)
    consts = [np.array(0.03, np.float32), np.array(120, np.uint8), w, scales.reshape(-1),
              np.zeros(scales.size, np.int8), np.array(0.7, np.float32),
              np.array(128, np.uint8), rng.integers(-5000, 5000, 24).astype(np.int32)]
    graph, feeds = _graph(Op.QLINEAR_CONV, x, consts, {"pads": [1, 1, 1, 1]})
    assert _tile_kernels(graph)
    _check(graph, feeds, RUNNABLE[:2])


def test_interpreter_runs_integer_tiles() -> None:
    """A u8 A by s8 packed quads and an s8 A by u8 quads (accumulating), in the interpreter
    and its scalar meaning, against numpy."""
    rng = np.random.default_rng(1)
    for a_dtype, b_dtype in ((DType.U8, DType.I8), (DType.I8, DType.U8)):
        a = Buffer("a", a_dtype, (3, 8))
        b = Buffer("b", b_dtype, (2, 5, 4))   # 2 quads of 5 columns
        c = Buffer("c", DType.I32, (3, 5))
        zero = Const(0, DType.I64)
        tile = MatmulTile(c, zero, 5, a, zero, 8, b, zero, 3, 5, (ContractAxis(2, 4, 20),),
                          accumulate=True)
        arrays = {"a": _random(rng, a_dtype.numpy.type, (3, 8)),
                  "b": _random(rng, b_dtype.numpy.type, (2, 5, 4)),
                  "c": rng.integers(-1000, 1000, (3, 5)).astype(np.int32)}
        matrix = arrays["b"].transpose(0, 2, 1).reshape(8, 5).astype(np.int64)
        want = arrays["c"] + arrays["a"].astype(np.int64) @ matrix
        for body in (tile, tile.expanded()):
            got = run_kernel(Kernel("tile", (a, b), (c,), body),
                             {k: v.copy() for k, v in arrays.items()})["c"]
            np.testing.assert_array_equal(got, want)


def _assembly(graph: Graph, spec: str, folder: Path) -> str:
    target = Target.parse(spec)
    plan = make_plan(lower_graph(graph, target.machine()))
    return "".join(p.read_text() for p in write_dump(plan, target, folder, 2)
                   if p.suffix == ".s")


def _tile_graph() -> Graph:
    rng = np.random.default_rng(0)
    x, w = _random(rng, np.int8, (8, 64)), _random(rng, np.int8, (64, 48))
    return _graph(Op.MATMUL_INTEGER, x, [w])[0]


def test_host_assembly_uses_vpdpbusd(tmp_path: Path) -> None:
    if "+avx512vnni" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the host has no AVX-512 VNNI")
    assert "vpdpbusd" in _assembly(_tile_graph(), "host", tmp_path)
    assert "vpdpbusd" not in _assembly(_tile_graph(), "x86_64-avx2", tmp_path / "avx2")


@pytest.mark.parametrize("spec", CROSS)
def test_cross_targets_compile_integer_tiles(spec: str, tmp_path: Path) -> None:
    assert "vpdpbusd" not in _assembly(_tile_graph(), spec, tmp_path)
