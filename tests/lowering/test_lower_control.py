"""Lowerings of If, Loop and Scan (bodies inlined): interpreter against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph

F32, I64, BOOL = DType.F32, DType.I64, DType.BOOL


def check(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    expected = reference.run(graph, feeds)
    got = interpret_lowered(lower_graph(graph), feeds)
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-6)
    return got


# ---------------------------------------------------------------- If


def if_graph(constant_cond: bool | None = None) -> Graph:
    """cond ? (x + [1, 2, 3], x * y) : (x + y + 10, y): branches read outer values and own
    constants (a vector one and scalar ones)."""
    b = GraphBuilder()
    cond = (b.add_input("cond", TensorType(BOOL, ())) if constant_cond is None
            else b.constant(np.array([constant_cond])))
    x = b.add_input("x", TensorType(F32, (3,)))
    y = b.add_input("y", TensorType(F32, (3,)))
    then_b = b.sub("then")
    first = then_b.add1(Op.ADD, [x, then_b.constant(np.array([1, 2, 3], np.float32))])
    second = then_b.add1(Op.MUL, [x, y])
    else_b = b.sub("else")
    total = else_b.add1(Op.ADD, [else_b.add1(Op.ADD, [x, y]), else_b.constant(np.float32(10))])
    outs = b.add(Op.IF, [cond], {"then_branch": then_b.finish([first, second]),
                                 "else_branch": else_b.finish([total, y])}, outputs=2)
    return b.finish([v for v in outs if v is not None])


@pytest.mark.parametrize("cond", [True, False])
def test_if_runtime_cond(cond: bool) -> None:
    feeds = {"cond": np.array(cond), "x": np.arange(3, dtype=np.float32),
             "y": np.array([2, -1, 5], np.float32)}
    check(if_graph(), feeds)


@pytest.mark.parametrize("cond", [True, False])
def test_if_constant_cond_inlines_one_branch(cond: bool) -> None:
    graph = if_graph(cond)
    feeds = {"x": np.arange(3, dtype=np.float32), "y": np.array([2, -1, 5], np.float32)}
    check(graph, feeds)
    (step,) = lower_graph(graph).steps
    assert len(step.kernels) == 1


def test_nested_if() -> None:
    b = GraphBuilder()
    c1 = b.add_input("c1", TensorType(BOOL, ()))
    c2 = b.add_input("c2", TensorType(BOOL, ()))
    x = b.add_input("x", TensorType(F32, (2,)))
    outer_then = b.sub("outer_then")
    inner_then, inner_else = outer_then.sub("inner_then"), outer_then.sub("inner_else")
    doubled = outer_then.add1(Op.ADD, [x, x])
    (picked,) = outer_then.add(Op.IF, [c2], {
        "then_branch": inner_then.finish([inner_then.add1(Op.MUL, [doubled, doubled])]),
        "else_branch": inner_else.finish([inner_else.add1(Op.NEG, [doubled])])})
    assert picked is not None
    outer_else = b.sub("outer_else")
    (out,) = b.add(Op.IF, [c1], {"then_branch": outer_then.finish([picked]),
                                 "else_branch": outer_else.finish([x])})
    assert out is not None
    graph = b.finish([out])
    for a in (True, False):
        for c in (True, False):
            check(graph, {"c1": np.array(a), "c2": np.array(c),
                          "x": np.array([1.5, -2], np.float32)})


# ---------------------------------------------------------------- Loop


def loop_graph(limit: int | None, runtime_limit: bool = False, stop_at: float | None = None,
               cond_input: bool | None = None, scan: bool = True) -> Graph:
    """acc += x * i, count += i (and while sum(acc) < stop_at); scan output acc, and the
    carried pair (a, b) swapped every iteration."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (3,)))
    m: Value | None = None
    if runtime_limit:
        m = b.add_input("m", TensorType(I64, ()))
    elif limit is not None:
        m = b.constant(np.array([limit], np.int64))
    body = b.sub("body")
    i = body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond_in", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, (3,)))
    count = body.add_input("count", TensorType(I64, ()))
    first = body.add_input("first", TensorType(F32, (2,)))
    second = body.add_input("second", TensorType(F32, (2,)))
    new_acc = body.add1(Op.ADD, [acc, body.add1(Op.MUL, [x, body.add1(Op.CAST, [i],
                                                                          {"to": F32})])])
    new_count = body.add1(Op.ADD, [count, i])
    if stop_at is None:
        cond_out = body.add1(Op.IDENTITY, [cond_in])
    else:
        total = body.add1(Op.REDUCE_SUM, [new_acc, body.constant(np.array([0]))],
                          {"keepdims": 0})
        cond_out = body.add1(Op.LESS, [total, body.constant(np.float32(stop_at))])
    outputs = [cond_out, new_acc, new_count, second, first] + ([new_acc] if scan else [])
    cond = None if cond_input is None else b.add_input("c", TensorType(BOOL, ()))
    initial = [b.add_input(n, TensorType(t, s)) for n, t, s in
               (("acc0", F32, (3,)), ("count0", I64, ()), ("a0", F32, (2,)), ("b0", F32, (2,)))]
    results = b.add(Op.LOOP, [m, cond, *initial], {"body": body.finish(outputs)},
                    outputs=len(outputs) - 1)
    return b.finish([v for v in results if v is not None])


