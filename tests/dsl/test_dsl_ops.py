"""Every DSL operator, method and function against numpy (nn functions against torch).

Each test traces one model with many outputs (so that one compilation covers many ops), runs it
through the reference executor and the compiled library (``dslcheck.check``), and compares with
numpy computing the same expression on the same arrays. Shapes and values are drawn from seeded
generators: random broadcasting pairs, axes (negative ones, tuples, None) and keepdims; symbolic
dims (``"n"``) are bound at build time by the inputs' shapes. Tolerances: see dslcheck.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from dslcheck import check

from kiln.compiler.ir.types import DType
from kiln.frontends import dsl

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
F = torch.nn.functional

SEEDS = range(4)


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _broadcast_pair(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast: ``b`` is a suffix of ``a``'s rank, and each shared axis has
    a 1 on at most one side."""
    a = [int(d) for d in rng.integers(1, 5, size=rng.integers(1, 5))]
    b = a[len(a) - int(rng.integers(1, len(a) + 1)):]
    for i in range(1, len(b) + 1):
        side = rng.integers(0, 3)
        if side == 1:
            a[-i] = 1
        elif side == 2:
            b[-i] = 1
    return tuple(a), tuple(b)


def _spec(shape: tuple[int, ...], dtype: dsl.DTypeSpec = dsl.f32, symbolic: bool = True
          ) -> dsl.TensorSpec:
    """A spec of ``shape`` whose first dim is the symbol n (when not 1: 1 would broadcast)."""
    dims: list[int | str] = list(shape)
    if symbolic and dims and dims[0] != 1:
        dims[0] = "n"
    return dtype[tuple(dims)]


def _torch(fn, *arrays: object, **kwargs) -> np.ndarray:  # type: ignore[no-untyped-def]
    result = fn(*(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in arrays),
                **kwargs)
    return result.numpy()


# ------------------------------------------------------------------------ elementwise

