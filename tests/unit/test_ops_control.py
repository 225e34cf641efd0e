"""If, Loop and Scan: type rules from the bodies' types and reference kernels vs plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType

F32 = DType.F32


def scalar(dtype: DType) -> TensorType:
    return TensorType(dtype, ())


# ---------------------------------------------------------------- If


def _if_graph(then_len: int, else_len: int) -> tuple[Graph, Value]:
    """out = cond ? x[:then_len] * 2 : x[:else_len] + y, both branches reading outer values."""
    b = GraphBuilder()
    cond = b.add_input("cond", scalar(DType.BOOL))
    x = b.add_input("x", TensorType(F32, (6,)))
    y = b.add_input("y", TensorType(F32, (else_len,)))
    then_b = b.sub("then")
    doubled = then_b.add1(Op.MUL, [_head(then_b, x, then_len), then_b.constant(np.float32(2))])
    else_b = b.sub("else")
    summed = else_b.add1(Op.ADD, [_head(else_b, x, else_len), y])
    (out,) = b.add(Op.IF, [cond], {"then_branch": then_b.finish([doubled]),
                                   "else_branch": else_b.finish([summed])})
    assert out is not None
    return b.finish([out]), out


def _head(b: GraphBuilder, x: Value, n: int) -> Value:
    starts, ends = b.constant(np.array([0])), b.constant(np.array([n]))
    return b.add1(Op.SLICE, [x, starts, ends])


def test_if_runs_the_chosen_branch() -> None:
    graph, out = _if_graph(4, 4)
    assert out.type == TensorType(F32, (4,))
    x, y = np.arange(6, dtype=np.float32), np.ones(4, np.float32)
    for cond, expected in ((True, x[:4] * 2), (False, x[:4] + y)):
        (got,) = reference.run(graph, {"cond": np.array(cond), "x": x, "y": y})
        np.testing.assert_array_equal(got, expected)


def test_if_merges_differing_dims_to_unknown() -> None:
    graph, out = _if_graph(5, 3)
    assert out.type == TensorType(F32, (UNKNOWN,))
    x, y = np.arange(6, dtype=np.float32), np.ones(3, np.float32)
    (got,) = reference.run(graph, {"cond": np.array(True), "x": x, "y": y})
    np.testing.assert_array_equal(got, x[:5] * 2)


def test_if_with_constant_cond_takes_that_branch_type() -> None:
    b = GraphBuilder()
    then_b, else_b = b.sub("then"), b.sub("else")
    branches = {"then_branch": then_b.finish([then_b.constant(np.zeros(2, np.float32))]),
                "else_branch": else_b.finish([else_b.constant(np.zeros(3, np.float32))])}
    (out,) = b.add(Op.IF, [b.constant(np.array(False))], branches)
    assert out is not None and out.type == TensorType(F32, (3,))


@pytest.mark.parametrize(
    ("then_value", "else_value", "message"),
    [
        (np.zeros(2, np.float32), np.zeros(2, np.int32), "element types differ"),
        (np.zeros(2, np.float32), np.zeros((2, 1), np.float32), "ranks differ"),
    ],
)
def test_if_errors(then_value: np.ndarray, else_value: np.ndarray, message: str) -> None:
    b = GraphBuilder()
    cond = b.add_input("cond", scalar(DType.BOOL))
    then_b, else_b = b.sub("then"), b.sub("else")
    branches = {"then_branch": then_b.finish([then_b.constant(then_value)]),
                "else_branch": else_b.finish([else_b.constant(else_value)])}
    with pytest.raises(KilnError, match=f"if \\(node 'choose'\\): output 0 .*{message}"):
        b.add(Op.IF, [cond], branches, name="choose")


def test_if_needs_a_bool_cond() -> None:
    b = GraphBuilder()
    cond = b.add_input("cond", TensorType(F32, ()))
    then_b, else_b = b.sub("then"), b.sub("else")
    branches = {"then_branch": then_b.finish([then_b.constant(np.zeros(1, np.float32))]),
                "else_branch": else_b.finish([else_b.constant(np.zeros(1, np.float32))])}
    with pytest.raises(KilnError, match="cond must be a single bool element"):
        b.add(Op.IF, [cond], branches)


# ---------------------------------------------------------------- Loop


def _loop_graph(trips: int | None, stop_at: float | None) -> tuple[Graph, list[Value | None]]:
    """acc += x * i for i < M (and while acc.sum() < stop_at); scan output: acc each step."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (3,)))
    limit = b.add_input("m", scalar(DType.I64)) if trips is None else b.constant(
        np.array(trips, np.int64))
    body = b.sub("body")
    i = body.add_input("i", scalar(DType.I64))
    cond_in = body.add_input("cond_in", scalar(DType.BOOL))
    acc = body.add_input("acc", TensorType(F32, (3,)))
    step = body.add1(Op.MUL, [x, body.add1(Op.CAST, [i], {"to": F32})])
    new_acc = body.add1(Op.ADD, [acc, step])
    if stop_at is None:
        cond_out = body.add1(Op.IDENTITY, [cond_in])
    else:
        total = body.add1(Op.REDUCE_SUM, [new_acc, body.constant(np.array([0]))], {"keepdims": 0})
        cond_out = body.add1(Op.LESS, [total, body.constant(np.float32(stop_at))])
    graph_body = body.finish([cond_out, new_acc, new_acc])
    cond = None if stop_at is None else b.constant(np.array(True))
    outs = b.add(Op.LOOP, [limit, cond, x], {"body": graph_body}, outputs=2)
    return b.finish([v for v in outs if v is not None]), outs