def loop_feeds(**extra: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {"x": np.array([1, 2, -1], np.float32), "acc0": np.zeros(3, np.float32),
             "count0": np.array(5), "a0": np.array([1, 2], np.float32),
             "b0": np.array([3, 4], np.float32)}
    feeds.update(extra)
    return feeds


@pytest.mark.parametrize("trips", [0, 1, 4])
def test_loop_constant_trip_count_with_scan_output(trips: int) -> None:
    check(loop_graph(trips), loop_feeds())


@pytest.mark.parametrize("trips", [0, 3, 5])
def test_loop_runtime_trip_count(trips: int) -> None:
    check(loop_graph(None, runtime_limit=True, scan=False), loop_feeds(m=np.array(trips)))


@pytest.mark.parametrize("start", [True, False])
def test_loop_condition_stops_early(start: bool) -> None:
    graph = loop_graph(10, stop_at=7.0, cond_input=True, scan=False)
    check(graph, loop_feeds(c=np.array(start)))


def test_loop_without_trip_count_runs_until_the_condition_fails() -> None:
    graph = loop_graph(None, stop_at=12.0, scan=False)
    check(graph, loop_feeds())


def test_loop_with_nested_if_in_body() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (2,)))
    body = b.sub("body")
    i = body.add_input("i", TensorType(I64, (1,)))
    cond_in = body.add_input("cond_in", TensorType(BOOL, (1,)))
    acc = body.add_input("acc", TensorType(F32, (2,)))
    even = body.add1(Op.EQUAL, [body.add1(Op.MOD, [i, body.constant(np.array([2]))]),
                                body.constant(np.array([0]))])
    then_b, else_b = body.sub("then"), body.sub("else")
    (chosen,) = body.add(Op.IF, [even], {
        "then_branch": then_b.finish([then_b.add1(Op.ADD, [acc, x])]),
        "else_branch": else_b.finish([else_b.add1(Op.MUL, [acc, x])])})
    assert chosen is not None
    limit = b.add_input("m", TensorType(I64, ()))
    results = b.add(Op.LOOP, [limit, None, b.add_input("acc0", TensorType(F32, (2,)))],
                    {"body": body.finish([cond_in, chosen])})
    graph = b.finish([v for v in results if v is not None])
    check(graph, {"x": np.array([2, -1], np.float32), "m": np.array(5),
                  "acc0": np.array([1, 1], np.float32)})


