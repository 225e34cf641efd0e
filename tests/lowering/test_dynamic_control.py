"""If, Loop and Scan with run-time extents: trip counts and conditions from data, scan outputs
sized by the iterations run, branches of different shapes, symbolic batch and sequence extents.

Each graph is lowered ONCE and run by the kernel-IR interpreter at several sizes / trip counts,
against the numpy reference executor.
"""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import LoweredGraph, interpret_lowered, lower_graph

F32, I64, BOOL = DType.F32, DType.I64, DType.BOOL


def check(lowered: LoweredGraph, graph: Graph, feeds: dict[str, np.ndarray]) -> None:
    expected = reference.run(graph, feeds)
    got = interpret_lowered(lowered, feeds)
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape, (g.shape, e.shape)
        np.testing.assert_allclose(g, e, rtol=1e-6)


def kernel_count(lowered: LoweredGraph, op: Op) -> int:
    (step,) = [s for s in lowered.steps if s.node.op is op]
    return len(step.kernels)


# ---------------------------------------------------------------- Loop


def loop_graph(batch: int | str = 3, runtime_m: bool = True, stop_at: float | None = None,
               cond_input: bool = False) -> Graph:
    """acc += x * i (x: [batch, 4]), count += 1; scan outputs acc and i. With ``stop_at``
    the body stops once sum(acc) >= stop_at (a while-loop)."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (batch, 4)))
    m: Value | None = b.add_input("m", TensorType(I64, ())) if runtime_m else None
    cond = b.add_input("c", TensorType(BOOL, ())) if cond_input else None
    body = b.sub("body")
    i = body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond_in", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, (batch, 4)))
    count = body.add_input("count", TensorType(I64, (1,)))
    new_acc = body.add1(Op.ADD, [acc, body.add1(Op.MUL, [x, body.add1(Op.CAST, [i],
                                                                          {"to": F32})])])
    new_count = body.add1(Op.ADD, [count, body.constant(np.array([1], np.int64))])
    if stop_at is None:
        cond_out = body.add1(Op.IDENTITY, [cond_in])
    else:
        total = body.add1(Op.REDUCE_SUM, [new_acc], {"keepdims": 0})
        cond_out = body.add1(Op.LESS, [total, body.constant(np.float32(stop_at))])
    initial = [b.add_input("acc0", TensorType(F32, (batch, 4))),
               b.add_input("count0", TensorType(I64, (1,)))]
    results = b.add(Op.LOOP, [m, cond, *initial],
                    {"body": body.finish([cond_out, new_acc, new_count, new_acc, i])}, outputs=4)
    return b.finish([v for v in results if v is not None])


def loop_feeds(batch: int, **extra: object) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    feeds = {"x": rng.uniform(0.5, 1.5, (batch, 4)).astype(np.float32),
             "acc0": rng.standard_normal((batch, 4)).astype(np.float32),
             "count0": np.array([0], np.int64)}
    feeds.update({k: np.array(v) for k, v in extra.items()})
    return feeds


def test_loop_runtime_trip_count_sizes_scan_outputs() -> None:
    """M fed at run time, a body that never stops early: the scan outputs' leading extent is
    max(M, 0), defined without running the body twice (two kernels: shape, compute)."""
    graph = loop_graph()
    assert [str(v.type) for v in graph.outputs[2:]] == ["f32[?,3,4]", "i64[?]"]
    lowered = lower_graph(graph)
    assert kernel_count(lowered, Op.LOOP) == 2
    for trips in (0, 1, 3, 7, -2):
        check(lowered, graph, loop_feeds(3, m=trips))


@pytest.mark.parametrize("start", [True, False])
def test_loop_runtime_trip_count_and_start_condition(start: bool) -> None:
    graph = loop_graph(cond_input=True)
    lowered = lower_graph(graph)
    for trips in (0, 2, 5):
        check(lowered, graph, loop_feeds(3, m=trips, c=start))


def test_while_loop_counts_iterations_then_runs() -> None:
    """A data-dependent condition: the shape kernel runs the loop to count the iterations."""
    graph = loop_graph(stop_at=30.0)
    lowered = lower_graph(graph)
    for trips, start in ((0, -2), (1, -1), (4, 0), (50, 1), (50, 2)):
        feeds = loop_feeds(3, m=trips)
        feeds["acc0"] = np.full((3, 4), start, np.float32)
        check(lowered, graph, feeds)


def test_while_loop_without_trip_count() -> None:
    graph = loop_graph(runtime_m=False, stop_at=25.0)
    lowered = lower_graph(graph)
    # Each run tests the stop flag 2^16 times per pass (the trip-count nest's first level):
    # two runs keep the interpreter's time down.
    for offset in (-2.0, 1.0):
        feeds = loop_feeds(3)
        feeds["acc0"] += np.float32(offset)
        check(lowered, graph, feeds)


def test_loop_over_runtime_batch() -> None:
    """Carried state [batch, 4] with batch known at run time; scan output [?, batch, 4]."""
    graph = loop_graph("batch")
    assert str(graph.outputs[2].type) == "f32[?,batch,4]"
    lowered = lower_graph(graph)
    for batch, trips in ((1, 3), (3, 1), (5, 4)):
        check(lowered, graph, loop_feeds(batch, m=trips))
    check_zero_trips(lowered, loop_feeds(2, m=0))


def check_zero_trips(lowered: LoweredGraph, feeds: dict[str, np.ndarray]) -> None:
    """A loop_graph run of zero iterations over a symbolic batch (the reference cannot stack
    nothing of a symbolic shape): the initial values and empty stacks."""
    acc, count, stacked, iterations = interpret_lowered(lowered, feeds)
    np.testing.assert_array_equal(acc, feeds["acc0"])
    np.testing.assert_array_equal(count, feeds["count0"])
    assert stacked.shape == (0, *feeds["acc0"].shape) and iterations.shape == (0,)


def test_while_loop_over_runtime_batch() -> None:
    graph = loop_graph("batch", stop_at=20.0, cond_input=True)
    lowered = lower_graph(graph)
    for batch in (1, 2, 4):
        check(lowered, graph, loop_feeds(batch, m=10, c=True))
    check_zero_trips(lowered, loop_feeds(3, m=10, c=False))


def test_loop_without_scan_outputs_stays_one_kernel() -> None:
    b = GraphBuilder()
    body = b.sub("body")
    body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, ("n",)))
    doubled = body.add1(Op.ADD, [acc, acc])
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                              b.add_input("acc0", TensorType(F32, ("n",)))],
                    {"body": body.finish([cond_in, doubled])})
    graph = b.finish([v for v in results if v is not None])
    lowered = lower_graph(graph)
    assert kernel_count(lowered, Op.LOOP) == 1
    for n, trips in ((1, 2), (4, 0), (6, 3)):
        check(lowered, graph, {"m": np.array(trips),
                               "acc0": np.arange(n, dtype=np.float32)})


def test_loop_carried_shape_change_names_the_node() -> None:
    b = GraphBuilder()
    body = b.sub("body")
    body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, ("n",)))
    grown = body.add1(Op.CONCAT, [acc, acc], {"axis": 0})
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                              b.add_input("acc0", TensorType(F32, ("n",)))],
                    {"body": body.finish([cond_in, grown])}, name="grow")
    graph = b.finish([v for v in results if v is not None])
    with pytest.raises(KilnError, match="loop 'grow': loop-carried value %acc changes shape "
                       "across iterations, and no upper bound"):
        lower_graph(graph)


# ---------------------------------------------------------------- If


def if_graph() -> Graph:
    """cond ? (concat(x, x), x + 1) : (reduce_sum(x, keepdims), x * 2) for x: [batch, 4]:
    the first output is [2*batch, 4] or [1, 4] (UNKNOWN leading extent), the second
    [batch, 4] either way."""
    b = GraphBuilder()
    cond = b.add_input("cond", TensorType(BOOL, ()))
    x = b.add_input("x", TensorType(F32, ("batch", 4)))
    then_b, else_b = b.sub("then"), b.sub("else")
    twice = then_b.add1(Op.CONCAT, [x, x], {"axis": 0})
    plus = then_b.add1(Op.ADD, [x, then_b.constant(np.float32(1))])
    summed = else_b.add1(Op.REDUCE_SUM, [x, else_b.constant(np.array([0]))], {"keepdims": 1})
    times = else_b.add1(Op.MUL, [x, else_b.constant(np.float32(2))])
    outs = b.add(Op.IF, [cond], {"then_branch": then_b.finish([twice, plus]),
                                 "else_branch": else_b.finish([summed, times])}, outputs=2)
    return b.finish([v for v in outs if v is not None])


def test_if_branches_of_different_shapes() -> None:
    graph = if_graph()
    assert [str(v.type) for v in graph.outputs] == ["f32[?,4]", "f32[batch,4]"]
    lowered = lower_graph(graph)
    assert kernel_count(lowered, Op.IF) == 2  # shape kernel, then the branches
    for batch in (1, 3, 6):
        for cond in (True, False):
            x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
            check(lowered, graph, {"cond": np.array(cond), "x": x})


def test_if_on_symbolic_shapes_stays_one_kernel() -> None:
    b = GraphBuilder()
    cond = b.add_input("cond", TensorType(BOOL, ()))
    x = b.add_input("x", TensorType(F32, ("batch", "seq")))
    then_b, else_b = b.sub("then"), b.sub("else")
    (out,) = b.add(Op.IF, [cond], {
        "then_branch": then_b.finish([then_b.add1(Op.EXP, [x])]),
        "else_branch": else_b.finish([else_b.add1(Op.NEG, [x])])})
    assert out is not None
    graph = b.finish([out])
    lowered = lower_graph(graph)
    assert kernel_count(lowered, Op.IF) == 1
    for shape in ((1, 1), (2, 5), (4, 3)):
        for c in (True, False):
            x_data = np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
            check(lowered, graph, {"cond": np.array(c), "x": x_data})


# ---------------------------------------------------------------- Scan


def scan_graph(backward: bool = False, output_axis: int = 0) -> Graph:
    """state [batch, 3] += u_t * 2 over u: [seq, batch, 3]; scan outputs state and u_t - 1."""
    b = GraphBuilder()
    state0 = b.add_input("s0", TensorType(F32, ("batch", 3)))
    u = b.add_input("u", TensorType(F32, ("seq", "batch", 3)))
    body = b.sub("body")
    state = body.add_input("state", TensorType(F32, ("batch", 3)))
    u_t = body.add_input("u_t", TensorType(F32, ("batch", 3)))
    new_state = body.add1(Op.ADD, [state, body.add1(Op.MUL, [u_t, body.constant(np.float32(2))])])
    less = body.add1(Op.SUB, [u_t, body.constant(np.float32(1))])
    attrs: dict[str, object] = {"body": body.finish([new_state, new_state, less]),
                                "num_scan_inputs": 1, "scan_output_axes": (0, output_axis)}
    if backward:
        attrs["scan_input_directions"] = (1,)
    results = b.add(Op.SCAN, [state0, u], attrs, outputs=3)
    return b.finish([r for r in results if r is not None])


@pytest.mark.parametrize("backward, output_axis", [(False, 0), (True, 0), (False, 2)])
def test_scan_runtime_sequence_and_batch(backward: bool, output_axis: int) -> None:
    graph = scan_graph(backward, output_axis)
    lowered = lower_graph(graph)
    assert kernel_count(lowered, Op.SCAN) == 1  # symbolic extents: nothing to define
    for seq, batch in ((1, 1), (4, 2), (3, 5)):
        rng = np.random.default_rng(seq * 10 + batch)
        check(lowered, graph, {"s0": rng.standard_normal((batch, 3)).astype(np.float32),
                               "u": rng.standard_normal((seq, batch, 3)).astype(np.float32)})
    # An empty sequence (the reference cannot stack nothing of a symbolic shape): the initial
    # state and empty stacks.
    s0 = np.ones((3, 3), np.float32)
    state, stacked, less = interpret_lowered(lowered, {"s0": s0, "u": np.zeros((0, 3, 3),
                                                                              np.float32)})
    np.testing.assert_array_equal(state, s0)
    assert stacked.shape == (0, 3, 3) and less.shape == ((0, 3, 3), (3, 3, 0))[output_axis > 0]


def data_dependent_if(constant_cond: bool | None = None) -> Graph:
    """cond ? compress(x, mask) : tile(x, reps): each branch computes its own output extent."""
    b = GraphBuilder()
    cond = (b.add_input("cond", TensorType(BOOL, ())) if constant_cond is None
            else b.constant(np.array(constant_cond)))
    x = b.add_input("x", TensorType(F32, ("n",)))
    mask = b.add_input("mask", TensorType(BOOL, ("n",)))
    reps = b.add_input("reps", TensorType(I64, (1,)))
    then_b, else_b = b.sub("then"), b.sub("else")
    picked = then_b.add1(Op.COMPRESS, [x, mask], {"axis": 0})
    tiled = else_b.add1(Op.TILE, [else_b.add1(Op.NEG, [x]), reps])
    outs = b.add(Op.IF, [cond], {"then_branch": then_b.finish([picked, x]),
                                 "else_branch": else_b.finish([tiled, x])}, outputs=2)
    return b.finish([v for v in outs if v is not None])


def data_dependent_feeds(n: int, reps: int, cond: bool | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n + 7 * reps)
    feeds = {"x": rng.standard_normal(n).astype(np.float32), "mask": rng.random(n) < 0.5,
             "reps": np.array([reps], np.int64)}
    if cond is not None:
        feeds["cond"] = np.array(cond)
    return feeds


def test_if_branches_computing_their_own_extents() -> None:
    """Compress / Tile inside the branches: their kernels run apart, under the condition."""
    graph = data_dependent_if()
    lowered = lower_graph(graph)
    for n, reps in ((1, 1), (5, 3), (8, 0)):
        for cond in (True, False):
            check(lowered, graph, data_dependent_feeds(n, reps, cond))


@pytest.mark.parametrize("cond", [True, False])
def test_constant_if_branch_computing_its_own_extents(cond: bool) -> None:
    graph = data_dependent_if(cond)
    lowered = lower_graph(graph)
    for n, reps in ((2, 2), (6, 1)):
        check(lowered, graph, data_dependent_feeds(n, reps))


def test_loop_body_with_a_bounded_data_dependent_value() -> None:
    """Compress inside the body: its output lives in scratch of the input's extent."""
    b = GraphBuilder()
    body = b.sub("body")
    body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, ("n",)))
    positive = body.add1(Op.COMPRESS, [acc, body.add1(Op.GREATER, [
        acc, body.constant(np.float32(0))])], {"axis": 0})
    total = body.add1(Op.REDUCE_SUM, [positive], {"keepdims": 0})
    shifted = body.add1(Op.SUB, [acc, body.add1(Op.MUL, [total, body.constant(np.float32(0.5))])])
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                              b.add_input("acc0", TensorType(F32, ("n",)))],
                    {"body": body.finish([cond_in, shifted, total])}, outputs=2)
    graph = b.finish([v for v in results if v is not None])
    lowered = lower_graph(graph)
    for n, trips in ((1, 2), (4, 3), (7, 1)):
        acc0 = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        check(lowered, graph, {"m": np.array(trips), "acc0": acc0})