def _loop_expected(x: np.ndarray, trips: int, stop_at: float | None):
    acc, history = x.copy(), []
    for i in range(trips):
        acc = acc + x * i
        history.append(acc)
        if stop_at is not None and not acc.sum() < stop_at:
            break
    return acc, np.array(history, np.float32).reshape(-1, 3)


def test_loop_with_static_trip_count() -> None:
    graph, (final, stacked) = _loop_graph(4, None)
    assert final is not None and final.type == TensorType(F32, (3,))
    assert stacked is not None and stacked.type == TensorType(F32, (4, 3))
    x = np.array([1, 2, 3], np.float32)
    got = reference.run(graph, {"x": x})
    for g, e in zip(got, _loop_expected(x, 4, None), strict=True):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("trips", [0, 1, 10])
def test_loop_with_runtime_trip_count_and_condition(trips: int) -> None:
    graph, (_, stacked) = _loop_graph(None, 40.0)
    assert stacked is not None and stacked.type == TensorType(F32, (UNKNOWN, 3))
    x = np.array([1, 2, 3], np.float32)
    got = reference.run(graph, {"x": x, "m": np.array(trips, np.int64)})
    for g, e in zip(got, _loop_expected(x, trips, 40.0), strict=True):
        np.testing.assert_array_equal(g, e)


def test_loop_checks_its_body() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (3,)))
    body = b.sub("body")
    body.add_input("i", scalar(DType.I64))
    cond_in = body.add_input("cond", scalar(DType.BOOL))
    with pytest.raises(KilnError, match=r"loop: body takes 2 inputs; expected 2 \+ 1"):
        b.add(Op.LOOP, [None, None, x], {"body": body.finish([cond_in])})


def test_loop_carried_type_mismatch() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.I32, (3,)))
    body = b.sub("body")
    body.add_input("i", scalar(DType.I64))
    cond_in = body.add_input("cond", scalar(DType.BOOL))
    acc = body.add_input("acc", TensorType(F32, (3,)))
    with pytest.raises(KilnError, match="loop-carried value 0: initial value i32"):
        b.add(Op.LOOP, [None, None, x], {"body": body.finish([cond_in, acc])})


# ---------------------------------------------------------------- Scan


