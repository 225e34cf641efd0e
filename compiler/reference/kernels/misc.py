"""Numpy kernels of Det, the signal ops (windows, DFT, STFT, MelWeightMatrix) and the random ops.

Constant has no kernel: the executor answers it from the node's ``value``. Signal kernels
compute in the input's precision (at least single); the executor casts to the declared type.
Complex tensors use ONNX's representation: a trailing dim of 2 holding (real, imaginary), or
of 1 for real values.
"""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from .registry import KernelContext, kernel


def _scalar(data: np.ndarray) -> int | float:
    return np.asarray(data).reshape(-1)[0].item()


@kernel(Op.DET)
def det(ctx: KernelContext, x: np.ndarray):
    return np.linalg.det(x.astype(np.promote_types(x.dtype, np.float32)))


def _phase(ctx: KernelContext, size: np.ndarray) -> np.ndarray:
    """2 pi n / N for n in [0, size), with N = size (periodic) or size - 1 (symmetric)."""
    count = int(_scalar(size))
    denominator = count if ctx.attr("periodic") else count - 1
    return 2 * np.pi * np.arange(count, dtype=np.float64) / denominator


@kernel(Op.HANN_WINDOW)
def hann_window(ctx: KernelContext, size: np.ndarray):
    phase = _phase(ctx, size)
    return 0.5 - 0.5 * np.cos(phase)


@kernel(Op.HAMMING_WINDOW)
def hamming_window(ctx: KernelContext, size: np.ndarray):
    phase = _phase(ctx, size)
    return 25 / 46 - 21 / 46 * np.cos(phase)


@kernel(Op.BLACKMAN_WINDOW)
def blackman_window(ctx: KernelContext, size: np.ndarray):
    phase = _phase(ctx, size)
    return 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase)


def _to_complex(x: np.ndarray) -> np.ndarray:
    """Fold the trailing (real, imaginary) dim into a complex array: complex128 for f64,
    complex64 otherwise (single precision, as runtimes and ONNX's expected values compute)."""
    dtype = np.complex128 if x.dtype == np.float64 else np.complex64
    real = x[..., 0].astype(dtype)
    return real if x.shape[-1] == 1 else real + 1j * x[..., 1].astype(dtype)


def _from_complex(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


@kernel(Op.DFT)
def dft(ctx: KernelContext, x: np.ndarray, dft_length: np.ndarray | None = None,
        axis: np.ndarray | None = None):
    # The axis counts over the input's dims, whose last (the complex parts) the signal lacks.
    axis_index = -2 if axis is None else int(_scalar(axis))
    axis_index = axis_index + x.ndim if axis_index < 0 else axis_index
    inverse, onesided = bool(ctx.attr("inverse")), bool(ctx.attr("onesided"))
    if dft_length is not None:
        n = int(_scalar(dft_length))
    elif inverse and onesided:
        n = 2 * (x.shape[axis_index] - 1)
    else:
        n = x.shape[axis_index]
    signal = _to_complex(x)
    if inverse and onesided:
        return np.fft.irfft(signal, n=n, axis=axis_index)[..., None]
    if inverse:
        return _from_complex(np.fft.ifft(signal, n=n, axis=axis_index))
    spectrum = np.fft.fft(signal, n=n, axis=axis_index)
    if onesided:
        spectrum = np.take(spectrum, np.arange(n // 2 + 1), axis=axis_index)
    return _from_complex(spectrum)


@kernel(Op.STFT)
def stft(ctx: KernelContext, signal: np.ndarray, frame_step: np.ndarray,
         window: np.ndarray | None = None, frame_length: np.ndarray | None = None):
    length = signal.shape[1]
    if frame_length is not None:
        frame = int(_scalar(frame_length))
    else:
        frame = length if window is None else window.shape[0]
    step = int(_scalar(frame_step))
    frames = (length - frame) // step + 1
    starts = np.arange(frames)[:, None] * step
    framed = _to_complex(signal)[:, starts + np.arange(frame)[None, :]]  # [batch, frames, frame]
    if window is not None:
        framed = framed * window
    spectrum = np.fft.fft(framed, axis=-1)
    if ctx.attr("onesided"):
        spectrum = spectrum[..., : frame // 2 + 1]
    return _from_complex(spectrum)


@kernel(Op.MEL_WEIGHT_MATRIX)
def mel_weight_matrix(ctx: KernelContext, num_mel_bins: np.ndarray, dft_length: np.ndarray,
                      sample_rate: np.ndarray, lower_edge_hertz: np.ndarray,
                      upper_edge_hertz: np.ndarray):
    """Triangular filters peaking at 1, with band edges spaced evenly in mel and snapped to
    spectrogram bins the way ONNX's reference and onnxruntime snap them."""
    mels, length = int(_scalar(num_mel_bins)), int(_scalar(dft_length))
    rate = int(_scalar(sample_rate))
    low, high = (2595 * np.log10(1 + float(_scalar(e)) / 700)
                 for e in (lower_edge_hertz, upper_edge_hertz))
    # ONNX divides the mel range into num_mel_bins + 2 steps (not + 1), then snaps down.
    edges_mel = low + np.arange(mels + 2) * (high - low) / (mels + 2)
    edges_hz = 700 * (10 ** (edges_mel / 2595) - 1)
    edges = np.floor((length + 1) * edges_hz / rate).astype(np.int64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(length // 2 + 1)[:, None]
    rising = (j - left) / np.maximum(center - left, 1)
    falling = (right - j) / np.maximum(right - center, 1)
    weights = np.where((left <= j) & (j <= center), rising, 0.0)
    weights = np.where((center <= j) & (j < right), falling, weights)
    return np.where(j == center, 1.0, weights)


def _generator(ctx: KernelContext) -> np.random.Generator:
    """Seeded by the ``seed`` attribute's bits when present (same seed, same draws)."""
    seed = ctx.attr("seed")
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(int(np.array(seed, np.float64).view(np.uint64)))


@kernel(Op.RANDOM_NORMAL)
def random_normal(ctx: KernelContext, like: np.ndarray | None = None):
    shape = ctx.attr("shape") if like is None else like.shape
    return _generator(ctx).normal(ctx.attr("mean"), ctx.attr("scale"), shape)


@kernel(Op.RANDOM_UNIFORM)
def random_uniform(ctx: KernelContext, like: np.ndarray | None = None):
    shape = ctx.attr("shape") if like is None else like.shape
    return _generator(ctx).uniform(ctx.attr("low"), ctx.attr("high"), shape)


kernel(Op.RANDOM_NORMAL_LIKE)(random_normal)
kernel(Op.RANDOM_UNIFORM_LIKE)(random_uniform)


@kernel(Op.BERNOULLI)
def bernoulli(ctx: KernelContext, probabilities: np.ndarray):
    return _generator(ctx).random(probabilities.shape) < probabilities


@kernel(Op.MULTINOMIAL)
def multinomial(ctx: KernelContext, logits: np.ndarray):
    logits = logits.astype(np.float64)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    draws = _generator(ctx).random((logits.shape[0], ctx.attr("sample_size")))
    chosen = (draws[:, :, None] >= cdf[:, None, :]).sum(axis=2)
    return np.minimum(chosen, logits.shape[1] - 1)