@pytest.mark.parametrize("seed", SEEDS)
def test_float_operators_broadcast(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a_shape, b_shape = _broadcast_pair(rng)
    x, y = _normal(rng, a_shape), _normal(rng, b_shape)
    c = _normal(rng, b_shape)

    def f(x, y):  # type: ignore[no-untyped-def]
        positive = abs(y) + 0.5
        return (x + y, x - y, x * y, x / positive, (abs(x) + 0.5) ** y, x ** 2, 2.0 - x, 3 * x,
                x / 2, 1.5 / (abs(x) + 1), -x, x + c, c - x, c * x, dsl.maximum(x, y),
                dsl.minimum(x, c), dsl.where(x > y, x, y), dsl.where(x > 0, x, 0.0),
                x < y, x <= y, x > y, x >= y, dsl.floor(x) == dsl.floor(y),
                dsl.floor(x) != dsl.floor(y), (x > 0) & (y > 0), (x > 0) | (y > 0),
                (x > 0) ^ (y > 0), ~(x > 0), x >= 0.25)

    model = dsl.trace(f, x=_spec(a_shape), y=_spec(b_shape, symbolic=False))
    d, e = x.astype(np.float64), y.astype(np.float64)
    expected = [d + e, d - e, d * e, d / (abs(e) + 0.5), (abs(d) + 0.5) ** e, d ** 2, 2 - d,
                3 * d, d / 2, 1.5 / (abs(d) + 1), -d, d + c, c - d, c * d, np.maximum(d, e),
                np.minimum(d, c), np.where(x > y, d, e), np.where(x > 0, d, 0.0)]
    expected = [r.astype(np.float32) for r in expected] + [
        x < y, x <= y, x > y, x >= y, np.floor(x) == np.floor(y), np.floor(x) != np.floor(y),
        (x > 0) & (y > 0), (x > 0) | (y > 0), (x > 0) ^ (y > 0), ~(x > 0), x >= 0.25]
    check(model, {"x": x, "y": y}, expected)


@pytest.mark.parametrize("dtype", [dsl.i32, dsl.i64])
def test_integer_operators(dtype: dsl.DTypeSpec) -> None:
    rng = np.random.default_rng(7)
    np_type = dtype.dtype.numpy
    x = rng.integers(-50, 50, (3, 4)).astype(np_type)
    y = rng.integers(-50, 50, (4,)).astype(np_type)

    def f(x, y):  # type: ignore[no-untyped-def]
        return (x + y, x - y, x * y, x + 3, 2 * x, 7 - x, -x, abs(x), x & y, x | y, x ^ y, ~x,
                x < y, x == y, x != 3, dsl.maximum(x, y), dsl.where(x > y, x, 0),
                x.sum(0), x.max(1), x.min(), x.astype(dsl.f32))

    model = dsl.trace(f, x=_spec(x.shape, dtype), y=dtype[4])
    expected = [x + y, x - y, x * y, x + 3, 2 * x, 7 - x, -x, abs(x), x & y, x | y, x ^ y, ~x,
                x < y, x == y, x != 3, np.maximum(x, y), np.where(x > y, x, 0).astype(np_type),
                x.sum(0).astype(np_type), x.max(1), x.min(), x.astype(np.float32)]
    check(model, {"x": x, "y": y}, expected)


def test_unary_functions() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, (5, 6)).astype(np.float32)

    def f(x):  # type: ignore[no-untyped-def]
        # NumPy scalars take the tensor's element type, as Python numbers do.
        return (dsl.exp(x), dsl.log(abs(x) + 0.1), dsl.sqrt(abs(x)), dsl.abs(x), dsl.tanh(x),
                dsl.sin(x), dsl.cos(x), dsl.erf(x), dsl.floor(x), dsl.ceil(x),
                dsl.clip(x, -0.5, 0.5), dsl.clip(x, None, 0.2), dsl.clip(x, lo=-0.1),
                (x * 10).astype(dsl.i32), dsl.cast(x, "f64"), (x > 0).astype(dsl.f32),
                dsl.exp(np.float32(1.5) * np.ones(3, np.float32)), np.float64(0.5) * x,
                x - np.float32(1))

    model = dsl.trace(f, x=dsl.f32["n", 6])
    d = x.astype(np.float64)
    floats = [np.exp(d), np.log(abs(d) + 0.1), np.sqrt(abs(d)), abs(d), np.tanh(d), np.sin(d),
              np.cos(d), np.vectorize(math.erf)(d), np.floor(d), np.ceil(d), np.clip(d, -0.5, 0.5),
              np.minimum(d, 0.2), np.maximum(d, -0.1)]
    expected = [r.astype(np.float32) for r in floats] + [
        (x * np.float32(10)).astype(np.int32), d, (x > 0).astype(np.float32),
        np.full(3, np.exp(1.5), np.float32), x * np.float32(0.5), x - np.float32(1)]
    check(model, {"x": x}, expected)


@pytest.mark.parametrize("dtype", [dsl.f16, dsl.f64])
def test_other_float_types(dtype: dsl.DTypeSpec) -> None:
    np_type = dtype.dtype.numpy
    x = np.random.default_rng(2).uniform(-1, 1, (3, 4)).astype(np_type)

    def f(x):  # type: ignore[no-untyped-def]
        return x * 2 + 1, dsl.exp(x), x.sum(-1), x @ x.T, dsl.nn.softmax(x), x.astype(dsl.f32)

    model = dsl.trace(f, x=dtype["n", 4])
    d = x.astype(np.float64)
    softmax = np.exp(d) / np.exp(d).sum(-1, keepdims=True)
    expected = [r.astype(np_type) for r in (d * 2 + 1, np.exp(d), d.sum(-1), d @ d.T, softmax)]
    check(model, {"x": x}, [*expected, x.astype(np.float32)])


# ------------------------------------------------------------------------- reductions