def test_loop_body_value_without_bound_is_rejected() -> None:
    b = GraphBuilder()
    body = b.sub("body")
    body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, (4,)))
    reps = body.add1(Op.UNSQUEEZE, [body.add1(Op.ADD, [body.inputs[0], body.constant(
        np.array(1))]), body.constant(np.array([0]))])
    tiled = body.add1(Op.TILE, [acc, reps])
    total = body.add1(Op.REDUCE_SUM, [tiled], {"keepdims": 0})
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                              b.add_input("acc0", TensorType(F32, (4,)))],
                    {"body": body.finish([cond_in, body.add1(Op.ADD, [acc, total])])},
                    name="tiles")
    graph = b.finish([v for v in results if v is not None])
    with pytest.raises(KilnError, match="loop 'tiles'.*computed inside the body at run time, "
                                        "and no upper bound"):
        lower_graph(graph)


def test_loop_and_scan_over_values_sized_by_an_earlier_node() -> None:
    """A Compress output ([?]) as a Loop's carried value and as a Scan's sequence: the body
    sees its slot as a symbol; the outputs' extents are defined from it."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (6,)))
    picked = b.add1(Op.COMPRESS, [x, b.add_input("mask", TensorType(BOOL, (6,)))], {"axis": 0})
    body = b.sub("body")
    body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, ("?",)))
    doubled = body.add1(Op.ADD, [acc, acc])
    looped = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None, picked],
                   {"body": body.finish([cond_in, doubled, doubled])}, outputs=2)
    scan_body = b.sub("scan_body")
    state = scan_body.add_input("state", TensorType(F32, ()))
    element = scan_body.add_input("element", TensorType(F32, ()))
    running = scan_body.add1(Op.ADD, [state, element])
    scanned = b.add(Op.SCAN, [b.constant(np.float32(0)), picked],
                    {"body": scan_body.finish([running, running]), "num_scan_inputs": 1},
                    outputs=2)
    graph = b.finish([v for v in (*looped, *scanned) if v is not None])
    assert [str(v.type) for v in graph.outputs] == ["f32[?]", "f32[?,?]", "f32[]", "f32[?]"]
    lowered = lower_graph(graph)
    x_data = np.array([1, -2, 3, 0.5, 4, -1], np.float32)
    for mask, trips in (([1, 0, 1, 1, 0, 0], 3), ([0, 1, 0, 0, 0, 0], 1),
                        ([1, 1, 1, 1, 1, 1], 2)):
        check(lowered, graph, {"x": x_data, "mask": np.array(mask, bool),
                               "m": np.array(trips)})


def shrinking_loop(scan_slices: bool = False) -> Graph:
    """acc = acc[1:] * 2 while the loop runs (M and a condition len(acc) > 2 from the data):
    a carried value whose extent changes every iteration; scan output: sum(acc) each
    iteration (or, with ``scan_slices``, acc itself, whose shape changes: a run-time error)."""
    b = GraphBuilder()
    body = b.sub("body")
    body.add_input("i", TensorType(I64, ()))
    body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, ("n",)))
    rest = body.add1(Op.SLICE, [acc, body.constant(np.array([1])),
                                body.constant(np.array([1 << 62]))])
    doubled = body.add1(Op.MUL, [rest, body.constant(np.float32(2))])
    size = body.add1(Op.SHAPE, [doubled])
    more = body.add1(Op.GREATER, [body.add1(Op.REDUCE_SUM, [size], {"keepdims": 0}),
                                  body.constant(np.array(2))])
    scanned = doubled if scan_slices else body.add1(Op.REDUCE_SUM, [doubled], {"keepdims": 0})
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                              b.add_input("acc0", TensorType(F32, ("n",)))],
                    {"body": body.finish([more, doubled, scanned])}, outputs=2)
    return b.finish([v for v in results if v is not None])


def test_loop_carried_value_shrinking_every_iteration() -> None:
    graph = shrinking_loop()
    assert [str(v.type) for v in graph.outputs] == ["f32[?]", "f32[?]"]
    lowered = lower_graph(graph)
    for n, trips in ((3, 1), (6, 2), (6, 9), (9, 4)):
        acc0 = np.arange(1, n + 1, dtype=np.float32)
        check(lowered, graph, {"m": np.array(trips), "acc0": acc0})


def test_scan_output_changing_shape_fails_at_run_time() -> None:
    graph = shrinking_loop(scan_slices=True)
    lowered = lower_graph(graph)
    feeds = {"m": np.array(1), "acc0": np.ones(5, np.float32)}
    check(lowered, graph, feeds)  # one iteration: one slice shape
    with pytest.raises(KilnError, match="scan output 0 changes shape across iterations"):
        interpret_lowered(lowered, {"m": np.array(3), "acc0": np.ones(5, np.float32)})


def test_loop_carried_value_growing_to_a_bound() -> None:
    """ONNX's loop11 pattern: y ([1]) + x[i:i+1] has a run-time extent (a Slice fed the
    iteration number); bounded by x's extent, with the per-iteration y stacked."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (5,)))
    body = b.sub("body")
    i = body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    y = body.add_input("y", TensorType(F32, (1,)))
    axes = body.constant(np.array([0]))
    start = body.add1(Op.UNSQUEEZE, [i, axes])
    end = body.add1(Op.UNSQUEEZE, [body.add1(Op.ADD, [i, body.constant(np.array(1))]), axes])
    out = body.add1(Op.ADD, [y, body.add1(Op.SLICE, [x, start, end])])
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())),
                              b.add_input("c", TensorType(BOOL, ())),
                              b.add_input("y0", TensorType(F32, (1,)))],
                    {"body": body.finish([cond_in, out, out])}, outputs=2)
    graph = b.finish([v for v in results if v is not None])
    lowered = lower_graph(graph)
    x_data = np.array([1, 2, 3, 4, 5], np.float32)
    for trips in (1, 3, 5):
        check(lowered, graph, {"x": x_data, "m": np.array(trips), "c": np.array(True),
                               "y0": np.array([-2], np.float32)})


