"""Run-time extents in the linear-algebra and window lowerings (issue 11): MatMul, Gemm,
MatMulInteger, Einsum-free products, TreeEnsemble, Conv and pools (a run-time batch), Attention,
RotaryEmbedding, LinearAttention, RNN/GRU/LSTM (run-time sequence and batch) and MaxUnpool with
a run-time output_shape.

Each graph is lowered ONCE with symbolic input dims, then run at several sizes and compared with
the numpy reference executor (and onnxruntime for the scikit-learn export), by two engines: the
kernel-IR interpreter, and one compiled library (``build``; the slow tier). Sizes stay tiny: the
interpreter runs about 1e5 scalar operations a second.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.compiler import build, reference
from kiln.compiler.errors import ExecutionError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.lower.inline import walk
from kiln.compiler.lower.kernel_ir import MatmulTile
from kiln.compiler.lower.registry import LoweringError
from kiln.compiler.passes.pipeline import optimize
from kiln.runtime import KilnRuntimeError

Shapes = Sequence[tuple[int, ...]]
# what a run reports bad run-time values with: the interpreter's error, the runtime's
RUN_ERRORS = (ExecutionError, KilnRuntimeError)


class Engine:
    """Lowers a graph once and runs the result: the interpreter or a compiled library."""

    def __init__(self, compiled: bool) -> None:
        self.compiled = compiled

    def lower(self, graph: Graph) -> Any:
        return build(graph) if self.compiled else lower_graph(graph)

    def run(self, lowered: Any, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return lowered.run(feeds) if self.compiled else interpret_lowered(lowered, feeds)

    def takes(self, feeds: Mapping[str, np.ndarray]) -> bool:
        """Whether the engine runs these inputs: a compiled library refuses an extent of 0 on
        a free axis (the runtime's contract), the interpreter runs every size."""
        return not self.compiled or all(0 not in np.shape(v) for v in feeds.values())


@pytest.fixture(params=["interpreter", pytest.param("compiled", marks=pytest.mark.slow)])
def engine(request: pytest.FixtureRequest) -> Engine:
    return Engine(request.param == "compiled")


def _feed(graph: Graph, shapes: Shapes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for value, shape in zip(graph.inputs, shapes, strict=True):
        dtype = value.type.dtype
        if dtype is DType.BOOL:
            feeds[value.name] = rng.random(shape) > 0.3
        elif dtype.is_int:
            feeds[value.name] = rng.integers(-3, 4, shape).astype(dtype.numpy)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype.numpy)
    return feeds


def _check(engine: Engine, graph: Graph, sizes: Sequence[Shapes], rtol: float = 1e-5,
           atol: float = 1e-5) -> None:
    """Lower ``graph`` once, then compare with the reference at every entry of ``sizes`` (the
    input shapes of one run)."""
    lowered = engine.lower(graph)
    rng = np.random.default_rng(7)
    for shapes in sizes:
        feeds = _feed(graph, shapes, rng)
        if not engine.takes(feeds):
            continue
        got = engine.run(lowered, feeds)
        expected = reference.run(graph, feeds)
        for actual, want in zip(got, expected, strict=True):
            assert actual.shape == want.shape
            np.testing.assert_allclose(actual, want, rtol=rtol, atol=atol)


def _graph(make: Callable[[GraphBuilder], list]) -> Graph:
    b = GraphBuilder()
    return b.finish(make(b))


def _weights(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


F32 = DType.F32


# --- MatMul / Gemm ------------------------------------------------------------------------

def test_matmul_runtime_rows_keeps_tiles(engine: Engine) -> None:
    """[batch, seq, K] x const [K, N]: the batch folds into a run-time M; the static N/K
    register tiles stay, with a one-row remainder path (M = 0, 1, a tile and a remainder)."""
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", "seq", 8)))
        return [b.add1(Op.MATMUL, [x, b.constant(_weights((8, 20)))])]

    graph = _graph(make)
    tiles = [n for s in lower_graph(graph).steps for k in s.kernels for n in walk(k.body)
             if isinstance(n, MatmulTile)]
    assert tiles and {t.rows for t in tiles} >= {1}
    _check(engine, graph, [[(0, 3, 8)], [(1, 1, 8)], [(1, 5, 8)], [(17, 1, 8)], [(2, 7, 8)]])


def test_matmul_runtime_rows_variable_b(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", 6)))
        w = b.add_input("w", TensorType(F32, (6, 5)))
        return [b.add1(Op.MATMUL, [x, w])]

    _check(engine, _graph(make), [[(m, 6), (6, 5)] for m in (0, 1, 5, 17)])


def test_batched_matmul_attention_scores(engine: Engine) -> None:
    """[batch, heads, seq, d] x [batch, heads, d, seq] (N and K run-time too), then the
    scores times V."""
    def make(b: GraphBuilder) -> list:
        q = b.add_input("q", TensorType(F32, ("batch", 2, "seq", 4)))
        k = b.add_input("k", TensorType(F32, ("batch", 2, 4, "seq")))
        scores = b.add1(Op.MATMUL, [q, k])
        return [scores, b.add1(Op.MATMUL, [scores, b.add1(Op.TRANSPOSE, [k],
                                                             {"perm": [0, 1, 3, 2]})])]

    sizes = [[(n, 2, s, 4), (n, 2, 4, s)] for n, s in ((1, 1), (2, 3), (0, 2))]
    _check(engine, _graph(make), sizes)


def test_matmul_runtime_broadcast(engine: Engine) -> None:
    """Batch axes of different symbols broadcast at run time (an extent 1 is read at 0); the
    output extent is computed by a shape kernel; a mismatch is reported."""
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("b1", 2, 3)))
        y = b.add_input("y", TensorType(F32, ("b2", 3, 4)))
        return [b.add1(Op.MATMUL, [x, y])]

    graph = _graph(make)
    _check(engine, graph, [[(1, 2, 3), (3, 3, 4)], [(3, 2, 3), (1, 3, 4)], [(2, 2, 3), (2, 3, 4)]])
    feeds = _feed(graph, [(2, 2, 3), (3, 3, 4)], np.random.default_rng(0))
    with pytest.raises(RUN_ERRORS, match="broadcast"):
        engine.run(engine.lower(graph), feeds)


def test_matmul_f64_and_vector_operands(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(DType.F64, ("batch", 3, 8)))
        w = b.add_input("w", TensorType(DType.F64, ("batch", 8, 5)))
        v = b.add_input("v", TensorType(DType.F64, (5,)))
        return [b.add1(Op.MATMUL, [x, w]), b.add1(Op.MATMUL, [b.add1(Op.MATMUL, [x, w]), v])]

    _check(engine, _graph(make), [[(n, 3, 8), (n, 8, 5), (5,)] for n in (0, 1, 2)])


@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm_runtime_rows(trans_a: int, engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, (8, "batch") if trans_a else ("batch", 8)))
        bias = b.add_input("c", TensorType(F32, ("batch", 1)))
        attrs = {"transA": trans_a, "transB": 1, "alpha": 0.5, "beta": 2.0}
        return [b.add1(Op.GEMM, [x, b.constant(_weights((20, 8))), bias], attrs),
                b.add1(Op.GEMM, [x, b.constant(_weights((8, 3))), b.constant(_weights((3,)))],
                       {"transA": trans_a})]

    sizes = [[(8, m) if trans_a else (m, 8), (m, 1)] for m in (0, 1, 5, 17)]
    _check(engine, _graph(make), sizes)