def _axis(rng: np.random.Generator, rank: int) -> int | tuple[int, ...] | None:
    kind = rng.integers(0, 3)
    if kind == 0:
        return None
    if kind == 1:
        return int(rng.integers(-rank, rank))
    count = int(rng.integers(1, rank + 1))
    return tuple(int(a) - rank * int(rng.integers(0, 2))
                 for a in rng.choice(rank, size=count, replace=False))


@pytest.mark.parametrize("seed", SEEDS)
def test_reductions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(1, 5)))
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    rank = len(shape)
    axes = [_axis(rng, rank) for _ in range(5)]
    keeps = [bool(k) for k in rng.integers(0, 2, size=5)]
    arg_axis = [None, int(rng.integers(-rank, rank))]
    names = ["sum", "mean", "max", "min", "prod"]

    def f(x):  # type: ignore[no-untyped-def]
        methods = [getattr(x, n)(a, k) for n, a, k in zip(names, axes, keeps, strict=True)]
        functions = [getattr(dsl, n)(x, axis=a, keepdims=k)
                     for n, a, k in zip(names, axes, keeps, strict=True)]
        args = [x.argmax(a, keepdims=k) for a in arg_axis for k in (False, True)]
        return (*methods, *functions, *args, dsl.argmin(x, arg_axis[1]), x.sum(()))

    model = dsl.trace(f, x=_spec(shape))
    reduced = [getattr(np, n)(x.astype(np.float64), axis=a, keepdims=k).astype(np.float32)
               for n, a, k in zip(names, axes, keeps, strict=True)]
    args = [np.argmax(x, axis=a, keepdims=k) for a in arg_axis for k in (False, True)]
    check(model, {"x": x}, [*reduced, *reduced, *args, np.argmin(x, arg_axis[1]), x])


# ------------------------------------------------------------------------- indexing

KEYS = [np.s_[0], np.s_[-1], np.s_[1], np.s_[:, 1:5], np.s_[..., ::2], np.s_[None],
        np.s_[::-1], np.s_[1:, ::-2, 3], np.s_[..., None, -2], np.s_[:, [0, 2, -1]],
        np.s_[:, np.array([[1, 0], [2, 3]])], np.s_[1:100, -100:2], np.s_[-2::-3, None, ...],
        np.s_[:, 5:1:-2, -1], np.s_[..., 4:0:-1], np.s_[:, :, None, ::3], np.s_[:, 3:3],
        np.s_[-3:, -4:-1, -7::2], np.s_[[-1, 0]]]


@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic"])
def test_indexing(symbolic: bool) -> None:
    x = _normal(np.random.default_rng(3), (4, 6, 7))
    model = dsl.trace(lambda x: tuple(x[k] for k in KEYS), name="index",
                      x=_spec(x.shape, symbolic=symbolic))
    check(model, {"x": x}, [x[k] for k in KEYS])


# ---------------------------------------------------------------------- shape methods

def test_shape_methods() -> None:
    rng = np.random.default_rng(4)
    x = _normal(rng, (2, 3, 4))
    s = _normal(rng, (3, 1))

    def f(x, s):  # type: ignore[no-untyped-def]
        return (x.reshape(-1, 4), x.reshape("n", -1), x.reshape((4, 3, -1)),
                dsl.reshape(x, ["n", 12]), x.transpose(2, 0, 1), x.transpose(), x[0].T,
                dsl.transpose(x, [1, 0, 2]), x.flatten(), x.flatten(2), x.flatten(0),
                x.flatten(-2), x.unsqueeze(-1), x.unsqueeze(1), x[:, :1].squeeze(1),
                s.squeeze(), s.squeeze(-1), s.expand(3, 5), s.expand(2, -1, 4),
                x.astype(dsl.f64), len(x[0]) * x)

    model = dsl.trace(f, x=_spec(x.shape), s=dsl.f32[3, 1])
    expected = [x.reshape(-1, 4), x.reshape(2, -1), x.reshape(4, 3, -1), x.reshape(2, 12),
                x.transpose(2, 0, 1), x.transpose(), x[0].T, x.transpose(1, 0, 2),
                x.reshape(2, -1), x.reshape(2, 3, 4), x.reshape(-1), x.reshape(2, 12),
                x[..., None], x[:, None], x[:, 0], s[:, 0], s[:, 0],
                np.broadcast_to(s, (3, 5)), np.broadcast_to(s, (2, 3, 4)), x.astype(np.float64),
                3 * x]
    check(model, {"x": x, "s": s}, expected)