def scan_with_compress(scan_selected: bool = False) -> Graph:
    """Scan over rows u_t ([seq, k] input): state += sum of the positive entries of u_t (a
    Compress inside the body, bounded by k); scan output the running state (or, with
    ``scan_selected``, the Compress output itself: extents computed by the body)."""
    b = GraphBuilder()
    u = b.add_input("u", TensorType(F32, ("seq", "k")))
    body = b.sub("body")
    state = body.add_input("state", TensorType(F32, ()))
    row = body.add_input("row", TensorType(F32, ("k",)))
    positive = body.add1(Op.COMPRESS, [row, body.add1(Op.GREATER, [
        row, body.constant(np.float32(0))])], {"axis": 0})
    total = body.add1(Op.ADD, [state, body.add1(Op.REDUCE_SUM, [positive], {"keepdims": 0})])
    results = b.add(Op.SCAN, [b.constant(np.float32(0)), u],
                    {"body": body.finish([total, positive if scan_selected else total]),
                     "num_scan_inputs": 1}, outputs=2, name="positives")
    return b.finish([v for v in results if v is not None])


def test_scan_body_with_a_bounded_data_dependent_value() -> None:
    graph = scan_with_compress()
    lowered = lower_graph(graph)
    for seq, k in ((1, 1), (3, 4), (5, 2)):
        u = np.random.default_rng(seq + k).standard_normal((seq, k)).astype(np.float32)
        check(lowered, graph, {"u": u})


