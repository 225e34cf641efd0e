"""The PyTorch zoo with free axes: one compiled library for every batch size (and sequence
length), and the optimizer passes on graphs with symbolic dims.

Zoo: each model of ``zoo.py`` (at test widths) is exported with a dynamic batch axis, and a
dynamic sequence axis where it has one, by each exporter that keeps those axes free, compiled
ONCE with ``build(load_onnx(path), opt_level=3)`` (-O0 for two cases) and run at several sizes,
each compared with onnxruntime on the same inputs (``rtol=1e-4, atol=1e-5`` as in
test_torch_models.py: both run the same ONNX graph, only summation order differs). The builds
verify the IR after every pass (``verify_each``), so a pass that mistypes a symbolic dim fails
here. The BERT-style encoder's layers use ``nn.MultiheadAttention``, whose TorchScript export
writes the traced sequence length into a Reshape: that export keeps only its batch free; the
bare ``nn.TransformerEncoderLayer`` only the dynamo exporter can export at all.

Also with a free batch: a QDQ-quantized CNN (quant_fusion's integer layers, bit-exact with
onnxruntime) and tf2onnx's Keras CNN and LSTM (slow: TensorFlow), optimized as with a static
batch (blocked convolutions, moves folded into the Dense weights, a batch-major LSTM).

Passes: hand-built graphs with a symbolic batch (and sequence) through the passes that rewrite
them, checked against the numpy reference executor at several sizes (and, for layout
selection, a compiled library): a rewrite re-emitting a Reshape fed by a Shape chain keeps the
symbols of its type; a rewrite whose type the rules cannot prove, or whose nodes they reject,
is refused; NCHW[b]c blocking with a symbolic batch (also from NHWC); moves before a Dense
folded into its weights; BatchNorm folding; simplification (reshape chains, no-op reshapes,
Expand into a broadcast).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.compiler import build, reference
from kiln.compiler.errors import TypeInferenceError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Node
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ir.verify import verify
from kiln.compiler.passes.fold_batchnorm import fold_batchnorm
from kiln.compiler.passes.rewrite import Replacement, Rewriter, rule, transform
from kiln.compiler.passes.select_layout import select_layout
from kiln.compiler.passes.simplify import simplify

VS_ONNXRUNTIME = {"rtol": 1e-4, "atol": 1e-5}
# Rewrites that only move or drop work are exact; BatchNorm folding rounds the weights once.
EXACT = {"rtol": 0.0, "atol": 0.0}
FOLDED = {"rtol": 1e-5, "atol": 1e-5}

# (batch, sequence) sizes a model runs at: images and feature vectors have no sequence (0).
BATCHES = ((1, 0), (3, 0))
SEQUENCES = ((1, 1), (3, 7), (2, 33))


@dataclass(frozen=True)
class Spec:
    """A zoo model at test size: ``make`` builds the module (seeded), ``inputs`` makes its
    inputs at (batch, sequence), ``axes`` are the dynamic axes of inputs and outputs."""

    make: Callable[[Any], Any]
    inputs: Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]
    outputs: tuple[str, ...]
    axes: dict[str, dict[int, str]]
    sizes: tuple[tuple[int, int], ...] = SEQUENCES
    exporters: tuple[str, ...] = ("torchscript", "dynamo")
    # per exporter: dynamic axes replacing ``axes`` and sizes replacing ``sizes``
    overrides: dict[str, tuple[dict[str, dict[int, str]], tuple[tuple[int, int], ...]]] = \
        field(default_factory=dict)


def _image(channels: int, side: int) -> Callable[[np.random.Generator, int, int],
                                                  dict[str, np.ndarray]]:
    return lambda rng, batch, _: {
        "image": rng.standard_normal((batch, channels, side, side)).astype(np.float32)}


def _ids(vocab: int) -> Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]:
    return lambda rng, batch, seq: {"ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64)}


BATCH_AXES = {"image": {0: "batch"}, "logits": {0: "batch"}}
TOKEN_AXES = {"ids": {0: "batch", 1: "seq"}}


def _resnet(zoo: Any) -> Any:
    model = zoo.SmallResNet()
    zoo._randomize_batchnorm(model, np.random.default_rng(0))
    return model


def _mobilenet(zoo: Any) -> Any:
    model = zoo.MobileNetV2Style()
    zoo._randomize_batchnorm(model, np.random.default_rng(4))
    return model


def _mlp(zoo: Any) -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 10))


def _encoder_layer(zoo: Any) -> Any:
    from torch import nn

    return nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                      batch_first=True)


SPECS: dict[str, Spec] = {
    "resnet_style_cnn": Spec(_resnet, _image(3, 32), ("logits",), BATCH_AXES, BATCHES),
    "mobilenet_v2_style": Spec(_mobilenet, _image(3, 32), ("logits",), BATCH_AXES, BATCHES),
    "lenet": Spec(lambda zoo: zoo.LeNet5(), _image(1, 28), ("logits",), BATCH_AXES, BATCHES),
    "mlp": Spec(_mlp, lambda rng, batch, _: {
        "features": rng.standard_normal((batch, 784)).astype(np.float32)}, ("logits",),
        {"features": {0: "batch"}, "logits": {0: "batch"}}, BATCHES),
    "two_layer_lstm": Spec(
        lambda zoo: zoo.TwoLayerLSTM(),
        lambda rng, batch, seq: {
            "sequence": rng.standard_normal((batch, seq, 8)).astype(np.float32)},
        ("output", "hidden", "cell"),
        {"sequence": {0: "batch", 1: "seq"}, "output": {0: "batch", 1: "seq"},
         "hidden": {1: "batch"}, "cell": {1: "batch"}}),
    "attention_encoder": Spec(lambda zoo: zoo.AttentionEncoder(), _ids(50), ("logits",),
                              {**TOKEN_AXES, "logits": {0: "batch"}}),
    # torch 2.13's TorchScript exporter cannot trace nn.MultiheadAttention (zoo.UNSUPPORTED).
    "transformer_encoder_layer": Spec(
        _encoder_layer,
        lambda rng, batch, seq: {
            "tokens": rng.standard_normal((batch, seq, 32)).astype(np.float32)},
        ("encoded",), {"tokens": {0: "batch", 1: "seq"}, "encoded": {0: "batch", 1: "seq"}},
        exporters=("dynamo",)),
    # GPT-2 and BERT: 64 positions, so sequences up to 64.
    "gpt2_style_decoder": Spec(lambda zoo: zoo.GPT2StyleDecoder(100, 64, 32, 4, 2), _ids(100),
                               ("logits",), {**TOKEN_AXES, "logits": {0: "batch", 1: "seq"}}),
    "bert_style_encoder": Spec(
        lambda zoo: zoo.BertStyleEncoder(100, 64, 32, 4, 2), _ids(100), ("hidden",),
        {**TOKEN_AXES, "hidden": {0: "batch", 1: "seq"}},
        # The export is traced at sequence 5 (see ``_export``).
        overrides={"torchscript": ({"ids": {0: "batch"}, "hidden": {0: "batch"}},
                                   ((1, 5), (3, 5)))}),
}

# (model, exporter, -O level): every model by both exporters at -O3, two at -O0; those in
# FAST run in the fast tier (about half a minute together), the others are marked slow.
BUILDS = [(name, exporter, 3) for name, spec in SPECS.items() for exporter in spec.exporters] + [
    ("mlp", "dynamo", 0), ("resnet_style_cnn", "dynamo", 0)]
FAST = {("mlp", "torchscript", 3), ("mlp", "dynamo", 0), ("lenet", "torchscript", 3),
        ("resnet_style_cnn", "torchscript", 3), ("two_layer_lstm", "torchscript", 3),
        ("gpt2_style_decoder", "torchscript", 3)}
CASES = [pytest.param(*case, id="{}-{}-O{}".format(*case),
                      marks=[] if case in FAST else [pytest.mark.slow]) for case in BUILDS]


def _export(name: str, exporter: str,
            folder: Path) -> tuple[Path, Spec, tuple[tuple[int, int], ...]]:
    """The model exported by ``exporter``, its spec and the sizes to run it at."""
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    import torch
    import zoo
    from torch_export import export

    spec = SPECS[name]
    axes, sizes = spec.overrides.get(exporter, (spec.axes, spec.sizes))
    torch.manual_seed(0)
    module = spec.make(zoo)
    # Traced at batch 2, sequence 5: sizes the runs below avoid, so nothing baked in passes.
    example = spec.inputs(np.random.default_rng(1), 2, 5)
    path = export(module, [torch.from_numpy(a) for a in example.values()],
                  folder / f"{name}_{exporter}.onnx", exporter, list(example),
                  list(spec.outputs), axes)
    return path, spec, sizes


@pytest.mark.parametrize(("name", "exporter", "level"), CASES)
def test_compiled_once_matches_onnxruntime_at_every_size(name: str, exporter: str, level: int,
                                                         tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from torch_export import assert_all_close

    from kiln.frontends.onnx import load_onnx

    path, spec, sizes = _export(name, exporter, tmp_path)
    graph = load_onnx(path)
    assert any(not v.type.is_static for v in graph.inputs), "the export froze every axis"
    executable = build(graph, opt_level=level, verify_each=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    for batch, seq in sizes:
        inputs = spec.inputs(rng, batch, seq)
        assert_all_close(executable.run(inputs), session.run(None, inputs),
                         what=f"{name} ({exporter}, -O{level}) at batch {batch}, seq {seq}",
                         **VS_ONNXRUNTIME)


def test_quantized_cnn_with_a_dynamic_batch(tmp_path: Path) -> None:
    """A small CNN exported with a free batch and quantized by ``quantize_static`` (QDQ,
    per-channel int8 weights): quant_fusion runs its convolutions as QLinearConv at any batch,
    bit-exact with onnxruntime (integer accumulation and requantization)."""
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    onnxruntime = pytest.importorskip("onnxruntime")
    quantization = pytest.importorskip("onnxruntime.quantization")
    import torch
    from torch import nn
    from torch_export import export

    from kiln.compiler.passes.pipeline import optimize
    from kiln.frontends.onnx import load_onnx

    class Images(quantization.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(7)
            self.batches = iter([{"image": rng.standard_normal((1, 3, 16, 16)).astype(
                np.float32)} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 * 4 * 4, 10))
    source = export(cnn, [torch.randn(2, 3, 16, 16)], tmp_path / "cnn.onnx", "torchscript",
                    ["image"], ["logits"], BATCH_AXES)
    path = tmp_path / "cnn_qdq.onnx"
    quantization.quantize_static(
        str(source), str(path), Images(),
        quant_format=quantization.QuantFormat.QDQ, per_channel=True,
        activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8)
    graph = load_onnx(path)
    assert graph.inputs[0].type.shape == ("batch", 3, 16, 16)
    assert Op.QLINEAR_CONV in {n.op for n in optimize(graph, 3).nodes}
    executable = build(graph, opt_level=3, verify_each=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for batch in (1, 3):
        image = (rng.standard_normal((batch, 3, 16, 16)) * 1.5).astype(np.float32)
        np.testing.assert_array_equal(executable.run({"image": image})[0],
                                      session.run(None, {"image": image})[0],
                                      err_msg=f"at batch {batch}")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn_3", "cnn_16", "lstm"])
def test_keras_model_with_a_free_batch(model: str, tmp_path: Path) -> None:
    """tf2onnx's Keras models (tests/frameworks/keras_models.py) with their batch left free,
    at -O3 optimized as with a static batch. The CNN (NHWC, Transposes at the image and before
    the Flatten): the convolutions run blocked (16 channels: made from NHWC in one reorder),
    the moves before the Dense fold into its weights, only the image's reorder is left. The
    LSTM (time-major between batch <-> time Transposes) runs batch-major on the input.
    One library matches onnxruntime at every batch."""
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's first import
    pytest.importorskip("tensorflow", reason="pip install tensorflow-cpu")
    pytest.importorskip("tf2onnx", reason="pip install tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frameworks"))
    import keras_models

    from kiln.compiler.passes.pipeline import optimize
    from kiln.frontends.onnx import load_onnx

    kind, _, channels = model.partition("_")
    exported = (keras_models.cnn(tmp_path, batch=2, channels=int(channels)) if kind == "cnn"
                else keras_models.lstm(tmp_path))
    graph = load_onnx(exported.path)
    assert not isinstance(graph.inputs[0].type.shape[0], int)
    optimized = optimize(graph, 3, verify_each=True, stop_after="absorb_moves")
    if kind == "cnn":
        assert Op.CONV not in _ops(optimized) and Op.LAYOUT_TRANSFORM not in _ops(optimized)
        assert _ops(optimized).count(Op.TRANSPOSE) == 1  # the image's
    else:
        (lstm,) = [n for n in optimized.nodes if n.op is Op.LSTM]
        # reads the batch-major sequence as it is (only its zero initial states, expanded to
        # the run-time batch, are transposed)
        assert lstm.attrs["layout"] == 1 and lstm.inputs[0] is optimized.inputs[0]
    executable = build(graph, opt_level=3, verify_each=True)
    session = onnxruntime.InferenceSession(str(exported.path),
                                           providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(8)
    for batch in (1, 3):
        inputs = {"x": rng.standard_normal((batch, *exported.inputs["x"].shape[1:])).astype(
            np.float32)}
        np.testing.assert_allclose(executable.run(inputs)[0], session.run(None, inputs)[0],
                                   err_msg=f"at batch {batch}", **VS_ONNXRUNTIME)


# ---- the passes on graphs with symbolic dims ------------------------------------------------


def _reshape_by_shape_chain() -> Graph:
    """x: f32[batch,seq,32] -> relu(reshape(x, concat(shape(x)[0:2], [4, 8])))."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("batch", "seq", 32)))
    head = b.add1(Op.SLICE, [b.add1(Op.SHAPE, [x]), b.constant(np.array([0])),
                             b.constant(np.array([2]))])
    target = b.add1(Op.CONCAT, [head, b.constant(np.array([4, 8]))], {"axis": 0})
    return b.finish([b.add1(Op.RELU, [b.add1(Op.RESHAPE, [x, target])])])


