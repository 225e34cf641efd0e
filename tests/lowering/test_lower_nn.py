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
              for i, (size, k) in enumerate(zip(image, block, strict=True))]
    x = rand(1, 2 * 6, int(np.prod(blocks)))
    check(Op.COL2IM, [x, Const(image), Const(block)], attrs)


# ---------------------------------------------------------------- pools

POOL_GEOMETRIES = [
    {"kernel_shape": [2, 2]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [1, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER", "ceil_mode": 1},
]


@pytest.mark.parametrize("attrs", POOL_GEOMETRIES)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool(attrs: dict, include_pad: int) -> None:
    check(Op.AVERAGE_POOL, [rand(1, 2, 5, 6)], {**attrs, "count_include_pad": include_pad})


@pytest.mark.parametrize("attrs", POOL_GEOMETRIES)
def test_max_and_lp_pool(attrs: dict) -> None:
    x = rand(2, 2, 5, 6)
    x[0, 0, 1, 1] = np.nan
    check(Op.MAX_POOL, [x], attrs, outputs=2)
    check(Op.MAX_POOL, [x], {**attrs, "storage_order": 1}, outputs=2)
    check(Op.MAX_POOL, [x], attrs)
    check(Op.LP_POOL, [rand(1, 2, 5, 6)], {**attrs, "p": 3})


def test_pools_1d_3d_int_f16() -> None:
    check(Op.MAX_POOL, [qrand(1, 2, 6, dtype=np.int8)], {"kernel_shape": [3], "pads": [1, 1]},
          outputs=2)
    check(Op.AVERAGE_POOL, [rand(1, 1, 4, 3, 4)], {"kernel_shape": [2, 2, 2], "pads": [1] * 6})
    check(Op.AVERAGE_POOL, [rand(1, 2, 4, 4, dtype=np.float16)], {"kernel_shape": [2, 2]})
    check(Op.MAX_POOL, [rand(1, 2, 4, 4, dtype=np.float16)], {"kernel_shape": [2, 2]})


def test_global_pools() -> None:
    x = rand(2, 3, 4, 5)
    check(Op.GLOBAL_AVERAGE_POOL, [x])
    check(Op.GLOBAL_MAX_POOL, [x])
    check(Op.GLOBAL_LP_POOL, [x], {"p": 3})
    check(Op.GLOBAL_AVERAGE_POOL, [rand(1, 2, 3, dtype=np.float16)])


def test_max_unpool() -> None:
    x = rand(1, 2, 4, 4)
    graph, feeds = graph_of(Op.MAX_POOL, [x], {"kernel_shape": [2, 2], "strides": [2, 2]}, 2)
    values, where = reference.run(graph, feeds)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    check(Op.MAX_UNPOOL, [values, where], attrs)
    check(Op.MAX_UNPOOL, [values, where, Const(np.array([1, 2, 5, 3]))], attrs)
    with pytest.raises(KilnError, match="outside the unpooled shape"):
        graph, feeds = graph_of(Op.MAX_UNPOOL, [values, where + 100], attrs)
        interpret_lowered(lower_graph(graph), feeds)


def test_max_roi_pool() -> None:
    rois = np.array([[0, 0, 0, 3, 3], [1, 1.2, 0.6, 4.4, 2.5], [0, 2, 2, 2, 2]], np.float32)
    check(Op.MAX_ROI_POOL, [rand(2, 2, 5, 5), rois], {"pooled_shape": [2, 3]})
    check(Op.MAX_ROI_POOL, [rand(2, 2, 5, 5), rois], {"pooled_shape": [3, 2],
                                                       "spatial_scale": 0.5})


@pytest.mark.parametrize("attrs", [
    {},
    {"output_height": 2, "output_width": 3, "sampling_ratio": 2, "spatial_scale": 0.5},
    {"output_height": 2, "output_width": 2, "mode": "max"},
    {"output_height": 3, "output_width": 2, "coordinate_transformation_mode": "output_half_pixel"},
])
def test_roi_align(attrs: dict) -> None:
    rois = np.array([[0, 0, 3, 3], [1.2, 0.6, 4.4, 2.5], [-2, 3, 6, 7]], np.float32)
    check(Op.ROI_ALIGN, [rand(2, 2, 5, 6), rois, np.array([0, 1, 1])], attrs)


# ---------------------------------------------------------------- normalizations

@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_batch_norm_inference(dtype: Any) -> None:
    var = np.abs(rand(3)) + 0.1
    check(Op.BATCH_NORMALIZATION, [rand(2, 3, 2, 3, dtype=dtype), rand(3), rand(3), rand(3), var],
          {"epsilon": 1e-3})


def test_batch_norm_training() -> None:
    var = np.abs(rand(3)) + 0.1
    operands = [rand(2, 3, 4), rand(3), rand(3), rand(3), var]
    check(Op.BATCH_NORMALIZATION, operands, {"training_mode": 1, "momentum": 0.8}, outputs=3)
    check(Op.BATCH_NORMALIZATION, operands, {"training_mode": 1})


def test_instance_and_group_norm() -> None:
    check(Op.INSTANCE_NORMALIZATION, [rand(2, 3, 2, 3), rand(3), rand(3)], {"epsilon": 1e-2})
    check(Op.INSTANCE_NORMALIZATION, [rand(1, 2, 5, dtype=np.float16),
                                      rand(2, dtype=np.float16), rand(2, dtype=np.float16)])
    x = rand(2, 4, 3, 2)
    check(Op.GROUP_NORMALIZATION, [x, rand(4), rand(4)], {"num_groups": 2})
    check(Op.GROUP_NORMALIZATION, [x, rand(4), rand(4)], {"num_groups": 1})
    check(Op.GROUP_NORMALIZATION, [x, rand(4), rand(4)], {"num_groups": 4, "epsilon": 0.1})


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_layer_and_rms_norm(axis: int) -> None:
    x = rand(2, 3, 4)
    norm_shape = x.shape[axis % 3:]
    check(Op.LAYER_NORMALIZATION, [x, rand(*norm_shape), rand(*norm_shape)], {"axis": axis},
          outputs=3)
    check(Op.LAYER_NORMALIZATION, [x, rand(norm_shape[-1])], {"axis": axis})
    check(Op.RMS_NORMALIZATION, [x, rand(*norm_shape)], {"axis": axis, "epsilon": 1e-3})
    h = rand(2, 3, 4, dtype=np.float16)
    check(Op.LAYER_NORMALIZATION, [h, rand(4, dtype=np.float16)], {"axis": axis}, outputs=3)
    check(Op.RMS_NORMALIZATION, [h, rand(4, dtype=np.float16)], {"axis": axis})


def test_lrn_and_mvn() -> None:
    x = rand(2, 5, 2, 3)
    check(Op.LRN, [x], {"size": 3})
    check(Op.LRN, [x], {"size": 4, "alpha": 0.01, "beta": 0.5, "bias": 2.0})
    check(Op.MEAN_VARIANCE_NORMALIZATION, [x])
    check(Op.MEAN_VARIANCE_NORMALIZATION, [x], {"axes": [1, 3]})
    check(Op.MEAN_VARIANCE_NORMALIZATION, [rand(2, 3, 4, dtype=np.float16)], {"axes": [-1]})


# ---------------------------------------------------------------- matrix products

@pytest.mark.parametrize(("a", "b"), [
    ((3, 4), (4, 5)), ((4,), (4, 3)), ((2, 3, 4), (4,)), ((4,), (4,)),
    ((2, 1, 3, 4), (3, 4, 2)), ((1, 3, 4), (2, 4, 2)),
])
def test_matmul(a: tuple, b: tuple) -> None:
    check(Op.MATMUL, [rand(*a), rand(*b)])


def test_matmul_dtypes() -> None:
    check(Op.MATMUL, [rand(3, 4, dtype=np.float16), rand(4, 2, dtype=np.float16)])
    check(Op.MATMUL, [qrand(3, 4, dtype=np.int32) % 100, qrand(4, 2, dtype=np.int32) % 100])
    check(Op.MATMUL, [rand(2, 3, dtype=np.float64), rand(3, 2, dtype=np.float64)])


@pytest.mark.parametrize("attrs", [
    {}, {"transA": 1}, {"transB": 1, "alpha": 0.5}, {"transA": 1, "transB": 1, "beta": 2.0},
])
@pytest.mark.parametrize("c_shape", [None, (5,), (3, 1), (1, 5), (3, 5), ()])
def test_gemm(attrs: dict, c_shape: tuple | None) -> None:
    a = rand(4, 3) if attrs.get("transA") else rand(3, 4)
    b = rand(5, 4) if attrs.get("transB") else rand(4, 5)
    check(Op.GEMM, [a, b, None if c_shape is None else rand(*c_shape)], attrs)


def test_gemm_integer() -> None:
    a, b, c = (qrand(*s, dtype=np.int32) % 50 for s in ((2, 3), (3, 4), (4,)))
    check(Op.GEMM, [a, b, c])
    check(Op.GEMM, [a, b, c], {"alpha": 0.5, "beta": 2.0})


def test_matmul_integer() -> None:
    a, b = qrand(2, 3, 4), qrand(4, 5)
    check(Op.MATMUL_INTEGER, [a, b])
    check(Op.MATMUL_INTEGER, [a, b, np.uint8(12), qrand(5)])
    check(Op.MATMUL_INTEGER, [a[0], b, qrand(3), np.uint8(200)])
    check(Op.MATMUL_INTEGER, [qrand(3, 4, dtype=np.int8), qrand(4, 2, dtype=np.int8),
                              np.int8(-3), np.int8(5)])


def test_qlinear_matmul() -> None:
    a, b = qrand(2, 3, 4), qrand(4, 5, dtype=np.int8)
    check(Op.QLINEAR_MATMUL, [a, np.float32(0.05), np.uint8(100), b, np.float32(0.02),
                              np.int8(1), np.float32(0.3), np.uint8(128)])
    check(Op.QLINEAR_MATMUL, [a[0], np.float32(0.05), np.uint8(100), b,
                              np.linspace(0.01, 0.05, 5).astype(np.float32), np.zeros(5, np.int8),
                              np.float32(0.3), np.uint8(128)])


@pytest.mark.parametrize(("equation", "shapes"), [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("ij->", [(2, 3)]),
    ("ij->ji", [(2, 3)]),
    ("i,j", [(2,), (3,)]),
    ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 2)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 2, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)]),
    ("i...->...", [(2, 3, 1)]),
])
def test_einsum(equation: str, shapes: list) -> None:
    check(Op.EINSUM, [rand(*s) for s in shapes], {"equation": equation})


