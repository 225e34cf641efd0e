"""Numpy kernels of the matrix-product family: Gemm, MatMul (plain, integer, quantized), Einsum,
Attention, LinearAttention and RotaryEmbedding."""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from .nn_quant import requantize, zero_point
from .nn_window import compute_dtype
from .registry import KernelContext, kernel


def _float_work(dtype: np.dtype) -> np.dtype:
    """Matmuls of narrow floats run in f32 (numpy's f16 matmul is slow and less accurate)."""
    return compute_dtype(dtype) if dtype.kind == "f" or dtype.name == "bfloat16" else dtype


@kernel(Op.MATMUL)
def matmul(ctx: KernelContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    work = _float_work(a.dtype)
    return np.matmul(a.astype(work, copy=False), b.astype(work, copy=False))


@kernel(Op.GEMM)
def gemm(
    ctx: KernelContext, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None
) -> np.ndarray:
    work = _float_work(a.dtype)
    a = a.T if ctx.attr("transA") else a
    b = b.T if ctx.attr("transB") else b
    y = np.matmul(a.astype(work, copy=False), b.astype(work, copy=False))
    alpha, beta = float(ctx.attr("alpha")), float(ctx.attr("beta"))
    if alpha != 1.0:
        y = y * work.type(alpha) if work.kind == "f" else y * alpha
    if c is not None:
        y = y + (c.astype(work) if beta == 1.0 else c.astype(work) * beta)
    return y


def _rows(zp: np.ndarray | None, rank: int) -> np.ndarray:
    """A zero point per row of A (a vector) broadcast against [..., M, K]."""
    values = zero_point(zp).astype(np.float64)
    return (
        values.reshape(-1, 1)
        if values.ndim == 1 and values.size > 1 and rank > 1
        else (values.reshape(()) if values.size == 1 else values)
    )


def _shifted_product(
    a: np.ndarray, a_zp: np.ndarray | None, b: np.ndarray, b_zp: np.ndarray | None
) -> np.ndarray:
    """(a - a_zp) @ (b - b_zp) computed exactly in f64 (8-bit products are small)."""
    b_values = zero_point(b_zp).astype(np.float64)
    b_values = b_values.reshape(()) if b_values.size == 1 else b_values
    return np.matmul(a.astype(np.float64) - _rows(a_zp, a.ndim), b.astype(np.float64) - b_values)


@kernel(Op.MATMUL_INTEGER)
def matmul_integer(
    ctx: KernelContext,
    a: np.ndarray,
    b: np.ndarray,
    a_zp: np.ndarray | None = None,
    b_zp: np.ndarray | None = None,
) -> np.ndarray:
    return np.rint(_shifted_product(a, a_zp, b, b_zp)).astype(np.int32)


@kernel(Op.QLINEAR_MATMUL)
def qlinear_matmul(
    ctx: KernelContext,
    a: np.ndarray,
    a_scale: np.ndarray,
    a_zp: np.ndarray,
    b: np.ndarray,
    b_scale: np.ndarray,
    b_zp: np.ndarray,
    y_scale: np.ndarray,
    y_zp: np.ndarray,
) -> np.ndarray:
    acc = _shifted_product(a, a_zp, b, b_zp)
    a_s = np.asarray(a_scale, np.float32)
    a_s = a_s.reshape(-1, 1) if a_s.size > 1 else a_s.reshape(())
    b_s = np.asarray(b_scale, np.float32)
    b_s = b_s if b_s.size > 1 else b_s.reshape(())
    multiplier = (a_s * b_s / np.asarray(y_scale, np.float32).reshape(())).astype(np.float32)
    return requantize(acc.astype(np.float32) * multiplier, zero_point(y_zp).reshape(()), y_zp.dtype)


@kernel(Op.EINSUM)
def einsum(ctx: KernelContext, *operands: np.ndarray) -> np.ndarray:
    work = _float_work(operands[0].dtype)
    equation = ctx.attr("equation").replace(" ", "")
    return np.einsum(equation, *(o.astype(work, copy=False) for o in operands), optimize=True)


def _split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """[B, S, H * D] -> [B, H, S, D]."""
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _additive(mask: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if mask.dtype == np.bool_:
        return np.where(mask, dtype.type(0), dtype.type(-np.inf))
    return mask.astype(dtype)


def _position_bias(
    q_len: int,
    kv_len: int,
    offset: np.ndarray,
    causal: bool,
    left: int,
    right: int,
    dtype: np.dtype,
) -> np.ndarray:
    """0/-inf bias of the causal frontier and sliding window; ``offset`` is a scalar or a
    per-batch vector (giving a [B, 1, q, kv] bias)."""
    per_batch = offset.ndim > 0
    offset = offset.reshape(-1, 1, 1) if per_batch else offset
    distance = np.arange(q_len)[:, None] + offset - np.arange(kv_len)[None, :]
    allowed = np.ones(distance.shape, bool)
    if causal:
        allowed &= distance >= 0
    if left >= 0:
        allowed &= distance <= left
    if right >= 0:
        allowed &= -distance <= right
    bias = np.where(allowed, dtype.type(0), dtype.type(-np.inf))
    return bias[:, None] if per_batch else bias


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    peak = np.max(scores, axis=-1, keepdims=True)
    peak = np.where(np.isneginf(peak), 0, peak)
    e = np.exp(scores - peak)
    total = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total)


@kernel(Op.ATTENTION)
def attention(
    ctx: KernelContext,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    past_k: np.ndarray | None = None,
    past_v: np.ndarray | None = None,
    nonpad: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    packed = q.ndim == 3
    if packed:
        kv_heads = int(ctx.attr("kv_num_heads"))
        q = _split_heads(q, int(ctx.attr("q_num_heads")))
        k, v = _split_heads(k, kv_heads), _split_heads(v, kv_heads)
    dtype = q.dtype
    present_k = k if past_k is None else np.concatenate([past_k, k], axis=2)
    present_v = v if past_v is None else np.concatenate([past_v, v], axis=2)
    q_len, kv_len = q.shape[2], present_k.shape[2]
    scale = ctx.attr("scale")
    scale = 1.0 / np.sqrt(q.shape[3]) if scale is None else scale
    root = dtype.type(np.sqrt(scale))
    bias = np.zeros((q_len, kv_len), dtype)
    if mask is not None:
        width = kv_len - mask.shape[-1]
        if width > 0:  # a short mask leaves the trailing keys masked out
            fill = False if mask.dtype == np.bool_ else -np.inf
            mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, width)], constant_values=fill)
        bias = bias + _additive(mask, dtype)
    if past_k is not None:
        offset = np.array(past_k.shape[2])
    elif nonpad is not None:
        offset = nonpad.reshape(-1).astype(np.int64) - q_len
    else:
        offset = np.array(0)
    left, right = int(ctx.attr("left_window_size")), int(ctx.attr("right_window_size"))
    causal = bool(ctx.attr("is_causal"))
    if causal or left >= 0 or right >= 0:
        bias = bias + _position_bias(q_len, kv_len, offset, causal, left, right, dtype)
    if nonpad is not None:
        keep = np.arange(kv_len)[None, :] < nonpad.reshape(-1, 1)
        bias = bias + np.where(keep, dtype.type(0), dtype.type(-np.inf))[:, None, None, :]
    group = q.shape[1] // present_k.shape[1]
    keys = np.repeat(present_k, group, axis=1) if group > 1 else present_k
    values = np.repeat(present_v, group, axis=1) if group > 1 else present_v
    # numpy may widen narrow floats in matmul; the scores are defined in the input type.
    scores = np.matmul(q * root, np.swapaxes(keys * root, -1, -2)).astype(dtype)
    softcap = float(ctx.attr("softcap"))
    if softcap > 0:
        scores = (np.tanh(scores / dtype.type(softcap)) * dtype.type(softcap)).astype(dtype)
    with_bias = scores + bias
    precision = ctx.attr("softmax_precision")
    probs = _softmax_rows(with_bias.astype(precision.numpy if precision else dtype))
    probs = np.where(np.isneginf(np.max(bias, axis=-1, keepdims=True)), 0, probs)
    mode = int(ctx.attr("qk_matmul_output_mode"))
    qk = {2: with_bias, 3: probs}.get(mode, scores).astype(dtype)
    y = np.matmul(probs.astype(dtype), values)
    if packed:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], q_len, -1)
    return y, present_k, present_v, qk


