"""Type rules of Constant, Det, the signal ops (windows, DFT, STFT, MelWeightMatrix) and the
random ops.

Signal-op extents depend on input values (a window's size, a DFT's length): they are static
when those inputs are compile-time constants and UNKNOWN otherwise. Random ops draw from a
generator seeded by the ``seed`` attribute when given, so a seed fixes the output.
"""

from __future__ import annotations

import numpy as np

from ...errors import KilnError
from .. import symbolic
from ..graph import ElidedTensor
from ..op import Group, Op
from ..schema import (
    DTYPE_ATTR,
    FLOAT,
    INT,
    REQUIRED,
    TENSOR,
    AttrKind,
    AttrSpec,
    InferContext,
    define,
)
from ..shapes import normalize_axis
from ..types import FLOATS, NUMERIC, UNKNOWN, Dim, DType, TensorType

_INDEX_TYPES = frozenset({DType.I32, DType.I64})
# ``INTS(REQUIRED)`` would iterate its default, so the spec is spelled out.
_REQUIRED_INTS = AttrSpec(AttrKind.INTS, REQUIRED)


@define(Op.CONSTANT, [], ["output"], {"value": TENSOR(REQUIRED)}, Group.MISC)
def _constant(ctx: InferContext) -> list[TensorType]:
    """The type of the ``value`` tensor (an array, or an ElidedTensor from elided IR text)."""
    value = ctx.attr("value")
    if isinstance(value, ElidedTensor):
        return [TensorType(value.dtype, tuple(value.shape))]
    try:
        return [TensorType.of(value)]
    except KilnError as error:
        raise ctx.fail(f"value: {error}") from None


@define(Op.DET, ["X"], ["Y"], {}, Group.MISC)
def _det(ctx: InferContext) -> list[TensorType]:
    """X [*, M, M] -> Y [*]."""
    ctx.require_dtype(0, FLOATS)
    x = ctx.input(0)
    if x.rank < 2:
        raise ctx.fail(f"input must have rank >= 2 ([*, M, M]), got {x}")
    rows, cols = x.shape[-2:]
    if isinstance(rows, int) and isinstance(cols, int) and rows != cols:
        raise ctx.fail(f"input matrices must be square, got {x}")
    return [x.with_shape(x.shape[:-2])]


def scalar_input(
    ctx: InferContext, index: int, name: str, allowed: frozenset[DType]
) -> np.generic | None:
    """The value of a scalar input when constant (None when not); checks type and size."""
    found = ctx.input(index)
    if found.dtype not in allowed or found.rank > 1 or found.numel not in (1, None):
        names = "/".join(sorted(t.value for t in allowed))
        raise ctx.fail(f"{name} must be a single {names} element, got {found}")
    data = ctx.const(index)
    return None if data is None else data.reshape(-1)[0]


def _window(ctx: InferContext) -> list[TensorType]:
    """size (scalar) -> [size] of ``output_datatype``."""
    size = scalar_input(ctx, 0, "size", _INDEX_TYPES)
    if size is not None and size < 0:
        raise ctx.fail(f"size must be >= 0, got {size}")
    if ctx.attr("output_datatype") not in NUMERIC:
        raise ctx.fail(f"output_datatype must be numeric, got {ctx.attr('output_datatype')}")
    return [TensorType(ctx.attr("output_datatype"), (UNKNOWN if size is None else int(size),))]


for _op in (Op.BLACKMAN_WINDOW, Op.HANN_WINDOW, Op.HAMMING_WINDOW):
    define(_op, ["size"], ["output"], {"output_datatype": DTYPE_ATTR(DType.F32),
                                       "periodic": INT(1)}, Group.SIGNAL)(_window)


def _complex_parts(ctx: InferContext, x: TensorType, name: str) -> Dim:
    parts = x.shape[-1] if x.rank else None
    if parts not in (1, 2):
        raise ctx.fail(f"{name} must end in a dim of 1 (real) or 2 (complex), got {x}")
    return parts


@define(Op.DFT, ["input", "dft_length?", "axis?"], ["output"],
        {"inverse": INT(0), "onesided": INT(0)}, Group.SIGNAL)
