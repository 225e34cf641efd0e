"""Compiled f32 RNN / GRU / LSTM with constant weights (the tiled recurrence of
compiler/lower/ops/rnn.py) against the reference executor and onnxruntime: random small shapes
(hidden sizes on and off the vector width), every direction, sequence lengths, initial states,
peepholes, clip, activation lists, GRU's linear_before_reset, LSTM's input_forget, layout 1
(reference only: onnxruntime rejects it), two threads, and the benchmark's size.

float32 tolerance: rtol 1e-4, atol 1e-5 (summation orders and sigmoid / tanh approximations
differ)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import ModelProto, TensorProto, helper, numpy_helper

from kiln.compiler import build, reference
from kiln.frontends.onnx import load_onnx

SETTINGS = settings(max_examples=10, derandomize=True, deadline=None)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
# ONNX input names in order; W, R, B and P become initializers (constants)
NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
CONSTANT = {"W", "R", "B", "P"}


def recurrent_model(op: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
                    ) -> ModelProto:
    """One ``op`` node over ``arrays`` (by ONNX input name; absent ones left out)."""
    names = [n for n in NAMES if n in arrays]
    last = NAMES.index(names[-1])
    inputs = [n if n in arrays else "" for n in NAMES[:last + 1]]
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, **attrs)

    def info(name: str, array: np.ndarray) -> Any:
        kind = TensorProto.INT32 if array.dtype == np.int32 else TensorProto.FLOAT
        return helper.make_tensor_value_info(name, kind, array.shape)

    graph = helper.make_graph(
        [node], op.lower(), [info(n, arrays[n]) for n in names if n not in CONSTANT],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(arrays[n], n) for n in names if n in CONSTANT])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def draw_arrays(op: str, seed: int, steps: int, batch: int, input_size: int, hidden: int,
                dirs: int, layout: int = 0, lengths: list[int] | None = None,
                initial: bool = False, peepholes: bool = False, bias: bool = True
                ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = GATES[op]

    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    arrays = {"X": draw(steps, batch, input_size) if layout == 0 else draw(batch, steps,
                                                                           input_size),
              "W": draw(dirs, g * hidden, input_size) * 0.5,
              "R": draw(dirs, g * hidden, hidden) * 0.5}
    if bias:
        arrays["B"] = draw(dirs, 2 * g * hidden)
    if lengths is not None:
        arrays["sequence_lens"] = np.array(lengths, np.int32)
    if initial:
        arrays["initial_h"] = draw(*state)
        if op == "LSTM":
            arrays["initial_c"] = draw(*state)
    if peepholes:
        arrays["P"] = draw(dirs, 3 * hidden)
    return arrays


def check(op: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
          threads: int | None = None, with_ort: bool = True) -> None:
    """Compiled == reference, and (``with_ort``) == onnxruntime, on every output."""
    model = recurrent_model(op, arrays, attrs)
    graph = load_onnx(model)
    feeds = {n: a for n, a in arrays.items() if n not in CONSTANT}
    got = build(graph, threads=threads).run(feeds)
    wanted = [reference.run(graph, feeds)]
    if with_ort:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        wanted.append(session.run(None, feeds))
    for want in wanted:
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@st.composite
def recurrent_case(draw: st.DrawFn) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    op = draw(st.sampled_from(sorted(GATES)))
    steps, batch = draw(st.integers(1, 9)), draw(st.integers(1, 3))
    input_size = draw(st.integers(1, 12))
    hidden = draw(st.sampled_from([1, 3, 5, 8, 16, 17, 31, 33]))
    direction = draw(st.sampled_from(["forward", "reverse", "bidirectional"]))
    dirs = 2 if direction == "bidirectional" else 1
    # onnxruntime computes no step of an empty sequence; lengths start at 1
    lengths = (draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
               if draw(st.booleans()) else None)
    attrs: dict[str, Any] = {"hidden_size": hidden, "direction": direction}
    if draw(st.booleans()):
        attrs["clip"] = draw(st.sampled_from([0.5, 2.0]))
    if op == "GRU":
        attrs["linear_before_reset"] = draw(st.integers(0, 1))
    arrays = draw_arrays(op, draw(st.integers(0, 2**31 - 1)), steps, batch, input_size,
                         hidden, dirs, lengths=lengths, initial=draw(st.booleans()),
                         peepholes=op == "LSTM" and draw(st.booleans()),
                         bias=draw(st.integers(0, 4)) > 0)
    return op, arrays, attrs


@SETTINGS
@given(recurrent_case())
def test_matches_reference_and_onnxruntime(case: tuple) -> None:
    check(*case)


@pytest.mark.parametrize(("op", "attrs"), [
    ("LSTM", {"activations": ["HardSigmoid", "Softsign", "Relu"],
              "activation_alpha": [0.3], "activation_beta": [0.4], "input_forget": 1}),
    ("GRU", {"activations": ["Sigmoid", "LeakyRelu"], "activation_alpha": [0.2],
             "linear_before_reset": 1}),
    ("RNN", {"activations": ["ScaledTanh"], "activation_alpha": [0.7],
             "activation_beta": [1.3]}),
])
def test_activation_lists(op: str, attrs: dict[str, Any]) -> None:
    arrays = draw_arrays(op, 1, 5, 2, 7, 19, 1, lengths=[5, 3], initial=True)
    check(op, arrays, {"hidden_size": 19, **attrs})


@pytest.mark.parametrize("op", sorted(GATES))
def test_layout_one(op: str) -> None:
    arrays = draw_arrays(op, 2, 6, 3, 5, 21, 2, layout=1, lengths=[6, 1, 4], initial=True,
                         peepholes=op == "LSTM")
    check(op, arrays, {"hidden_size": 21, "direction": "bidirectional", "layout": 1},
          with_ort=False)


@pytest.mark.parametrize("op", sorted(GATES))
def test_large_batch_two_threads(op: str) -> None:
    """Several row tiles per recurrent product and parallel projection tasks."""
    arrays = draw_arrays(op, 3, 7, 40, 24, 48, 2, lengths=list(range(1, 8)) * 5 + [7] * 5)
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    check(op, arrays, {"hidden_size": 48, "direction": "bidirectional", **attrs}, threads=2)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_benchmark_size(threads: int) -> None:
    """benchmarks/models.py's LSTM layer: batch 1, 32 steps, 64 features, hidden 128."""
    check("LSTM", draw_arrays("LSTM", 4, 32, 1, 64, 128, 1), {"hidden_size": 128},
          threads=threads)
