"""Lowerings of GridSample, DeformConv and LinearAttention through the kernel-IR interpreter
against the reference executor: every sampling mode, padding mode and align_corners setting
on 1-D, 2-D and 3-D grids, deformable convolutions with groups, masks and out-of-image
offsets, and each linear attention update rule."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph

RNG = np.random.default_rng(7)
TOLERANCE = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-5, np.dtype(np.float16): 2e-3}


def graph_of(op: Op, operands: Sequence[np.ndarray | None], attrs: Mapping[str, Any],
             outputs: int = 1) -> tuple[Graph, dict[str, np.ndarray]]:
    b = GraphBuilder()
    values, feeds = [], {}
    for i, operand in enumerate(operands):
        if operand is None:
            values.append(None)
            continue
        values.append(b.add_input(f"in{i}", TensorType.of(operand)))
        feeds[f"in{i}"] = operand
    return b.finish(list(b.add(op, values, dict(attrs), outputs=outputs))), feeds


def check(op: Op, operands: Sequence[np.ndarray | None], attrs: Mapping[str, Any],
          outputs: int = 1, tol: float | None = None,
          expected: Sequence[np.ndarray] | None = None) -> None:
    """The interpreted lowering of one node matches ``expected`` (default: the reference)."""
    graph, feeds = graph_of(op, operands, attrs, outputs)
    if expected is None:
        expected = reference.run(graph, feeds)
    got = interpret_lowered(lower_graph(graph), feeds)
    for want, have in zip(expected, got, strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape
        limit = tol if tol is not None else TOLERANCE[want.dtype]
        np.testing.assert_allclose(have.astype(np.float64), want.astype(np.float64),
                                   rtol=limit, atol=limit)


def rand(*shape: int, dtype: Any = np.float32, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def grid_points(n: int, *out: int, spread: float = 1.7, dtype: Any = np.float32) -> np.ndarray:
    """Normalized coordinates reaching beyond [-1, 1], plus exact halves and edges."""
    grid = RNG.uniform(-spread, spread, (n, *out, len(out))).astype(dtype)
    flat = grid.reshape(-1)
    specials = np.array([-1.0, 1.0, 0.0, -0.5, 0.5, -3.25, 2.5], dtype)
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    return grid


SPATIAL = {1: ((5,), (4,)), 2: ((3, 4), (2, 3)), 3: ((2, 3, 3), (2, 2, 2))}


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_modes(mode: str, padding: str, align: int, rank: int) -> None:
    sizes, out = SPATIAL[rank]
    x = rand(2, 2, *sizes)
    check(Op.GRID_SAMPLE, [x, grid_points(2, *out)],
          {"mode": mode, "padding_mode": padding, "align_corners": align})


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_grid_sample_mode_aliases(mode: str) -> None:
    check(Op.GRID_SAMPLE, [rand(1, 2, 3, 3), grid_points(1, 2, 2)], {"mode": mode})


@pytest.mark.parametrize(("padding", "align"), itertools.product(
    ["zeros", "border", "reflection"], [0, 1]))
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_unit_axis(mode: str, padding: str, align: int) -> None:
    """A single-pixel axis: reflection about a zero-width range with align_corners."""
    check(Op.GRID_SAMPLE, [rand(1, 1, 1, 3), grid_points(1, 2, 3, spread=3.0)],
          {"mode": mode, "padding_mode": padding, "align_corners": align})


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_dtypes(mode: str, dtype: Any) -> None:
    check(Op.GRID_SAMPLE, [rand(1, 2, 3, 4, dtype=dtype), grid_points(1, 2, 3, dtype=dtype)],
          {"mode": mode, "padding_mode": "reflection"})


def test_grid_sample_far_coordinates() -> None:
    """Coordinates far outside (and infinite) keep every load in bounds."""
    grid = np.array([[[[1e30, -1e30], [np.inf, 0.2], [-np.inf, 5.0]]]], np.float32)
    for mode, padding in itertools.product(["linear", "nearest", "cubic"], ["zeros", "border"]):
        check(Op.GRID_SAMPLE, [rand(1, 1, 3, 3), grid],
              {"mode": mode, "padding_mode": padding})


def deform_operands(
    batch: int, channels: int, size: tuple[int, int], out_channels: int, kernel: tuple[int, int],
    out: tuple[int, int], offset_group: int, group: int, bias: bool, mask: bool,
    dtype: Any = np.float32,
) -> list[np.ndarray | None]:
    taps = offset_group * kernel[0] * kernel[1]
    return [
        rand(batch, channels, *size, dtype=dtype),
        rand(out_channels, channels // group, *kernel, dtype=dtype),
        rand(batch, 2 * taps, *out, dtype=dtype, scale=1.5),
        rand(out_channels, dtype=dtype) if bias else None,
        RNG.uniform(0, 1, (batch, taps, *out)).astype(dtype) if mask else None,
    ]


@pytest.mark.parametrize(("bias", "mask"), [(False, False), (True, False), (True, True)])
def test_deform_conv_plain(bias: bool, mask: bool) -> None:
    operands = deform_operands(1, 2, (4, 4), 3, (2, 2), (3, 3), 1, 1, bias, mask)
    check(Op.DEFORM_CONV, operands, {})


def test_deform_conv_groups_and_geometry() -> None:
    """Grouped: the expected output is the ungrouped reference with a block-diagonal weight
    (the reference kernel broadcasts its group matmul wrongly when group > 1)."""
    operands = deform_operands(2, 4, (5, 4), 4, (2, 3), (3, 2), 2, 2, True, True)
    attrs = {"offset_group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [1, 1, 1, 1]}
    w = operands[1]
    out_channels, per_group = w.shape[:2]
    dense = np.zeros((out_channels, 2 * per_group, *w.shape[2:]), w.dtype)
    for m in range(out_channels):
        first = m // (out_channels // 2) * per_group
        dense[m, first : first + per_group] = w[m]
    ungrouped = [operands[0], dense, *operands[2:]]
    expected = reference.run(*graph_of(Op.DEFORM_CONV, ungrouped, attrs))
    check(Op.DEFORM_CONV, operands, {**attrs, "group": 2}, expected=expected)


def test_deform_conv_offset_groups_only() -> None:
    operands = deform_operands(1, 4, (3, 3), 2, (1, 1), (3, 3), 4, 1, False, True)
    check(Op.DEFORM_CONV, operands, {"offset_group": 4})


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_deform_conv_dtypes(dtype: Any) -> None:
    operands = deform_operands(1, 2, (3, 4), 2, (2, 2), (2, 3), 1, 1, True, True, dtype)
    check(Op.DEFORM_CONV, operands, {}, tol=1e-2 if dtype == np.float16 else None)


def attention_operands(
    rule: str, batch: int, steps: int, hq: int, hkv: int, d_k: int, d_v: int,
    past: bool, per_head: bool, dtype: Any = np.float32, past_dtype: Any = None,
) -> list[np.ndarray | None]:
    decay = beta = None
    if "gated" in rule:
        width = hkv if per_head else hkv * d_k
        decay = -RNG.uniform(0.0, 1.0, (batch, steps, width)).astype(dtype)
    if "delta" in rule:
        beta = RNG.uniform(0.0, 1.0, (batch, steps, hkv if per_head else 1)).astype(dtype)
    state = rand(batch, hkv, d_k, d_v, dtype=past_dtype or dtype) if past else None
    return [rand(batch, steps, hq * d_k, dtype=dtype), rand(batch, steps, hkv * d_k, dtype=dtype),
            rand(batch, steps, hkv * d_v, dtype=dtype), state, decay, beta]


@pytest.mark.parametrize("per_head", [True, False])
@pytest.mark.parametrize("past", [False, True])
@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_linear_attention_rules(rule: str, past: bool, per_head: bool) -> None:
    operands = attention_operands(rule, 2, 3, 4, 2, 3, 2, past, per_head)
    check(Op.LINEAR_ATTENTION, operands,
          {"update_rule": rule, "q_num_heads": 4, "kv_num_heads": 2}, outputs=2)


def test_linear_attention_scale_and_single_head() -> None:
    operands = attention_operands("gated_delta", 1, 4, 1, 1, 4, 3, True, True)
    check(Op.LINEAR_ATTENTION, operands,
          {"update_rule": "gated_delta", "q_num_heads": 1, "kv_num_heads": 1, "scale": 0.3},
          outputs=2)


@pytest.mark.parametrize("past_dtype", [None, np.float32])
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_linear_attention_dtypes(dtype: Any, past_dtype: Any) -> None:
    """Narrow and wide inputs compute in f32; the state keeps the past state's type."""
    operands = attention_operands("gated_delta", 1, 3, 2, 2, 2, 3, past_dtype is not None, False,
                                  dtype, past_dtype)
    check(Op.LINEAR_ATTENTION, operands,
          {"update_rule": "gated_delta", "q_num_heads": 2, "kv_num_heads": 2}, outputs=2,
          tol=2e-3 if dtype == np.float16 else 1e-5)
