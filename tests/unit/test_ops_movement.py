"""Movement and shape ops: reference kernels against numpy/torch/onnxruntime, type rules over
symbolic dims and value-dependent shapes, and the messages of bad inputs.

The helpers at the top (one-node graphs run by the reference, one-node ONNX models run by
onnxruntime) are shared with ``test_ops_index``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from kiln.compiler import reference
from kiln.compiler.errors import KilnError, TypeInferenceError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType

FAST = settings(max_examples=30, deadline=None)


def run_op(op: Op, args: Sequence[Any], attrs: dict | None = None, *, const: Sequence[int] = (),
           outputs: int | Sequence[str | None] = 1) -> tuple[list[np.ndarray], list[TensorType]]:
    """One node run by the reference executor; ``args`` at positions in ``const`` are constants
    (so the type rule sees their values), None is an absent input. Returns outputs and types."""
    b = GraphBuilder(fold=False)
    values, feed = [], {}
    for i, arg in enumerate(args):
        if arg is None:
            values.append(None)
        elif i in const:
            values.append(b.constant(np.asarray(arg)))
        else:
            feed[f"in{i}"] = np.asarray(arg)
            values.append(b.add_input(f"in{i}", TensorType.of(feed[f"in{i}"])))
    outs = [v for v in b.add(op, values, attrs or {}, outputs=outputs) if v is not None]
    return reference.run(b.finish(outs), feed), [v.type for v in outs]


def infer(op: Op, args: Sequence[TensorType | np.ndarray | None], attrs: dict | None = None,
          outputs: int = 1) -> list[TensorType]:
    """Output types of one node: TensorType args are graph inputs, arrays are constants."""
    b = GraphBuilder(fold=False)
    values = [None if a is None else b.add_input(f"in{i}", a) if isinstance(a, TensorType)
              else b.constant(np.asarray(a)) for i, a in enumerate(args)]
    return [v.type for v in b.add(op, values, attrs or {}, outputs=outputs) if v is not None]


def run_ort(op_type: str, args: Sequence[np.ndarray | None], attrs: dict | None = None, *,
            outputs: int = 1, opset: int = 21) -> list[np.ndarray]:
    """One node run by onnxruntime (the independent oracle); None is an absent input."""
    names = ["" if a is None else f"in{i}" for i, a in enumerate(args)]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in zip(names, args, strict=True) if a is not None]
    outs = [helper.make_empty_tensor_value_info(f"out{i}") for i in range(outputs)]
    node = helper.make_node(op_type, names, [o.name for o in outs], **(attrs or {}))
    model = helper.make_model(helper.make_graph([node], "g", inputs, outs),
                              opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {n: a for n, a in zip(names, args, strict=True) if a is not None})


def i64(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def arange_of(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


# -------------------------------------------------------------------------------- Reshape

@FAST
@given(shape=shapes, data=st.data())
def test_reshape_matches_numpy(shape: tuple[int, ...], data: st.DataObject) -> None:
    x = arange_of(shape)
    # (target, allowzero, numpy's spelling of the same reshape)
    choices = [([-1], 0, [-1]), (list(reversed(shape)), 1, list(reversed(shape))),
               ([x.size], 1, [x.size])]
    if shape and shape[0]:
        choices.append(([0, -1], 0, [shape[0], -1]))
    if shape:
        choices.append(([0, *shape[1:]], 0, list(shape)))
    target, allowzero, spelled = data.draw(st.sampled_from(choices))
    expected = x.reshape(spelled)
    for const in ((), (1,)):
        (got,), (t,) = run_op(Op.RESHAPE, [x, i64(target)], {"allowzero": allowzero},
                              const=const)
        np.testing.assert_array_equal(got, expected)
        if const:
            assert t.shape == expected.shape


def test_reshape_allowzero_keeps_zero() -> None:
    (got,), _ = run_op(Op.RESHAPE, [np.zeros((0, 3), np.float32), i64([3, 0])],
                       {"allowzero": 1}, const=[1])
    assert got.shape == (3, 0)


def test_reshape_symbolic() -> None:
    x = TensorType(DType.F32, ("batch", 4, 6))
    assert infer(Op.RESHAPE, [x, i64([0, -1])])[0].shape == ("batch", 24)
    assert infer(Op.RESHAPE, [x, i64([-1, 6])])[0].shape == ("4*batch", 6)
    assert infer(Op.RESHAPE, [x, i64([6, -1, 4])])[0].shape == (6, "batch", 4)
    assert infer(Op.RESHAPE, [x, i64([-1, 24])])[0].shape == ("batch", 24)
    assert infer(Op.RESHAPE, [x, i64([2, -1])])[0].shape == (2, "12*batch")
    assert infer(Op.RESHAPE, [x, i64([5, -1])])[0].shape == (5, UNKNOWN)
    assert infer(Op.RESHAPE, [x, TensorType(DType.I64, (3,))])[0].shape == (UNKNOWN,) * 3
    with pytest.raises(TypeInferenceError, match="dynamic length"):
        infer(Op.RESHAPE, [x, TensorType(DType.I64, ("n",))])


def test_reshape_errors() -> None:
    x = TensorType(DType.F32, (7,))
    with pytest.raises(TypeInferenceError, match=r"reshape: .*not divisible by 2"):
        infer(Op.RESHAPE, [x, i64([2, -1])])
    with pytest.raises(TypeInferenceError, match="more than one -1"):
        infer(Op.RESHAPE, [x, i64([-1, -1])])
    with pytest.raises(TypeInferenceError, match=r"cannot reshape \[7\]"):
        infer(Op.RESHAPE, [x, i64([2, 3])])


# ------------------------------------------------------------- simple rearrangements vs numpy

@FAST
@given(shape=nonempty_shapes, data=st.data())
def test_transpose_squeeze_unsqueeze_flatten(shape: tuple[int, ...], data: st.DataObject) -> None:
    x = arange_of(shape)
    perm = data.draw(st.permutations(range(len(shape))))
    (got,), (t,) = run_op(Op.TRANSPOSE, [x], {"perm": perm})
    np.testing.assert_array_equal(got, np.transpose(x, perm))
    assert t.shape == got.shape
    axis = data.draw(st.integers(-len(shape), len(shape)))
    (got,), _ = run_op(Op.FLATTEN, [x], {"axis": axis})
    np.testing.assert_array_equal(got, torch.flatten(torch.from_numpy(x), 0, -1).numpy()
                                  .reshape(int(np.prod(shape[:axis])), -1))
    y = x[..., None, :, None]
    (got,), (t,) = run_op(Op.SQUEEZE, [y, i64([-1, -3])], const=[1])
    np.testing.assert_array_equal(got, x)
    assert t.shape == x.shape
    (got,), (t,) = run_op(Op.UNSQUEEZE, [x, i64([0, -1])], const=[1])
    assert got.shape == t.shape == (1, *shape, 1)


def test_squeeze_rules() -> None:
    x = TensorType(DType.F32, ("n", 1, 3))
    assert infer(Op.SQUEEZE, [x, i64([1])])[0].shape == ("n", 3)
    with pytest.raises(TypeInferenceError, match="cannot squeeze axis 2 of extent 3"):
        infer(Op.SQUEEZE, [x, i64([2])])
    assert infer(Op.SQUEEZE, [x])[0].shape == ("n", 3)
    assert infer(Op.SQUEEZE, [TensorType(DType.F32, (1, 3, 1))])[0].shape == (3,)
    assert infer(Op.UNSQUEEZE, [x, TensorType(DType.I64, (2,))])[0].shape == (UNKNOWN,) * 5


@FAST
@given(shape=nonempty_shapes, data=st.data())
def test_concat_split(shape: tuple[int, ...], data: st.DataObject) -> None:
    axis = data.draw(st.integers(0, len(shape) - 1))
    parts = [arange_of(shape[:axis] + (n,) + shape[axis + 1:]) for n in (1, shape[axis], 2)]
    (got,), (t,) = run_op(Op.CONCAT, parts, {"axis": axis - len(shape)})
    joined = np.concatenate(parts, axis)
    np.testing.assert_array_equal(got, joined)
    assert t.shape == joined.shape
    extent = joined.shape[axis]
    n = data.draw(st.integers(1, extent))
    chunk = -(-extent // n)
    if extent - chunk * (n - 1) < 0:
        # Typed (a dead If branch may hold such a node) but failing when run.
        assert infer(Op.SPLIT, [TensorType.of(joined)], {"axis": axis, "num_outputs": n},
                     outputs=n)[-1].shape[axis] == UNKNOWN
        with pytest.raises(KilnError, match=f"cannot split an extent of {extent}"):
            run_op(Op.SPLIT, [joined], {"axis": axis, "num_outputs": n}, outputs=n)
        return
    pieces, types = run_op(Op.SPLIT, [joined], {"axis": axis, "num_outputs": n}, outputs=n)
    expected = list(torch.split(torch.from_numpy(joined), chunk, dim=axis))
    expected += [expected[0][tuple(slice(0, 0) if d == axis else slice(None)
                                   for d in range(len(shape)))]] * (n - len(expected))
    for got_piece, want, ty in zip(pieces, expected, types, strict=True):
        np.testing.assert_array_equal(got_piece, want.numpy())
        assert ty.shape == got_piece.shape
    sizes = i64([1, joined.shape[axis] - 1])
    pieces, types = run_op(Op.SPLIT, [joined, sizes], {"axis": axis}, const=[1], outputs=2)
    np.testing.assert_array_equal(np.concatenate(pieces, axis), joined)
    assert [t.shape[axis] for t in types] == list(sizes)


def test_concat_symbolic_and_errors() -> None:
    a = TensorType(DType.F32, ("n", 3))
    assert infer(Op.CONCAT, [a, TensorType(DType.F32, (2, 3))], {"axis": 0})[0].shape \
        == ("n+2", 3)
    assert infer(Op.CONCAT, [a, TensorType(DType.F32, (0, 3))], {"axis": 0})[0].shape == ("n", 3)
    assert infer(Op.CONCAT, [a, TensorType(DType.F32, (4, "k"))], {"axis": 0})[0].shape \
        == ("n+4", 3)
    assert infer(Op.CONCAT, [a, TensorType(DType.F32, (UNKNOWN, 3))], {"axis": 0})[0].shape \
        == (UNKNOWN, 3)
    with pytest.raises(TypeInferenceError, match="extent 1 does not match"):
        infer(Op.CONCAT, [a, TensorType(DType.F32, ("n", 4))], {"axis": 0})
    with pytest.raises(TypeInferenceError, match="axis 2 is out of range for rank 2"):
        infer(Op.CONCAT, [a, a], {"axis": 2})
    with pytest.raises(TypeInferenceError, match="does not sum to the extent 5"):
        infer(Op.SPLIT, [TensorType(DType.F32, (5,)), i64([2, 2])], outputs=2)


# ------------------------------------------------------------------------------------ Slice

bound = st.integers(-7, 7) | st.sampled_from([2**63 - 1, -(2**63), 2**31 - 1, -(2**31)])


@FAST
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple), data=st.data())
def test_slice_matches_onnxruntime(shape: tuple[int, ...], data: st.DataObject) -> None:
    x = arange_of(shape)
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1,
                              max_size=len(shape), unique_by=lambda a: a % len(shape)))
    n = len(axes)
    starts = i64(data.draw(st.lists(bound, min_size=n, max_size=n)))
    ends = i64(data.draw(st.lists(bound, min_size=n, max_size=n)))
    steps = i64(data.draw(st.lists(st.sampled_from([-3, -2, -1, 1, 2, 3]), min_size=n,
                                   max_size=n)))
    # onnxruntime reads end = INT_MAX with a negative step as "through index 0"; the spec
    # (and numpy) clamp it to dims - 1 first, which selects nothing.
    assume(not np.any((steps < 0) & (ends >= 2**31 - 1)))
    args = [x, starts, ends, i64(axes), steps]
    (want,) = run_ort("Slice", args, opset=13)
    for const in ((), (1, 2, 3, 4)):
        (got,), (t,) = run_op(Op.SLICE, args, const=const)
        np.testing.assert_array_equal(got, want)
        if const:
            assert t.shape == want.shape


def test_slice_symbolic_and_errors() -> None:
    x = TensorType(DType.F32, ("n", 8))
    big = 2**63 - 1
    assert infer(Op.SLICE, [x, i64([0, 2]), i64([big, -2])])[0].shape == ("n", 4)
    assert infer(Op.SLICE, [x, i64([-1]), i64([-big]), i64([0]), i64([-1])])[0].shape \
        == ("n", 8)
    assert infer(Op.SLICE, [x, i64([1]), i64([big])])[0].shape == ("n-1", 8)
    assert infer(Op.SLICE, [x, i64([2]), i64([big])])[0].shape == (UNKNOWN, 8)
    starts = TensorType(DType.I64, (1,))
    assert infer(Op.SLICE, [x, starts, i64([3]), i64([1])])[0].shape == ("n", UNKNOWN)
    with pytest.raises(TypeInferenceError, match="step must not be 0"):
        infer(Op.SLICE, [x, i64([0]), i64([1]), i64([1]), i64([0])])
    with pytest.raises(TypeInferenceError, match="differ in length"):
        infer(Op.SLICE, [x, i64([0, 0]), i64([1])])


# ------------------------------------------------------------------------- Expand and Tile

@FAST
@given(shape=nonempty_shapes, data=st.data())
def test_expand_and_tile(shape: tuple[int, ...], data: st.DataObject) -> None:
    x = arange_of(shape)
    target = [1 if data.draw(st.booleans()) else d for d in shape]
    target = [data.draw(st.integers(1, 3)) if d == 1 else d for d in shape]
    target = [2, *target] if data.draw(st.booleans()) else target
    (got,), (t,) = run_op(Op.EXPAND, [x, i64(target)], const=[1])
    want = torch.from_numpy(x).expand(*target).numpy()
    np.testing.assert_array_equal(got, want)
    assert t.shape == want.shape
    repeats = data.draw(st.lists(st.integers(0, 3), min_size=len(shape), max_size=len(shape)))
    (got,), (t,) = run_op(Op.TILE, [x, i64(repeats)], const=[1])
    np.testing.assert_array_equal(got, torch.from_numpy(x).repeat(*repeats).numpy())
    assert t.shape == got.shape


def test_expand_tile_rules() -> None:
    x = TensorType(DType.F32, ("n", 1, 3))
    assert infer(Op.EXPAND, [x, i64([2, 1, 4, 1])])[0].shape == (2, "n", 4, 3)
    assert infer(Op.EXPAND, [x, TensorType(DType.I64, (4,))])[0].shape \
        == (UNKNOWN, UNKNOWN, UNKNOWN, 3)
    with pytest.raises(TypeInferenceError, match=r"cannot expand .* to shape \[2, 2\]"):
        infer(Op.EXPAND, [x, i64([2, 2])])
    assert infer(Op.TILE, [x, i64([1, 2, 2])])[0].shape == ("n", 2, 6)
    with pytest.raises(TypeInferenceError, match="repeats"):
        infer(Op.TILE, [x, i64([1, 2])])


# -------------------------------------------------------------------------------------- Pad

@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), data=st.data(),
       mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]))
def test_pad_matches_onnxruntime(shape: tuple[int, ...], data: st.DataObject, mode: str) -> None:
    x = arange_of(shape) + 1
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1,
                              max_size=len(shape), unique_by=lambda a: a % len(shape)))
    low = -1 if mode == "constant" else 0
    limit = min(shape[a] for a in axes) - 1 if mode == "reflect" else 3
    pads = i64(data.draw(st.lists(st.integers(low, max(limit, 0)), min_size=2 * len(axes),
                                  max_size=2 * len(axes))))
    n = len(axes)
    assume(all(shape[a] + pads[i] + pads[n + i] >= 0 for i, a in enumerate(axes)))
    value = np.array(7.5, np.float32)
    args = [x, pads, value, i64(axes)]
    (want,) = run_ort("Pad", args, {"mode": mode}, opset=21)
    for const in ((), (1, 3)):
        (got,), (t,) = run_op(Op.PAD, args, {"mode": mode}, const=const)
        np.testing.assert_array_equal(got, want)
        if const:
            assert t.shape == want.shape


def test_pad_rules() -> None:
    x = TensorType(DType.F32, ("n", 4))
    assert infer(Op.PAD, [x, i64([0, 1, 0, 2])])[0].shape == ("n", 7)
    assert infer(Op.PAD, [x, i64([1, 0, 0, 0])])[0].shape == ("n+1", 4)
    assert infer(Op.PAD, [x, TensorType(DType.I64, (2,)), None, i64([1])])[0].shape \
        == ("n", UNKNOWN)
    with pytest.raises(TypeInferenceError, match="pads has 2 entries; expected 2 \\* 2 axes"):
        infer(Op.PAD, [x, i64([1, 1])])
    with pytest.raises(TypeInferenceError, match="mode 'mirror' is not one of"):
        infer(Op.PAD, [x, i64([0, 0, 0, 0])], {"mode": "mirror"})


# ---------------------------------------------------------------- block and triangle ops

@FAST
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       k=st.integers(1, 3))
def test_depth_space_round_trip(n: int, c: int, h: int, w: int, k: int) -> None:
    x = arange_of((n, c * k * k, h, w))
    for mode in ("DCR", "CRD"):
        (deep,), _ = run_op(Op.DEPTH_TO_SPACE, [x], {"blocksize": k, "mode": mode})
        (back,), _ = run_op(Op.SPACE_TO_DEPTH, [deep], {"blocksize": k, "mode": mode})
        np.testing.assert_array_equal(back, x)
    # torch's pixel shuffle is the CRD arrangement.
    (got,), _ = run_op(Op.DEPTH_TO_SPACE, [x], {"blocksize": k, "mode": "CRD"})
    np.testing.assert_array_equal(got, torch.pixel_shuffle(torch.from_numpy(x), k).numpy())
    (want,) = run_ort("DepthToSpace", [x], {"blocksize": k, "mode": "DCR"}, opset=13)
    (got,), _ = run_op(Op.DEPTH_TO_SPACE, [x], {"blocksize": k})
    np.testing.assert_array_equal(got, want)


def test_block_rules() -> None:
    x = TensorType(DType.F32, ("n", 8, 3, 4))
    assert infer(Op.DEPTH_TO_SPACE, [x], {"blocksize": 2})[0].shape == ("n", 2, 6, 8)
    with pytest.raises(TypeInferenceError, match="spatial extent 3 is not divisible"):
        infer(Op.SPACE_TO_DEPTH, [x], {"blocksize": 2})
    with pytest.raises(TypeInferenceError, match="required attribute 'blocksize'"):
        infer(Op.DEPTH_TO_SPACE, [x])


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple),
       k=st.integers(-4, 4), upper=st.integers(0, 1))
def test_trilu_matches_torch(shape: tuple[int, ...], k: int, upper: int) -> None:
    x = arange_of(shape) + 1
    (got,), _ = run_op(Op.TRILU, [x, i64(k)], {"upper": upper})
    fn = torch.triu if upper else torch.tril
    np.testing.assert_array_equal(got, fn(torch.from_numpy(x), k).numpy())


@FAST
@given(batch=st.integers(1, 4), steps=st.integers(1, 5), inner=st.integers(1, 3),
       time_axis=st.integers(0, 1), data=st.data())
def test_reverse_sequence(batch: int, steps: int, inner: int, time_axis: int,
                          data: st.DataObject) -> None:
    lens = i64(data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch)))
    shape = (steps, batch, inner) if time_axis == 0 else (batch, steps, inner)
    x = arange_of(shape)
    (got,), _ = run_op(Op.REVERSE_SEQUENCE, [x, lens],
                       {"time_axis": time_axis, "batch_axis": 1 - time_axis})
    want = np.moveaxis(x, time_axis, 0).copy()
    for b, n in enumerate(lens):
        want[:n, b] = want[:n, b][::-1].copy()
    np.testing.assert_array_equal(got, np.moveaxis(want, 0, time_axis))


def test_center_crop_pad() -> None:
    x = arange_of((5, 4))
    (got,), (t,) = run_op(Op.CENTER_CROP_PAD, [x, i64([2, 7])], const=[1])
    want = np.zeros((2, 7), np.float32)
    want[:, 1:5] = x[1:3]
    np.testing.assert_array_equal(got, want)
    assert t.shape == (2, 7)
    sym = infer(Op.CENTER_CROP_PAD, [TensorType(DType.F32, ("n", 4, 4)), i64([3])],
                {"axes": (-1,)})
    assert sym[0].shape == ("n", 4, 3)


# ----------------------------------------------------------------------------------- Resize

RESIZE_COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                 "asymmetric", "tf_crop_and_resize"]


def resize_case(data: st.DataObject, x: np.ndarray, axes: list[int], attrs: dict) -> None:
    """Draws scales or sizes (and roi) for ``x``; checks the reference against onnxruntime."""
    # Binary-fraction ratios only: float32 (onnxruntime) and float64 (reference) coordinates
    # then agree exactly, so nearest rounding cannot flip between them.
    ratios = [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0]
    if data.draw(st.booleans()):
        sizes = i64([data.draw(st.sampled_from([int(x.shape[a] * r) for r in ratios
                                                if float(x.shape[a] * r).is_integer()]))
                     for a in axes])
        scales = None
        # (half_pixel_symmetric's adjustment out / (scale * in) is no binary fraction once a
        # policy rounds the extent.)
        policy = data.draw(st.sampled_from(["stretch", "not_larger", "not_smaller"]))
        if attrs["coordinate_transformation_mode"] == "half_pixel_symmetric":
            policy = "stretch"
        if attrs.get("antialias"):
            # With antialias and an aspect policy onnxruntime filters an axis whose kept extent
            # ends up unchanged (e.g. [2,4] -> sizes [1,3], not_smaller -> [2,3]); the spec and
            # the ONNX reference (which Kiln matches exactly there) leave it alone.
            policy = "stretch"
        attrs["keep_aspect_ratio_policy"] = policy
    else:
        sizes, scales = None, np.array([data.draw(st.sampled_from(ratios)) for _ in axes],
                                       np.float32)
    coord = attrs["coordinate_transformation_mode"]
    if coord in ("align_corners", "pytorch_half_pixel", "tf_crop_and_resize"):
        # These modes divide by the output extent: the ONNX reference (and so the conformance
        # data) takes the unrounded scale * extent, onnxruntime the rounded one; compare only
        # where the two agree.
        if scales is None:
            assume(attrs["keep_aspect_ratio_policy"] == "stretch")
        else:
            assume(all(float(s * x.shape[a]).is_integer()
                       for s, a in zip(scales, axes, strict=True)))
    roi = None
    if coord == "tf_crop_and_resize":
        roi = np.array([0.125] * len(axes) + [0.75] * len(axes), np.float32)  # exact in f32
    args = [x, roi, scales, sizes]
    (want,) = run_ort("Resize", args, {**attrs, "axes": axes}, opset=19)
    # onnxruntime skips an axis whose extent is unchanged even when roi crops it; the spec
    # (and the ONNX reference) crop it.
    assume(roi is None or all(want.shape[a] != x.shape[a] for a in axes))
    for const in ((), (1, 2, 3)):
        (got,), (t,) = run_op(Op.RESIZE, args, {**attrs, "axes": axes}, const=const)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        if const:
            assert t.shape == want.shape


@settings(max_examples=60, deadline=None)
@given(hw=st.tuples(st.integers(1, 5), st.integers(1, 5)), data=st.data(),
       mode=st.sampled_from(["nearest", "linear", "cubic"]),
       coord=st.sampled_from(RESIZE_COORDS),
       nearest=st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
def test_resize_image_matches_onnxruntime(hw: tuple[int, int], data: st.DataObject, mode: str,
                                          coord: str, nearest: str) -> None:
    # onnxruntime resamples cubic and linear only over the inner two axes of 4-D inputs.
    x = np.random.default_rng(hw[0]).standard_normal((2, 1, *hw)).astype(np.float32)
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": coord,
                             "nearest_mode": nearest, "extrapolation_value": 3.0}
    if mode != "nearest" and coord != "tf_crop_and_resize":
        attrs["antialias"] = int(data.draw(st.booleans()))
    if mode == "cubic" or attrs.get("antialias"):  # where onnxruntime accepts it
        attrs["exclude_outside"] = int(data.draw(st.booleans()))
    if mode == "cubic":
        attrs["cubic_coeff_a"] = data.draw(st.sampled_from([-0.75, -0.5]))
    resize_case(data, x, [2, 3], attrs)


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), data=st.data(),
       coord=st.sampled_from(RESIZE_COORDS),
       nearest=st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
def test_resize_nearest_any_axes(shape: tuple[int, ...], data: st.DataObject, coord: str,
                                 nearest: str) -> None:
    x = arange_of(shape)
    axes = sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1)))
    resize_case(data, x, axes, {"mode": "nearest", "coordinate_transformation_mode": coord,
                                "nearest_mode": nearest})


def test_resize_integer_and_rules() -> None:
    x = np.array([[[[0, 100], [200, 255]]]], np.uint8)
    attrs = {"mode": "linear"}
    (got,), _ = run_op(Op.RESIZE, [x, None, np.array([1, 1, 2, 2], np.float32)], attrs)
    # Integers are resampled as reals and rounded (the ONNX reference's saturating cast);
    # onnxruntime's uint8 path uses fixed point and may differ by one.
    (real,) = run_ort("Resize", [x.astype(np.float32), None, np.array([1, 1, 2, 2], np.float32)],
                      attrs, opset=19)
    np.testing.assert_array_equal(got, np.clip(np.round(real), 0, 255).astype(np.uint8))
    t = TensorType(DType.F32, ("n", 3, 10, 10))
    out = infer(Op.RESIZE, [t, None, np.array([2.0, 0.5], np.float32)], {"axes": (2, 3)})
    assert out[0].shape == ("n", 3, 20, 5)
    out = infer(Op.RESIZE, [t, None, None, TensorType(DType.I64, (4,))])
    assert out[0].shape == (UNKNOWN,) * 4
    with pytest.raises(TypeInferenceError, match="exactly one of scales and sizes"):
        infer(Op.RESIZE, [t])
    with pytest.raises(TypeInferenceError, match="mode 'area' is not one of"):
        infer(Op.RESIZE, [t, None, np.ones(4, np.float32)], {"mode": "area"})


# ------------------------------------------------------------------------ BitCast and shape ops

def test_bit_cast() -> None:
    x = np.array([1.0, -2.5], np.float32)
    (got,), _ = run_op(Op.BIT_CAST, [x], {"to": DType.I32})
    np.testing.assert_array_equal(got, x.view(np.int32))
    (got,), _ = run_op(Op.BIT_CAST, [np.float16(1.5)], {"to": DType.BF16})
    assert got.shape == () and got.view(np.uint16) == np.float16(1.5).view(np.uint16)
    with pytest.raises(TypeInferenceError, match=r"cannot bit-cast f32 \(32 bits\) to i64"):
        run_op(Op.BIT_CAST, [x], {"to": DType.I64})


@pytest.mark.parametrize(("start", "end"), [(0, None), (1, None), (-2, None), (0, -1),
                                            (-10, 10), (3, 1)])
def test_shape_and_size(start: int, end: int | None) -> None:
    x = np.zeros((2, 3, 4), np.float32)
    attrs = {"start": start} if end is None else {"start": start, "end": end}
    (got,), (t,) = run_op(Op.SHAPE, [x], attrs)
    np.testing.assert_array_equal(got, i64(x.shape[slice(start, end)]
                                           if start > -10 else x.shape[:end]))
    assert t == TensorType(DType.I64, got.shape)
    (got,), (t,) = run_op(Op.SIZE, [x])
    assert got == 24 and t == TensorType(DType.I64, ())
    sym = infer(Op.SHAPE, [TensorType(DType.F32, ("b", UNKNOWN))])
    assert sym == [TensorType(DType.I64, (2,))]


def test_constant_of_shape_and_eye_like() -> None:
    (got,), (t,) = run_op(Op.CONSTANT_OF_SHAPE, [i64([2, 3])], const=[0])
    np.testing.assert_array_equal(got, np.zeros((2, 3), np.float32))
    assert t == TensorType(DType.F32, (2, 3))
    (got,), _ = run_op(Op.CONSTANT_OF_SHAPE, [i64([2])], {"value": np.array([7], np.int32)})
    np.testing.assert_array_equal(got, np.full(2, 7, np.int32))
    assert infer(Op.CONSTANT_OF_SHAPE, [TensorType(DType.I64, (3,))])[0].shape == (UNKNOWN,) * 3
    x = np.zeros((3, 5), np.int32)
    for k in (-4, -1, 0, 2, 6):
        (got,), _ = run_op(Op.EYE_LIKE, [x], {"k": k, "dtype": DType.F64})
        want = (np.arange(5)[None, :] - np.arange(3)[:, None] == k).astype(np.float64)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeInferenceError, match="input must be 2-D"):
        infer(Op.EYE_LIKE, [TensorType(DType.F32, (3,))])


@FAST
@given(start=st.integers(-10, 10), limit=st.integers(-10, 10),
       delta=st.integers(-4, 4).filter(bool),
       dtype=st.sampled_from([np.int32, np.int64, np.float32, np.float64]))
def test_range_matches_numpy(start: int, limit: int, delta: int, dtype: Any) -> None:
    args = [dtype(start), dtype(limit), dtype(delta * 0.75 if dtype in (np.float32, np.float64)
                                             else delta)]
    (got,), (t,) = run_op(Op.RANGE, args, const=[0, 1, 2])
    want = np.arange(*(a.item() for a in args)).astype(dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert t.shape == want.shape
    assert infer(Op.RANGE, [TensorType.of(a) for a in args])[0].shape == (UNKNOWN,)


def test_range_errors() -> None:
    with pytest.raises(TypeInferenceError, match="delta must not be 0"):
        infer(Op.RANGE, [i64(0), i64(5), i64(0)])
    with pytest.raises(TypeInferenceError, match="must be i64 scalars"):
        infer(Op.RANGE, [i64(0), i64([5, 6]), i64(1)])


def test_kernel_failures_name_the_node() -> None:
    with pytest.raises(KilnError, match="split"):
        run_op(Op.SPLIT, [np.zeros(5, np.float32), i64([2, 2])], outputs=2)