def test_loop_reads_outer_values_through_a_nested_loop() -> None:
    """An inner Loop whose body reads a value of the outer body and one of the main graph."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (2,)))
    outer = b.sub("outer")
    outer.add_input("i", TensorType(I64, ()))
    outer_cond = outer.add_input("cond", TensorType(BOOL, ()))
    acc = outer.add_input("acc", TensorType(F32, (2,)))
    step = outer.add1(Op.ADD, [acc, x])
    inner = outer.sub("inner")
    inner.add_input("j", TensorType(I64, ()))
    inner_cond = inner.add_input("cond2", TensorType(BOOL, ()))
    inner_acc = inner.add_input("acc2", TensorType(F32, (2,)))
    inner_out = inner.add1(Op.ADD, [inner_acc, inner.add1(Op.MUL, [step, x])])
    (inner_final,) = outer.add(Op.LOOP, [outer.constant(np.array([2], np.int64)), None, step],
                               {"body": inner.finish([inner_cond, inner_out])})
    assert inner_final is not None
    results = b.add(Op.LOOP, [b.constant(np.array([3], np.int64)), None,
                              b.add_input("acc0", TensorType(F32, (2,)))],
                    {"body": outer.finish([outer_cond, inner_final])})
    graph = b.finish([v for v in results if v is not None])
    check(graph, {"x": np.array([0.5, -1], np.float32), "acc0": np.array([1, 2], np.float32)})


def test_loop_carried_shape_change_is_rejected() -> None:
    b = GraphBuilder()
    body = b.sub("body")
    body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, (2,)))
    grown = body.add1(Op.CONCAT, [acc, acc], {"axis": 0})
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                              b.add_input("acc0", TensorType(F32, (2,)))],
                    {"body": body.finish([cond_in, grown])}, name="grow")
    graph = b.finish([v for v in results if v is not None])
    with pytest.raises(KilnError, match="loop 'grow'"):
        lower_graph(graph)


def test_large_constant_in_body_is_rejected() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (5000,)))
    then_b, else_b = b.sub("then"), b.sub("else")
    big = then_b.add1(Op.ADD, [x, then_b.constant(np.ones(5000, np.float32))])
    (out,) = b.add(Op.IF, [b.add_input("c", TensorType(BOOL, ()))],
                   {"then_branch": then_b.finish([big]), "else_branch": else_b.finish([x])},
                   name="big")
    assert out is not None
    with pytest.raises(KilnError, match="if 'big': constant of 5000 elements"):
        lower_graph(b.finish([out]))


# ---------------------------------------------------------------- Scan


def scan_graph(input_axes: tuple[int, ...] = (), input_dirs: tuple[int, ...] = (),
               output_axes: tuple[int, ...] = (), output_dirs: tuple[int, ...] = ()) -> Graph:
    """state += u * v (slices of two scan inputs); scan outputs: the state and u - v."""
    b = GraphBuilder()
    state0 = b.add_input("s0", TensorType(F32, (2,)))
    u = b.add_input("u", TensorType(F32, (4, 2) if not input_axes or input_axes[0] == 0
                                    else (2, 4)))
    v = b.add_input("v", TensorType(F32, (4, 2)))
    body = b.sub("body")
    state = body.add_input("state", TensorType(F32, (2,)))
    u_t = body.add_input("u_t", TensorType(F32, (2,)))
    v_t = body.add_input("v_t", TensorType(F32, (2,)))
    new_state = body.add1(Op.ADD, [state, body.add1(Op.MUL, [u_t, v_t])])
    diff = body.add1(Op.SUB, [u_t, v_t])
    attrs: dict[str, object] = {"body": body.finish([new_state, new_state, diff]),
                                "num_scan_inputs": 2}
    for key, value in (("scan_input_axes", input_axes), ("scan_input_directions", input_dirs),
                       ("scan_output_axes", output_axes),
                       ("scan_output_directions", output_dirs)):
        if value:
            attrs[key] = value
    results = b.add(Op.SCAN, [state0, u, v], attrs, outputs=3)
    return b.finish([r for r in results if r is not None])


SCAN_SETTINGS: list[dict[str, tuple[int, ...]]] = [
    {},
    {"input_dirs": (1, 0)},
    {"input_axes": (1, 0)},
    {"output_axes": (1, -1), "output_dirs": (0, 1)},
    {"input_axes": (-1, 0), "input_dirs": (0, 1), "output_dirs": (1, 1)},
]


@pytest.mark.parametrize("settings", SCAN_SETTINGS)
def test_scan(settings: dict[str, tuple[int, ...]]) -> None:
    graph = scan_graph(**settings)
    rng = np.random.default_rng(0)
    u_shape = tuple(int(d) for d in graph.inputs[1].type.shape)
    feeds = {"s0": np.array([1, -1], np.float32),
             "u": rng.standard_normal(u_shape).astype(np.float32),
             "v": rng.standard_normal((4, 2)).astype(np.float32)}
    check(graph, feeds)


# ---------------------------------------------------------------- compiled


def test_compiled_control_flow() -> None:
    from kiln.compiler import build

    graph = loop_graph(10, stop_at=7.0, cond_input=True, scan=False)
    exe = build(graph)
    for start in (True, False):
        feeds = loop_feeds(c=np.array(start))
        for e, g in zip(reference.run(graph, feeds), exe.run(feeds), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-6)
    runtime = loop_graph(None, runtime_limit=True, scan=False)
    exe = build(runtime)
    for trips in (0, 3, 70_000):  # 70_000: more than one level of the trip-count nest
        feeds = loop_feeds(m=np.array(trips))
        total = trips * (trips - 1) // 2  # sum of the iteration numbers
        pair = [feeds["a0"], feeds["b0"]][::1 if trips % 2 == 0 else -1]
        expected = [feeds["x"] * np.float32(total), np.array(5 + total), *pair]
        for e, g in zip(expected, exe.run(feeds), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-3)
    scan = scan_graph(input_dirs=(1, 0), output_axes=(1, -1), output_dirs=(0, 1))
    feeds = {"s0": np.array([1, -1], np.float32), "u": np.arange(8, dtype=np.float32).reshape(4, 2),
             "v": np.ones((4, 2), np.float32)}
    for e, g in zip(reference.run(scan, feeds), build(scan).run(feeds), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    branches = if_graph()
    exe = build(branches)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": np.arange(3, dtype=np.float32),
                 "y": np.array([2, -1, 5], np.float32)}
        for e, g in zip(reference.run(branches, feeds), exe.run(feeds), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-6)