def test_joining_and_picking() -> None:
    rng = np.random.default_rng(5)
    x, y = _normal(rng, (2, 3, 4)), _normal(rng, (2, 5, 4))
    c = _normal(rng, (2, 1, 4))
    table = _normal(rng, (6, 3))
    ids = np.array([[0, 5, -1], [2, 2, 3]])

    def f(x, y):  # type: ignore[no-untyped-def]
        return (dsl.concat([x, y, c], axis=-2), dsl.concat([x, x], 0), dsl.stack([x, x * 2], -1),
                dsl.stack([x[0], x[1]]), *dsl.split(y, [1, 3, 1], axis=1), *dsl.split(x, 2, -1),
                dsl.gather(table, ids), dsl.gather(x, [2, 0], axis=1), dsl.gather(x, -1, axis=2),
                dsl.pad(x, 1), dsl.pad(x, ((0, 0), (1, 2), (3, 0)), value=-1.5),
                dsl.pad(x, ((0, 0), (2, 1), (1, 3)), mode="reflect"),
                dsl.pad(x, (1, 2), mode="edge"), dsl.pad(x, ((1, 0), (0, 2), (3, 1)), mode="wrap"),
                dsl.zeros((2, 3)), dsl.ones([4], dsl.i32), dsl.constant([[1.5, 2.0]]),
                dsl.constant(np.arange(3), dtype="f64"), dsl.constant(2) + dsl.constant(3))

    model = dsl.trace(f, x=_spec(x.shape), y=_spec(y.shape))
    expected = [np.concatenate([x, y, c], -2), np.concatenate([x, x]),
                np.stack([x, x * 2], -1), np.stack([x[0], x[1]]), *np.split(y, [1, 4], axis=1),
                *np.split(x, 2, -1), np.take(table, ids, 0), np.take(x, [2, 0], 1),
                np.take(x, -1, 2), np.pad(x, 1),
                np.pad(x, ((0, 0), (1, 2), (3, 0)), constant_values=-1.5),
                np.pad(x, ((0, 0), (2, 1), (1, 3)), mode="reflect"),
                np.pad(x, (1, 2), mode="edge"), np.pad(x, ((1, 0), (0, 2), (3, 1)), mode="wrap"),
                np.zeros((2, 3), np.float32), np.ones(4, np.int32),
                np.array([[1.5, 2.0]], np.float32), np.arange(3, dtype=np.float64), np.int64(5)]
    check(model, {"x": x, "y": y}, expected)


# ---------------------------------------------------------------------------- matmul

MATMUL_SHAPES = [((4, 5), (5, 3)), ((2, 1, 4, 5), (3, 5, 2)), ((5,), (2, 5, 3)),
                 ((2, 3, 5), (5,)), ((7,), (7,)), ((1, 4, 6), (3, 6, 2))]