def _reshape_of(graph: Graph) -> Node:
    (node,) = [n for n in graph.nodes if n.op is Op.RESHAPE]
    return node


def test_rewriter_types_new_nodes_with_the_shape_values() -> None:
    graph = _reshape_by_shape_chain()
    assert _reshape_of(graph).outputs[0].type.shape == ("batch", "seq", 4, 8)

    @rule("re-emit", Op.RESHAPE)
    def re_emit(rw: Rewriter, node: Node) -> Replacement:
        return rw.emit(node.op, node.inputs, node.attrs)

    fired: Counter[str] = Counter()
    rewritten = transform(graph, [re_emit], fired)
    assert fired["re-emit"] == 1
    verify(rewritten)
    assert _reshape_of(rewritten).outputs[0].name != _reshape_of(graph).outputs[0].name
    assert _reshape_of(rewritten).outputs[0].type.shape == ("batch", "seq", 4, 8)


def test_a_rewrite_the_rules_cannot_type_is_refused() -> None:
    """A replacement typed `?` where the value is `batch` is refused (the graph stays), not
    an internal error."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("batch", 6)))
    runtime_shape = b.add_input("shape", TensorType(DType.I64, (2,)))
    same = b.add1(Op.RESHAPE, [x, b.add1(Op.SHAPE, [x])])
    graph = b.finish([b.add1(Op.RELU, [same])])

    @rule("reshape-by-runtime-shape", Op.RESHAPE)
    def by_runtime_shape(rw: Rewriter, node: Node) -> Replacement:
        return rw.emit(Op.RESHAPE, [node.inputs[0], runtime_shape])

    assert transform(graph, [by_runtime_shape]) is graph


def test_a_rewrite_the_rules_reject_is_refused_on_symbolic_dims() -> None:
    """New nodes the type rules reject leave a graph with symbolic dims as it was (the rule
    could not prove its rewrite); on static types the same rule is a compiler bug and raises."""

    @rule("bad-broadcast", Op.RELU)
    def bad_broadcast(rw: Rewriter, node: Node) -> Replacement:
        return rw.emit(Op.ADD, [node.inputs[0], rw.constant(np.zeros(5, np.float32))])

    for batch in ("batch", 2):
        b = GraphBuilder()
        x = b.add_input("x", TensorType(DType.F32, (batch, 4)))
        graph = b.finish([b.add1(Op.RELU, [x])])
        if batch == 2:
            with pytest.raises(TypeInferenceError, match="do not broadcast"):
                transform(graph, [bad_broadcast])
        else:
            assert transform(graph, [bad_broadcast]) is graph


def _same_results(before: Graph, after: Graph, sizes: dict[str, tuple[tuple[int, ...], ...]],
                  tolerance: dict[str, float]) -> None:
    """``before`` and ``after`` agree on random inputs of each set of shapes in ``sizes``
    (input name -> shapes, one per run), run by the reference executor."""
    rng = np.random.default_rng(3)
    runs = len(next(iter(sizes.values())))
    for run in range(runs):
        inputs = {name: rng.standard_normal(shapes[run]).astype(np.float32)
                  for name, shapes in sizes.items()}
        for got, expected in zip(reference.run(after, inputs), reference.run(before, inputs),
                                 strict=True):
            np.testing.assert_allclose(got, expected, err_msg=f"at {inputs['x'].shape}",
                                       **tolerance)


def _ops(graph: Graph) -> list[Op]:
    return [n.op for n in graph.nodes if n.op is not Op.CONSTANT]


def test_simplify_with_symbolic_dims() -> None:
    """A Reshape to its operand's own (symbolic) shape is gone; an Expand to the symbolic
    shape another operand of an Add has is absorbed by the Add's broadcast."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("batch", 1, 4)))
    z = b.add_input("z", TensorType(DType.F32, ("batch", 3, 4)))
    same = b.add1(Op.RESHAPE, [x, b.add1(Op.SHAPE, [x])])
    expanded = b.add1(Op.EXPAND, [same, b.add1(Op.SHAPE, [z])])
    graph = b.finish([b.add1(Op.ADD, [expanded, z])])
    simplified = simplify(graph)
    verify(simplified)
    assert _ops(simplified) == [Op.ADD]
    assert simplified.outputs[0].type.shape == ("batch", 3, 4)
    _same_results(graph, simplified, {"x": ((1, 1, 4), (5, 1, 4)), "z": ((1, 3, 4), (5, 3, 4))},
                  EXACT)