# ---------------------------------------------------------------- quantization

@pytest.mark.parametrize("out", [np.uint8, np.int8, np.int16, np.uint16])
def test_quantize_linear(out: Any) -> None:
    x = rand(2, 3, 4) * 40
    check(Op.QUANTIZE_LINEAR, [x, np.float32(0.3), np.zeros((), out)])
    check(Op.QUANTIZE_LINEAR, [x, np.array([0.1, 0.2, 0.5], np.float32),
                               np.array([0, 3, 7], out)], {"axis": 1})
    check(Op.QUANTIZE_LINEAR, [x, np.abs(rand(2, 3, 2)) + 0.1, np.ones((2, 3, 2), out)],
          {"axis": 2, "block_size": 2})
    check(Op.QUANTIZE_LINEAR, [x.astype(np.float16), np.float16(0.25), np.zeros((), out)])


def test_quantize_defaults_and_int_input() -> None:
    check(Op.QUANTIZE_LINEAR, [rand(3, 4) * 100, np.float32(0.5)])
    check(Op.QUANTIZE_LINEAR, [RNG.integers(-900, 900, (3, 4)).astype(np.int32), np.float32(4.0),
                               np.int8(1)])


def test_dequantize_linear() -> None:
    check(Op.DEQUANTIZE_LINEAR, [qrand(2, 3), np.float32(0.3), np.uint8(9)])
    check(Op.DEQUANTIZE_LINEAR, [qrand(2, 3, dtype=np.int8), np.array([0.1, 0.2, 0.3],
                                 np.float32), np.array([1, -2, 3], np.int8)], {"axis": -1})
    check(Op.DEQUANTIZE_LINEAR, [qrand(4, 3, dtype=np.int8), np.abs(rand(2, 3)) + 0.1],
          {"axis": 0, "block_size": 2})
    check(Op.DEQUANTIZE_LINEAR, [RNG.integers(-9000, 9000, (5,)).astype(np.int32),
                                 np.float16(0.5)])