@kernel(Op.LINEAR_ATTENTION)
def linear_attention(
    ctx: KernelContext,
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    past: np.ndarray | None = None,
    decay: np.ndarray | None = None,
    beta: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    hq, hkv = int(ctx.attr("q_num_heads")), int(ctx.attr("kv_num_heads"))
    batch, steps, _ = query.shape
    f32 = np.float32
    q = _split_heads(query, hq).astype(f32)
    k = _split_heads(key, hkv).astype(f32)
    v = _split_heads(value, hkv).astype(f32)
    d_k, d_v = q.shape[3], v.shape[3]
    if decay is not None:
        per_head = decay.shape[-1] == hkv
        g = (
            decay.reshape(batch, steps, hkv, 1).transpose(0, 2, 1, 3)
            if per_head
            else _split_heads(decay, hkv)
        ).astype(f32)
    if beta is not None:
        rate = beta.reshape(batch, steps, beta.shape[-1], 1).transpose(0, 2, 1, 3).astype(f32)
    state = np.zeros((batch, hkv, d_k, d_v), f32) if past is None else past.astype(f32)
    scale = float(ctx.attr("scale")) or 1.0 / np.sqrt(d_k)
    group = hq // hkv
    outputs = np.zeros((batch, hq, steps, d_v), f32)
    # The recurrence is sequential in time by definition; each step is vectorized.
    for t in range(steps):
        k_t, v_t = k[:, :, t], v[:, :, t]
        if decay is not None:
            state = state * np.exp(g[:, :, t])[..., None]
        if beta is not None:
            v_t = rate[:, :, t] * (v_t - np.einsum("bhdm,bhd->bhm", state, k_t))
        state = state + k_t[..., :, None] * v_t[..., None, :]
        read = np.repeat(state, group, axis=1) if group > 1 else state
        outputs[:, :, t] = scale * np.einsum("bhd,bhdm->bhm", q[:, :, t], read)
    out = outputs.transpose(0, 2, 1, 3).reshape(batch, steps, hq * d_v)
    return out, state


@kernel(Op.ROTARY_EMBEDDING)
def rotary_embedding(
    ctx: KernelContext,
    x: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    position_ids: np.ndarray | None = None,
) -> np.ndarray:
    shape = x.shape
    if x.ndim == 4:
        x = x.transpose(0, 2, 1, 3)  # [B, S, H, D]
    else:
        heads = int(ctx.attr("num_heads"))
        x = x.reshape(shape[0], shape[1], heads, shape[2] // heads)
    dim = int(ctx.attr("rotary_embedding_dim")) or x.shape[3]
    if position_ids is not None:
        cos, sin = cos[position_ids], sin[position_ids]
    if cos.shape[-1] != dim // 2 or sin.shape[-1] != dim // 2:
        raise ctx.fail(f"cos/sin caches must end in rotary_embedding_dim / 2 = {dim // 2}")
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    rotate = x[..., :dim]
    if ctx.attr("interleaved"):
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate[..., : dim // 2], rotate[..., dim // 2 :]
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if ctx.attr("interleaved"):
        rotated = np.stack([real, imag], axis=-1).reshape(rotate.shape)
    else:
        rotated = np.concatenate([real, imag], axis=-1)
    out = np.concatenate([rotated, x[..., dim:]], axis=-1)
    return out.transpose(0, 2, 1, 3) if len(shape) == 4 else out.reshape(shape)
