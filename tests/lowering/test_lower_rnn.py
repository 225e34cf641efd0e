"""Lowerings of RNN, GRU and LSTM: the kernel-IR interpreter against the reference executor."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph

NAMES = {
    Op.RNN: ["X", "W", "R", "B", "sequence_lens", "initial_h"],
    Op.GRU: ["X", "W", "R", "B", "sequence_lens", "initial_h"],
    Op.LSTM: ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
}
GATES = {Op.RNN: 1, Op.GRU: 3, Op.LSTM: 4}
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12, np.float16: 2e-3}


def make_inputs(op: Op, seed: int, *, seq: int = 3, batch: int = 2, input_size: int = 2,
                hidden: int = 3, dirs: int = 1, layout: int = 0, bias: bool = True,
                lengths: list[int] | None = None, initial: bool = False,
                peepholes: bool = False, dtype: type = np.float32) -> list[np.ndarray | None]:
    rng = np.random.default_rng(seed)
    g = GATES[op]
    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)

    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(dtype)

    inputs: list[np.ndarray | None] = [
        draw(seq, batch, input_size) if layout == 0 else draw(batch, seq, input_size),
        draw(dirs, g * hidden, input_size), draw(dirs, g * hidden, hidden),
        draw(dirs, 2 * g * hidden) if bias else None,
        None if lengths is None else np.array(lengths, np.int32),
        draw(*state) if initial else None,
    ]
    if op is Op.LSTM:
        inputs += [draw(*state) if initial else None, draw(dirs, 3 * hidden) if peepholes else None]
    while inputs[-1] is None:
        inputs.pop()
    return inputs


def check(op: Op, inputs: list[np.ndarray | None], attrs: dict,
          outputs: list[bool] | None = None) -> None:
    """Lower ``op`` on ``inputs`` (present ones as graph inputs) and compare every output."""
    b = GraphBuilder()
    values = [None if d is None else b.add_input(n, TensorType.of(d))
              for n, d in zip(NAMES[op], inputs, strict=False)]
    count = 3 if op is Op.LSTM else 2
    wanted = outputs or [True] * count
    names = [f"out{i}" if keep else None for i, keep in enumerate(wanted)]
    results = b.add(op, values, attrs, outputs=names)
    graph = b.finish([v for v in results if v is not None])
    feeds = {n: d for n, d in zip(NAMES[op], inputs, strict=False) if d is not None}
    expected = reference.run(graph, feeds)
    got = interpret_lowered(lower_graph(graph), feeds)
    tol = TOLERANCE[inputs[0].dtype.type]  # type: ignore[union-attr]
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=tol,
                                   atol=tol)


ALL = [Op.RNN, Op.GRU, Op.LSTM]
VARIANTS = [
    ({}, {}),
    ({"direction": "reverse"}, {"lengths": [3, 1]}),
    ({"direction": "bidirectional"}, {"dirs": 2, "initial": True, "lengths": [2, 3]}),
    ({"layout": 1}, {"layout": 1, "initial": True}),
    ({"layout": 1, "direction": "bidirectional"}, {"layout": 1, "dirs": 2, "lengths": [1, 3]}),
    ({"clip": 0.4}, {"bias": False}),
    ({}, {"lengths": [0, 2]}),
    ({}, {"dtype": np.float64, "initial": True}),
    ({}, {"dtype": np.float16}),
]


@pytest.mark.parametrize("op", ALL)
@pytest.mark.parametrize(("attrs", "shape"), VARIANTS)
def test_recurrent_variants(op: Op, attrs: dict, shape: dict) -> None:
    check(op, make_inputs(op, 1, **shape), {"hidden_size": 3, **attrs})


@pytest.mark.parametrize("op", ALL)
def test_only_some_outputs(op: Op) -> None:
    inputs = make_inputs(op, 2, lengths=[3, 2])
    check(op, inputs, {}, [False, True] + ([False] if op is Op.LSTM else []))
    check(op, inputs, {}, [True, False] + ([True] if op is Op.LSTM else []))


ACTIVATIONS = {
    Op.RNN: (["LeakyRelu", "Elu"], [0.2, 0.7], []),
    Op.GRU: (["HardSigmoid", "Softsign", "Affine", "ScaledTanh"], [0.3, 0.5, 0.6],
             [0.4, 0.2, 1.5]),
    Op.LSTM: (["Relu", "Softplus", "ThresholdedRelu", "Sigmoid", "Tanh", "HardSigmoid"],
              [0.1, 0.25], [0.4]),
}


@pytest.mark.parametrize("op", ALL)
def test_activations_with_alpha_beta(op: Op) -> None:
    names, alphas, betas = ACTIVATIONS[op]
    attrs = {"direction": "bidirectional", "activations": tuple(names),
             "activation_alpha": tuple(alphas), "activation_beta": tuple(betas)}
    check(op, make_inputs(op, 3, dirs=2, initial=True), attrs)


def test_single_activation_list_serves_both_directions() -> None:
    attrs = {"direction": "bidirectional", "activations": ("Sigmoid", "Relu")}
    check(Op.GRU, make_inputs(Op.GRU, 4, dirs=2), attrs)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(lbr: int) -> None:
    check(Op.GRU, make_inputs(Op.GRU, 5, initial=True, lengths=[2, 3]),
          {"linear_before_reset": lbr, "direction": "reverse"})


@pytest.mark.parametrize("couple", [0, 1])
def test_lstm_peepholes_and_input_forget(couple: int) -> None:
    check(Op.LSTM, make_inputs(Op.LSTM, 6, initial=True, peepholes=True, dirs=2),
          {"input_forget": couple, "direction": "bidirectional", "clip": 1.5})


def test_kernels_are_a_projection_and_a_recurrence() -> None:
    inputs = make_inputs(Op.LSTM, 7)
    b = GraphBuilder()
    values = [b.add_input(n, TensorType.of(d)) for n, d in zip(NAMES[Op.LSTM], inputs,
                                                                strict=False)
              if d is not None]
    graph = b.finish([v for v in b.add(Op.LSTM, values, {}, outputs=3) if v is not None])
    (step,) = lower_graph(graph).steps
    assert len(step.kernels) == 2
    assert {s.name.split(".")[1] for s in step.scratch} == {"xw", "gates", "h", "c"}


def test_sequence_length_out_of_range_is_reported() -> None:
    inputs = make_inputs(Op.RNN, 8, lengths=[4, 1])
    b = GraphBuilder()
    values = [b.add_input(n, TensorType.of(d)) for n, d in zip(NAMES[Op.RNN], inputs,
                                                                strict=False)
              if d is not None]
    graph = b.finish([v for v in b.add(Op.RNN, values, {}, outputs=2, name="rec")
                      if v is not None])
    feeds = {n: d for n, d in zip(NAMES[Op.RNN], inputs, strict=False) if d is not None}
    with pytest.raises(KilnError, match=r"rnn 'rec': sequence_lens has a value out of range"):
        interpret_lowered(lower_graph(graph), feeds)


@pytest.mark.parametrize(("op", "attrs", "shape"), [
    (Op.LSTM, {"direction": "bidirectional"},
     {"seq": 6, "batch": 4, "input_size": 8, "hidden": 16, "dirs": 2, "lengths": [6, 1, 0, 4],
      "initial": True, "peepholes": True}),
    # batch x gates x hidden^2 large enough for parallel loops inside the step loop
    (Op.GRU, {"layout": 1}, {"seq": 3, "batch": 64, "input_size": 8, "hidden": 32,
                             "layout": 1}),
    (Op.RNN, {"direction": "reverse", "clip": 1.0}, {"seq": 5, "batch": 3, "hidden": 7}),
])
def test_compiled(op: Op, attrs: dict, shape: dict) -> None:
    from kiln.compiler import build

    inputs = make_inputs(op, 9, **shape)
    b = GraphBuilder()
    values = [None if d is None else b.add_input(n, TensorType.of(d))
              for n, d in zip(NAMES[op], inputs, strict=False)]
    graph = b.finish([v for v in b.add(op, values, attrs, outputs=3 if op is Op.LSTM else 2)
                      if v is not None])
    feeds = {n: d for n, d in zip(NAMES[op], inputs, strict=False) if d is not None}
    for e, g in zip(reference.run(graph, feeds), build(graph).run(feeds), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
