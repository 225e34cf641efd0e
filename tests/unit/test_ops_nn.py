"""Unit tests of the nn op families: type rules and numpy kernels against torch and numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.compiler import reference
from kiln.compiler.errors import KilnError, TypeInferenceError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType

RNG = np.random.default_rng(0)
SETTINGS = settings(max_examples=15, deadline=None, database=None, derandomize=True)


def run_op(
    op: Op, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None,
    outputs: int = 1,
) -> list[np.ndarray]:
    """Build a one-node graph over ``inputs`` (None: absent) and run the reference on it."""
    b = GraphBuilder(fold=False)
    values = [None if a is None else b.add_input(f"in{i}", TensorType.of(a))
              for i, a in enumerate(inputs)]
    outs = b.add(op, values, attrs or {}, outputs=outputs)
    graph = b.finish([v for v in outs if v is not None])
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if a is not None}
    return reference.run(graph, feeds)


def infer(op: Op, types: list[TensorType], attrs: dict[str, Any] | None = None,
          outputs: int = 1) -> list[TensorType]:
    b = GraphBuilder(fold=False)
    values = [b.add_input(f"in{i}", t) for i, t in enumerate(types)]
    return [v.type for v in b.add(op, values, attrs or {}, outputs=outputs) if v is not None]


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def close(actual: np.ndarray, expected: torch.Tensor | np.ndarray, tol: float = 1e-4) -> None:
    expected = expected.numpy() if isinstance(expected, torch.Tensor) else expected
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# ---- convolution --------------------------------------------------------------------------

@SETTINGS
@given(
    rank=st.integers(1, 3), batch=st.integers(1, 2), group=st.sampled_from([1, 2, 3]),
    cg=st.integers(1, 3), mg=st.integers(1, 3), k=st.integers(1, 3), stride=st.integers(1, 3),
    dilation=st.integers(1, 2), pad=st.integers(0, 2), extra=st.integers(0, 4),
    bias=st.booleans(),
)
def test_conv_matches_torch(rank: int, batch: int, group: int, cg: int, mg: int, k: int,
                            stride: int, dilation: int, pad: int, extra: int,
                            bias: bool) -> None:
    size = (k - 1) * dilation + 1 + extra
    x = randn(batch, group * cg, *(size,) * rank)
    w = randn(group * mg, cg, *(k,) * rank)
    b = randn(group * mg) if bias else None
    attrs = {"strides": [stride] * rank, "dilations": [dilation] * rank,
             "pads": [pad] * (2 * rank), "group": group}
    (y,) = run_op(Op.CONV, [x, w, b], attrs)
    conv = (nnf.conv1d, nnf.conv2d, nnf.conv3d)[rank - 1]
    expected = conv(torch.from_numpy(x), torch.from_numpy(w),
                    None if b is None else torch.from_numpy(b),
                    stride=stride, padding=pad, dilation=dilation, groups=group)
    close(y, expected)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("size,k,stride", [(7, 3, 2), (8, 4, 3), (5, 2, 1), (6, 1, 2)])
def test_conv_auto_pad(mode: str, size: int, k: int, stride: int) -> None:
    x, w = randn(1, 2, size, size + 1), randn(3, 2, k, k)
    (y,) = run_op(Op.CONV, [x, w], {"auto_pad": mode, "strides": [stride, stride]})
    pads = []
    for extent in (size, size + 1):
        if mode == "VALID":
            pads.append((0, 0))
            continue
        out = -(-extent // stride)
        total = max(0, (out - 1) * stride + k - extent)
        small = total // 2
        pads.append((small, total - small) if mode == "SAME_UPPER" else (total - small, small))
    padded = np.pad(x, [(0, 0), (0, 0), *pads])
    expected = nnf.conv2d(torch.from_numpy(padded), torch.from_numpy(w), stride=stride)
    close(y, expected)


@SETTINGS
@given(
    group=st.sampled_from([1, 2]), k=st.integers(1, 3), stride=st.integers(1, 3),
    dilation=st.integers(1, 2), pad=st.integers(0, 1), size=st.integers(1, 5),
    out_pad=st.integers(0, 2),
)
def test_conv_transpose_matches_torch(group: int, k: int, stride: int, dilation: int, pad: int,
                                      size: int, out_pad: int) -> None:
    out_pad = min(out_pad, max(stride, dilation) - 1)
    x, w, b = randn(2, 2 * group, size, size + 1), randn(2 * group, 3, k, k), randn(3 * group)
    attrs = {"strides": [stride] * 2, "dilations": [dilation] * 2, "pads": [pad] * 4,
             "group": group, "output_padding": [out_pad] * 2}
    if (size - 1) * stride + (k - 1) * dilation + 1 + out_pad - 2 * pad < 1:
        return  # no output left after cropping the pads
    expected = nnf.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                  stride=stride, padding=pad, output_padding=out_pad,
                                  groups=group, dilation=dilation)
    (y,) = run_op(Op.CONV_TRANSPOSE, [x, w, b], attrs)
    close(y, expected)


def test_conv_transpose_output_shape_implies_pads() -> None:
    x, w = randn(1, 1, 3, 3), randn(1, 2, 3, 3)
    (y,) = run_op(Op.CONV_TRANSPOSE, [x, w], {"strides": [3, 2], "output_shape": [10, 8]})
    assert y.shape == (1, 2, 10, 8)
    full = nnf.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=(3, 2),
                              output_padding=(1, 1))  # [1, 2, 10, 8]: no padding needed
    close(y, full)


def test_conv_symbolic_batch_passes_through() -> None:
    x = TensorType(DType.F32, ("batch", 3, 224, 224))
    w = TensorType(DType.F32, (64, 3, 7, 7))
    (t,) = infer(Op.CONV, [x, w], {"strides": [2, 2], "pads": [3, 3, 3, 3]})
    assert t.shape == ("batch", 64, 112, 112)
    (t,) = infer(Op.CONV, [TensorType(DType.F32, (1, 3, "h", "w")), w], {"pads": [3] * 4})
    assert t.shape == (1, 64, "h", "w")
    (t,) = infer(Op.CONV, [TensorType(DType.F32, (1, 3, "h", 9)), w], {"strides": [2, 2]})
    assert t.shape == (1, 64, UNKNOWN, 2)


def test_conv_errors_are_clear() -> None:
    x, w = TensorType(DType.F32, (1, 4, 8, 8)), TensorType(DType.F32, (6, 3, 3, 3))
    with pytest.raises(TypeInferenceError, match="expects 3 x group 1 = 3 input channels"):
        infer(Op.CONV, [x, w])
    with pytest.raises(TypeInferenceError, match="not divisible by group 4"):
        infer(Op.CONV, [x, TensorType(DType.F32, (6, 1, 3, 3))], {"group": 4})
    with pytest.raises(TypeInferenceError, match="does not match the weight's spatial shape"):
        infer(Op.CONV, [x, TensorType(DType.F32, (6, 4, 3, 3))], {"kernel_shape": [5, 5]})
    with pytest.raises(TypeInferenceError, match="auto_pad 'SAME' is not one of"):
        infer(Op.CONV, [x, TensorType(DType.F32, (6, 4, 3, 3))], {"auto_pad": "SAME"})
    with pytest.raises(TypeInferenceError, match="window of extent 9 does not fit"):
        infer(Op.CONV, [x, TensorType(DType.F32, (6, 4, 3, 3))], {"dilations": [4, 4]})
    with pytest.raises(TypeInferenceError, match="strides has 1 values; expected 2"):
        infer(Op.CONV, [x, TensorType(DType.F32, (6, 4, 3, 3))], {"strides": [2]})


def test_col2im_inverts_unfold() -> None:
    x = randn(2, 3, 6, 5)
    cols = nnf.unfold(torch.from_numpy(x), (2, 3), dilation=1, padding=1, stride=(2, 1))
    (y,) = run_op(Op.COL2IM, [cols.numpy(), np.array([6, 5]), np.array([2, 3])],
                  {"pads": [1, 1, 1, 1], "strides": [2, 1]})
    expected = nnf.fold(cols, (6, 5), (2, 3), padding=1, stride=(2, 1))
    close(y, expected)


def test_causal_conv_with_state_matches_concat_conv() -> None:
    x, w, past = randn(2, 4, 5), randn(4, 1, 3), randn(2, 4, 2)
    y, state = run_op(Op.CAUSAL_CONV_WITH_STATE, [x, w, None, past], {"activation": "silu"},
                      outputs=2)
    conv = nnf.conv1d(torch.from_numpy(np.concatenate([past, x], 2)), torch.from_numpy(w),
                    groups=4)
    close(y, nnf.silu(conv))
    close(state, x[:, :, -2:])


def test_conv_integer_and_qlinear_conv() -> None:
    x = RNG.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8)
    w = RNG.integers(0, 255, (3, 2, 3, 3)).astype(np.uint8)
    (y,) = run_op(Op.CONV_INTEGER, [x, w, np.array(10, np.uint8), np.array(3, np.uint8)])
    expected = nnf.conv2d(torch.from_numpy(x.astype(np.float64) - 10),
                        torch.from_numpy(w.astype(np.float64) - 3))
    np.testing.assert_array_equal(y, expected.numpy().astype(np.int32))
    scales = [np.array(s, np.float32) for s in (0.02, 0.01, 0.5)]
    (q,) = run_op(Op.QLINEAR_CONV, [x, scales[0], np.array(10, np.uint8), w, scales[1],
                                    np.array(3, np.uint8), scales[2], np.array(5, np.uint8)])
    real = expected.numpy() * 0.02 * 0.01 / 0.5 + 5
    assert np.abs(q.astype(np.float64) - np.clip(real, 0, 255)).max() <= 1


# ---- pooling ------------------------------------------------------------------------------

@SETTINGS
@given(k=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 1),
       dilation=st.integers(1, 2), ceil=st.booleans(), size=st.integers(3, 7))
def test_max_pool_values_and_indices_match_torch(k: int, stride: int, pad: int, dilation: int,
                                                 ceil: bool, size: int) -> None:
    pad = min(pad, k // 2)
    size = max(size, (k - 1) * dilation + 1)
    x = randn(2, 3, size, size + 2)
    attrs = {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [pad] * 4,
             "dilations": [dilation] * 2, "ceil_mode": int(ceil)}
    y, idx = run_op(Op.MAX_POOL, [x], attrs, outputs=2)
    values, where = nnf.max_pool2d(torch.from_numpy(x), k, stride, pad, dilation, ceil_mode=ceil,
                                 return_indices=True)
    close(y, values)
    plane = np.arange(6).reshape(2, 3, 1, 1) * size * (size + 2)
    np.testing.assert_array_equal(idx, where.numpy() + plane)


@SETTINGS
@given(k=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 1),
       ceil=st.booleans(), include=st.booleans(), size=st.integers(3, 7))
def test_average_pool_matches_torch(k: int, stride: int, pad: int, ceil: bool, include: bool,
                                    size: int) -> None:
    pad = min(pad, k // 2)
    x = randn(1, 2, size, size + 1, size)
    attrs = {"kernel_shape": [k] * 3, "strides": [stride] * 3, "pads": [pad] * 6,
             "ceil_mode": int(ceil), "count_include_pad": int(include)}
    (y,) = run_op(Op.AVERAGE_POOL, [x], attrs)
    close(y, nnf.avg_pool3d(torch.from_numpy(x), k, stride, pad, ceil_mode=ceil,
                          count_include_pad=include))


def test_lp_and_global_pools() -> None:
    x = np.abs(randn(2, 3, 6, 5))
    (y,) = run_op(Op.LP_POOL, [x], {"kernel_shape": [2, 2], "strides": [2, 2], "p": 3})
    close(y, nnf.lp_pool2d(torch.from_numpy(x), 3, 2, 2))
    for op, expected in ((Op.GLOBAL_AVERAGE_POOL, x.mean((2, 3), keepdims=True)),
                         (Op.GLOBAL_MAX_POOL, x.max((2, 3), keepdims=True)),
                         (Op.GLOBAL_LP_POOL, np.sqrt((x * x).sum((2, 3), keepdims=True)))):
        close(run_op(op, [x])[0], expected)


def test_max_unpool_inverts_max_pool() -> None:
    x = randn(1, 2, 4, 4)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    y, idx = run_op(Op.MAX_POOL, [x], attrs, outputs=2)
    (back,) = run_op(Op.MAX_UNPOOL, [y, idx], attrs)
    values, where = nnf.max_pool2d(torch.from_numpy(x), 2, 2, return_indices=True)
    close(back, nnf.max_unpool2d(values, where, 2, 2))


def test_pool_symbolic_and_errors() -> None:
    (t,) = infer(Op.MAX_POOL, [TensorType(DType.F32, ("n", 8, 9, 9))],
                 {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1})
    assert t.shape == ("n", 8, 4, 4)
    with pytest.raises(TypeInferenceError, match="required attribute 'kernel_shape'"):
        infer(Op.AVERAGE_POOL, [TensorType(DType.F32, (1, 1, 4, 4))])
    with pytest.raises(TypeInferenceError, match="kernel_shape \\[2\\] has 1 axes"):
        infer(Op.AVERAGE_POOL, [TensorType(DType.F32, (1, 1, 4, 4))], {"kernel_shape": [2]})


def test_roi_align_matches_torchvision_semantics() -> None:
    x = randn(1, 2, 8, 8)
    rois = np.array([[0.5, 1.0, 6.0, 5.5], [0.0, 0.0, 7.0, 7.0]], np.float32)
    (y,) = run_op(Op.ROI_ALIGN, [x, rois, np.array([0, 0])],
                  {"output_height": 3, "output_width": 2, "sampling_ratio": 2})
    assert y.shape == (2, 2, 3, 2)
    # A region covering one pixel's centre exactly samples that pixel.
    (y,) = run_op(Op.ROI_ALIGN, [x, np.array([[2.0, 3.0, 3.0, 4.0]], np.float32),
                                 np.array([0])], {"sampling_ratio": 1})
    close(y[0, :, 0, 0], x[0, :, 3, 2])


# ---- normalization ------------------------------------------------------------------------

def test_batch_norm_inference_and_training() -> None:
    x, scale, bias, mean, var = randn(2, 3, 4, 5), randn(3), randn(3), randn(3), np.abs(randn(3))
    (y,) = run_op(Op.BATCH_NORMALIZATION, [x, scale, bias, mean, var], {"epsilon": 1e-3})
    t = [torch.from_numpy(a) for a in (x, mean, var, scale, bias)]
    close(y, nnf.batch_norm(t[0], t[1], t[2], t[3], t[4], eps=1e-3))
    y, run_mean, run_var = run_op(Op.BATCH_NORMALIZATION, [x, scale, bias, mean, var],
                                  {"training_mode": 1, "momentum": 0.8}, outputs=3)
    close(y, nnf.batch_norm(t[0], None, None, t[3], t[4], training=True, eps=1e-5))
    close(run_mean, 0.8 * mean + 0.2 * x.mean((0, 2, 3)))
    close(run_var, 0.8 * var + 0.2 * x.var((0, 2, 3)))


def test_instance_group_layer_rms_lrn_mvn_norms() -> None:
    x, scale, bias = randn(2, 6, 4, 5), randn(6), randn(6)
    tx = torch.from_numpy(x)
    close(run_op(Op.INSTANCE_NORMALIZATION, [x, scale, bias])[0],
          nnf.instance_norm(tx, weight=torch.from_numpy(scale), bias=torch.from_numpy(bias)))
    close(run_op(Op.GROUP_NORMALIZATION, [x, scale, bias], {"num_groups": 3})[0],
          nnf.group_norm(tx, 3, torch.from_numpy(scale), torch.from_numpy(bias)))
    gamma, beta = randn(4, 5), randn(5)
    y, mean, inv = run_op(Op.LAYER_NORMALIZATION, [x, gamma, beta], {"axis": 2}, outputs=3)
    close(y, nnf.layer_norm(tx, (4, 5), torch.from_numpy(gamma),
                          torch.from_numpy(np.broadcast_to(beta, (4, 5)).copy())))
    assert mean.shape == inv.shape == (2, 6, 1, 1)
    close(mean, x.mean((2, 3), keepdims=True))
    close(run_op(Op.RMS_NORMALIZATION, [x, randn(5)[None] * 0 + 1])[0],
          nnf.rms_norm(tx, (5,), eps=1e-5))
    close(run_op(Op.LRN, [x], {"size": 3, "alpha": 1e-2, "beta": 0.5, "bias": 2.0})[0],
          nnf.local_response_norm(tx, 3, 1e-2, 0.5, 2.0))
    centered = x - x.mean((0, 2, 3), keepdims=True)
    close(run_op(Op.MEAN_VARIANCE_NORMALIZATION, [x])[0],
          centered / (np.sqrt((centered ** 2).mean((0, 2, 3), keepdims=True)) + 1e-9))


def test_norm_errors() -> None:
    x = TensorType(DType.F32, (2, 6, 4))
    with pytest.raises(TypeInferenceError, match="num_groups 4 must divide the 6 channels"):
        infer(Op.GROUP_NORMALIZATION, [x, TensorType(DType.F32, (6,)),
                                       TensorType(DType.F32, (6,))], {"num_groups": 4})
    with pytest.raises(TypeInferenceError, match="scale f32\\[5\\] must be a vector of 6"):
        infer(Op.INSTANCE_NORMALIZATION, [x, TensorType(DType.F32, (5,)),
                                          TensorType(DType.F32, (6,))])


# ---- matrix products ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "a_shape,b_shape",
    [((3,), (3,)), ((3,), (2, 3, 4)), ((2, 1, 4, 3), (5, 3, 2)), ((4, 3), (3,)),
     ((1, 2, 3), (3, 6))],
)
def test_matmul_broadcasting(a_shape: tuple, b_shape: tuple) -> None:
    a, b = randn(*a_shape), randn(*b_shape)
    (y,) = run_op(Op.MATMUL, [a, b])
    close(y, np.matmul(a, b))
    assert infer(Op.MATMUL, [TensorType.of(a), TensorType.of(b)])[0].shape == y.shape


def test_matmul_symbolic_and_errors() -> None:
    a = TensorType(DType.F32, ("batch", "seq", 8))
    assert infer(Op.MATMUL, [a, TensorType(DType.F32, (8, 4))])[0].shape == ("batch", "seq", 4)
    with pytest.raises(TypeInferenceError, match="inner dimensions"):
        infer(Op.MATMUL, [a, TensorType(DType.F32, (7, 4))])


def test_gemm_einsum_and_integer_matmul() -> None:
    a, b, c = randn(4, 3), randn(5, 4), randn(5)
    (y,) = run_op(Op.GEMM, [a, b, c], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0})
    close(y, 0.5 * a.T @ b.T + 2.0 * c)
    x, z = randn(2, 3, 4), randn(4, 5)
    for eq, operands in (("bij,jk->bik", [x, z]), ("...j,jk", [x, z]), ("bij->j", [x]),
                         ("bij,jk->kb", [x, z]), ("bi i", [x[:, :3, :3]])):
        (y,) = run_op(Op.EINSUM, operands, {"equation": eq})
        close(y, np.einsum(eq.replace(" ", ""), *operands))
        assert infer(Op.EINSUM, [TensorType.of(o) for o in operands],
                     {"equation": eq})[0].shape == y.shape
    ai = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    bi = RNG.integers(0, 255, (4, 2)).astype(np.uint8)
    (yi,) = run_op(Op.MATMUL_INTEGER, [ai, bi, np.array(12, np.uint8), np.array(200, np.uint8)])
    np.testing.assert_array_equal(yi, (ai.astype(np.int64) - 12) @ (bi.astype(np.int64) - 200))


def test_attention_matches_torch_sdpa() -> None:
    q, k, v = randn(2, 4, 5, 8), randn(2, 2, 7, 8), randn(2, 2, 7, 6)
    (y,) = run_op(Op.ATTENTION, [q, k, v], {"is_causal": 1})
    expected = nnf.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(np.repeat(k, 2, 1)),
        torch.from_numpy(np.repeat(v, 2, 1)),
        attn_mask=torch.from_numpy(np.tril(np.ones((5, 7), bool))))
    close(y, expected)


def test_rotary_embedding_half_split() -> None:
    x = randn(1, 2, 3, 4)
    angles = RNG.standard_normal((3, 2)).astype(np.float32)
    (y,) = run_op(Op.ROTARY_EMBEDDING, [x, np.cos(angles)[None], np.sin(angles)[None]])
    c, s = np.cos(angles)[None, None], np.sin(angles)[None, None]
    x1, x2 = x[..., :2], x[..., 2:]
    close(y, np.concatenate([c * x1 - s * x2, s * x1 + c * x2], -1))


# ---- quantization -------------------------------------------------------------------------

def test_quantize_dequantize_granularities() -> None:
    x = randn(2, 4, 6) * 10
    scale, zp = np.array([0.1, 0.2, 0.3, 0.4], np.float32), np.array([0, 5, -3, 1], np.int8)
    (q,) = run_op(Op.QUANTIZE_LINEAR, [x, scale, zp], {"axis": 1})
    expected = np.clip(np.rint(x / scale[:, None]) + zp[:, None], -128, 127).astype(np.int8)
    np.testing.assert_array_equal(q, expected)
    (d,) = run_op(Op.DEQUANTIZE_LINEAR, [q, scale, zp], {"axis": 1})
    close(d, (q.astype(np.float32) - zp[:, None]) * scale[:, None])
    blocked = np.abs(randn(2, 4, 3)) + 0.1
    (qb,) = run_op(Op.QUANTIZE_LINEAR, [x, blocked], {"axis": 2, "block_size": 2})
    full = np.repeat(blocked, 2, axis=2)
    np.testing.assert_array_equal(qb, np.clip(np.rint(x / full), 0, 255).astype(np.uint8))
    (t,) = infer(Op.DEQUANTIZE_LINEAR, [TensorType(DType.U8, (3,)), TensorType(DType.F32, ())],
                 {"output_dtype": DType.F16})
    assert t.dtype is DType.F16
    with pytest.raises(TypeInferenceError, match="per-axis scale"):
        infer(Op.QUANTIZE_LINEAR, [TensorType(DType.F32, (2, 3)), TensorType(DType.F32, (2,))])


def test_dynamic_quantize_linear() -> None:
    x = np.array([0.0, 2.0, -3.0, -2.5, 1.34, 0.5], np.float32)
    y, scale, zp = run_op(Op.DYNAMIC_QUANTIZE_LINEAR, [x], outputs=3)
    assert scale == pytest.approx(5.0 / 255)
    assert int(zp) == 153
    np.testing.assert_array_equal(y, np.clip(np.rint(x / scale) + 153, 0, 255))


# ---- misc ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_matches_torch(mode: str, padding: str, align: int) -> None:
    if mode == "bicubic" and padding == "border":
        pytest.skip("ONNX clamps the sample point before bicubic taps; torch clamps only taps")
    x = randn(2, 3, 5, 6)
    grid = (RNG.uniform(-1.3, 1.3, (2, 4, 3, 2))).astype(np.float32)
    (y,) = run_op(Op.GRID_SAMPLE, [x, grid],
                  {"mode": mode, "padding_mode": padding, "align_corners": align})
    expected = nnf.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=mode,
                             padding_mode=padding, align_corners=bool(align))
    close(y, expected, 1e-3)


@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid_matches_torch(align: int) -> None:
    theta = randn(2, 2, 3)
    (g,) = run_op(Op.AFFINE_GRID, [theta, np.array([2, 3, 4, 5])], {"align_corners": align})
    close(g, nnf.affine_grid(torch.from_numpy(theta), [2, 3, 4, 5], align_corners=bool(align)))


def test_dropout_inference_is_identity() -> None:
    x = randn(3, 4)
    y, mask = run_op(Op.DROPOUT, [x, np.array(0.3, np.float32)], outputs=2)
    close(y, x)
    assert mask.dtype == np.bool_ and mask.all()
    y, mask = run_op(Op.DROPOUT, [x, np.array(0.5, np.float32), np.array(True)], {"seed": 1},
                     outputs=2)
    close(y, np.where(mask, x / 0.5, 0))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_losses_match_torch(reduction: str) -> None:
    scores, labels, weight = randn(4, 5, 3), RNG.integers(0, 5, (4, 3)), np.abs(randn(5))
    labels[0, 0] = 2
    attrs = {"reduction": reduction, "ignore_index": 2}
    ts, tl, tw = (torch.from_numpy(a) for a in (scores, labels, weight))
    (nll,) = run_op(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS, [scores, labels, weight], attrs)
    close(nll, nnf.nll_loss(ts, tl, tw, ignore_index=2, reduction=reduction))
    loss, log_prob = run_op(Op.SOFTMAX_CROSS_ENTROPY_LOSS, [scores, labels, weight], attrs,
                            outputs=2)
    close(loss, nnf.cross_entropy(ts, tl, tw, ignore_index=2, reduction=reduction))
    close(log_prob, nnf.log_softmax(ts, 1))


def test_kernel_failures_are_kiln_errors() -> None:
    with pytest.raises(KilnError, match="target holds a class outside"):
        run_op(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS, [randn(2, 3), np.array([0, 7])])
