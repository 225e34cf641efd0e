"""The tiled convolution lowerings through the kernel-IR interpreter, against the reference:
ConvNCHWc (group 1 on blocked and plain inputs, depthwise) and the NCHW Conv (pointwise,
stride-1 windows over the padded width, strided via im2col, grouped, depthwise); every
candidate schedule of a few shapes; and what the schedules module decides."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from nodegraph import plain_conv

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.lower.kernel_ir import MatmulTile
from kiln.compiler.lower.schedules import collect
from kiln.compiler.lower.schedules import conv as schedules
from kiln.compiler.machine import DEFAULT_MACHINE, Machine
from kiln.compiler.reference.kernels.layout import (
    block_bias,
    block_depthwise_weights,
    block_weights,
    to_blocked,
)

RNG = np.random.default_rng(7)
AVX512 = Machine(512, 32, 32 * 1024, 1024 * 1024)


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)



def blocked_conv(x_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray | None, block: int,
                 dtype: DType = DType.F32, plain_input: bool = False, **attrs: Any) -> Graph:
    """ConvNCHWc alone on a blocked input (or the plain one), blocked output."""
    group = int(attrs.get("group", 1))
    b = GraphBuilder(fold=False)
    n, c, h, width = x_shape
    shape = x_shape if plain_input else (n, -(-c // block), h, width, block)
    x = b.add_input("x", TensorType(dtype, shape))
    packed = block_depthwise_weights(w, block) if group > 1 else block_weights(w, block)
    operands = [x, b.constant(packed)]
    if bias is not None:
        operands.append(b.constant(block_bias(bias, block)))
    extra = {"src_layout": "NCHW"} if plain_input else {}
    y = b.add1(Op.CONV_NCHWC, operands, {**attrs, **extra, "block": block})
    return b.finish([y])


def check_blocked(x_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray | None, block: int,
                  machine: Machine = DEFAULT_MACHINE, plain_input: bool = False,
                  dtype: Any = np.float32, **attrs: Any) -> None:
    x = rand(*x_shape, dtype=dtype)
    want = reference.run(plain_conv(x_shape, w, bias, DType.from_numpy(np.dtype(dtype)),
                                    **attrs), {"x": x})[0]
    graph = blocked_conv(x_shape, w, bias, block, DType.from_numpy(np.dtype(dtype)),
                         plain_input, **attrs)
    feeds = {"x": x if plain_input else to_blocked(x, block)}
    got = interpret_lowered(lower_graph(graph, machine), feeds)[0]
    tolerance = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got, to_blocked(want, block), rtol=tolerance, atol=tolerance)


BLOCKED = [
    # (x shape, out channels, kernel, attrs, block)
    ((1, 8, 5, 6), 8, 3, {"pads": [1, 1, 1, 1]}, 8),
    ((2, 5, 6, 5), 7, 3, {"pads": [1, 0, 2, 1], "strides": [2, 1]}, 4),
    ((1, 6, 7, 7), 9, 3, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, 4),
    ((1, 12, 4, 5), 20, 1, {}, 4),  # pointwise: tiles run across output rows
    ((1, 4, 6, 6), 4, 2, {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 3),
    ((1, 4, 3, 3), 4, 3, {"pads": [0, 3, 0, 3]}, 4),  # columns fully in the padding
    ((1, 4, 7, 5), 6, 1, {"kernel_shape": [3, 1], "pads": [1, 0, 1, 0]}, 4),  # 3x1: flat
    ((1, 6, 9, 9), 5, 5, {"strides": [3, 3], "pads": [2, 1, 0, 2]}, 4),
]


@pytest.mark.parametrize(("shape", "out", "k", "attrs", "block"), BLOCKED)
@pytest.mark.parametrize("with_bias", [True, False])
def test_blocked_conv(shape: tuple[int, ...], out: int, k: int, attrs: dict[str, Any],
                      block: int, with_bias: bool) -> None:
    kernel = attrs.get("kernel_shape", [k, k])
    w = rand(out, shape[1], *kernel)
    check_blocked(shape, w, rand(out) if with_bias else None, block, AVX512, **attrs)


def test_blocked_conv_f64_and_avx2_machine() -> None:
    w = rand(10, 6, 3, 3, dtype=np.float64)
    check_blocked((1, 6, 5, 5), w, rand(10, dtype=np.float64), 4, DEFAULT_MACHINE,
                  dtype=np.float64, pads=[1, 1, 1, 1])


@pytest.mark.parametrize(("shape", "out", "k", "attrs"), [
    ((1, 3, 11, 11), 10, 7, {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((2, 1, 6, 7), 5, 3, {"pads": [0, 1, 2, 0]}),
    ((1, 5, 6, 6), 4, 1, {}),
])
def test_blocked_conv_of_plain_input(shape: tuple[int, ...], out: int, k: int,
                                     attrs: dict[str, Any]) -> None:
    check_blocked(shape, rand(out, shape[1], k, k), rand(out), 4, AVX512, plain_input=True,
                  **attrs)


@pytest.mark.parametrize(("shape", "k", "attrs", "block"), [
    ((1, 8, 6, 6), 3, {"pads": [1, 1, 1, 1]}, 4),
    ((2, 5, 7, 6), 3, {"pads": [1, 0, 1, 1], "strides": [2, 2]}, 4),
    ((1, 6, 9, 9), 5, {"pads": [2, 2, 2, 2], "dilations": [2, 1]}, 8),
    ((1, 3, 4, 4), 1, {}, 4),
])
def test_depthwise_blocked_conv(shape: tuple[int, ...], k: int, attrs: dict[str, Any],
                                block: int) -> None:
    channels = shape[1]
    w = rand(channels, 1, k, k)
    check_blocked(shape, w, rand(channels), block, AVX512, group=channels, **attrs)


def blocked_decision(graph: Graph, machine: Machine) -> schedules.ConvSchedule:
    with collect() as decisions:
        lower_graph(graph, machine)
    assert len(decisions) == 1
    return schedules.ConvSchedule(**decisions[0].chosen)


@pytest.mark.parametrize(("shape", "out", "k", "attrs", "plain_input"), [
    ((1, 16, 6, 7), 24, 3, {"pads": [1, 1, 1, 1]}, False),
    ((1, 32, 4, 4), 16, 1, {}, False),
    ((1, 3, 9, 9), 8, 5, {"pads": [2, 2, 2, 2], "strides": [2, 2]}, True),
])
def test_every_blocked_candidate(shape: tuple[int, ...], out: int, k: int,
                                 attrs: dict[str, Any], plain_input: bool) -> None:
    """Each candidate schedule the lowering lists, forced through ``Machine.with_tuned``,
    gives the reference's result (and is the one the lowering used)."""
    w, bias = rand(out, shape[1], k, k), rand(out)
    graph = blocked_conv(shape, w, bias, 8, plain_input=plain_input, **attrs)
    with collect() as decisions:
        lower_graph(graph, AVX512)
    (decision,) = decisions
    assert 2 <= len(decision.candidates) <= 12
    x = rand(*shape)
    feeds = {"x": x if plain_input else to_blocked(x, 8)}
    want = to_blocked(reference.run(plain_conv(shape, w, bias, **attrs), {"x": x})[0], 8)
    for candidate in decision.candidates:
        machine = AVX512.with_tuned({decision.signature: candidate})
        assert blocked_decision(graph, machine) == schedules.ConvSchedule(**candidate)
        got = interpret_lowered(lower_graph(graph, machine), feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=str(candidate))