def test_reshape_chains_with_symbolic_dims_become_one_reshape() -> None:
    """reshape(reshape(x, [batch,seq,4,8]), [batch*seq, 32]) is one Reshape of x (its shape
    [-1, 32]); transpose(x: [batch,1,seq]) by [0,2,1] moves nothing: a Reshape [0, -1, 1]."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("batch", "seq", 32)))
    head = b.add1(Op.SLICE, [b.add1(Op.SHAPE, [x]), b.constant(np.array([0])),
                             b.constant(np.array([2]))])
    split = b.add1(Op.RESHAPE, [x, b.add1(Op.CONCAT, [head, b.constant(np.array([4, 8]))],
                                          {"axis": 0})])
    rows = b.add1(Op.FLATTEN, [split], {"axis": 2})
    y = b.add_input("y", TensorType(DType.F32, ("batch", 1, "seq")))
    moved = b.add1(Op.TRANSPOSE, [y], {"perm": [0, 2, 1]})
    graph = b.finish([rows, moved])
    simplified = simplify(graph)
    verify(simplified)
    assert _ops(simplified) == [Op.RESHAPE, Op.RESHAPE]
    assert [v.type.shape for v in simplified.outputs] == [("batch*seq", 32), ("batch", "seq", 1)]
    _same_results(graph, simplified, {"x": ((1, 1, 32), (3, 5, 32)),
                                      "y": ((1, 1, 1), (3, 1, 5))}, EXACT)


def _conv_graph(batch_norm: bool) -> Graph:
    """x: f32[batch,8,6,6] -> conv 3x3 (+ BatchNorm) -> relu -> max pool 2x2."""
    rng = np.random.default_rng(4)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("batch", 8, 6, 6)))
    y = b.add1(Op.CONV, [x, b.constant(rng.standard_normal((8, 8, 3, 3)).astype(np.float32)),
                         b.constant(rng.standard_normal(8).astype(np.float32))],
               {"pads": [1, 1, 1, 1]})
    if batch_norm:
        params = [rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.2, 8), rng.normal(0, 0.5, 8),
                  rng.uniform(0.5, 2, 8)]
        y = b.add1(Op.BATCH_NORMALIZATION,
                   [y, *(b.constant(p.astype(np.float32)) for p in params)])
    pooled = b.add1(Op.MAX_POOL, [b.add1(Op.RELU, [y])], {"kernel_shape": [2, 2],
                                                           "strides": [2, 2]})
    return b.finish([pooled])


def test_fold_batchnorm_with_a_symbolic_batch() -> None:
    graph = _conv_graph(batch_norm=True)
    folded = fold_batchnorm(graph)
    verify(folded)
    assert Op.BATCH_NORMALIZATION not in _ops(folded)
    assert folded.outputs[0].type.shape == ("batch", 8, 3, 3)
    _same_results(graph, folded, {"x": ((1, 8, 6, 6), (3, 8, 6, 6))}, FOLDED)


def _nhwc_graph() -> Graph:
    """x: f32[batch,6,6,8] (NHWC, as tf2onnx writes) -> transpose to NCHW -> conv -> relu
    -> max pool."""
    nchw = _conv_graph(batch_norm=False)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("batch", 6, 6, 8)))
    value = b.add1(Op.TRANSPOSE, [x], {"perm": [0, 3, 1, 2]})
    mapping = {nchw.inputs[0].name: value}
    for node in nchw.nodes:
        if node.op is Op.CONSTANT:
            mapping[node.outputs[0].name] = b.constant(node.attrs["value"])
        else:
            mapping[node.outputs[0].name] = b.add1(
                node.op, [mapping[v.name] for v in node.inputs], node.attrs)
    return b.finish([mapping[nchw.outputs[0].name]])


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_blocked_layout_with_a_symbolic_batch(layout: str) -> None:
    """The Conv, ReLU and pool run on NCHW4c tensors of a symbolic batch (made from the NHWC
    input in one reorder for ``nhwc``); one compiled library serves every batch size."""
    graph = _conv_graph(batch_norm=False) if layout == "nchw" else _nhwc_graph()
    blocked = select_layout(graph, block=4)
    verify(blocked)
    assert {Op.CONV_NCHWC, Op.MAX_POOL_NCHWC} <= set(_ops(blocked))
    assert Op.CONV not in _ops(blocked)
    assert blocked.outputs[0].type.shape == ("batch", 8, 3, 3)
    shapes = tuple((n, 8, 6, 6) if layout == "nchw" else (n, 6, 6, 8) for n in (1, 3))
    _same_results(graph, blocked, {"x": shapes}, EXACT)
    executable = build(graph, opt_level=3)
    rng = np.random.default_rng(5)
    for shape in shapes:
        inputs = {"x": rng.standard_normal(shape).astype(np.float32)}
        np.testing.assert_allclose(executable.run(inputs)[0], reference.run(graph, inputs)[0],
                                   rtol=1e-4, atol=1e-5, err_msg=f"compiled at {shape}")


def test_moves_before_a_dense_fold_into_its_weights_with_a_symbolic_batch() -> None:
    """A Keras-style head: the blocked result goes back to NCHW, is transposed to NHWC,
    flattened and multiplied by constant weights; with a symbolic batch too, the moves become
    an order of the weights' rows, and only a Reshape of the blocked tensor is left."""
    from kiln.compiler.passes.pipeline import optimize

    features = _nhwc_graph()
    b = GraphBuilder()
    x = b.add_input("x", features.inputs[0].type)
    mapping = {x.name: x}
    for node in features.nodes:
        mapping[node.outputs[0].name] = (
            b.constant(node.attrs["value"]) if node.op is Op.CONSTANT else
            b.add1(node.op, [mapping[v.name] for v in node.inputs], node.attrs))
    nhwc = b.add1(Op.TRANSPOSE, [mapping[features.outputs[0].name]], {"perm": [0, 2, 3, 1]})
    weights = np.random.default_rng(6).standard_normal((72, 5)).astype(np.float32)
    graph = b.finish([b.add1(Op.MATMUL, [b.add1(Op.FLATTEN, [nhwc]), b.constant(weights)])])
    optimized = optimize(graph, 3, verify_each=True)
    moves = [n.op for n in optimized.walk() if n.op in (Op.TRANSPOSE, Op.LAYOUT_TRANSFORM)]
    assert moves == [Op.TRANSPOSE]  # the input's, into NCHW or NCHW[b]c: none after the Conv
    assert optimized.outputs[0].type.shape == ("batch", 5)
    _same_results(graph, optimized, {"x": ((1, 6, 6, 8), (3, 6, 6, 8))}, FOLDED)
