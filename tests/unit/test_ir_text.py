"""The IR text form: golden round trips, every syntactic feature, and parse errors."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import ExecutionError, ParseError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import ElidedTensor
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.parser import parse_graph
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ir.verify import verify

GOLDEN = """\
func @main(%x: f32[batch,3], %"onnx::w/0": f32[3]) -> (f32[batch,3], f16[batch,3]) {
  %c = constant() {value=dense<f32[]: [0.5]>} : f32[] loc("half")
  %y = add(%x, %"onnx::w/0") : f32[batch,3] loc("add/0")
  %z = leaky_relu(%y) {alpha=0.25} : f32[batch,3]
  %m = mul(%z, %c) : f32[batch,3]
  %h = cast(%m) {to=f16} : f16[batch,3]
  return %m, %h
}
"""


def test_golden_text_round_trips_and_verifies() -> None:
    graph = parse_graph(GOLDEN)
    assert print_graph(graph) == GOLDEN
    verify(graph)
    x = np.array([[1.0, -2.0, 3.0]], np.float32)
    w = np.array([0.0, 1.0, -4.0], np.float32)
    m, h = reference.run(graph, {"x": x, "onnx::w/0": w})
    y = x + w
    expected = np.where(y > 0, y, 0.25 * y) * 0.5
    np.testing.assert_array_equal(m, expected.astype(np.float32))
    assert h.dtype == np.float16


def test_defaults_are_filled_on_parse_and_omitted_on_print() -> None:
    graph = parse_graph(GOLDEN)
    leaky = [n for n in graph.nodes if n.op is Op.LEAKY_RELU][0]
    assert leaky.attrs["alpha"] == 0.25
    text = "func @f(%x: f32[2]) -> (f32[2]) {\n  %y = leaky_relu(%x) : f32[2]\n  return %y\n}\n"
    parsed = parse_graph(text)
    assert parsed.nodes[0].attrs["alpha"] == pytest.approx(0.01)
    assert print_graph(parsed) == text


def test_large_constants_are_elided_unless_asked() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (4, 5)))
    w = b.constant(np.arange(20, dtype=np.float32).reshape(4, 5), name="w")
    graph = b.finish([b.add1(Op.ADD, [x, w])])
    short = print_graph(graph)
    assert 'elided<f32[4,5] "sha256:' in short
    parsed = parse_graph(short)
    assert isinstance(parsed.nodes[0].attrs["value"], ElidedTensor)
    assert print_graph(parsed) == short
    with pytest.raises(ExecutionError, match="constant data was elided"):
        reference.run(parsed, {"x": np.zeros((4, 5), np.float32)})
    full = print_graph(graph, full_constants=True)
    assert "dense<f32[4,5]: [0.0, 1.0, 2.0," in full
    again = parse_graph(full)
    out = reference.run(again, {"x": np.ones((4, 5), np.float32)})[0]
    np.testing.assert_array_equal(out, np.arange(20, dtype=np.float32).reshape(4, 5) + 1)


@pytest.mark.parametrize(
    "dtype", [DType.F16, DType.BF16, DType.F32, DType.F64, DType.I8, DType.U64, DType.BOOL]
)
def test_constants_of_every_dtype_round_trip_exactly(dtype: DType) -> None:
    rng = np.random.default_rng(0)
    if dtype is DType.BOOL:
        data = rng.random(7) > 0.5
    elif dtype.is_int:
        info = np.iinfo(dtype.numpy)
        data = np.array([info.min, info.max, 0, 1, 2, 3, 4], dtype=dtype.numpy)
    else:
        data = np.array([np.nan, np.inf, -np.inf, 0.1, -3e-5, 1e4, 0.0]).astype(dtype.numpy)
        data[3:] *= rng.random(4).astype(dtype.numpy)
    b = GraphBuilder()
    graph = b.finish([b.constant(data, name="k")])
    parsed = parse_graph(print_graph(graph, full_constants=True))
    back = parsed.nodes[0].attrs["value"]
    assert back.dtype == data.dtype
    np.testing.assert_array_equal(back.view(np.uint8), data.view(np.uint8))


def test_absent_operands_and_symbolic_unknown_dims() -> None:
    text = (
        "func @main(%x: f32[?,n]) -> (f32[?,n]) {\n"
        "  %y = clip(%x, _, %hi) : f32[?,n]\n"
        "  return %y\n"
        "}\n"
    )
    with pytest.raises(ParseError, match="%hi is used before it is defined"):
        parse_graph(text)
    ok = text.replace("  %y", "  %hi = constant() {value=dense<f32[]: [6.0]>} : f32[]\n  %y")
    graph = parse_graph(ok)
    assert print_graph(graph) == ok
    assert graph.nodes[1].inputs[1] is None


def test_names_outside_the_plain_alphabet_are_quoted_and_read_back() -> None:
    builder = GraphBuilder("ONNX(LinearRegression)")  # skl2onnx names its graphs like this
    x = builder.add_input("input:0", TensorType(DType.F32, (2,)))
    graph = builder.finish([builder.add1(Op.RELU, [x])])
    text = print_graph(graph)
    assert text.startswith('func @"ONNX(LinearRegression)"(%"input:0": f32[2])')
    parsed = parse_graph(text)
    assert parsed.name == "ONNX(LinearRegression)"
    assert [v.name for v in parsed.inputs] == ["input:0"]
    assert print_graph(parsed) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("func @f(%x: f32[2]) -> (f32[2]) {\n  %y = frobnicate(%x) : f32[2]\n  return %y\n}",
         "unknown op 'frobnicate'"),
        ("func @f(%x: f32[2]) -> (f32[2]) {\n  %x = relu(%x) : f32[2]\n  return %x\n}",
         "value %x is defined twice"),
        ("func @f(%x: q32[2]) -> (f32[2]) {\n  return %x\n}", "unknown element type 'q32'"),
        ("func @f(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) {bogus=1} : f32[2]\n  return %y\n}",
         "relu has no attribute 'bogus'"),
        ("func @f(%x: f32[2]) -> (f32[3]) {\n  return %x\n}",
         "returns values whose types differ from its signature"),
        ("func @f() -> (f32[2]) {\n  %c = constant() {value=dense<f32[2]: [1.0]>} : f32[2]\n"
         "  return %c\n}", "f32[2] needs 2 elements, got 1"),
        ("func @f(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2]\n  return %y\n} extra",
         "expected end"),
        ("func @f(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2] $", "unexpected character"),
    ],
)
def test_parse_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_graph(text)