def _dft(ctx: InferContext) -> list[TensorType]:
    """[..., n at axis, ..., 1|2] -> [..., m at axis, ..., 2] (IRFFT: [..., 1]); m is
    dft_length, or dft_length // 2 + 1 for RFFT."""
    ctx.require_dtype(0, FLOATS)
    x = ctx.input(0)
    if x.rank < 2:
        raise ctx.fail(f"input must have rank >= 2 (signal dims and a complex dim), got {x}")
    parts = _complex_parts(ctx, x, "input")
    inverse, onesided = bool(ctx.attr("inverse")), bool(ctx.attr("onesided"))
    if onesided and not inverse and parts == 2:
        raise ctx.fail("onesided DFT (RFFT) takes real input (last dim 1)")
    if onesided and inverse and parts == 1:
        raise ctx.fail("onesided inverse DFT (IRFFT) takes complex input (last dim 2)")
    length = scalar_input(ctx, 1, "dft_length", _INDEX_TYPES) if ctx.has_input(1) else None
    if length is not None and length < 1:
        raise ctx.fail(f"dft_length must be >= 1, got {length}")
    axis = scalar_input(ctx, 2, "axis", _INDEX_TYPES) if ctx.has_input(2) else -2
    out_parts = 1 if onesided and inverse else 2
    if axis is None:  # the transformed axis is not known: every signal dim may change
        return [x.with_shape((UNKNOWN,) * (x.rank - 1) + (out_parts,))]
    axis = int(axis)
    if not (-x.rank <= axis <= -2 or 0 <= axis <= x.rank - 2):
        raise ctx.fail(f"axis {axis} is out of range [-{x.rank}, -2] U [0, {x.rank - 2}]")
    axis = normalize_axis(axis, x.rank)
    n: Dim = x.shape[axis]
    if ctx.has_input(1):
        n = UNKNOWN if length is None else int(length)
    elif onesided and inverse:
        n = symbolic.mul(symbolic.sub(n, 1), 2)
    if onesided and not inverse:
        n = n // 2 + 1 if isinstance(n, int) else symbolic.add(symbolic.floordiv(n, 2), 1)
    shape = list(x.shape)
    shape[axis], shape[-1] = n, out_parts
    return [x.with_shape(tuple(shape))]


@define(Op.STFT, ["signal", "frame_step", "window?", "frame_length?"], ["output"],
        {"onesided": INT(1)}, Group.SIGNAL)
def _stft(ctx: InferContext) -> list[TensorType]:
    """signal [batch, length, 1|2] -> [batch, frames, bins, 2]."""
    dtype = ctx.require_dtype(0, FLOATS)
    x = ctx.input(0)
    if x.rank != 3:
        raise ctx.fail(f"signal must have rank 3 ([batch, length, 1|2]), got {x}")
    parts = _complex_parts(ctx, x, "signal")
    if ctx.attr("onesided") and parts == 2:
        raise ctx.fail("onesided STFT takes a real signal (last dim 1); set onesided=0")
    step = scalar_input(ctx, 1, "frame_step", _INDEX_TYPES)
    if step is not None and step < 1:
        raise ctx.fail(f"frame_step must be >= 1, got {step}")
    frame: Dim = x.shape[1]
    if ctx.has_input(2):
        window = ctx.input(2)
        if window.rank != 1 or window.dtype != dtype:
            raise ctx.fail(f"window must be a 1-D {dtype.value} tensor, got {window}")
        frame = window.shape[0]
    if ctx.has_input(3):
        given = scalar_input(ctx, 3, "frame_length", _INDEX_TYPES)
        if given is None:
            frame = frame if ctx.has_input(2) else UNKNOWN
        elif ctx.has_input(2) and isinstance(frame, int) and given != frame:
            raise ctx.fail(f"frame_length {given} differs from the window length {frame}")
        else:
            frame = int(given)
    frames: Dim = UNKNOWN
    length = x.shape[1]
    if isinstance(frame, int) and isinstance(length, int) and step is not None:
        if not 1 <= frame <= length:
            raise ctx.fail(f"frame length {frame} must be in [1, signal length {length}]")
        frames = (length - frame) // int(step) + 1
    bins = frame
    if ctx.attr("onesided"):
        bins = frame // 2 + 1 if isinstance(frame, int) else UNKNOWN
    return [TensorType(dtype, (x.shape[0], frames, bins, 2))]


@define(Op.MEL_WEIGHT_MATRIX,
        ["num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz"],
        ["output"], {"output_datatype": DTYPE_ATTR(DType.F32)}, Group.SIGNAL)