@pytest.mark.parametrize("a_type", [DType.U8, DType.I8])
@pytest.mark.parametrize("b_type,b_zero", [(np.int8, 2), (np.uint8, 0)])
def test_quantized_matmul_runtime_rows(a_type: DType, b_type: type, b_zero: int,
                                      engine: Engine) -> None:
    """MatMulInteger and QLinearMatMul on [batch, seq, K] x constant 8-bit B keep their
    tiles with a run-time M: integer quad tiles (int8 shifted weights) or exact f32 tiles
    (uint8 weights that do not fit int8)."""
    info = np.iinfo(b_type)
    weights = np.random.default_rng(1).integers(max(info.min, -5), info.max, (6, 20))

    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(a_type, ("batch", "seq", 6)))
        w = b.constant(weights.astype(b_type))
        a_zero = b.constant(np.array(3, a_type.numpy))
        w_zero = b.constant(np.array(b_zero, b_type))
        scales = [b.constant(np.float32(v)) for v in (0.1, 0.05, 0.3)]
        y_zero = b.constant(np.array(5, a_type.numpy))
        return [b.add1(Op.MATMUL_INTEGER, [x, w, a_zero, w_zero]),
                b.add1(Op.QLINEAR_MATMUL, [x, scales[0], a_zero, w, scales[1], w_zero,
                                           scales[2], y_zero])]

    graph = _graph(make)
    assert any(isinstance(n, MatmulTile) for s in lower_graph(graph).steps for k in s.kernels
               for n in walk(k.body))
    lowered = engine.lower(graph)
    rng = np.random.default_rng(2)
    limits = np.iinfo(a_type.numpy)
    for n, seq in ((0, 2), (1, 1), (2, 5), (3, 7)):
        feeds = {"x": rng.integers(limits.min, limits.max, (n, seq, 6)).astype(a_type.numpy)}
        if not engine.takes(feeds):
            continue
        for actual, want in zip(engine.run(lowered, feeds), reference.run(graph, feeds),
                                strict=True):
            np.testing.assert_array_equal(actual, want)