def test_dynamic_quantize_linear() -> None:
    check(Op.DYNAMIC_QUANTIZE_LINEAR, [rand(3, 4) * 3], outputs=3)
    check(Op.DYNAMIC_QUANTIZE_LINEAR, [np.abs(rand(5)) + 1], outputs=3)
    check(Op.DYNAMIC_QUANTIZE_LINEAR, [np.zeros((2, 2), np.float32)], outputs=3)


# ---------------------------------------------------------------- misc

def test_dropout_inference() -> None:
    x = rand(2, 3)
    check(Op.DROPOUT, [x], outputs=2)
    check(Op.DROPOUT, [x, Const(np.float32(0.3)), Const(np.array(False))], outputs=2)
    check(Op.DROPOUT, [x, Const(np.float32(0.0)), Const(np.array(True))], outputs=2)
    check(Op.DROPOUT, [x, np.float32(0.0), np.array(True)], outputs=2)
    check(Op.DROPOUT, [x, np.float32(0.5), np.array(False)])


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ignore", [None, 1])
def test_losses(reduction: str, ignore: int | None) -> None:
    attrs = {"reduction": reduction} | ({} if ignore is None else {"ignore_index": ignore})
    scores = rand(3, 4, 2)
    target = RNG.integers(0, 4, (3, 2)).astype(np.int64)
    target[0, 0] = 1
    check(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS, [scores, target], attrs)
    check(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS, [scores, target.astype(np.int32), rand(4)], attrs)
    check(Op.SOFTMAX_CROSS_ENTROPY_LOSS, [scores, target], attrs, outputs=2)
    check(Op.SOFTMAX_CROSS_ENTROPY_LOSS, [scores[:, :, 0], target[:, 0], rand(4)], attrs)
    check(Op.SOFTMAX_CROSS_ENTROPY_LOSS, [scores.astype(np.float16), target], attrs, outputs=2)


