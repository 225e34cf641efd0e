"""onnxruntime-quantized PyTorch models compiled by ``kiln compile``, compared with onnxruntime.

A small CNN (conv-relu, max pool, strided conv-relu, depthwise conv, flatten, linear) exported
to ONNX, then ``onnxruntime.quantization.quantize_static`` over a calibration reader of random
images: QDQ format (int8 activations; per-tensor and per-channel weights) and QOperator format
(QLinearConv; uint8 activations). Kiln's quant_fusion pass turns the QDQ layers into the
integer ops onnxruntime fuses them into, so the quantized outputs must equal onnxruntime's
exactly (atol 0). A hand-written transformer encoder layer (attention + MLP, pre-LayerNorm)
quantized with ``quantize_dynamic`` (DynamicQuantizeLinear + MatMulInteger, float outputs):
onnxruntime fuses each of those into DynamicQuantizeMatMul, whose float epilogue multiplies the
two scales in another order than the graph's Mul; the int32 products are the same, so results
agree to float rounding (rtol 1e-5 over outputs of magnitude ~1).

The builders are shared with benchmarks/bench_quant.py (larger sizes there).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

from matrix import check_and_record  # noqa: E402
from torch import nn  # noqa: E402
from torch_export import export  # noqa: E402

from kiln.compiler import cli  # noqa: E402
from kiln.compiler.ir.op import Op  # noqa: E402
from kiln.compiler.passes.pipeline import optimize  # noqa: E402
from kiln.compiler.passes.specialize import specialize  # noqa: E402
from kiln.frontends.onnx import load_onnx  # noqa: E402
from kiln.runtime import load  # noqa: E402


class SmallCNN(nn.Module):
    """conv-relu, max pool, strided conv-relu, depthwise conv, flatten, linear."""

    def __init__(self, width: int, size: int, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2 * width)
        self.conv4 = nn.Conv2d(2 * width, 2 * width, 1)
        self.fc = nn.Linear(2 * width * (size // 4) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv4(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm self-attention (hand-written: the MatMuls stay MatMuls) plus a ReLU MLP."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.up, self.down = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, sequence, hidden = x.shape
        head = hidden // self.heads
        q, k, v = self.qkv(self.norm1(x)).split(hidden, dim=-1)
        q, k, v = (t.reshape(batch, sequence, self.heads, head).transpose(1, 2)
                   for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, sequence, hidden)
        x = x + self.proj(attended)
        return x + self.down(torch.relu(self.up(self.norm2(x))))


class _Images(quantization.CalibrationDataReader):
    """Random calibration batches for ``quantize_static``."""

    def __init__(self, name: str, shape: tuple[int, ...], count: int) -> None:
        rng = np.random.default_rng(7)
        self.batches: Iterator[dict[str, np.ndarray]] = iter(
            [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def static_cnn(folder: Path, fmt: str, per_channel: bool, width: int = 8,
               size: int = 16) -> Path:
    """The CNN quantized with ``quantize_static``: ``fmt`` "qdq" (int8 activations) or
    "qoperator" (uint8 activations, Conv as QLinearConv; the linear layer stays float, as its
    quantized form is the com.microsoft QGemm)."""
    torch.manual_seed(0)
    shape = (1, 3, size, size)
    source = export(SmallCNN(width, size), [torch.randn(shape)], folder / "cnn.onnx",
                    "torchscript", ["image"], ["logits"])
    qdq = fmt == "qdq"
    target = folder / f"cnn_{fmt}_{'channel' if per_channel else 'tensor'}.onnx"
    quantization.quantize_static(
        str(source), str(target), _Images("image", shape, 8),
        quant_format=quantization.QuantFormat.QDQ if qdq else quantization.QuantFormat.QOperator,
        per_channel=per_channel,
        activation_type=quantization.QuantType.QInt8 if qdq else quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
        op_types_to_quantize=None if qdq else ["Conv", "MaxPool", "Relu"])
    return target


def dynamic_encoder(folder: Path, hidden: int = 32, heads: int = 4, sequence: int = 8
                    ) -> Path:
    """The encoder layer quantized with ``quantize_dynamic`` (int8 weights)."""
    torch.manual_seed(0)
    source = export(EncoderLayer(hidden, heads), [torch.randn(1, sequence, hidden)],
                    folder / "encoder.onnx", "torchscript", ["tokens"], ["encoded"])
    target = folder / "encoder_dynamic.onnx"
    quantization.quantize_dynamic(str(source), str(target),
                                  weight_type=quantization.QuantType.QInt8)
    return target


def load_quantized(path: Path):  # type: ignore[no-untyped-def]
    """The model as a Kiln graph."""
    return load_onnx(path)


def onnxruntime_session(path: Path, threads: int = 1):  # type: ignore[no-untyped-def]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _compare(path: Path, name: str, inputs: list[np.ndarray], exporter: str, model: str,
             rtol: float, atol: float, note: str, integer_ops: set[Op]) -> None:
    """``kiln compile`` the model, run it and onnxruntime on ``inputs``, compare; the
    optimized IR must hold ``integer_ops``."""
    library = path.with_name(f"{path.stem}.so")
    assert cli.main(["compile", str(path), "-o", str(library)]) == 0
    session = onnxruntime_session(path)
    with load(str(library), threads=1) as compiled:
        got = [compiled.run({name: x})[0] for x in inputs]
    expected = [session.run(None, {name: x})[0] for x in inputs]
    check_and_record("PyTorch", exporter, model, got, expected, rtol=rtol, atol=atol, note=note)
    rewritten = optimize(specialize(load_onnx(path)), 2, stop_after="quant_fusion")
    assert integer_ops <= {n.op for n in rewritten.nodes}, "integer ops expected in the IR"


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_static_cnn(tmp_path: Path, fmt: str, per_channel: bool) -> None:
    path = static_cnn(tmp_path, fmt, per_channel)
    rng = np.random.default_rng(3)
    images = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) * 1.5 for _ in range(4)]
    label = "QDQ" if fmt == "qdq" else "QOperator"
    granularity = "per-channel" if per_channel else "per-tensor"
    _compare(path, "image", images, f"onnxruntime quantize_static ({label})",
             f"small CNN, {granularity} int8 weights", rtol=0, atol=0,
             note="bit-exact: integer accumulation and requantization",
             integer_ops={Op.QLINEAR_CONV})


def test_dynamic_encoder(tmp_path: Path) -> None:
    path = dynamic_encoder(tmp_path)
    rng = np.random.default_rng(4)
    tokens = [rng.standard_normal((1, 8, 32)).astype(np.float32) for _ in range(3)]
    _compare(path, "tokens", tokens, "onnxruntime quantize_dynamic",
             "transformer encoder layer, int8 weights", rtol=1e-5, atol=1e-5,
             note="exact int32 products; float epilogue rounding differs (scale order)",
             integer_ops={Op.MATMUL_INTEGER, Op.DYNAMIC_QUANTIZE_LINEAR})