# --- TreeEnsemble ----------------------------------------------------------------------------

def test_tree_ensemble_sklearn_runtime_batch(engine: Engine) -> None:
    """A scikit-learn export (batch dim named here; see the report for unnamed dims)."""
    pytest.importorskip("skl2onnx")
    ort = pytest.importorskip("onnxruntime")
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor

    from kiln.frontends.onnx import load_onnx

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = x[:, 0] + x[:, 1] ** 2
    models = [RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(x, y),
              GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0)
              .fit(x, y > 0.5)]
    for model in models:
        options = {"zipmap": False} if hasattr(model, "classes_") else None
        onx = to_onnx(model, x[:1], options=options,
                      target_opset={"": 17, "ai.onnx.ml": 3})
        onx.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
        graph = load_onnx(onx)
        lowered = engine.lower(graph)
        session = ort.InferenceSession(onx.SerializeToString())
        for n in (0, 1, 5, 17):
            feeds = {graph.inputs[0].name: x[:n]}
            if not engine.takes(feeds):
                continue
            got = engine.run(lowered, feeds)
            expected = reference.run(graph, feeds)
            for actual, want in zip(got, expected, strict=True):
                np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-5)
            if n:
                runtime = session.run(None, {session.get_inputs()[0].name: x[:n]})
                np.testing.assert_allclose(got[-1], runtime[-1], rtol=1e-5, atol=1e-5)


# --- Conv and pools (run-time batch) -----------------------------------------------------

