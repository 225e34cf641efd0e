"""What the optimizer leaves of the Transposes tf2onnx puts around TensorFlow's NHWC and
batch-major tensors, and the rules and layout choices that absorb them.

The Keras CNN (keras_models.cnn: Conv/BatchNorm/ReLU/MaxPool twice, Flatten, Dense): tf2onnx's
own optimizer pushes its transposes to the boundaries, one NHWC -> NCHW at the image and one
NCHW -> NHWC before the Flatten. At -O3 layout selection runs the convolutions on NCHW[b]c
tensors, and ``absorb_moves`` folds the transform out of the blocked layout, the Transpose to
NHWC and the Flatten into the Dense weights' row order: the Dense reads the last pool's blocked
output directly. What stays is the image's Transpose: the stem convolution has fewer input
channels than the block and reads its NCHW operand in place (``src_layout="NCHW"``), so that
transpose is the image's only reorder. With channels filling whole blocks, layout selection
makes the blocked form straight from NHWC in one reorder. tf2onnx's LSTM (time-major, between
batch <-> time Transposes) becomes a batch-major LSTM. Results: the reference executor before
and after (hand-written IR) and onnxruntime (the Keras CNN).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from passcheck import assert_sound, dense, ops, parse

from kiln.compiler import build
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.select_layout import select_layout
from kiln.compiler.passes.simplify import absorb_moves
from kiln.compiler.passes.specialize import specialize
from kiln.frontends.onnx import load_onnx

FRAMEWORKS = Path(__file__).resolve().parents[1] / "frameworks"


def _weights(*shape: int) -> str:
    return dense(np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32))


# name -> (IR text, ops left after the pass)
FOLDS = {
    "nhwc_flatten_matmul": (f"""func @main(%x: f32[2,3,4,5]) -> (f32[2,7]) {{
  %t = transpose(%x) {{perm=[0, 2, 3, 1]}} : f32[2,4,5,3]
  %s = constant() {{value=dense<i64[2]: [2, 60]>}} : i64[2]
  %r = reshape(%t, %s) : f32[2,60]
  %w = constant() {{value={_weights(60, 7)}}} : f32[60,7]
  %y = matmul(%r, %w) : f32[2,7]
  return %y
}}
""", ["reshape", "matmul"]),
    "blocked_flatten_gemm_transposed": (f"""func @main(%x: f32[2,2,3,3,4]) -> (f32[2,5]) {{
  %p = layout_transform(%x) {{channels=6, dst_layout="NCHW", src_layout="NCHW4c"}} : f32[2,6,3,3]
  %f = flatten(%p) : f32[2,54]
  %w = constant() {{value={_weights(5, 54)}}} : f32[5,54]
  %b = constant() {{value={_weights(5)}}} : f32[5]
  %y = gemm(%f, %w, %b) {{transB=1}} : f32[2,5]
  return %y
}}
""", ["reshape", "gemm"]),
}
# Moves that mix batch rows, or weights only known at run time: nothing to fold.
KEPT = {
    "batch_moved": """func @main(%x: f32[2,3,4]) -> (f32[3,5]) {
  %t = transpose(%x) {perm=[1, 0, 2]} : f32[3,2,4]
  %s = constant() {value=dense<i64[2]: [3, 8]>} : i64[2]
  %r = reshape(%t, %s) : f32[3,8]
  %w = constant() {value=WEIGHTS} : f32[8,5]
  %y = matmul(%r, %w) : f32[3,5]
  return %y
}
""".replace("WEIGHTS", _weights(8, 5)),
    "runtime_weights": """func @main(%x: f32[2,3,4], %w: f32[12,5]) -> (f32[2,5]) {
  %t = transpose(%x) {perm=[0, 2, 1]} : f32[2,4,3]
  %f = flatten(%t) : f32[2,12]
  %y = matmul(%f, %w) : f32[2,5]
  return %y
}
""",
}


def _lstm(outputs: str, ret: str) -> str:
    """tf2onnx's one-direction LSTM over a batch-major sequence: batch <-> time Transposes
    around a layout-0 LSTM, and the Squeeze of its direction axis."""
    return f"""func @main(%x: f32[2,5,3]) -> ({outputs}) {{
  %t = transpose(%x) {{perm=[1, 0, 2]}} : f32[5,2,3]
  %w = constant() {{value={_weights(1, 16, 3)}}} : f32[1,16,3]
  %r = constant() {{value={_weights(1, 16, 4)}}} : f32[1,16,4]
  %h = constant() {{value={_weights(1, 2, 4)}}} : f32[1,2,4]
  %y, %yh, %yc = lstm(%t, %w, %r, _, _, %h) {{hidden_size=4}} : f32[5,1,2,4], f32[1,2,4], f32[1,2,4]
  %a = constant() {{value=dense<i64[1]: [1]>}} : i64[1]
  %s = squeeze(%y, %a) : f32[5,2,4]
  %o = transpose(%s) {{perm=[1, 0, 2]}} : f32[2,5,4]
  return {ret}
}}
"""


FOLDS["batch_major_lstm"] = (_lstm("f32[2,5,4]", "%o"), ["lstm", "squeeze"])
KEPT["lstm_final_state_read"] = _lstm("f32[2,5,4], f32[1,2,4]", "%o, %yh")


@pytest.mark.parametrize("case", list(FOLDS))
def test_moves_fold_into_weights(case: str) -> None:
    text, expected = FOLDS[case]
    before = parse(text)
    after = absorb_moves(before)
    assert ops(after) == expected
    # the padded lanes of the blocked input are random here, and meet zero weights
    assert_sound(before, after, exact=False)


@pytest.mark.parametrize("case", list(KEPT))
def test_moves_stay(case: str) -> None:
    graph = parse(KEPT[case])
    assert absorb_moves(graph) is graph


def _count(graph: Graph, op: Op) -> int:
    return sum(node.op is op for node in graph.walk())


def _nhwc_conv(channels: int, also_nchw: bool = False) -> Graph:
    """An NHWC image of ``channels`` transposed to NCHW into a 3x3 Conv of 16 and a ReLU
    (``also_nchw``: the transposed image is an output too)."""
    extra_type, extra = (f", f32[2,{channels},6,6]", ", %t") if also_nchw else ("", "")
    return parse(f"""func @main(%x: f32[2,6,6,{channels}]) -> (f32[2,16,6,6]{extra_type}) {{
  %t = transpose(%x) {{perm=[0, 3, 1, 2]}} : f32[2,{channels},6,6]
  %w = constant() {{value={_weights(16, channels, 3, 3)}}} : f32[16,{channels},3,3]
  %c = conv(%t, %w) {{pads=[1, 1, 1, 1]}} : f32[2,16,6,6]
  %y = relu(%c) : f32[2,16,6,6]
  return %y{extra}
}}
""")


def test_nhwc_transpose_into_blocks_is_one_reorder() -> None:
    """Channels filling whole blocks: the Transpose and the transform to NCHW8c become one
    transpose of the NHWC input viewed as [N, H, W, C/8, 8]."""
    before = _nhwc_conv(16)
    after = select_layout(before, block=8)
    assert ops(after) == ["reshape", "transpose", "conv_nchwc", "relu", "layout_transform"]
    transpose = next(n for n in after.nodes if n.op is Op.TRANSPOSE)
    assert transpose.attrs["perm"] == (0, 3, 1, 2, 4)
    assert_sound(before, after, exact=False)


def test_nhwc_transpose_read_in_both_layouts() -> None:
    """The NCHW result is an output too: the Transpose stays for it, and the blocked form is
    still made from the NHWC input."""
    before = _nhwc_conv(16, also_nchw=True)
    after = select_layout(before, block=8)
    assert sorted(ops(after)) == sorted(["reshape", "transpose", "conv_nchwc", "relu",
                                         "layout_transform", "transpose"])
    assert_sound(before, after, exact=False)


def test_nhwc_transpose_of_partial_blocks_stays() -> None:
    """12 channels do not fill blocks of 8: the Transpose stays, then the transform pads."""
    before = _nhwc_conv(12)
    assert ops(select_layout(before, block=8)) == [
        "transpose", "layout_transform", "conv_nchwc", "relu", "layout_transform"]


def _keras_cnn(folder: Path, channels: int):  # type: ignore[no-untyped-def]
    """The Keras CNN exported by tf2onnx (keras_models.KerasExport)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's first import
    pytest.importorskip("tensorflow", reason="pip install tensorflow-cpu")
    pytest.importorskip("tf2onnx", reason="pip install tf2onnx")
    sys.path.insert(0, str(FRAMEWORKS))
    import keras_models

    return keras_models.cnn(folder, batch=2, channels=channels)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return _keras_cnn(tmp_path_factory.mktemp("keras"), channels=3)


