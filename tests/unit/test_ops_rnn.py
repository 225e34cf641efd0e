"""RNN, GRU and LSTM: type rules and reference kernels against torch and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType

INPUT_NAMES = {
    Op.RNN: ["X", "W", "R", "B", "sequence_lens", "initial_h"],
    Op.GRU: ["X", "W", "R", "B", "sequence_lens", "initial_h"],
    Op.LSTM: ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
}
GATES = {Op.RNN: 1, Op.GRU: 3, Op.LSTM: 4}
ONNX_NAME = {Op.RNN: "RNN", Op.GRU: "GRU", Op.LSTM: "LSTM"}


def run_kiln(op: Op, inputs: list[np.ndarray | None], attrs: dict, outputs: int = 3):
    """Run ``op`` with every present input as a graph input; returns all outputs."""
    b = GraphBuilder()
    values = [
        None if data is None else b.add_input(name, TensorType.of(data))
        for name, data in zip(INPUT_NAMES[op], inputs, strict=False)
    ]
    count = min(outputs, 3 if op is Op.LSTM else 2)
    results = b.add(op, values, attrs, outputs=count)
    graph = b.finish([v for v in results if v is not None])
    feeds = {n: d for n, d in zip(INPUT_NAMES[op], inputs, strict=False) if d is not None}
    return reference.run(graph, feeds)


def run_ort(op: Op, inputs: list[np.ndarray | None], attrs: dict):
    names = [n if d is not None else "" for n, d in zip(INPUT_NAMES[op], inputs, strict=False)]
    outputs = ["Y", "Y_h", "Y_c"][: 3 if op is Op.LSTM else 2]
    node = helper.make_node(ONNX_NAME[op], names, outputs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(d.dtype), d.shape)
         for n, d in zip(INPUT_NAMES[op], inputs, strict=False) if d is not None],
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(inputs[0].dtype), None)
         for n in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: d for n, d in zip(INPUT_NAMES[op], inputs, strict=False) if d is not None}
    return session.run(None, feeds)


def random_inputs(op: Op, rng, seq=5, batch=3, input_size=4, hidden=6, dirs=1, layout=0,
                  bias=True, lengths=False, initial=False, peepholes=False, dtype=np.float32):
    g = GATES[op]
    x_shape = (seq, batch, input_size) if layout == 0 else (batch, seq, input_size)
    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)

    def draw(*shape):
        return rng.standard_normal(shape).astype(dtype)

    inputs = [draw(*x_shape), draw(dirs, g * hidden, input_size) * 0.5,
              draw(dirs, g * hidden, hidden) * 0.5,
              draw(dirs, 2 * g * hidden) if bias else None,
              rng.integers(1, seq + 1, batch).astype(np.int32) if lengths else None,
              draw(*state) if initial else None]
    if op is Op.LSTM:
        inputs += [draw(*state) if initial else None, draw(dirs, 3 * hidden) if peepholes else None]
    while inputs[-1] is None:
        inputs.pop()
    return inputs


CASES = [
    (Op.RNN, {}, {}),
    (Op.RNN, {"direction": "reverse"}, {"initial": True}),
    (Op.RNN, {"direction": "bidirectional", "activations": ["Relu", "LeakyRelu"],
              "activation_alpha": [0.2]}, {"dirs": 2, "lengths": True}),
    (Op.GRU, {}, {}),
    (Op.GRU, {"linear_before_reset": 1, "direction": "reverse"}, {"lengths": True}),
    (Op.GRU, {"direction": "bidirectional", "clip": 0.7}, {"dirs": 2, "initial": True}),
    (Op.GRU, {"layout": 1, "activations": ["HardSigmoid", "Softsign"],
              "activation_alpha": [0.3], "activation_beta": [0.4]}, {"layout": 1}),
    (Op.LSTM, {}, {"bias": False}),
    (Op.LSTM, {"input_forget": 1}, {"peepholes": True, "initial": True}),
    (Op.LSTM, {"direction": "bidirectional"},
     {"dirs": 2, "lengths": True, "initial": True, "peepholes": True}),
    (Op.LSTM, {"direction": "reverse", "clip": 0.5, "layout": 1},
     {"layout": 1, "lengths": True, "initial": True}),
    (Op.LSTM, {"activations": ["Sigmoid", "Elu", "ScaledTanh"], "activation_alpha": [0.5, 0.9],
               "activation_beta": [1.5]}, {}),
]


@pytest.mark.parametrize(("op", "attrs", "shape_args"), CASES)
def test_matches_onnxruntime(op: Op, attrs: dict, shape_args: dict) -> None:
    rng = np.random.default_rng(len(str(attrs)) + 7 * len(shape_args))
    inputs = random_inputs(op, rng, **shape_args)
    attrs = {"hidden_size": 6, **attrs}
    got = run_kiln(op, inputs, attrs)
    if attrs.get("layout") == 1:
        # onnxruntime runs layout 0 only: give it the time-major transposes and turn back.
        batch_major = {0, 5, 6}  # X, initial_h, initial_c
        time_major = [d.swapaxes(0, 1) if i in batch_major and d is not None else d
                      for i, d in enumerate(inputs)]
        y, *states = run_ort(op, time_major, {**attrs, "layout": 0})
        expected = [y.transpose(2, 0, 1, 3), *(h.swapaxes(0, 1) for h in states)]
    else:
        expected = run_ort(op, inputs, attrs)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def _torch_to_onnx(weight: torch.Tensor, order: list[int], gates: int) -> np.ndarray:
    """Reorder torch's stacked gate blocks into ONNX's gate order."""
    blocks = np.split(weight.detach().numpy(), gates)
    return np.concatenate([blocks[i] for i in order])


# torch stacks LSTM gates as (i, f, g, o) and GRU gates as (r, z, n); ONNX as (i, o, f, c)
# and (z, r, h).
TORCH_ORDER = {Op.LSTM: [0, 3, 1, 2], Op.GRU: [1, 0, 2], Op.RNN: [0]}


@pytest.mark.parametrize("op", [Op.RNN, Op.GRU, Op.LSTM])
@pytest.mark.parametrize("layout", [0, 1])
def test_bidirectional_matches_torch(op: Op, layout: int) -> None:
    torch.manual_seed(0)
    seq, batch, input_size, hidden = 4, 2, 3, 5
    module = {Op.RNN: torch.nn.RNN, Op.GRU: torch.nn.GRU, Op.LSTM: torch.nn.LSTM}[op](
        input_size, hidden, bidirectional=True, batch_first=bool(layout))
    g, order = GATES[op], TORCH_ORDER[op]

    def params(kind: str) -> np.ndarray:
        return np.stack([
            _torch_to_onnx(getattr(module, f"{kind}_l0{suffix}"), order, g)
            for suffix in ("", "_reverse")
        ])

    w, r = params("weight_ih"), params("weight_hh")
    bias = np.concatenate([params("bias_ih"), params("bias_hh")], axis=1)
    x = np.random.default_rng(1).standard_normal(
        (seq, batch, input_size) if layout == 0 else (batch, seq, input_size)).astype(np.float32)
    # torch's GRU applies the reset gate after the recurrent matmul: linear_before_reset=1.
    attrs = {"direction": "bidirectional", "hidden_size": hidden, "layout": layout}
    if op is Op.GRU:
        attrs["linear_before_reset"] = 1
    got = run_kiln(op, [x, w, r, bias], attrs)
    y_torch, state = module(torch.from_numpy(x))
    states = state if op is Op.LSTM else (state,)
    y = got[0]  # [seq, dirs, batch, hidden] or [batch, seq, dirs, hidden]
    y = (y.transpose(0, 2, 1, 3) if layout == 0 else y).reshape(y_torch.shape)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(got[1:], states, strict=True):
        mine = mine if layout == 0 else mine.transpose(1, 0, 2)
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", [Op.RNN, Op.GRU, Op.LSTM])
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_types_agree_with_f32(op: Op, dtype: type) -> None:
    # onnxruntime's CPU recurrent kernels take f32 only, so f32 is the oracle here.
    inputs = random_inputs(op, np.random.default_rng(5), dirs=2, initial=True, dtype=dtype)
    attrs = {"direction": "bidirectional"}
    got = run_kiln(op, inputs, attrs)
    expected = run_kiln(op, [None if d is None else d.astype(np.float32) for d in inputs], attrs)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=1e-3 if dtype == np.float16 else 1e-5, atol=1e-3)


def test_sequence_lengths_freeze_state_and_zero_outputs() -> None:
    rng = np.random.default_rng(3)
    inputs = random_inputs(Op.LSTM, rng, seq=6, batch=3)
    lengths = np.array([6, 2, 4], np.int32)
    y, y_h, y_c = run_kiln(Op.LSTM, [*inputs, lengths], {"hidden_size": 6})
    for b, n in enumerate(lengths):
        alone = [inputs[0][:n, b:b + 1], *inputs[1:]]
        y1, h1, c1 = run_kiln(Op.LSTM, alone, {"hidden_size": 6})
        np.testing.assert_allclose(y[:n, :, b], y1[:, :, 0], rtol=1e-5, atol=1e-7)
        assert not y[n:, :, b].any()
        np.testing.assert_allclose(y_h[:, b], h1[:, 0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(y_c[:, b], c1[:, 0], rtol=1e-5, atol=1e-7)


def test_types_symbolic_and_optional_outputs() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("T", "N", 4)))
    w = b.add_input("w", TensorType(DType.F32, (2, 12, 4)))
    r = b.add_input("r", TensorType(DType.F32, (2, 12, 4)))
    h0 = b.add_input("h0", TensorType(DType.F32, (2, 8, 4)))
    y, y_h = b.add(Op.GRU, [x, w, r, None, None, h0], {"direction": "bidirectional"},
                   outputs=[None, "y_h"])
    assert y is None
    assert y_h is not None and y_h.type == TensorType(DType.F32, (2, 8, 4))
    w1 = b.add_input("w1", TensorType(DType.F32, (1, 3, 4)))
    r1 = b.add_input("r1", TensorType(DType.F32, (1, 3, 3)))
    y = b.add1(Op.RNN, [x, w1, r1])
    assert y is not None and y.type == TensorType(DType.F32, ("T", 1, "N", 3))


def _build(op: Op, types: list[TensorType], attrs: dict) -> None:
    b = GraphBuilder()
    values = [b.add_input(f"in{i}", t) for i, t in enumerate(types)]
    b.add(op, values, attrs, outputs=2)


@pytest.mark.parametrize(
    ("op", "types", "attrs", "message"),
    [
        (Op.LSTM, [TensorType(DType.F32, (5, 2, 4)), TensorType(DType.F32, (1, 10, 4)),
                   TensorType(DType.F32, (1, 10, 3))], {},
         r"W and R dim 1 \(10\) must be 4 \* hidden_size"),
        (Op.RNN, [TensorType(DType.F32, (5, 2, 4)), TensorType(DType.F32, (1, 3, 4)),
                  TensorType(DType.F32, (1, 3, 3))], {"direction": "sideways"},
         "direction must be forward, reverse or bidirectional, got 'sideways'"),
        (Op.RNN, [TensorType(DType.F32, (5, 2, 4)), TensorType(DType.F32, (1, 3, 4)),
                  TensorType(DType.F32, (1, 3, 3))], {"hidden_size": 4},
         r"R dim 2 does not fit \[1, 3, 4\]"),
        (Op.GRU, [TensorType(DType.I32, (5, 2, 4)), TensorType(DType.I32, (1, 9, 4)),
                  TensorType(DType.I32, (1, 9, 3))], {},
         "input 0 has element type i32"),
        (Op.GRU, [TensorType(DType.F32, (5, 2, 4)), TensorType(DType.F32, (1, 9, 4)),
                  TensorType(DType.F32, (1, 9, 3))], {"activations": ["Tanh", "Cube"]},
         "unknown activation function 'Cube'"),
        (Op.GRU, [TensorType(DType.F32, (5, 2, 4)), TensorType(DType.F32, (2, 9, 4)),
                  TensorType(DType.F32, (2, 9, 3))], {},
         "W dim 0 does not fit"),
    ],
)
def test_errors(op: Op, types: list[TensorType], attrs: dict, message: str) -> None:
    with pytest.raises(KilnError, match=message):
        _build(op, types, attrs)