def test_stale_tuning_falls_back_to_the_default() -> None:
    graph = blocked_conv((1, 16, 4, 4), rand(16, 16, 1, 1), None, 8)
    with collect() as decisions:
        lower_graph(graph, AVX512)
    signature = decisions[0].signature
    default = blocked_decision(graph, AVX512)
    # 3 does not divide the 2 input blocks; 3 task rows do not divide a flat conv's 4 rows
    for stale in ({"k_chunk": 3}, {"task_rows": 3}, {"rows": 0}, {"unknown": 1}):
        assert blocked_decision(graph, AVX512.with_tuned({signature: stale})) == default


PLAIN = [
    # (x shape, out channels, kernel, attrs): pointwise, padded-width, im2col, grouped
    ((2, 6, 5, 4), 7, 1, {}),
    ((1, 5, 6, 7), 9, 3, {"pads": [1, 1, 1, 1]}),
    ((1, 4, 7, 6), 5, 3, {"pads": [0, 2, 1, 0], "dilations": [2, 1]}),
    ((1, 4, 5, 5), 3, 2, {}),  # no padding: the input read in place, over its full width
    ((2, 3, 9, 8), 6, 3, {"strides": [2, 3], "pads": [1, 1, 0, 2]}),
    ((1, 6, 6, 6), 4, 1, {"strides": [2, 2]}),
    ((1, 6, 5, 5), 9, 3, {"group": 3, "pads": [1, 1, 1, 1]}),
    ((1, 4, 6, 6), 6, 1, {"group": 2, "strides": [2, 1]}),
]