def test_scan_output_sized_by_the_body_is_rejected() -> None:
    with pytest.raises(KilnError, match="scan 'positives': a scan output's extents are computed"):
        lower_graph(scan_with_compress(scan_selected=True))


def test_scan_inputs_of_different_runtime_lengths_fail_at_run_time() -> None:
    b = GraphBuilder()
    u = b.add_input("u", TensorType(F32, ("s1", 2)))
    v = b.add_input("v", TensorType(F32, ("s2", 2)))
    body = b.sub("body")
    state = body.add_input("state", TensorType(F32, (2,)))
    u_t = body.add_input("u_t", TensorType(F32, (2,)))
    v_t = body.add_input("v_t", TensorType(F32, (2,)))
    total = body.add1(Op.ADD, [state, body.add1(Op.MUL, [u_t, v_t])])
    (final,) = b.add(Op.SCAN, [b.constant(np.zeros(2, np.float32)), u, v],
                     {"body": body.finish([total]), "num_scan_inputs": 2}, name="dot")
    assert final is not None
    graph = b.finish([final])
    lowered = lower_graph(graph)
    check(lowered, graph, {"u": np.ones((3, 2), np.float32), "v": np.full((3, 2), 2, np.float32)})
    with pytest.raises(KilnError, match="scan 'dot': scan inputs differ in sequence length"):
        interpret_lowered(lowered, {"u": np.ones((3, 2), np.float32),
                                    "v": np.ones((4, 2), np.float32)})


