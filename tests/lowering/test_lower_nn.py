"""Lowerings of the nn ops (conv, pool, norm, matmul, quant, misc) through the kernel-IR
interpreter against the reference executor, on small geometries covering each attribute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph

RNG = np.random.default_rng(0)
TOLERANCE = {
    np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4, np.dtype(np.float16): 2e-3,
}


class Const:
    """Marks a test operand as a graph constant (what an AOT compiler sees)."""

    def __init__(self, value: Any) -> None:
        self.value = np.asarray(value)


def graph_of(op: Op, operands: Sequence[Any], attrs: Mapping[str, Any] | None = None,
             outputs: int | Sequence[str | None] = 1) -> tuple[Graph, dict[str, np.ndarray]]:
    b = GraphBuilder()
    values, feeds = [], {}
    for i, operand in enumerate(operands):
        if operand is None:
            values.append(None)
        elif isinstance(operand, Const):
            values.append(b.constant(operand.value))
        else:
            array = np.asarray(operand)
            values.append(b.add_input(f"in{i}", TensorType.of(array)))
            feeds[f"in{i}"] = array
    outs = b.add(op, values, attrs or {}, outputs=outputs)
    return b.finish([v for v in outs if v is not None]), feeds


def check(op: Op, operands: Sequence[Any], attrs: Mapping[str, Any] | None = None,
          outputs: int | Sequence[str | None] = 1, tol: float | None = None) -> list[np.ndarray]:
    """Lowered (interpreted) outputs equal the reference's; returns them."""
    graph, feeds = graph_of(op, operands, attrs, outputs)
    expected = reference.run(graph, feeds)
    got = interpret_lowered(lower_graph(graph), feeds)
    for want, have in zip(expected, got, strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape
        if want.dtype.kind in "fc" or want.dtype.name == "bfloat16":
            limit = tol if tol is not None else TOLERANCE.get(want.dtype, 1e-2)
            np.testing.assert_allclose(have.astype(np.float64), want.astype(np.float64),
                                       rtol=limit, atol=limit)
        else:
            np.testing.assert_array_equal(have, want)
    return got


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def qrand(*shape: int, dtype: Any = np.uint8) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def lowering_error(op: Op, operands: Sequence[Any], attrs: Mapping[str, Any] | None = None,
                   match: str = "") -> None:
    graph, _ = graph_of(op, operands, attrs)
    with pytest.raises(KilnError, match=match):
        lower_graph(graph)


# ---------------------------------------------------------------- convolutions

@pytest.mark.parametrize("attrs", [
    {},
    {"pads": [1, 1, 1, 1]},
    {"strides": [2, 1], "pads": [1, 0, 2, 1]},
    {"dilations": [2, 2], "pads": [2, 2, 2, 2]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER"},
    {"auto_pad": "VALID", "strides": [2, 2]},
])
def test_conv_2d(attrs: dict) -> None:
    check(Op.CONV, [rand(1, 2, 5, 6), rand(3, 2, 3, 3), rand(3)], attrs)


def test_conv_groups_and_depthwise() -> None:
    check(Op.CONV, [rand(2, 4, 4, 4), rand(6, 2, 2, 2)], {"group": 2, "pads": [1, 0, 0, 1]})
    check(Op.CONV, [rand(1, 3, 5, 5), rand(3, 1, 3, 3), rand(3)], {"group": 3, "pads": [1] * 4})


def test_conv_1d_3d_and_narrow_floats() -> None:
    check(Op.CONV, [rand(2, 2, 7), rand(3, 2, 3)], {"strides": [2], "pads": [1, 1]})
    check(Op.CONV, [rand(1, 1, 3, 4, 3), rand(2, 1, 2, 2, 2), rand(2)], {"pads": [1, 0, 1] * 2})
    check(Op.CONV, [rand(1, 2, 4, 4, dtype=np.float16), rand(2, 2, 3, 3, dtype=np.float16)],
          {"pads": [1] * 4})
    check(Op.CONV, [rand(1, 2, 4, 4, dtype=np.float64), rand(2, 2, 3, 3, dtype=np.float64)])


@pytest.mark.parametrize("attrs", [
    {},
    {"strides": [2, 2]},
    {"strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 2]},
    {"dilations": [2, 1], "pads": [1, 1, 1, 1]},
    {"strides": [2, 2], "output_shape": [8, 9]},
    {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
])
def test_conv_transpose(attrs: dict) -> None:
    check(Op.CONV_TRANSPOSE, [rand(1, 2, 3, 4), rand(2, 3, 3, 3), rand(3)], attrs)


def test_conv_transpose_groups_1d() -> None:
    check(Op.CONV_TRANSPOSE, [rand(2, 4, 3, 3), rand(4, 1, 2, 2)], {"group": 2})
    check(Op.CONV_TRANSPOSE, [rand(1, 2, 5), rand(2, 2, 3)], {"strides": [3], "pads": [1, 2]})


def test_conv_integer() -> None:
    x, w = qrand(1, 2, 4, 4), qrand(4, 2, 2, 2)
    check(Op.CONV_INTEGER, [x, w])
    check(Op.CONV_INTEGER, [x, w, np.array(3, np.uint8), qrand(4)], {"pads": [1, 1, 0, 0]})
    check(Op.CONV_INTEGER, [qrand(1, 2, 3, 3, dtype=np.int8), qrand(2, 1, 2, 2, dtype=np.int8),
                            np.array(-2, np.int8)], {"group": 2, "strides": [2, 1]})


def test_qlinear_conv() -> None:
    x, w = qrand(1, 2, 5, 5), qrand(3, 2, 3, 3, dtype=np.int8)
    scale = np.float32(0.02)
    common = [x, scale, np.uint8(120), w]
    check(Op.QLINEAR_CONV, [*common, scale, np.int8(0), np.float32(0.7), np.uint8(100)],
          {"pads": [1] * 4})
    check(Op.QLINEAR_CONV, [*common, np.array([0.01, 0.02, 0.03], np.float32),
                            np.zeros(3, np.int8), np.float32(0.3), np.uint8(7),
                            RNG.integers(-500, 500, 3).astype(np.int32)], {"strides": [2, 2]})


@pytest.mark.parametrize("activation", ["none", "silu"])
def test_causal_conv_with_state(activation: str) -> None:
    x, w, b = rand(2, 3, 5), rand(3, 1, 3), rand(3)
    attrs = {"activation": activation}
    check(Op.CAUSAL_CONV_WITH_STATE, [x, w, b, rand(2, 3, 2)], attrs, outputs=2)
    check(Op.CAUSAL_CONV_WITH_STATE, [x, w], attrs, outputs=2)
    check(Op.CAUSAL_CONV_WITH_STATE, [rand(1, 2, 1), w[:2], None, rand(1, 2, 2)], attrs,
          outputs=2)


@pytest.mark.parametrize("attrs", [
    {},
    {"strides": [2, 2]},
    {"pads": [1, 0, 1, 0], "dilations": [1, 2]},
])
def test_col2im(attrs: dict) -> None:
    image, block = np.array([5, 5]), np.array([2, 3])
    geometry = {"strides": [2, 2]} if "strides" in attrs else {}
    pads = attrs.get("pads", [0] * 4)
    dil = attrs.get("dilations", [1, 1])
    s = geometry.get("strides", [1, 1])
    blocks = [(size + pads[i] + pads[i + 2] - (k - 1) * dil[i] - 1) // s[i] + 1
              for i, (size, k) in enumerate(zip(image, block))]
    x = rand(1, 2 * 6, int(np.prod(blocks)))
    check(Op.COL2IM, [x, Const(image), Const(block)], attrs)