def _scan_graph(attrs: dict, xs_type: TensorType, ys_type: TensorType):
    """state += x_t * y_t (elementwise rows); scan outputs: the state and x_t each step."""
    b = GraphBuilder()
    init = b.add_input("init", TensorType(F32, (2,)))
    xs = b.add_input("xs", xs_type)
    ys = b.add_input("ys", ys_type)
    body = b.sub("body")
    state = body.add_input("state", TensorType(F32, (2,)))
    x_t = body.add_input("x_t", TensorType(F32, (2,)))
    y_t = body.add_input("y_t", TensorType(F32, (2,)))
    new_state = body.add1(Op.ADD, [state, body.add1(Op.MUL, [x_t, y_t])])
    shifted = body.add1(Op.IDENTITY, [x_t])
    outs = b.add(Op.SCAN, [init, xs, ys],
                 {"body": body.finish([new_state, new_state, shifted]), "num_scan_inputs": 2,
                  **attrs}, outputs=3)
    return b.finish([v for v in outs if v is not None]), outs


def test_scan_forward() -> None:
    graph, outs = _scan_graph({}, TensorType(F32, ("T", 2)), TensorType(F32, (5, 2)))
    assert [v.type for v in outs if v is not None] == [
        TensorType(F32, (2,)), TensorType(F32, (5, 2)), TensorType(F32, (5, 2))]
    rng = np.random.default_rng(0)
    init = rng.standard_normal(2).astype(np.float32)
    xs, ys = (rng.standard_normal((5, 2)).astype(np.float32) for _ in range(2))
    final, states, seen = reference.run(graph, {"init": init, "xs": xs, "ys": ys})
    expected = init + np.cumsum(xs * ys, axis=0)
    np.testing.assert_allclose(states, expected, rtol=1e-6)
    np.testing.assert_allclose(final, expected[-1], rtol=1e-6)
    np.testing.assert_array_equal(seen, xs)


def test_scan_axes_and_directions() -> None:
    attrs = {"scan_input_axes": [1, 0], "scan_input_directions": [1, 0],
             "scan_output_axes": [-1, 0], "scan_output_directions": [0, 1]}
    graph, outs = _scan_graph(attrs, TensorType(F32, (2, 4)), TensorType(F32, (4, 2)))
    assert [v.type for v in outs if v is not None] == [
        TensorType(F32, (2,)), TensorType(F32, (2, 4)), TensorType(F32, (4, 2))]
    rng = np.random.default_rng(1)
    init = rng.standard_normal(2).astype(np.float32)
    xs = rng.standard_normal((2, 4)).astype(np.float32)
    ys = rng.standard_normal((4, 2)).astype(np.float32)
    final, states, seen = reference.run(graph, {"init": init, "xs": xs, "ys": ys})
    x_steps = xs.T[::-1]  # scanned along axis 1, backwards
    expected = init + np.cumsum(x_steps * ys, axis=0)
    np.testing.assert_allclose(states, expected.T, rtol=1e-6)  # stacked on the last axis
    np.testing.assert_allclose(final, expected[-1], rtol=1e-6)
    np.testing.assert_array_equal(seen, x_steps[::-1])  # prepended each step


def test_scan_length_mismatch() -> None:
    with pytest.raises(KilnError, match=r"scan inputs have different sequence lengths \(5, 4\)"):
        _scan_graph({}, TensorType(F32, (5, 2)), TensorType(F32, (4, 2)))


def test_scan_bad_axis() -> None:
    with pytest.raises(KilnError, match=r"scan: scan_input_axes\[0\] 2 is out of range"):
        _scan_graph({"scan_input_axes": [2, 0]}, TensorType(F32, (5, 2)),
                    TensorType(F32, (5, 2)))


def test_scan_direction_list_length() -> None:
    with pytest.raises(KilnError, match=r"scan: expected 2 entries in scan_input_axes"):
        _scan_graph({"scan_input_directions": [0]}, TensorType(F32, (5, 2)),
                    TensorType(F32, (5, 2)))