# ---------------------------------------------------------------- compiled


def check_compiled(graph: Graph, feeds_list: list[dict[str, np.ndarray]]) -> None:
    """One library for all ``feeds_list``, against the reference."""
    from kiln.compiler import build

    exe = build(graph)
    for feeds in feeds_list:
        expected = reference.run(graph, feeds)
        got = exe.run(feeds)
        for e, g in zip(expected, got, strict=True):
            assert g.dtype == e.dtype and g.shape == e.shape, (g.shape, e.shape)
            np.testing.assert_allclose(g, e, rtol=1e-5)


def test_compiled_loops_with_runtime_trip_counts() -> None:
    check_compiled(loop_graph(), [loop_feeds(3, m=trips) for trips in (0, 2, 5)])
    check_compiled(loop_graph(stop_at=30.0), [loop_feeds(3, m=trips) for trips in (1, 50)])


def test_compiled_if_branches_of_different_shapes() -> None:
    check_compiled(if_graph(), [{"cond": np.array(cond), "x": np.full((batch, 4), batch,
                                                                     np.float32)}
                                for batch in (1, 3) for cond in (True, False)])


def test_loop_body_if_with_branches_of_different_shapes() -> None:
    """An If in a Loop body yields [2] or [3] (a run-time extent, bounded by 3): summed into
    the carried value, stacked as a scan output of run-time extent."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (3,)))
    body = b.sub("body")
    i = body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    acc = body.add_input("acc", TensorType(F32, ()))
    even = body.add1(Op.EQUAL, [body.add1(Op.MOD, [i, body.constant(np.array(2))]),
                                body.constant(np.array(0))])
    then_b, else_b = body.sub("then"), body.sub("else")
    head = then_b.add1(Op.SLICE, [x, then_b.constant(np.array([0])),
                                  then_b.constant(np.array([2]))])
    (picked,) = body.add(Op.IF, [even], {"then_branch": then_b.finish([head]),
                                         "else_branch": else_b.finish([x])})
    assert picked is not None
    total = body.add1(Op.ADD, [acc, body.add1(Op.REDUCE_SUM, [picked], {"keepdims": 0})])
    size = body.add1(Op.SHAPE, [picked])
    results = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                              b.add_input("acc0", TensorType(F32, ()))],
                    {"body": body.finish([cond_in, total, size])}, outputs=2)
    graph = b.finish([v for v in results if v is not None])
    lowered = lower_graph(graph)
    for trips in (1, 2, 5):
        check(lowered, graph, {"x": np.array([1, 2, 4], np.float32), "m": np.array(trips),
                               "acc0": np.array(0.5, np.float32)})


def test_scan_outputs_of_the_carried_input_are_read_before_the_update() -> None:
    """A body whose scan output is its carried input itself (the value before the update)."""
    b = GraphBuilder()
    loop_body = b.sub("loop_body")
    loop_body.add_input("i", TensorType(I64, ()))
    cond_in = loop_body.add_input("cond", TensorType(BOOL, ()))
    acc = loop_body.add_input("acc", TensorType(F32, ("n",)))
    looped = b.add(Op.LOOP, [b.add_input("m", TensorType(I64, ())), None,
                             b.add_input("acc0", TensorType(F32, ("n",)))],
                   {"body": loop_body.finish([cond_in, loop_body.add1(Op.ADD, [acc, acc]), acc])},
                   outputs=2)
    scan_body = b.sub("scan_body")
    state = scan_body.add_input("state", TensorType(F32, ()))
    element = scan_body.add_input("element", TensorType(F32, ()))
    scanned = b.add(Op.SCAN, [b.constant(np.float32(1)), b.add_input("u", TensorType(F32, ("s",)))],
                    {"body": scan_body.finish([scan_body.add1(Op.MUL, [state, element]), state]),
                     "num_scan_inputs": 1}, outputs=2)
    graph = b.finish([v for v in (*looped, *scanned) if v is not None])
    lowered = lower_graph(graph)
    for n, trips in ((1, 2), (3, 4)):
        check(lowered, graph, {"m": np.array(trips), "acc0": np.arange(1, n + 1, dtype=np.float32),
                               "u": np.arange(2, n + 3, dtype=np.float32)})


def test_compiled_runtime_batch_and_sequence() -> None:
    check_compiled(loop_graph("batch"), [loop_feeds(batch, m=2) for batch in (1, 4)])
    feeds = []
    for seq, batch in ((2, 1), (4, 3)):
        rng = np.random.default_rng(seq)
        feeds.append({"s0": rng.standard_normal((batch, 3)).astype(np.float32),
                      "u": rng.standard_normal((seq, batch, 3)).astype(np.float32)})
    check_compiled(scan_graph(backward=True), feeds)


def test_compiled_extents_computed_inside_bodies() -> None:
    check_compiled(data_dependent_if(), [data_dependent_feeds(n, reps, cond)
                                         for n, reps in ((5, 2), (3, 1)) for cond in (True, False)])
    check_compiled(shrinking_loop(), [{"m": np.array(trips), "acc0": np.arange(
        1, n + 1, dtype=np.float32)} for n, trips in ((6, 2), (9, 4))])


def test_if_branch_running_a_loop_with_runtime_trip_count() -> None:
    """A branch whose Loop stacks M slices (its own shape and compute kernels, kept apart)."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (2,)))
    m = b.add_input("m", TensorType(I64, ()))
    then_b, else_b = b.sub("then"), b.sub("else")
    body = then_b.sub("body")
    i = body.add_input("i", TensorType(I64, ()))
    cond_in = body.add_input("cond", TensorType(BOOL, ()))
    carried = body.add_input("carried", TensorType(F32, (2,)))
    scaled = body.add1(Op.MUL, [carried, body.add1(Op.CAST, [i], {"to": F32})])
    _, stacked = then_b.add(Op.LOOP, [m, None, x],
                            {"body": body.finish([cond_in, carried, scaled])}, outputs=2)
    assert stacked is not None
    (out,) = b.add(Op.IF, [b.add_input("c", TensorType(BOOL, ()))], {
        "then_branch": then_b.finish([stacked]),
        "else_branch": else_b.finish([else_b.add1(Op.UNSQUEEZE, [x, else_b.constant(
            np.array([0]))])])})
    assert out is not None
    graph = b.finish([out])
    lowered = lower_graph(graph)
    for trips, cond in ((3, True), (1, True), (4, False)):
        check(lowered, graph, {"x": np.array([1, -2], np.float32), "m": np.array(trips),
                               "c": np.array(cond)})