def _mel_weight_matrix(ctx: InferContext) -> list[TensorType]:
    """-> [dft_length // 2 + 1, num_mel_bins] of ``output_datatype``."""
    bins = scalar_input(ctx, 0, "num_mel_bins", _INDEX_TYPES)
    length = scalar_input(ctx, 1, "dft_length", _INDEX_TYPES)
    scalar_input(ctx, 2, "sample_rate", _INDEX_TYPES)
    scalar_input(ctx, 3, "lower_edge_hertz", FLOATS)
    scalar_input(ctx, 4, "upper_edge_hertz", FLOATS)
    if ctx.input(3).dtype != ctx.input(4).dtype:
        raise ctx.fail("lower_edge_hertz and upper_edge_hertz must have the same element type")
    if ctx.attr("output_datatype") not in NUMERIC:
        raise ctx.fail(f"output_datatype must be numeric, got {ctx.attr('output_datatype')}")
    for value, name in ((bins, "num_mel_bins"), (length, "dft_length")):
        if value is not None and value < 1:
            raise ctx.fail(f"{name} must be >= 1, got {value}")
    shape = (UNKNOWN if length is None else int(length) // 2 + 1,
             UNKNOWN if bins is None else int(bins))
    return [TensorType(ctx.attr("output_datatype"), shape)]


def _float_dtype(ctx: InferContext, dtype: DType) -> DType:
    if dtype not in FLOATS:
        raise ctx.fail(f"dtype must be a float type, got {dtype.value}")
    return dtype


@define(Op.RANDOM_NORMAL, [], ["output"],
        {"dtype": DTYPE_ATTR(DType.F32), "mean": FLOAT(0.0), "scale": FLOAT(1.0), "seed": FLOAT(),
         "shape": _REQUIRED_INTS}, Group.RANDOM)
def _random_normal(ctx: InferContext) -> list[TensorType]:
    """-> ``shape`` of ``dtype``."""
    shape = ctx.attr("shape")
    if any(d < 0 for d in shape):
        raise ctx.fail(f"shape must not be negative, got {list(shape)}")
    return [TensorType(_float_dtype(ctx, ctx.attr("dtype")), tuple(shape))]


@define(Op.RANDOM_UNIFORM, [], ["output"],
        {"dtype": DTYPE_ATTR(DType.F32), "high": FLOAT(1.0), "low": FLOAT(0.0), "seed": FLOAT(),
         "shape": _REQUIRED_INTS}, Group.RANDOM)
def _random_uniform(ctx: InferContext) -> list[TensorType]:
    """-> ``shape`` of ``dtype``."""
    return _random_normal(ctx)


def _like(ctx: InferContext) -> list[TensorType]:
    """input -> its shape, of ``dtype`` (default: the input's element type)."""
    x = ctx.input(0)
    dtype = ctx.attr("dtype") or x.dtype
    return [x.with_dtype(_float_dtype(ctx, dtype))]


define(Op.RANDOM_NORMAL_LIKE, ["input"], ["output"],
       {"dtype": DTYPE_ATTR(), "mean": FLOAT(0.0), "scale": FLOAT(1.0), "seed": FLOAT()},
       Group.RANDOM)(_like)
define(Op.RANDOM_UNIFORM_LIKE, ["input"], ["output"],
       {"dtype": DTYPE_ATTR(), "high": FLOAT(1.0), "low": FLOAT(0.0), "seed": FLOAT()},
       Group.RANDOM)(_like)


@define(Op.BERNOULLI, ["input"], ["output"], {"dtype": DTYPE_ATTR(), "seed": FLOAT()},
        Group.RANDOM)
def _bernoulli(ctx: InferContext) -> list[TensorType]:
    """probabilities -> 0/1 draws of the same shape, of ``dtype`` (default: the input's)."""
    x = ctx.input(0)
    ctx.require_dtype(0, FLOATS)
    return [x.with_dtype(ctx.attr("dtype") or x.dtype)]


@define(Op.MULTINOMIAL, ["input"], ["output"],
        {"dtype": DTYPE_ATTR(DType.I32), "sample_size": INT(1), "seed": FLOAT()}, Group.RANDOM)
def _multinomial(ctx: InferContext) -> list[TensorType]:
    """unnormalized log-probabilities [batch, classes] -> class indices [batch, sample_size]."""
    ctx.require_dtype(0, FLOATS)
    x = ctx.input(0)
    if x.rank != 2:
        raise ctx.fail(f"input must have rank 2 ([batch, classes]), got {x}")
    if ctx.attr("dtype") not in _INDEX_TYPES:
        raise ctx.fail(f"dtype must be i32 or i64, got {ctx.attr('dtype').value}")
    if ctx.attr("sample_size") < 1:
        raise ctx.fail(f"sample_size must be >= 1, got {ctx.attr('sample_size')}")
    return [TensorType(ctx.attr("dtype"), (x.shape[0], ctx.attr("sample_size")))]