@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES)
def test_matmul(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    a, b = _normal(rng, a_shape), _normal(rng, b_shape)
    w = _normal(rng, b_shape)

    model = dsl.trace(lambda a, b: (a @ b, dsl.matmul(a, w), a @ w), name="mm",
                      a=_spec(a_shape), b=dsl.TensorSpec(DType.F32, b_shape))
    check(model, {"a": a, "b": b}, [a @ b, a @ w, a @ w])


def test_reflected_matmul_and_numpy_operands() -> None:
    rng = np.random.default_rng(6)
    x, w = _normal(rng, (3, 4)), _normal(rng, (5, 3))
    model = dsl.trace(lambda x: (w @ x, dsl.matmul(w, x), w + x[0, 0]), x=dsl.f32[3, 4])
    check(model, {"x": x}, [w @ x, w @ x, w + x[0, 0]])


# ------------------------------------------------------------------------ nn functions

def test_activations_against_torch() -> None:
    x = np.random.default_rng(8).uniform(-6, 6, (3, 4, 5)).astype(np.float32)
    nn = dsl.nn

    def f(x):  # type: ignore[no-untyped-def]
        return (nn.relu(x), nn.leaky_relu(x), nn.leaky_relu(x, 0.2), nn.gelu(x),
                nn.gelu(x, approximate="tanh"), nn.sigmoid(x), nn.tanh(x), nn.silu(x),
                nn.softplus(x), nn.elu(x), nn.elu(x, 0.5), nn.hardswish(x), nn.softmax(x),
                nn.softmax(x, 1), nn.log_softmax(x), nn.log_softmax(x, -3), nn.dropout(x))

    model = dsl.trace(f, x=dsl.f32["n", 4, 5])
    expected = [_torch(F.relu, x), _torch(F.leaky_relu, x), _torch(F.leaky_relu, x, 0.2),
                _torch(F.gelu, x), _torch(F.gelu, x, approximate="tanh"), _torch(torch.sigmoid, x),
                _torch(torch.tanh, x), _torch(F.silu, x), _torch(F.softplus, x), _torch(F.elu, x),
                _torch(F.elu, x, 0.5), _torch(F.hardswish, x), _torch(F.softmax, x, -1),
                _torch(F.softmax, x, 1), _torch(F.log_softmax, x, -1),
                _torch(F.log_softmax, x, -3), x]
    check(model, {"x": x}, expected)


CONVS = [  # (weight shape, bias, stride, padding, dilation, groups)
    ((4, 3, 3, 3), True, 1, 0, 1, 1),
    ((6, 3, 3, 2), False, 2, 1, 1, 1),
    ((4, 3, 3, 3), True, (2, 1), (1, 2), (2, 1), 1),
    ((6, 1, 3, 3), True, 1, "same", 1, 3),
    ((4, 3, 2, 4), False, 1, "same", (1, 2), 1),
    ((2, 3, 1, 1), True, 1, "valid", 1, 1),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d_against_torch() -> None:
    rng = np.random.default_rng(9)
    x = _normal(rng, (2, 3, 9, 8))
    weights = [(_normal(rng, w), _normal(rng, (w[0],)) if b else None, *rest)
               for w, b, *rest in CONVS]

    def f(x):  # type: ignore[no-untyped-def]
        return tuple(dsl.nn.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=g)
                     for w, b, s, p, d, g in weights)

    model = dsl.trace(f, x=dsl.f32["n", 3, 9, 8])
    expected = [
        F.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                 None if b is None else torch.from_numpy(b), stride=s, padding=p,
                 dilation=d, groups=g).numpy()
        for w, b, s, p, d, g in weights
    ]
    check(model, {"x": x}, expected)