def test_only_the_image_transpose_is_left(cnn) -> None:  # type: ignore[no-untyped-def]
    graph = specialize(load_onnx(cnn.path), {"x": cnn.inputs["x"].shape})
    assert _count(graph, Op.TRANSPOSE) == 2  # what tf2onnx exports
    # stopped before fusion, which hides the convolutions inside fused nodes
    optimized = optimize(graph, 3, verify_each=True, stop_after="absorb_moves")
    transposes = [n for n in optimized.nodes if n.op is Op.TRANSPOSE]
    assert len(transposes) == 1 and transposes[0].inputs[0] is optimized.inputs[0]
    readers = [n for n in optimized.nodes if transposes[0].outputs[0] in n.inputs]
    assert [(n.op, n.attrs.get("src_layout")) for n in readers] == [(Op.CONV_NCHWC, "NCHW")]
    assert _count(optimized, Op.LAYOUT_TRANSFORM) == 0
    # the Dense reads the last pool's blocked output through a Reshape
    assert _count(optimized, Op.MAX_POOL_NCHWC) == 2 and _count(optimized, Op.MATMUL) == 1


@pytest.mark.parametrize("opt_level", [2, 3])
def test_results_match_onnxruntime(cnn, opt_level: int) -> None:  # type: ignore[no-untyped-def]
    """-O2 folds only the Transpose to NHWC into the weights (no blocked layout there)."""
    got = build(load_onnx(cnn.path), input_shapes={"x": cnn.inputs["x"].shape},
                opt_level=opt_level).run(cnn.inputs)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(cnn.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got[0], session.run(None, cnn.inputs)[0], rtol=1e-4, atol=1e-5)


def test_a_grayscale_cnn_keeps_no_transpose(tmp_path: Path) -> None:
    """A one-channel NHWC image is already NCHW in memory (tf2onnx reads it through a
    Reshape; simplify's transpose_as_reshape does the same for other exporters): with the
    Transpose before the Dense folded into its weights, no transpose is left."""
    gray = _keras_cnn(tmp_path, channels=1)
    graph = specialize(load_onnx(gray.path), {"x": gray.inputs["x"].shape})
    assert _count(graph, Op.TRANSPOSE) == 1
    optimized = optimize(graph, 3, verify_each=True)
    assert _count(optimized, Op.TRANSPOSE) == 0
    got = build(graph, opt_level=3).run(gray.inputs)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(gray.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got[0], session.run(None, gray.inputs)[0], rtol=1e-4, atol=1e-5)
