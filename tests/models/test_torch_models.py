"""Models built in code with PyTorch, exported with ``torch.onnx.export``, run through Kiln.

Each model (a ResNet-style CNN with BatchNorm, a ``TransformerEncoderLayer``, a 2-layer LSTM)
is exported in eval mode with each exporter that can handle it, then ``load_onnx`` +
``reference.run`` is compared on the same random inputs with onnxruntime and with the torch
module itself.

Tolerances, float32 throughout: Kiln vs onnxruntime ``rtol=1e-4, atol=1e-5`` (both run the same
ONNX graph; only summation order differs). Kiln vs torch ``rtol=1e-4, atol=1e-4``: the exporters
rewrite some computations (fused attention into MatMul/Softmax, BatchNorm folded into Conv by
the TorchScript exporter), which moves results by a few float32 ulps of values of order 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch_export import EXPORTERS, assert_all_close, export, run_three_ways  # noqa: E402

VS_ONNXRUNTIME = {"rtol": 1e-4, "atol": 1e-5}
VS_TORCH = {"rtol": 1e-4, "atol": 1e-4}


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut (1x1 conv + bn when the shape changes), then relu."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(),
            nn.Conv2d(channels_out, channels_out, 3, 1, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                nn.BatchNorm2d(channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.blocks = nn.Sequential(ResidualBlock(16, 16, 1), ResidualBlock(16, 32, 2),
                                    ResidualBlock(32, 64, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _randomize_batchnorm(model: nn.Module, rng: np.random.Generator) -> None:
    """Non-trivial running statistics, so BatchNorm is not the identity in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean = torch.from_numpy(rng.normal(0, 0.5, n).astype(np.float32))
            module.running_var = torch.from_numpy(rng.uniform(0.5, 2, n).astype(np.float32))
            module.weight.data.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            module.bias.data.copy_(torch.from_numpy(rng.normal(0, 0.2, n).astype(np.float32)))


def _check(model: nn.Module, path: Path, inputs: dict[str, np.ndarray]) -> None:
    results = run_three_ways(model, path, inputs)
    if results.onnxruntime is not None:
        assert_all_close(results.kiln, results.onnxruntime, what="kiln vs onnxruntime",
                         **VS_ONNXRUNTIME)
    assert_all_close(results.kiln, results.torch, what="kiln vs torch", **VS_TORCH)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_resnet_style_cnn(exporter: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = SmallResNet()
    _randomize_batchnorm(model, rng)
    image = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    path = export(model, [torch.from_numpy(image)], tmp_path / "resnet.onnx", exporter,
                  ["image"], ["logits"],
                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    _check(model, path, {"image": image})


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_transformer_encoder_layer(exporter: str, tmp_path: Path) -> None:
    if exporter == "torchscript":
        pytest.skip("torch 2.13's TorchScript exporter cannot trace nn.MultiheadAttention "
                    "(scaled_dot_product_attention receives is_causal as a Tensor)")
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                       batch_first=True)
    tokens = np.random.default_rng(1).standard_normal((2, 7, 32)).astype(np.float32)
    path = export(model, [torch.from_numpy(tokens)], tmp_path / "encoder.onnx", exporter,
                  ["tokens"], ["encoded"])
    _check(model, path, {"tokens": tokens})


class TwoLayerLSTM(nn.Module):
    """A 2-layer batch-first LSTM returning its sequence output and final states."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output, (hidden, cell) = self.lstm(x)
        return output, hidden, cell


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_two_layer_lstm(exporter: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoLayerLSTM()
    sequence = np.random.default_rng(2).standard_normal((3, 6, 8)).astype(np.float32)
    path = export(model, [torch.from_numpy(sequence)], tmp_path / "lstm.onnx", exporter,
                  ["sequence"], ["output", "hidden", "cell"])
    _check(model, path, {"sequence": sequence})