def test_pools_and_normalization_against_torch() -> None:
    rng = np.random.default_rng(10)
    x = _normal(rng, (2, 3, 7, 6))
    mean, var = _normal(rng, (3,)), rng.uniform(0.5, 2, 3).astype(np.float32)
    gamma, beta = _normal(rng, (3,)), _normal(rng, (3,))
    ln_w, ln_b = _normal(rng, (7, 6)), _normal(rng, (7, 6))
    nn = dsl.nn

    def f(x):  # type: ignore[no-untyped-def]
        return (nn.max_pool2d(x, 2), nn.max_pool2d(x, 3, stride=2, padding=1),
                nn.max_pool2d(x, (3, 2), stride=(1, 2), padding=(1, 0)),
                nn.avg_pool2d(x, 2), nn.avg_pool2d(x, 3, 2, 1),
                nn.avg_pool2d(x, 3, 2, 1, count_include_pad=False), nn.global_avg_pool2d(x),
                nn.batch_norm(x, mean, var, gamma, beta), nn.batch_norm(x, mean, var, eps=0.1),
                nn.layer_norm(x, 6), nn.layer_norm(x, (7, 6), ln_w, ln_b, eps=1e-3),
                nn.layer_norm(x, [6], ln_w[0]))

    model = dsl.trace(f, x=dsl.f32["n", 3, 7, 6])
    t = torch.from_numpy
    tx = t(x)
    expected = [F.max_pool2d(tx, 2), F.max_pool2d(tx, 3, 2, 1), F.max_pool2d(tx, (3, 2), (1, 2),
                                                                              (1, 0)),
                F.avg_pool2d(tx, 2), F.avg_pool2d(tx, 3, 2, 1),
                F.avg_pool2d(tx, 3, 2, 1, count_include_pad=False),
                F.adaptive_avg_pool2d(tx, 1),
                F.batch_norm(tx, t(mean), t(var), t(gamma), t(beta)),
                F.batch_norm(tx, t(mean), t(var), eps=0.1), F.layer_norm(tx, (6,)),
                F.layer_norm(tx, (7, 6), t(ln_w), t(ln_b), eps=1e-3),
                F.layer_norm(tx, (6,), t(ln_w[0]))]
    check(model, {"x": x}, [e.numpy() for e in expected])


def test_linear_and_embedding_against_torch() -> None:
    rng = np.random.default_rng(11)
    x = _normal(rng, (2, 3, 5))
    w, b = _normal(rng, (4, 5)), _normal(rng, (4,))
    table = _normal(rng, (10, 4))
    ids = rng.integers(0, 10, (2, 3)).astype(np.int64)

    def f(x, w_in, ids):  # type: ignore[no-untyped-def]
        return (dsl.nn.linear(x, w, b), dsl.nn.linear(x, w), dsl.nn.linear(x, w_in, b),
                dsl.nn.embedding(ids, table), dsl.nn.embedding(ids, dsl.constant(table)))

    model = dsl.trace(f, x=dsl.f32["n", 3, 5], w_in=dsl.f32[4, 5], ids=dsl.i64["n", 3])
    t = torch.from_numpy
    expected = [F.linear(t(x), t(w), t(b)), F.linear(t(x), t(w)), F.linear(t(x), t(w), t(b)),
                F.embedding(t(ids), t(table)), F.embedding(t(ids), t(table))]
    check(model, {"x": x, "w_in": w, "ids": ids}, [e.numpy() for e in expected])


def test_attention_against_torch() -> None:
    rng = np.random.default_rng(12)
    q, k, v = _normal(rng, (2, 3, 5, 8)), _normal(rng, (2, 3, 6, 8)), _normal(rng, (2, 3, 6, 4))
    q3 = _normal(rng, (4, 6, 8))
    keep = rng.random((5, 6)) > 0.3
    keep[:, 0] = True  # no row fully masked (torch gives NaN there)
    bias = _normal(rng, (2, 1, 5, 6))
    sdpa = dsl.nn.scaled_dot_product_attention

    def f(q, k, v, q3):  # type: ignore[no-untyped-def]
        return (sdpa(q, k, v), sdpa(q, k, v, keep), sdpa(q, k, v, bias), sdpa(q, k, v, scale=0.3),
                sdpa(q3, q3, q3, causal=True), sdpa(q, k, v, causal=True), sdpa(q[0, 0], k, v))

    model = dsl.trace(f, q=dsl.f32["n", 3, 5, 8], k=dsl.f32["n", 3, 6, 8], v=dsl.f32["n", 3, 6, 4],
                      q3=dsl.f32[4, "s", 8])
    t = torch.from_numpy
    attend = F.scaled_dot_product_attention
    expected = [attend(t(q), t(k), t(v)), attend(t(q), t(k), t(v), t(keep)),
                attend(t(q), t(k), t(v), t(bias)), attend(t(q), t(k), t(v), scale=0.3),
                attend(t(q3), t(q3), t(q3), is_causal=True),
                attend(t(q), t(k), t(v), is_causal=True), attend(t(q[0, 0]), t(k), t(v))]
    check(model, {"q": q, "k": k, "v": v, "q3": q3}, [e.numpy() for e in expected])