def test_loss_bad_target_is_reported() -> None:
    graph, feeds = graph_of(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS,
                            [rand(2, 3), np.array([0, 5], np.int64)])
    with pytest.raises(KilnError, match="outside"):
        interpret_lowered(lower_graph(graph), feeds)


@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid(align: int) -> None:
    check(Op.AFFINE_GRID, [rand(2, 2, 3), Const(np.array([2, 1, 3, 4]))], {"align_corners": align})
    check(Op.AFFINE_GRID, [rand(1, 3, 4), Const(np.array([1, 1, 2, 3, 2]))],
          {"align_corners": align})
    check(Op.AFFINE_GRID, [rand(1, 2, 3), Const(np.array([1, 1, 1, 3]))], {"align_corners": align})


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 4])
def test_rotary_embedding(interleaved: int, rotary_dim: int) -> None:
    half = (rotary_dim or 6) // 2
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rotary_dim}
    check(Op.ROTARY_EMBEDDING, [rand(2, 2, 3, 6), rand(2, 3, half), rand(2, 3, half)], attrs)
    check(Op.ROTARY_EMBEDDING, [rand(2, 3, 12), rand(5, half), rand(5, half),
                                np.array([[0, 1, 4], [2, 2, 3]])], {**attrs, "num_heads": 2})


@pytest.mark.parametrize("attrs", [
    {},
    {"is_causal": 1, "scale": 0.3},
    {"softcap": 2.0, "qk_matmul_output_mode": 1},
    {"left_window_size": 1, "qk_matmul_output_mode": 2},
    {"right_window_size": 0, "is_causal": 1, "qk_matmul_output_mode": 3},
])
def test_attention_4d(attrs: dict) -> None:
    q, k, v = rand(2, 4, 3, 4), rand(2, 2, 5, 4), rand(2, 2, 5, 3)
    check(Op.ATTENTION, [q, k, v], attrs, outputs=4)


def test_attention_masks_cache_and_packed() -> None:
    q, k, v = rand(1, 2, 3, 4), rand(1, 2, 3, 4), rand(1, 2, 3, 4)
    bool_mask = RNG.random((3, 5)) > 0.3
    bool_mask[0] = False
    past = [rand(1, 2, 2, 4), rand(1, 2, 2, 4)]
    check(Op.ATTENTION, [q, k, v, bool_mask, *past], {}, outputs=4)
    check(Op.ATTENTION, [q, k, v, rand(1, 1, 3, 4), *past], {"is_causal": 1}, outputs=3)
    check(Op.ATTENTION, [q, k, v, None, None, None, np.array([2])], {"is_causal": 1})
    packed = {"q_num_heads": 4, "kv_num_heads": 2}
    check(Op.ATTENTION, [rand(2, 3, 8), rand(2, 4, 4), rand(2, 4, 6)], packed, outputs=4)
    check(Op.ATTENTION, [q.astype(np.float16), k.astype(np.float16), v.astype(np.float16)],
          {"softmax_precision": DType.F32})


# ---------------------------------------------------------------- structure and errors

def test_large_conv_and_matmul_loops_are_parallel() -> None:
    from kiln.compiler.lower.kernel_ir import Loop, LoopKind

    for op, operands in (
        (Op.CONV, [rand(1, 16, 32, 32), rand(16, 16, 3, 3)]),
        (Op.MATMUL, [rand(64, 64), rand(64, 64)]),
        (Op.AVERAGE_POOL, [rand(1, 16, 32, 32)]),
    ):
        attrs = {"kernel_shape": [3, 3]} if op is Op.AVERAGE_POOL else {}
        graph, _ = graph_of(op, operands, attrs)
        (kernel,) = lower_graph(graph).steps[0].kernels
        assert isinstance(kernel.body, Loop) and kernel.body.kind is LoopKind.PARALLEL


def test_lowering_errors() -> None:
    lowering_error(Op.ROTARY_EMBEDDING, [rand(1, 1, 2, 4), rand(1, 2, 1), rand(1, 2, 1)],
                   {"rotary_embedding_dim": 4}, match="rotary_embedding_dim")