@pytest.mark.parametrize(("shape", "out", "k", "attrs"), PLAIN)
@pytest.mark.parametrize("machine", [DEFAULT_MACHINE, AVX512], ids=["avx2", "avx512"])
def test_plain_conv(shape: tuple[int, ...], out: int, k: int, attrs: dict[str, Any],
                    machine: Machine) -> None:
    group = int(attrs.get("group", 1))
    graph = plain_conv(shape, rand(out, shape[1] // group, k, k), rand(out), **attrs)
    feeds = {"x": rand(*shape)}
    lowered = lower_graph(graph, machine)
    tiles = [n for step in lowered.steps for kernel in step.kernels
             for n in _walk(kernel.body) if isinstance(n, MatmulTile)]
    assert tiles, "an f32 Conv with constant weights is tiled"
    got = interpret_lowered(lowered, feeds)[0]
    np.testing.assert_allclose(got, reference.run(graph, feeds)[0], rtol=1e-4, atol=1e-4)


def test_every_plain_candidate() -> None:
    graph = plain_conv((1, 8, 6, 6), rand(12, 8, 3, 3), rand(12), pads=[1, 1, 1, 1])
    with collect() as decisions:
        lower_graph(graph, AVX512)
    (decision,) = decisions
    feeds = {"x": rand(1, 8, 6, 6)}
    want = reference.run(graph, feeds)[0]
    for candidate in decision.candidates:
        machine = AVX512.with_tuned({decision.signature: candidate})
        got = interpret_lowered(lower_graph(graph, machine), feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=str(candidate))


@pytest.mark.parametrize(("shape", "out", "attrs"), [
    ((1, 6, 7, 7), 6, {"pads": [1, 1, 1, 1]}),
    ((2, 4, 8, 7), 4, {"strides": [2, 2], "pads": [1, 0, 0, 1]}),
    ((1, 3, 6, 6), 6, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),  # multiplier 2
])
def test_plain_depthwise_conv(shape: tuple[int, ...], out: int, attrs: dict[str, Any]) -> None:
    graph = plain_conv(shape, rand(out, 1, 3, 3), rand(out), group=shape[1], **attrs)
    feeds = {"x": rand(*shape)}
    got = interpret_lowered(lower_graph(graph, AVX512), feeds)[0]
    np.testing.assert_allclose(got, reference.run(graph, feeds)[0], rtol=1e-4, atol=1e-4)


def test_resnet_schedules_fit_the_registers() -> None:
    """The cost model's tiles for ResNet-50 shapes: accumulators + one B row + a broadcast fit
    in the registers, and the big layers get tiles of at least 16 accumulators."""
    lanes = AVX512.f32_lanes
    for size, c, m, k in ((56, 64, 64, 3), (56, 64, 256, 1), (14, 256, 256, 3), (7, 512, 512, 3)):
        shape = schedules.ConvShape(
            "blocked", DType.F32, 1, c, m, 1, lanes, (size, size), (size, size), (k, k),
            (1, 1), (1, 1), ((k - 1) // 2,) * 4)
        s = schedules.default(AVX512, shape)
        assert s.rows * s.cols + s.cols + 1 <= AVX512.vector_registers
        assert s.rows * s.cols >= 16
        assert schedules.valid(shape, s)


def _walk(stmt: Any) -> list[Any]:
    from kiln.compiler.lower.inline import walk

    return list(walk(stmt))