# ------------------------------------------------------------------------------ tracing

# ruff reads the strings in an annotation's subscript as forward references to names.
@dsl.model
def _annotated(x: dsl.f32["batch", 3], y: dsl.f32[3]) -> dsl.Tensor:  # noqa: F821, UP037
    return x * y


@dsl.model(x=dsl.f32["batch", 3], name="two_outputs")
def _keyword_specs(x):  # type: ignore[no-untyped-def]
    return x, x + 1


def test_model_api() -> None:
    assert dsl.f32["batch", 784] == dsl.TensorSpec(dtype=DType.F32, shape=("batch", 784))
    assert dsl.i64[5].shape == (5,) and dsl.bool_[()].shape == ()
    assert _annotated.input_specs == {"x": dsl.f32["batch", 3], "y": dsl.f32[3]}
    assert [v.name for v in _annotated.graph.inputs] == ["x", "y"]
    assert [v.name for v in _annotated.graph.outputs] == ["output"]
    assert _annotated.name == "_annotated"
    assert _keyword_specs.name == "two_outputs"
    assert [v.name for v in _keyword_specs.graph.outputs] == ["output_0", "output_1"]
    assert str(_keyword_specs.graph.outputs[0].type) == "f32[batch,3]"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.array([1, -2, 3], np.float32)
    check(_annotated, {"x": x, "y": y}, [x * y])
    check(_keyword_specs, {"x": x}, [x, x + 1])


class _Scaler:
    """A callable object with ``forward`` (as a layer has): traced by its forward's inputs."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def forward(self, inp):  # type: ignore[no-untyped-def]
        return inp * self.factor

    def __call__(self, *args):  # type: ignore[no-untyped-def]
        return self.forward(*args)


def test_trace_layers_and_composed_models() -> None:
    scaled = dsl.trace(_Scaler(2.5), x=dsl.f32["n", 3])
    assert [v.name for v in scaled.graph.inputs] == ["x"] and scaled.name == "_Scaler"

    @dsl.model
    def outer(x: dsl.f32["n", 3], y: dsl.f32[3]):  # type: ignore[no-untyped-def]  # noqa: F821, UP037
        return _annotated(x, y) + scaled(x)

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.array([1, -2, 3], np.float32)
    check(scaled, {"x": x}, [x * np.float32(2.5)])
    check(outer, {"x": x, "y": y}, [x * y + x * np.float32(2.5)])
    rows = dsl.trace(lambda x: list(x), x=dsl.f32[3, 2])  # iterating a static first axis
    assert [str(v.type) for v in rows.graph.outputs] == ["f32[2]"] * 3


def test_nodes_are_named_after_the_source_line() -> None:
    """Every node a line makes carries that line as its name (printed as loc(...))."""
    def f(x):  # type: ignore[no-untyped-def]
        y = dsl.nn.softmax(x @ np.ones((3, 2), np.float32))
        return y[0]

    graph = dsl.trace(f, x=dsl.f32[4, 3]).graph
    body = f.__code__.co_firstlineno
    lines = {n.op.value: int(n.name.rpartition(":")[2]) for n in graph.nodes}
    files = {n.name.rpartition(":")[0] for n in graph.nodes}
    assert len(files) == 1 and os.path.samefile(files.pop(), __file__)
    assert lines["matmul"] == lines["softmax"] == body + 1
    assert lines["slice"] == lines["squeeze"] == body + 2
