"""The tiled recurrence of RNN / GRU / LSTM (compiler/lower/ops/rnn.py: f32, constant W and R):
the kernel-IR interpreter against the reference executor for every attribute (directions,
sequence lengths, initial states, peepholes, clip, activation lists, layout, GRU's
linear_before_reset, LSTM's input_forget) on hidden sizes off the vector width, on several
machines and under every candidate schedule; the kernels' structure (weights packed at compile
time and read as tiles, the unpacked ones unread); the scalar fallback for the rest."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nodegraph import (  # noqa: E402
    lowered_matches_reference,  # noqa: E402
    node_graph,
    tiles,
)
from test_lower_rnn import ACTIVATIONS, make_inputs  # noqa: E402

from kiln.compiler import reference  # noqa: E402
from kiln.compiler.ir.builder import GraphBuilder  # noqa: E402
from kiln.compiler.ir.graph import Graph  # noqa: E402
from kiln.compiler.ir.op import Op  # noqa: E402
from kiln.compiler.ir.types import TensorType  # noqa: E402
from kiln.compiler.lower import schedules  # noqa: E402
from kiln.compiler.lower.from_graph import LoweredGraph, interpret_lowered, lower_graph  # noqa: E402
from kiln.compiler.lower.inline import accesses  # noqa: E402
from kiln.compiler.machine import DEFAULT_MACHINE, Machine  # noqa: E402

AVX512 = Machine(512, 32, 32 * 1024, 1024 * 1024)
NEON = Machine(128, 32, 64 * 1024, 1024 * 1024)
OUTPUTS = {Op.RNN: 2, Op.GRU: 2, Op.LSTM: 3}
ALL = [Op.RNN, Op.GRU, Op.LSTM]


def recurrent_graph(op: Op, inputs: list[np.ndarray | None], attrs: Mapping[str, Any],
                    consts: tuple[int, ...] = (1, 2, 3)) -> tuple[Graph, dict[str, Any]]:
    """One ``op`` node; W, R and B (inputs 1-3) constant by default."""
    return node_graph(op, inputs, attrs, consts=consts, outputs=OUTPUTS[op])


def check(graph: Graph, feeds: Mapping[str, np.ndarray],
          machine: Machine = AVX512) -> LoweredGraph:
    """The lowered graph, interpreted, matches the reference executor."""
    return lowered_matches_reference(graph, feeds, machine)


def reads(lowered: LoweredGraph, name: str) -> bool:
    return any(accesses(k.body, name)[1] for s in lowered.steps for k in s.kernels)


# (attributes, make_inputs arguments): hidden 5 and 17 leave vector tails (4, 8, 16 lanes)
VARIANTS = [
    ({}, {"hidden": 5}),
    ({"direction": "reverse"}, {"hidden": 17, "lengths": [3, 1]}),
    ({"direction": "bidirectional"}, {"dirs": 2, "initial": True, "lengths": [2, 3]}),
    ({"layout": 1}, {"layout": 1, "initial": True, "hidden": 17}),
    ({"layout": 1, "direction": "bidirectional"},
     {"layout": 1, "dirs": 2, "lengths": [1, 4, 3], "batch": 3, "seq": 4}),
    ({"clip": 0.4}, {"bias": False, "hidden": 5}),
    ({}, {"lengths": [0, 2], "batch": 2}),
    ({"direction": "reverse"}, {"batch": 1, "seq": 9, "input_size": 7, "hidden": 33}),
]


@pytest.mark.parametrize("op", ALL)
@pytest.mark.parametrize(("attrs", "shape"), VARIANTS)
def test_tiled_variants(op: Op, attrs: dict, shape: dict) -> None:
    hidden = shape.get("hidden", 3)
    graph, feeds = recurrent_graph(op, make_inputs(op, 11, **shape),
                                   {"hidden_size": hidden, **attrs})
    lowered = check(graph, feeds)
    found = tiles(lowered)
    assert found
    # every product reads packed weights: the graph's W and R are no kernel's operands
    assert not reads(lowered, graph.nodes[-1].inputs[1].name)
    assert not reads(lowered, graph.nodes[-1].inputs[2].name)


@pytest.mark.parametrize("machine", [DEFAULT_MACHINE, AVX512, NEON])
@pytest.mark.parametrize("op", ALL)
def test_machines(machine: Machine, op: Op) -> None:
    inputs = make_inputs(op, 12, seq=3, batch=3, input_size=6, hidden=19, dirs=2,
                         initial=True, lengths=[3, 1, 2])
    graph, feeds = recurrent_graph(op, inputs, {"hidden_size": 19,
                                                "direction": "bidirectional"})
    check(graph, feeds, machine)


@pytest.mark.parametrize("op", ALL)
def test_activations(op: Op) -> None:
    names, alphas, betas = ACTIVATIONS[op]
    attrs = {"hidden_size": 6, "direction": "bidirectional", "activations": tuple(names),
             "activation_alpha": tuple(alphas), "activation_beta": tuple(betas)}
    graph, feeds = recurrent_graph(op, make_inputs(op, 13, dirs=2, initial=True, hidden=6),
                                   attrs)
    assert tiles(check(graph, feeds))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(lbr: int, bias: bool) -> None:
    inputs = make_inputs(Op.GRU, 14, hidden=9, initial=True, lengths=[2, 3], bias=bias)
    graph, feeds = recurrent_graph(Op.GRU, inputs, {"hidden_size": 9, "direction": "reverse",
                                                    "linear_before_reset": lbr})
    found = tiles(check(graph, feeds))
    # without linear_before_reset the reset gate scales h before the h gate's own product
    assert len({t.b.name for t in found}) == (2 if lbr else 3)


@pytest.mark.parametrize("couple", [0, 1])
def test_lstm_peepholes_and_input_forget(couple: int) -> None:
    inputs = make_inputs(Op.LSTM, 15, initial=True, peepholes=True, dirs=2, hidden=7)
    graph, feeds = recurrent_graph(Op.LSTM, inputs, {"hidden_size": 7, "input_forget": couple,
                                                     "direction": "bidirectional", "clip": 1.5})
    assert tiles(check(graph, feeds))


@pytest.mark.parametrize("wanted", [[None, "y_h", None], ["y", None, "y_c"]])
def test_only_some_outputs(wanted: list[str | None]) -> None:
    x, w, r, b, lengths = make_inputs(Op.LSTM, 16, lengths=[3, 2], hidden=5)
    builder = GraphBuilder(fold=False)
    values = [builder.add_input("x", TensorType.of(x)), builder.constant(w),
              builder.constant(r), builder.constant(b),
              builder.add_input("lengths", TensorType.of(lengths))]
    results = builder.add(Op.LSTM, values, {"hidden_size": 5}, outputs=wanted)
    graph = builder.finish([v for v in results if v is not None])
    assert tiles(check(graph, {"x": x, "lengths": lengths}))


def test_every_candidate_schedule() -> None:
    """Each product's schedule candidates (what ``kiln tune`` measures) all compute right."""
    inputs = make_inputs(Op.LSTM, 17, seq=3, batch=3, input_size=9, hidden=21,
                         lengths=[3, 1, 2])
    graph, feeds = recurrent_graph(Op.LSTM, inputs, {"hidden_size": 21,
                                                     "direction": "reverse"})
    with schedules.collect() as decisions:
        lower_graph(graph, AVX512)
    assert {d.signature for d in decisions} == {
        "gemm f32 batch=1 m=9 n=84 k=9 b=const", "gemm f32 batch=1 m=3 n=84 k=21 b=const"}
    for decision in {d.signature: d for d in decisions}.values():
        for params in decision.candidates:
            check(graph, feeds, AVX512.with_tuned({decision.signature: params}))


@pytest.mark.parametrize(("inputs", "consts"), [
    (make_inputs(Op.LSTM, 18, dtype=np.float64), (1, 2, 3)),
    (make_inputs(Op.LSTM, 18, dtype=np.float16), (1, 2, 3)),
    (make_inputs(Op.LSTM, 18), (1, 3)),  # R not constant
    (make_inputs(Op.LSTM, 18), (1, 2)),  # B not constant
])
def test_scalar_fallback(inputs: list[np.ndarray | None], consts: tuple[int, ...]) -> None:
    graph, feeds = recurrent_graph(Op.LSTM, inputs, {"hidden_size": 3}, consts)
    if inputs[0] is not None and inputs[0].dtype == np.float16:
        # half precision: the reference's tolerance (compiler/lower/ops/rnn.py computes in f32)
        lowered = lower_graph(graph, AVX512)
        for want, got in zip(reference.run(graph, feeds), interpret_lowered(lowered, feeds),
                             strict=True):
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                       rtol=2e-3, atol=2e-3)
    else:
        lowered = check(graph, feeds)
    assert not tiles(lowered)
    assert reads(lowered, graph.nodes[-1].inputs[2].name)
