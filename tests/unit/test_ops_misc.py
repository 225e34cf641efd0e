"""Constant, Det, the signal ops and the random ops: type rules and reference kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from onnx.reference import ReferenceEvaluator

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import ElidedTensor
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType


def run_op(op: Op, inputs: list[np.ndarray | None], attrs: dict | None = None,
           const: tuple[int, ...] = ()) -> tuple[np.ndarray, TensorType]:
    """Run one node: inputs at positions ``const`` become constants, the rest graph inputs."""
    b = GraphBuilder(fold=False)
    values = []
    for i, data in enumerate(inputs):
        if data is None:
            values.append(None)
        elif i in const:
            values.append(b.constant(data))
        else:
            values.append(b.add_input(f"in{i}", TensorType.of(data)))
    out = b.add1(op, values, attrs or {})
    feeds = {f"in{i}": d for i, d in enumerate(inputs) if d is not None and i not in const}
    (result,) = reference.run(b.finish([out]), feeds)
    return result, out.type


# ---------------------------------------------------------------- Constant, Det


def test_constant_rule_accepts_arrays_and_elided_tensors() -> None:
    from kiln.compiler.ir.schema import InferContext, op_def

    rule = op_def(Op.CONSTANT).infer
    for value, expected in (
        (np.zeros((2, 3), np.int64), TensorType(DType.I64, (2, 3))),
        (ElidedTensor(DType.F16, (4,), "abc"), TensorType(DType.F16, (4,))),
    ):
        ctx = InferContext(Op.CONSTANT, "c", [], {"value": value}, [], 1)
        assert rule(ctx) == [expected]
    ctx = InferContext(Op.CONSTANT, "c", [], {"value": np.zeros(2, np.complex64)}, [], 1)
    with pytest.raises(KilnError, match="constant \\(node 'c'\\): value: numpy dtype complex64"):
        rule(ctx)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (2, 1, 2, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_det(shape: tuple[int, ...], dtype: type) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    got, type_ = run_op(Op.DET, [x])
    assert type_ == TensorType(DType.from_numpy(dtype), shape[:-2])
    np.testing.assert_allclose(got, np.linalg.det(x), rtol=1e-5)


def test_det_needs_square_matrices() -> None:
    with pytest.raises(KilnError, match="det: input matrices must be square"):
        run_op(Op.DET, [np.zeros((2, 3), np.float32)])


# ---------------------------------------------------------------- windows

WINDOWS = {
    Op.HANN_WINDOW: (torch.hann_window, lambda p: 0.5 - 0.5 * np.cos(p)),
    Op.HAMMING_WINDOW: (None, lambda p: 25 / 46 - 21 / 46 * np.cos(p)),
    Op.BLACKMAN_WINDOW: (torch.blackman_window, lambda p: 0.42 - 0.5 * np.cos(p)
                         + 0.08 * np.cos(2 * p)),
}


@pytest.mark.parametrize("op", list(WINDOWS))
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size", [2, 7, 10])
def test_windows(op: Op, periodic: int, size: int) -> None:
    got, type_ = run_op(op, [np.array(size, np.int64)], {"periodic": periodic}, const=(0,))
    assert type_ == TensorType(DType.F32, (size,))
    n = np.arange(size)
    formula = WINDOWS[op][1](2 * np.pi * n / (size if periodic else size - 1))
    np.testing.assert_allclose(got, formula, rtol=1e-6, atol=1e-7)
    torch_window = WINDOWS[op][0]
    if torch_window is not None:
        np.testing.assert_allclose(
            got, torch_window(size, periodic=bool(periodic), dtype=torch.float64).numpy(),
            rtol=1e-6, atol=1e-7)


def test_window_size_not_constant_and_dtype() -> None:
    got, type_ = run_op(Op.HANN_WINDOW, [np.array(4, np.int32)],
                        {"output_datatype": DType.F64})
    assert type_ == TensorType(DType.F64, (UNKNOWN,))
    assert got.dtype == np.float64 and got.shape == (4,)
    with pytest.raises(KilnError, match="size must be a single i32/i64 element"):
        run_op(Op.HANN_WINDOW, [np.array([4, 5], np.int64)])


# ---------------------------------------------------------------- DFT, STFT


def as_complex(x: np.ndarray) -> np.ndarray:
    return x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]


def as_pairs(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("axis", [1, -2, -3])
@pytest.mark.parametrize("length", [None, 4, 9])
def test_dft_forward_and_inverse(parts: int, axis: int, length: int | None) -> None:
    x = np.random.default_rng(0).standard_normal((2, 6, 5, parts))
    signal_axis = axis % 4
    dft_length = None if length is None else np.array(length, np.int64)
    inputs = [x, dft_length, np.array(axis, np.int64)]
    got, type_ = run_op(Op.DFT, inputs, const=(1, 2))
    n = x.shape[signal_axis] if length is None else length
    np.testing.assert_allclose(got, as_pairs(np.fft.fft(as_complex(x), n, signal_axis)),
                               rtol=1e-9, atol=1e-9)
    expected_shape = list(x.shape)
    expected_shape[signal_axis], expected_shape[-1] = n, 2
    assert type_ == TensorType(DType.F64, tuple(expected_shape))
    back, _ = run_op(Op.DFT, inputs, {"inverse": 1}, const=(1, 2))
    np.testing.assert_allclose(back, as_pairs(np.fft.ifft(as_complex(x), n, signal_axis)),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("length", [None, 7, 8])
def test_rfft_and_irfft(length: int | None) -> None:
    x = np.random.default_rng(1).standard_normal((3, 8, 1)).astype(np.float32)
    dft_length = None if length is None else np.array(length, np.int32)
    spectrum, type_ = run_op(Op.DFT, [x, dft_length], {"onesided": 1}, const=(1,))
    n = 8 if length is None else length
    assert type_ == TensorType(DType.F32, (3, n // 2 + 1, 2))
    np.testing.assert_allclose(spectrum, as_pairs(np.fft.rfft(x[..., 0], n, axis=1)),
                               rtol=1e-5, atol=1e-5)
    signal, type_ = run_op(Op.DFT, [spectrum, dft_length], {"onesided": 1, "inverse": 1},
                           const=(1,))
    assert type_ == TensorType(DType.F32, (3, n if length else 8, 1))
    np.testing.assert_allclose(signal[..., 0], np.fft.irfft(as_complex(spectrum), n, axis=1),
                               rtol=1e-5, atol=1e-5)
    if length in (None, 8):
        np.testing.assert_allclose(signal, x, rtol=1e-5, atol=1e-5)


def test_dft_types_with_runtime_values() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("N", 16, 2)))
    length = b.add_input("n", TensorType(DType.I64, ()))
    assert b.add1(Op.DFT, [x, length]).type == TensorType(DType.F32, ("N", UNKNOWN, 2))
    axis = b.add_input("axis", TensorType(DType.I64, ()))
    assert b.add1(Op.DFT, [x, None, axis]).type == TensorType(DType.F32, (UNKNOWN, UNKNOWN, 2))


@pytest.mark.parametrize(
    ("shape", "attrs", "axis", "message"),
    [
        ((4, 2), {}, -1, r"axis -1 is out of range \[-2, -2\] U \[0, 0\]"),
        ((4, 3), {}, -2, r"must end in a dim of 1 \(real\) or 2 \(complex\)"),
        ((4, 2), {"onesided": 1}, -2, r"onesided DFT \(RFFT\) takes real input"),
        ((4, 1), {"onesided": 1, "inverse": 1}, -2, r"IRFFT\) takes complex input"),
    ],
)
def test_dft_errors(shape: tuple[int, ...], attrs: dict, axis: int, message: str) -> None:
    with pytest.raises(KilnError, match=message):
        run_op(Op.DFT, [np.zeros(shape, np.float32), None, np.array(axis)], attrs, const=(2,))


def _onnx_reference(op_type: str, inputs: list[np.ndarray | None], **attrs) -> np.ndarray:
    names = [f"i{k}" if d is not None else "" for k, d in enumerate(inputs)]
    node = helper.make_node(op_type, names, ["y"], **attrs)
    feeds = {n: d for n, d in zip(names, inputs, strict=True) if d is not None}
    return ReferenceEvaluator(node).run(None, feeds)[0]


@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("use_window", [False, True])
def test_stft(onesided: int, use_window: bool) -> None:
    signal = np.random.default_rng(2).standard_normal((2, 40, 1)).astype(np.float32)
    step = np.array(6, np.int64)
    window = np.hanning(10).astype(np.float32) if use_window else None
    length = None if use_window else np.array(10, np.int64)
    got, type_ = run_op(Op.STFT, [signal, step, window, length], {"onesided": onesided},
                        const=(1, 2, 3))
    bins = 6 if onesided else 10
    assert type_ == TensorType(DType.F32, (2, 6, bins, 2))
    frames = np.stack([signal[:, 6 * f:6 * f + 10, 0] for f in range(6)], axis=1)
    if window is not None:
        frames = frames * window
    expected = as_pairs(np.fft.fft(frames, axis=-1)[..., :bins])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        got, _onnx_reference("STFT", [signal, step, window, length], onesided=onesided),
        rtol=1e-4, atol=1e-4)


def test_stft_errors() -> None:
    with pytest.raises(KilnError, match="frame_length 8 differs from the window length 10"):
        run_op(Op.STFT, [np.zeros((1, 20, 1), np.float32), np.array(2),
                         np.ones(10, np.float32), np.array(8)], const=(1, 3))
    with pytest.raises(KilnError, match="onesided STFT takes a real signal"):
        run_op(Op.STFT, [np.zeros((1, 20, 2), np.float32), np.array(2)], const=(1,))


@pytest.mark.parametrize(("mels", "length", "rate", "low", "high"),
                         [(8, 64, 8000, 0.0, 4000.0), (5, 31, 16000, 300.0, 7000.0)])
def test_mel_weight_matrix(mels: int, length: int, rate: int, low: float, high: float) -> None:
    inputs = [np.array(mels, np.int64), np.array(length, np.int64), np.array(rate, np.int64),
              np.array(low, np.float32), np.array(high, np.float32)]
    got, type_ = run_op(Op.MEL_WEIGHT_MATRIX, inputs, const=(0, 1))
    assert type_ == TensorType(DType.F32, (length // 2 + 1, mels))
    np.testing.assert_allclose(got, _onnx_reference("MelWeightMatrix", inputs), rtol=1e-6)


# ---------------------------------------------------------------- random


def test_random_normal_and_uniform() -> None:
    normal, type_ = run_op(Op.RANDOM_NORMAL, [],
                           {"shape": [200, 50], "mean": 3.0, "scale": 2.0, "seed": 1.0})
    assert type_ == TensorType(DType.F32, (200, 50))
    assert abs(normal.mean() - 3.0) < 0.1 and abs(normal.std() - 2.0) < 0.1
    again, _ = run_op(Op.RANDOM_NORMAL, [],
                      {"shape": [200, 50], "mean": 3.0, "scale": 2.0, "seed": 1.0})
    np.testing.assert_array_equal(normal, again)
    other, _ = run_op(Op.RANDOM_NORMAL, [],
                      {"shape": [200, 50], "mean": 3.0, "scale": 2.0, "seed": 2.0})
    assert not np.array_equal(normal, other)
    uniform, type_ = run_op(Op.RANDOM_UNIFORM, [],
                            {"shape": [1000], "low": -2.0, "high": 5.0, "dtype": DType.F64})
    assert type_ == TensorType(DType.F64, (1000,))
    assert uniform.min() >= -2.0 and uniform.max() < 5.0 and uniform.max() > 4.5


def test_random_like_ops_take_the_input_shape() -> None:
    x = np.zeros((3, 4), np.float16)
    got, type_ = run_op(Op.RANDOM_UNIFORM_LIKE, [x], {"seed": 5.0})
    assert type_ == TensorType(DType.F16, (3, 4)) and got.dtype == np.float16
    got, type_ = run_op(Op.RANDOM_NORMAL_LIKE, [x], {"dtype": DType.F64})
    assert type_ == TensorType(DType.F64, (3, 4)) and got.shape == (3, 4)
    with pytest.raises(KilnError, match="dtype must be a float type, got i32"):
        run_op(Op.RANDOM_NORMAL_LIKE, [np.zeros(3, np.int32)])


def test_bernoulli() -> None:
    p = np.array([[0.0, 1.0, 0.5]] * 4000, np.float32)
    got, type_ = run_op(Op.BERNOULLI, [p], {"seed": 3.0, "dtype": DType.I32})
    assert type_ == TensorType(DType.I32, (4000, 3))
    assert not got[:, 0].any() and got[:, 1].all() and abs(got[:, 2].mean() - 0.5) < 0.05
    again, _ = run_op(Op.BERNOULLI, [p], {"seed": 3.0, "dtype": DType.I32})
    np.testing.assert_array_equal(got, again)


def test_multinomial() -> None:
    with np.errstate(divide="ignore"):  # log(0) = -inf: a class never drawn
        logits = np.log(np.array([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]], np.float64))
    got, type_ = run_op(Op.MULTINOMIAL, [logits], {"sample_size": 5000, "seed": 0.0})
    assert type_ == TensorType(DType.I32, (2, 5000))
    assert set(np.unique(got[0])) == {0, 1} and abs((got[0] == 1).mean() - 0.8) < 0.03
    assert (got[1] == 2).all()
    with pytest.raises(KilnError, match="dtype must be i32 or i64, got f32"):
        run_op(Op.MULTINOMIAL, [logits], {"dtype": DType.F32})
