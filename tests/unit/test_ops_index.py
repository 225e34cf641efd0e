"""Index ops: gathers, scatters, selections and searches against numpy/torch/onnxruntime, their
type rules over symbolic dims and data-dependent extents, and the messages of bad inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_ops_movement import FAST, i64, infer, nonempty_shapes, run_op, run_ort

from kiln.compiler.errors import KilnError, TypeInferenceError
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType

F32 = DType.F32


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------ gathers

@FAST
@given(shape=nonempty_shapes, data=st.data())
def test_gather_and_gather_elements(shape: tuple[int, ...], data: st.DataObject) -> None:
    x = rng().standard_normal(shape).astype(np.float32)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    extent = shape[axis]
    idx_shape = data.draw(st.lists(st.integers(0, 3), max_size=2).map(tuple))
    idx = rng(1).integers(-extent, extent, idx_shape)
    (got,), (t,) = run_op(Op.GATHER, [x, idx], {"axis": axis})
    np.testing.assert_array_equal(got, np.take(x, idx % extent, axis=axis))
    assert t.shape == got.shape
    el_shape = tuple(data.draw(st.integers(1, d)) for d in shape)
    el_idx = rng(2).integers(-extent, extent, el_shape)
    (got,), _ = run_op(Op.GATHER_ELEMENTS, [x, el_idx.astype(np.int32)], {"axis": axis})
    want = torch.gather(torch.from_numpy(x), axis, torch.from_numpy(el_idx % extent))
    np.testing.assert_array_equal(got, want.numpy())


def test_gather_rules_and_errors() -> None:
    data = TensorType(F32, ("n", 5, 3))
    idx = TensorType(DType.I64, ("k", 2))
    assert infer(Op.GATHER, [data, idx], {"axis": 1})[0].shape == ("n", "k", 2, 3)
    with pytest.raises(TypeInferenceError, match="axis 3 is out of range for rank 3"):
        infer(Op.GATHER, [data, idx], {"axis": 3})
    with pytest.raises(TypeInferenceError, match="input 1 has element type f32"):
        infer(Op.GATHER, [data, TensorType(F32, (2,))])
    with pytest.raises(KilnError, match="index 5 is out of range for extent 5"):
        run_op(Op.GATHER, [np.zeros((2, 5), np.float32), i64([1, 5])], {"axis": 1})
    with pytest.raises(TypeInferenceError, match="same rank"):
        infer(Op.GATHER_ELEMENTS, [data, idx])


@FAST
@given(batch=st.integers(0, 2), k=st.integers(1, 3), data=st.data())
def test_gather_nd_matches_onnxruntime(batch: int, k: int, data: st.DataObject) -> None:
    shape = tuple(data.draw(st.integers(1, 3)) for _ in range(batch + k + 1))
    x = rng().standard_normal(shape).astype(np.float32)
    middle = data.draw(st.lists(st.integers(1, 3), max_size=2))
    cols = [rng(j).integers(-shape[batch + j], shape[batch + j], (*shape[:batch], *middle))
            for j in range(k)]
    idx = np.stack(cols, axis=-1).astype(np.int64)
    (want,) = run_ort("GatherND", [x, idx], {"batch_dims": batch}, opset=13)
    (got,), (t,) = run_op(Op.GATHER_ND, [x, idx], {"batch_dims": batch})
    np.testing.assert_array_equal(got, want)
    assert t.shape == want.shape


def test_gather_nd_rules() -> None:
    data = TensorType(F32, ("b", 4, 5, 6))
    assert infer(Op.GATHER_ND, [data, TensorType(DType.I64, ("b", 7, 2))],
                 {"batch_dims": 1})[0].shape == ("b", 7, 6)
    with pytest.raises(TypeInferenceError, match="last extent of indices"):
        infer(Op.GATHER_ND, [data, TensorType(DType.I64, (3, "k"))])
    with pytest.raises(TypeInferenceError, match="index depth 5 exceeds the rank 4"):
        infer(Op.GATHER_ND, [data, TensorType(DType.I64, (3, 5))])


# ----------------------------------------------------------------------------------- scatters

@FAST
@given(shape=nonempty_shapes, data=st.data(),
       reduction=st.sampled_from(["none", "add", "mul", "max", "min"]))
def test_scatter_elements_matches_onnxruntime(shape: tuple[int, ...], data: st.DataObject,
                                              reduction: str) -> None:
    x = rng().standard_normal(shape).astype(np.float32)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    idx_shape = tuple(data.draw(st.integers(1, d)) for d in shape)
    extent = shape[axis]
    if reduction == "none":  # distinct targets, or the written value is unspecified
        order = np.argsort(rng(3).random((*idx_shape[:axis % len(shape)], extent,
                                          *idx_shape[axis % len(shape) + 1:])), axis=axis)
        idx = np.take(order, np.arange(idx_shape[axis]), axis=axis) - extent * (
            rng(4).random(idx_shape) < 0.5)
    else:
        idx = rng(3).integers(-extent, extent, idx_shape)
    updates = rng(5).standard_normal(idx_shape).astype(np.float32)
    attrs = {"axis": axis, "reduction": reduction}
    (want,) = run_ort("ScatterElements", [x, idx, updates], attrs, opset=18)
    (got,), _ = run_op(Op.SCATTER_ELEMENTS, [x, idx, updates], attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), data=st.data(),
       reduction=st.sampled_from(["none", "add", "mul", "max", "min"]))
def test_scatter_nd_matches_onnxruntime(shape: tuple[int, ...], data: st.DataObject,
                                        reduction: str) -> None:
    x = rng().standard_normal(shape).astype(np.float32)
    k = data.draw(st.integers(1, len(shape)))
    cells = np.array(np.unravel_index(np.arange(int(np.prod(shape[:k]))), shape[:k])).T
    count = data.draw(st.integers(1, len(cells)))
    if reduction == "none":
        chosen = cells[rng(1).permutation(len(cells))[:count]]
    else:
        chosen = cells[rng(1).integers(0, len(cells), count)]
    idx = chosen - np.array(shape[:k]) * (rng(2).random(chosen.shape) < 0.5)
    updates = rng(3).standard_normal((count, *shape[k:])).astype(np.float32)
    attrs = {"reduction": reduction}
    (want,) = run_ort("ScatterND", [x, idx.astype(np.int64), updates], attrs, opset=18)
    (got,), _ = run_op(Op.SCATTER_ND, [x, idx.astype(np.int64), updates], attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_scatter_rules() -> None:
    data = TensorType(F32, ("n", 4))
    with pytest.raises(TypeInferenceError, match="reduction 'sum' is not one of"):
        infer(Op.SCATTER_ELEMENTS, [data, TensorType(DType.I64, (1, 1)), TensorType(F32, (1, 1))],
              {"reduction": "sum"})
    with pytest.raises(TypeInferenceError, match=r"updates f32\[3\] must be f32\[2,4\]"):
        infer(Op.SCATTER_ND, [data, TensorType(DType.I64, (2, 1)), TensorType(F32, (3,))])
    out = infer(Op.SCATTER_ND, [data, TensorType(DType.I64, ("m", 2)), TensorType(F32, ("m",))])
    assert out[0] == data


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_follows_the_spec_pseudocode(mode: str) -> None:
    cache = rng().standard_normal((2, 3, 6, 4)).astype(np.float32)
    update = rng(1).standard_normal((2, 3, 3, 4)).astype(np.float32)
    starts = i64([1, 3]) if mode == "linear" else i64([4, 5])
    (got,), _ = run_op(Op.TENSOR_SCATTER, [cache, update, starts], {"mode": mode})
    want = cache.copy()
    for prefix in np.ndindex(cache.shape[:2]):
        for s in range(3):
            pos = starts[prefix[0]] + s
            want[(*prefix, pos % 6 if mode == "circular" else pos)] = update[(*prefix, s)]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(KilnError, match="overrun the cache extent 6"):
        run_op(Op.TENSOR_SCATTER, [cache, update, i64([4, 0])])
    with pytest.raises(TypeInferenceError, match="longer than past_cache"):
        infer(Op.TENSOR_SCATTER, [TensorType(F32, (2, 3, 4)), TensorType(F32, (2, 5, 4))])


# ------------------------------------------------------------------- selections and searches

@FAST
@given(shape=st.lists(st.integers(1, 3), max_size=3).map(tuple), depth=st.integers(1, 5),
       data=st.data())
def test_one_hot_matches_torch(shape: tuple[int, ...], depth: int, data: st.DataObject) -> None:
    idx = rng().integers(-depth - 1, depth + 1, shape)
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    values = np.array([2.0, 5.0], np.float32)
    (got,), (t,) = run_op(Op.ONE_HOT, [idx, i64(depth), values], {"axis": axis}, const=[1])
    valid = (idx >= -depth) & (idx < depth)
    hot = torch.nn.functional.one_hot(torch.from_numpy(np.where(valid, idx % depth, 0)), depth)
    want = np.where(hot.numpy() & valid[..., None], 5.0, 2.0)
    np.testing.assert_array_equal(got, np.moveaxis(want, -1, axis % (len(shape) + 1)))
    assert t.shape == got.shape
    dynamic = infer(Op.ONE_HOT, [TensorType(DType.I64, ("n",)), TensorType(DType.I64, ()),
                                 TensorType(F32, (2,))])
    assert dynamic[0].shape == ("n", UNKNOWN)


@FAST
@given(shape=st.lists(st.integers(0, 4), max_size=3).map(tuple))
def test_nonzero_and_compress(shape: tuple[int, ...]) -> None:
    x = (rng().random(shape) < 0.4).astype(np.int32)
    (got,), (t,) = run_op(Op.NONZERO, [x])
    # A scalar has no coordinates: [0, 1] when non-zero (onnxruntime answers [1, n] instead).
    want = np.array(np.nonzero(x)).reshape(len(shape), -1) if shape else np.zeros((0, int(x)))
    np.testing.assert_array_equal(got, want)
    assert t.shape == (len(shape), UNKNOWN)
    if not shape:
        return
    cond = rng(1).random(min(shape[0], x.size)) < 0.5
    for const in ((), (1,)):
        (got,), (t,) = run_op(Op.COMPRESS, [x, cond], {"axis": 0}, const=const)
        np.testing.assert_array_equal(got, x[: len(cond)][cond])
        assert t.shape[0] == (int(cond.sum()) if const else UNKNOWN)
        (got,), _ = run_op(Op.COMPRESS, [x, cond], const=const)
        np.testing.assert_array_equal(got, x.reshape(-1)[: len(cond)][cond])


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), data=st.data(),
       sort=st.integers(0, 1))
def test_unique_matches_onnxruntime(shape: tuple[int, ...], data: st.DataObject,
                                    sort: int) -> None:
    x = rng().integers(0, 3, shape).astype(np.float32)
    attrs: dict[str, Any] = {"sorted": sort}
    if data.draw(st.booleans()):
        attrs["axis"] = data.draw(st.integers(-len(shape), len(shape) - 1))
    want = run_ort("Unique", [x], attrs, outputs=4, opset=11)
    got, types = run_op(Op.UNIQUE, [x], attrs, outputs=4)
    for g, w, t in zip(got, want, types, strict=True):
        np.testing.assert_array_equal(g, w)
        assert all(not isinstance(d, int) or d == e for d, e in zip(t.shape, g.shape,
                                                                     strict=True))


@FAST
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), data=st.data(),
       largest=st.integers(0, 1), dtype=st.sampled_from([np.float32, np.int64, np.uint8]))
def test_topk_matches_onnxruntime(shape: tuple[int, ...], data: st.DataObject, largest: int,
                                  dtype: Any) -> None:
    x = rng().integers(0, 4, shape).astype(dtype)  # many ties: the lower index must come first
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    k = i64([data.draw(st.integers(0, shape[axis]))])
    attrs = {"axis": axis, "largest": largest}
    want = run_ort("TopK", [x, k], attrs, outputs=2, opset=11)
    for const in ((), (1,)):
        got, types = run_op(Op.TOPK, [x, k], attrs, const=const, outputs=2)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        assert types[1].shape[axis] == (int(k[0]) if const else UNKNOWN)


def test_topk_errors() -> None:
    x = TensorType(F32, ("n", 4))
    with pytest.raises(TypeInferenceError, match="K 5 exceeds the extent 4 of axis 1"):
        infer(Op.TOPK, [x, i64([5])], outputs=2)
    with pytest.raises(KilnError, match=r"K 5 is outside \[0, 4\]"):
        run_op(Op.TOPK, [np.zeros((2, 4), np.float32), i64([5])], outputs=2)


@FAST
@given(batches=st.integers(1, 2), classes=st.integers(1, 3), boxes=st.integers(1, 8),
       center=st.integers(0, 1), data=st.data())
def test_non_max_suppression_matches_onnxruntime(batches: int, classes: int, boxes: int,
                                                 center: int, data: st.DataObject) -> None:
    r = rng(boxes)
    corners = r.random((batches, boxes, 4)).astype(np.float32) * 4
    scores = r.integers(0, 5, (batches, classes, boxes)).astype(np.float32) / 4  # ties
    limit = i64([data.draw(st.integers(0, boxes))])
    iou = np.array([data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.9]))], np.float32)
    threshold = np.array([data.draw(st.sampled_from([-1.0, 0.3]))], np.float32)
    args = [corners, scores, limit, iou, threshold]
    attrs = {"center_point_box": center}
    (want,) = run_ort("NonMaxSuppression", args, attrs, opset=11)
    (got,), (t,) = run_op(Op.NON_MAX_SUPPRESSION, args, attrs)
    np.testing.assert_array_equal(got, want)
    assert t.shape == (UNKNOWN, 3)
