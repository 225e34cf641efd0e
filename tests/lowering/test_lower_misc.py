"""Lowerings of Det, the signal ops and the random ops: interpreter against the reference
(random ops: statistics, seed determinism, shapes and dtypes)."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph

RNG = np.random.default_rng(0)


def graph_of(op: Op, inputs: list[np.ndarray | str | None], attrs: dict | None = None,
             feeds: dict[str, np.ndarray] | None = None) -> Graph:
    """``op`` applied to constants (arrays) and graph inputs (names looked up in ``feeds``);
    None for an absent optional input."""
    b = GraphBuilder(fold=False)
    values: list[Value | None] = []
    for item in inputs:
        if item is None:
            values.append(None)
        elif isinstance(item, str):
            assert feeds is not None
            values.append(b.add_input(item, TensorType.of(feeds[item])))
        else:
            values.append(b.constant(item))
    return b.finish([b.add1(op, values, attrs or {})])


def check(op: Op, inputs: list[np.ndarray | str | None], attrs: dict | None = None,
          feeds: dict[str, np.ndarray] | None = None, tol: float = 1e-5) -> None:
    graph = graph_of(op, inputs, attrs, feeds)
    expected = reference.run(graph, feeds or {})
    got = interpret_lowered(lower_graph(graph), feeds or {})
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=tol,
                                   atol=tol)


# ---------------------------------------------------------------- Det


@pytest.mark.parametrize(("shape", "dtype"), [((3, 3), np.float32), ((2, 2, 4, 4), np.float64),
                                              ((1, 1), np.float32), ((2, 0, 0), np.float32),
                                              ((2, 3, 3), np.float16)])
def test_det(shape: tuple[int, ...], dtype: type) -> None:
    x = RNG.standard_normal(shape).astype(dtype)
    check(Op.DET, ["x"], feeds={"x": x}, tol=2e-3 if dtype is np.float16 else 1e-5)


def test_det_of_singular_matrices() -> None:
    x = np.array([[[1, 2], [2, 4]], [[0, 0], [0, 0]], [[0, 1], [1, 0]]], np.float32)
    check(Op.DET, ["x"], feeds={"x": x})


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize("op", [Op.HANN_WINDOW, Op.HAMMING_WINDOW, Op.BLACKMAN_WINDOW])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("dtype", [DType.F32, DType.F64, DType.I32])
def test_windows(op: Op, periodic: int, dtype: DType) -> None:
    check(op, [np.array(10, np.int64)], {"periodic": periodic, "output_datatype": dtype})


# ---------------------------------------------------------------- DFT / STFT


DFT_CASES = [
    ((2, 5, 2), {}, None, None),
    ((2, 6, 1), {"onesided": 1}, None, None),
    ((3, 4, 2), {"inverse": 1}, None, None),
    ((2, 4, 2), {"inverse": 1, "onesided": 1}, None, None),
    ((2, 4, 2), {"inverse": 1, "onesided": 1}, 7, None),
    ((5, 2, 1), {}, 7, 0),
    ((5, 6, 1), {}, 4, -2),
    ((3, 4, 2, 2), {"inverse": 1}, None, 1),
    ((3, 5, 1), {"onesided": 1}, 8, 1),
]


@pytest.mark.parametrize(("shape", "attrs", "length", "axis"), DFT_CASES)
def test_dft(shape: tuple[int, ...], attrs: dict, length: int | None, axis: int | None) -> None:
    feeds = {"x": RNG.standard_normal(shape).astype(np.float32)}
    inputs: list[np.ndarray | str | None] = ["x"]
    if length is not None or axis is not None:
        inputs.append(np.array(length if length is not None else shape[-2 if axis is None
                                                                         else axis], np.int64))
    if axis is not None:
        inputs.append(np.array(axis, np.int64))
    check(Op.DFT, inputs, attrs, feeds, tol=1e-5)


def test_dft_f64() -> None:
    feeds = {"x": RNG.standard_normal((4, 6, 2))}
    check(Op.DFT, ["x"], {"inverse": 1}, feeds, tol=1e-12)


@pytest.mark.parametrize(("window", "onesided", "parts"), [(True, 1, 1), (False, 0, 2),
                                                           (True, 0, 2)])
def test_stft(window: bool, onesided: int, parts: int) -> None:
    feeds = {"s": RNG.standard_normal((2, 17, parts)).astype(np.float32)}
    inputs: list[np.ndarray | str | None] = ["s", np.array(3, np.int64)]
    inputs.append(np.hanning(8).astype(np.float32) if window else None)
    inputs.append(np.array(8, np.int64))
    check(Op.STFT, inputs, {"onesided": onesided}, feeds)


# ---------------------------------------------------------------- MelWeightMatrix


@pytest.mark.parametrize("runtime_edges", [False, True])
def test_mel_weight_matrix(runtime_edges: bool) -> None:
    feeds = {"rate": np.array(8000), "low": np.array(100, np.float32),
             "high": np.array(3500, np.float32)}
    tail: list[np.ndarray | str | None] = (["rate", "low", "high"] if runtime_edges
                                    else [feeds["rate"], feeds["low"], feeds["high"]])
    check(Op.MEL_WEIGHT_MATRIX, [np.array(6, np.int64), np.array(32, np.int64), *tail],
          {"output_datatype": DType.F64}, feeds if runtime_edges else None)


# ---------------------------------------------------------------- random


def draw(op: Op, attrs: dict, feeds: dict[str, np.ndarray] | None = None) -> np.ndarray:
    inputs: list[np.ndarray | str | None] = list(feeds or {})
    graph = graph_of(op, inputs, attrs, feeds)
    (out,) = interpret_lowered(lower_graph(graph), feeds or {})
    assert out.shape == graph.outputs[0].type.shape
    assert out.dtype == graph.outputs[0].type.dtype.numpy
    return out


def test_random_normal_statistics_and_seed() -> None:
    attrs = {"shape": (40, 50), "mean": 1.5, "scale": 2.0, "seed": 7.0}
    out = draw(Op.RANDOM_NORMAL, attrs)
    assert abs(out.mean() - 1.5) < 0.15 and abs(out.std() - 2.0) < 0.15
    # Standardized, about 68% within one sigma and 95% within two.
    z = np.abs((out - 1.5) / 2.0)
    assert abs((z < 1).mean() - 0.683) < 0.04 and abs((z < 2).mean() - 0.954) < 0.02
    np.testing.assert_array_equal(out, draw(Op.RANDOM_NORMAL, attrs))
    assert not np.array_equal(out, draw(Op.RANDOM_NORMAL, {**attrs, "seed": 8.0}))


def test_random_uniform_statistics_and_dtype() -> None:
    attrs = {"shape": (2000,), "low": -1.0, "high": 3.0, "seed": 1.0, "dtype": DType.F64}
    out = draw(Op.RANDOM_UNIFORM, attrs)
    assert out.min() >= -1.0 and out.max() < 3.0
    assert abs(out.mean() - 1.0) < 0.1 and abs(out.var() - 16 / 12) < 0.1
    counts = np.histogram(out, bins=4, range=(-1, 3))[0]
    assert counts.min() > 400


@pytest.mark.parametrize("op", [Op.RANDOM_NORMAL_LIKE, Op.RANDOM_UNIFORM_LIKE])
def test_random_like_takes_shape_and_dtype(op: Op) -> None:
    feeds = {"x": np.zeros((3, 4), np.float16)}
    assert draw(op, {"seed": 2.0}, feeds).dtype == np.float16
    assert draw(op, {"seed": 2.0, "dtype": DType.F64}, feeds).dtype == np.float64


def test_bernoulli() -> None:
    p = np.tile(np.array([0.0, 0.25, 0.9, 1.0], np.float32), (400, 1))
    out = draw(Op.BERNOULLI, {"seed": 3.0}, {"p": p})
    np.testing.assert_allclose(out.mean(axis=0), [0.0, 0.25, 0.9, 1.0], atol=0.05)
    assert draw(Op.BERNOULLI, {"seed": 3.0, "dtype": DType.BOOL}, {"p": p}).dtype == np.bool_


def test_multinomial() -> None:
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    logits = (np.log(probs) + 3.0).astype(np.float32)  # unnormalized
    out = draw(Op.MULTINOMIAL, {"seed": 4.0, "sample_size": 1000, "dtype": DType.I64},
               {"l": logits})
    for row, expected in zip(out, probs, strict=True):
        np.testing.assert_allclose(np.bincount(row, minlength=3) / 1000, expected, atol=0.05)
    again = draw(Op.MULTINOMIAL, {"seed": 4.0, "sample_size": 1000, "dtype": DType.I64},
                 {"l": logits})
    np.testing.assert_array_equal(out, again)


# ---------------------------------------------------------------- compiled


@pytest.mark.parametrize(("op", "inputs", "attrs", "feeds"), [
    (Op.DET, ["x"], {}, {"x": RNG.standard_normal((64, 6, 6)).astype(np.float32)}),
    (Op.DFT, ["x"], {"onesided": 1}, {"x": RNG.standard_normal((4, 64, 1)).astype(np.float32)}),
    (Op.STFT, ["s", np.array(16, np.int64), np.hanning(64).astype(np.float32)], {},
     {"s": RNG.standard_normal((2, 256, 1)).astype(np.float32)}),
])
def test_compiled(op: Op, inputs: list, attrs: dict, feeds: dict[str, np.ndarray]) -> None:
    from kiln.compiler import build

    graph = graph_of(op, inputs, attrs, feeds)
    for e, g in zip(reference.run(graph, feeds), build(graph).run(feeds), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_compiled_random_matches_the_interpreter() -> None:
    from kiln.compiler import build

    graph = graph_of(Op.RANDOM_NORMAL, [], {"shape": (300, 200), "seed": 5.0})
    (out,) = build(graph).run({})
    assert abs(out.mean()) < 0.02 and abs(out.std() - 1) < 0.02
    small = graph_of(Op.RANDOM_UNIFORM, [], {"shape": (4, 5), "seed": 5.0})
    np.testing.assert_array_equal(build(small).run({})[0],
                                  interpret_lowered(lower_graph(small), {})[0])