def test_conv_pools_runtime_batch(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", 3, 6, 6)))
        y = b.add1(Op.CONV, [x, b.constant(_weights((4, 3, 3, 3))), b.constant(_weights((4,)))],
                   {"pads": [1, 1, 1, 1], "strides": [2, 2]})
        pooled = b.add1(Op.MAX_POOL, [y], {"kernel_shape": [2, 2]})
        depthwise = b.add1(Op.CONV, [y, b.constant(_weights((4, 1, 3, 3)))],
                           {"group": 4, "pads": [1, 1, 1, 1]})
        average = b.add1(Op.AVERAGE_POOL, [depthwise], {"kernel_shape": [2, 2],
                                                        "pads": [1, 1, 1, 1]})
        return [pooled, average, b.add1(Op.GLOBAL_AVERAGE_POOL, [pooled])]

    _check(engine, _graph(make), [[(n, 3, 6, 6)] for n in (1, 3)], rtol=1e-4)


def test_conv_1d_and_transpose_runtime_batch(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", 2, 7)))
        y = b.add1(Op.CONV, [x, b.constant(_weights((3, 2, 3)))])
        return [b.add1(Op.CONV_TRANSPOSE, [y, b.constant(_weights((3, 2, 2)))],
                       {"strides": [2]})]

    _check(engine, _graph(make), [[(n, 2, 7)] for n in (1, 2)], rtol=1e-4)


def test_blocked_layout_ops_runtime_batch(engine: Engine) -> None:
    """NCHWc conv and pools (what -O3 picks for a static batch), on a run-time batch."""
    def make(b: GraphBuilder, batch: int | str) -> list:
        x = b.add_input("x", TensorType(F32, (batch, 16, 6, 6)))
        y = b.add1(Op.CONV, [x, b.constant(_weights((16, 16, 3, 3)))], {"pads": [1, 1, 1, 1]})
        y = b.add1(Op.MAX_POOL, [y], {"kernel_shape": [2, 2], "strides": [2, 2]})
        return [b.add1(Op.AVERAGE_POOL, [b.add1(Op.LRN, [y], {"size": 3})],
                       {"kernel_shape": [2, 2]})]

    static = optimize(_graph(lambda b: make(b, 2)), 3)
    ops = [n.op for n in static.nodes]
    assert Op.CONV_NCHWC in ops and Op.MAX_POOL_NCHWC in ops
    # the same blocked graph with the batch made symbolic
    b = GraphBuilder()
    env = {static.inputs[0].name: b.add_input("x", TensorType(F32, ("batch", 16, 6, 6)))}
    for node in static.nodes:
        if node.op is Op.CONSTANT:
            env[node.outputs[0].name] = b.constant(node.attrs["value"])
            continue
        outs = b.add(node.op, [env[v.name] for v in node.inputs], node.attrs,
                     outputs=len(node.outputs))
        env.update({v.name: o for v, o in zip(node.outputs, outs, strict=True)})
    blocked = b.finish([env[v.name] for v in static.outputs])
    _check(engine, blocked, [[(n, 16, 6, 6)] for n in (1, 2)], rtol=1e-4, atol=1e-4)


def test_conv_pools_runtime_spatial(engine: Engine) -> None:
    """Run-time height and width: generic loop nests guarding every tap (strides, pads,
    dilations, ceil mode, count_include_pad, MaxPool indices, ConvTranspose's output padding),
    global pools over run-time planes; output extents the type rules leave unknown come from a
    shape kernel."""
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", 3, "h", "w")))
        y = b.add1(Op.CONV, [x, b.constant(_weights((4, 3, 3, 3))), b.constant(_weights((4,)))],
                   {"pads": [1, 1, 1, 1], "strides": [2, 2]})
        pooled, where = b.add(Op.MAX_POOL, [y], {"kernel_shape": [2, 2], "ceil_mode": 1},
                              outputs=2)
        average = b.add1(Op.AVERAGE_POOL, [y], {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1],
                                                "count_include_pad": 1})
        lp = b.add1(Op.LP_POOL, [x], {"kernel_shape": [2, 2], "strides": [2, 2]})
        valid = b.add1(Op.CONV, [x, b.constant(_weights((2, 3, 2, 2)))],
                       {"auto_pad": "VALID", "dilations": [2, 1]})
        globals_ = [b.add1(op, [pooled], {"p": 3} if op is Op.GLOBAL_LP_POOL else {})
                    for op in (Op.GLOBAL_AVERAGE_POOL, Op.GLOBAL_MAX_POOL, Op.GLOBAL_LP_POOL)]
        up = b.add1(Op.CONV_TRANSPOSE, [y, b.constant(_weights((4, 2, 3, 2)))],
                    {"strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 0]})
        return [y, pooled, where, average, lp, valid, *globals_, up]

    sizes = [[(n, 3, h, w)] for n, h, w in ((1, 5, 6), (2, 7, 4), (1, 3, 3))]
    _check(engine, _graph(make), sizes, rtol=1e-4)


def test_runtime_spatial_unsupported_is_a_clear_error() -> None:
    def make(b: GraphBuilder, op: Op, attrs: dict) -> list:
        x = b.add_input("x", TensorType(F32, (1, 3, "h", 6)))
        weights = _weights((3, 4, 3, 3) if op is Op.CONV_TRANSPOSE else (4, 3, 3, 3))
        operands = [x, b.constant(weights)]
        if op is Op.DEFORM_CONV:  # offsets for a 3x3 window over the 1x4 output
            operands.append(b.add_input("offset", TensorType(F32, (1, 18, "oh", 4))))
        return [b.add1(op, operands, attrs)]

    with pytest.raises(LoweringError, match="SAME_UPPER needs the spatial extents"):
        lower_graph(_graph(lambda b: make(b, Op.CONV, {"auto_pad": "SAME_UPPER"})))
    with pytest.raises(LoweringError, match="output_shape need the spatial extents"):
        lower_graph(_graph(lambda b: make(b, Op.CONV_TRANSPOSE, {"output_shape": [5, 8]})))
    with pytest.raises(LoweringError, match="run time"):
        lower_graph(_graph(lambda b: make(b, Op.DEFORM_CONV, {})))


# --- MaxUnpool ------------------------------------------------------------------------------

def test_max_unpool_runtime_output_shape(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", 2, 4, 4)))
        y, where = b.add(Op.MAX_POOL, [x], {"kernel_shape": [2, 2], "strides": [2, 2]},
                         outputs=2)
        shape = b.add_input("shape", TensorType(DType.I64, (4,)))
        attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
        return [b.add1(Op.MAX_UNPOOL, [y, where, shape], attrs),
                b.add1(Op.MAX_UNPOOL, [y, where], attrs), where]

    graph = _graph(make)
    lowered = engine.lower(graph)
    rng = np.random.default_rng(0)
    for shape in ((1, 2, 4, 4), (2, 2, 5, 3), (3, 2, 4, 6), (0, 2, 4, 4)):
        feeds: dict[str, np.ndarray] = {
            "x": rng.standard_normal((shape[0], 2, 4, 4)).astype(np.float32),
            "shape": np.array(shape, np.int64)}
        if not engine.takes(feeds):
            continue
        got = engine.run(lowered, feeds)
        assert got[0].shape == shape
        if shape[0]:
            for actual, want in zip(got, reference.run(graph, feeds), strict=True):
                np.testing.assert_array_equal(actual, want)
    with pytest.raises(RUN_ERRORS, match="negative"):
        engine.run(lowered, {"x": np.zeros((1, 2, 4, 4), np.float32),
                                    "shape": np.array((1, 2, -1, 4), np.int64)})


# --- Attention, rotary, linear attention -----------------------------------------------------

def test_attention_runtime_batch_and_seq(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        q = b.add_input("q", TensorType(F32, ("batch", 2, "seq", 4)))
        k = b.add_input("k", TensorType(F32, ("batch", 2, "seq", 4)))
        v = b.add_input("v", TensorType(F32, ("batch", 2, "seq", 3)))
        return [b.add1(Op.ATTENTION, [q, k, v], {"is_causal": 1})]

    _check(engine, _graph(make), [[(n, 2, s, 4), (n, 2, s, 4), (n, 2, s, 3)]
                          for n, s in ((1, 1), (2, 3), (0, 2))])


def test_attention_kv_cache_and_short_mask(engine: Engine) -> None:
    """Past length, sequence and mask length all run-time (a mask shorter than past + seq
    masks the trailing keys); present_key/value and the qk output are checked too."""
    def make(b: GraphBuilder) -> list:
        q = b.add_input("q", TensorType(F32, ("batch", 2, "seq", 4)))
        k = b.add_input("k", TensorType(F32, ("batch", 1, "seq", 4)))
        v = b.add_input("v", TensorType(F32, ("batch", 1, "seq", 4)))
        mask = b.add_input("m", TensorType(DType.BOOL, ("seq", "total")))
        past_k = b.add_input("pk", TensorType(F32, ("batch", 1, "past", 4)))
        past_v = b.add_input("pv", TensorType(F32, ("batch", 1, "past", 4)))
        return b.add(Op.ATTENTION, [q, k, v, mask, past_k, past_v], {}, outputs=4)

    sizes = [[(n, 2, s, 4), (n, 1, s, 4), (n, 1, s, 4), (s, t), (n, 1, p, 4), (n, 1, p, 4)]
             for n, s, p, t in ((1, 1, 2, 3), (2, 2, 1, 3), (1, 2, 0, 1))]
    _check(engine, _graph(make), sizes)


def test_packed_attention_and_rotary(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        q = b.add_input("q", TensorType(F32, ("batch", "seq", 8)))
        k = b.add_input("k", TensorType(F32, ("batch", "kv", 8)))
        cos = b.add_input("cos", TensorType(F32, ("batch", "seq", 2)))
        sin = b.add_input("sin", TensorType(F32, ("batch", "seq", 2)))
        rotated = b.add1(Op.ROTARY_EMBEDDING, [q, cos, sin], {"num_heads": 2})
        return [rotated, b.add1(Op.ATTENTION, [rotated, k, k],
                                {"q_num_heads": 2, "kv_num_heads": 2})]

    _check(engine, _graph(make), [[(n, s, 8), (n, t, 8), (n, s, 2), (n, s, 2)]
                          for n, s, t in ((1, 1, 2), (2, 3, 1))])


def test_linear_attention_runtime_batch_and_seq(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        q = b.add_input("q", TensorType(F32, ("batch", "seq", 4)))
        k = b.add_input("k", TensorType(F32, ("batch", "seq", 4)))
        v = b.add_input("v", TensorType(F32, ("batch", "seq", 6)))
        return b.add(Op.LINEAR_ATTENTION, [q, k, v],
                     {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "linear"},
                     outputs=2)

    _check(engine, _graph(make), [[(n, s, 4), (n, s, 4), (n, s, 6)] for n, s in ((1, 1), (2, 3))])


# --- RNN / GRU / LSTM ---------------------------------------------------------------------

@pytest.mark.parametrize("op,gates", [(Op.LSTM, 4), (Op.GRU, 3), (Op.RNN, 1)])
@pytest.mark.parametrize("constant_weights", [True, False])
def test_recurrent_runtime_seq_and_batch(op: Op, gates: int, constant_weights: bool,
                                        engine: Engine) -> None:
    """Bidirectional, biased; constant weights take the tiled engine, inputs the scalar one."""
    hidden, size = 3, 4
    shapes = [(2, gates * hidden, size), (2, gates * hidden, hidden), (2, 2 * gates * hidden)]

    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("seq", "batch", size)))
        if constant_weights:
            weights = [b.constant(_weights(s, seed)) for seed, s in enumerate(shapes)]
        else:
            weights = [b.add_input(name, TensorType(F32, s))
                       for name, s in zip("wrb", shapes, strict=True)]
        return b.add(op, [x, *weights], {"hidden_size": hidden, "direction": "bidirectional"},
                     outputs=3 if op is Op.LSTM else 2)

    extra = [] if constant_weights else shapes
    sizes = [[(s, n, size), *extra] for s, n in ((1, 1), (3, 2), (0, 2), (2, 0))]
    _check(engine, _graph(make), sizes, rtol=1e-4)


def test_lstm_sequence_lengths_batch_first(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", "seq", 4)))
        lengths = b.add_input("lens", TensorType(DType.I32, ("batch",)))
        w, r = b.constant(_weights((1, 12, 4))), b.constant(_weights((1, 12, 3), 1))
        return b.add(Op.LSTM, [x, w, r, None, lengths], {"hidden_size": 3, "layout": 1},
                     outputs=3)

    graph = _graph(make)
    lowered = engine.lower(graph)
    rng = np.random.default_rng(3)
    for n, s in ((1, 2), (3, 4)):
        feeds = {"x": rng.standard_normal((n, s, 4)).astype(np.float32),
                 "lens": rng.integers(0, s + 1, n).astype(np.int32)}
        for actual, want in zip(engine.run(lowered, feeds), reference.run(graph, feeds),
                                strict=True):
            np.testing.assert_allclose(actual, want, rtol=1e-4, atol=1e-5)


# --- Einsum, GridSample -------------------------------------------------------------------

def test_einsum_runtime_extents(engine: Engine) -> None:
    """Batched contraction with run-time batch and contraction labels, and a label whose
    operands use different symbols (checked at run time: a mismatch is reported)."""
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", "seq", 4)))
        y = b.add_input("y", TensorType(F32, ("batch", 4, "seq")))
        z = b.add_input("z", TensorType(F32, ("other", 4)))
        return [b.add1(Op.EINSUM, [x, y], {"equation": "bik,bkj->bij"}),
                b.add1(Op.EINSUM, [x, z], {"equation": "bik,bk->bi"})]

    graph = _graph(make)
    _check(engine, graph, [[(n, s, 4), (n, 4, s), (n, 4)] for n, s in ((1, 1), (3, 2), (2, 3))])
    feeds = _feed(graph, [(2, 1, 4), (2, 4, 1), (3, 4)], np.random.default_rng(0))
    with pytest.raises(RUN_ERRORS, match="differ"):
        engine.run(engine.lower(graph), feeds)


def test_grid_sample_runtime_batch(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", 2, 4, 5)))
        grid = b.add_input("grid", TensorType(F32, ("batch", 3, 3, 2)))
        return [b.add1(Op.GRID_SAMPLE, [x, grid])]

    _check(engine, _graph(make), [[(n, 2, 4, 5), (n, 3, 3, 2)] for n in (1, 3)])


def test_col2im_runtime_image_and_block_shapes(engine: Engine) -> None:
    """image_shape and block_shape fed at run time: the output extents come from the values
    (a shape kernel), and geometry that does not match the input is reported."""
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", "rows", "blocks")))
        image = b.add_input("image", TensorType(DType.I64, (2,)))
        block = b.add_input("block", TensorType(DType.I64, (2,)))
        return [b.add1(Op.COL2IM, [x, image, block], {"strides": [1, 2], "pads": [1, 0, 1, 0]})]

    graph = _graph(make)
    lowered = engine.lower(graph)
    rng = np.random.default_rng(5)
    for n, image, block in ((1, (4, 5), (2, 2)), (2, (3, 3), (1, 3)), (0, (2, 4), (2, 1))):
        blocks = [(image[0] + 2 - block[0]) + 1, (image[1] - block[1]) // 2 + 1]
        columns = rng.standard_normal((n, 2 * block[0] * block[1], blocks[0] * blocks[1]))
        feeds: dict[str, np.ndarray] = {
            "x": columns.astype(np.float32),
            "image": np.array(image, np.int64), "block": np.array(block, np.int64)}
        if not engine.takes(feeds):
            continue
        got = engine.run(lowered, feeds)[0]
        assert got.shape == (n, 2, *image)
        if n:
            np.testing.assert_allclose(got, reference.run(graph, feeds)[0], rtol=1e-5,
                                       atol=1e-6)
    feeds["x"] = np.zeros((1, 4, 7), np.float32)
    with pytest.raises(RUN_ERRORS, match="geometry"):
        engine.run(lowered, feeds)


def test_roi_ops_runtime_batch_and_regions(engine: Engine) -> None:
    def make(b: GraphBuilder) -> list:
        x = b.add_input("x", TensorType(F32, ("batch", 2, 6, 6)))
        rois = b.add_input("rois", TensorType(F32, ("regions", 4)))
        where = b.add_input("where", TensorType(DType.I64, ("regions",)))
        numbered = b.add_input("numbered", TensorType(F32, ("regions", 5)))
        return [b.add1(Op.ROI_ALIGN, [x, rois, where], {"output_height": 2,
                                                         "output_width": 2,
                                                         "sampling_ratio": 2}),
                b.add1(Op.MAX_ROI_POOL, [x, numbered], {"pooled_shape": [2, 2]})]

    graph = _graph(make)
    lowered = engine.lower(graph)
    rng = np.random.default_rng(4)
    for images, regions in ((1, 1), (2, 3), (2, 0)):
        corners = np.sort(rng.uniform(0, 5, (regions, 2, 2)), axis=1)
        boxes = corners.reshape(regions, 4)[:, [0, 2, 1, 3]].astype(np.float32)
        where = rng.integers(0, images, regions)
        feeds: dict[str, np.ndarray] = {
            "x": rng.standard_normal((images, 2, 6, 6)).astype(np.float32),
            "rois": boxes, "where": where,
            "numbered": np.concatenate([where[:, None], boxes], 1).astype(np.float32)}
        if not engine.takes(feeds):
            continue
        for actual, want in zip(engine.run(lowered, feeds), reference.run(graph, feeds),
                                strict=True):
            assert actual.shape == want.shape
            np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_recurrent_dynamic_sequence(kind: str, engine: Engine, tmp_path: Path) -> None:
    """A PyTorch bidirectional LSTM/GRU + Linear exported with dynamic batch and sequence
    axes (the tracing exporter): one lowering for every size, against torch."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from torch_export import export

    from kiln.frontends.onnx import load_onnx

    class Model(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(4, 5, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(10, 3)

        def forward(self, x: Any) -> Any:
            return self.head(self.rnn(x)[0])

    torch.manual_seed(0)
    module = Model().eval()
    path = export(module, [torch.randn(2, 3, 4)], tmp_path / f"{kind}.onnx", "torchscript",
                  ["x"], ["y"], {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}})
    graph = load_onnx(str(path))
    lowered = engine.lower(graph)
    for batch, seq in ((1, 1), (2, 5), (3, 2)):
        x = np.random.default_rng(batch).standard_normal((batch, seq, 4)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        got = engine.run(lowered, {graph.inputs[0].name: x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
