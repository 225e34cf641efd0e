"""PyTorch models built in code, shared by the model tests and the benchmarks.

Each entry of ``ZOO`` exports its model with a given exporter into a folder and returns the
module, the .onnx path and a set of inputs. Models are small enough for the test suite but real
in structure: a ResNet-style CNN with BatchNorm, a transformer encoder layer, a 2-layer LSTM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch_export import export


@dataclass
class Exported:
    module: nn.Module
    path: Path
    inputs: dict[str, np.ndarray]


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


class TwoLayerLSTM(nn.Module):
    """A 2-layer batch-first LSTM returning its sequence output and final states."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output, (hidden, cell) = self.lstm(x)
        return output, hidden, cell


def resnet_style_cnn(exporter: str, folder: Path, batch: int = 2) -> Exported:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = SmallResNet()
    _randomize_batchnorm(model, rng)
    image = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    path = export(model, [torch.from_numpy(image)], folder / f"resnet_{exporter}.onnx", exporter,
                  ["image"], ["logits"],
                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return Exported(model, path, {"image": image})


def transformer_encoder_layer(exporter: str, folder: Path) -> Exported:
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                       batch_first=True)
    tokens = np.random.default_rng(1).standard_normal((2, 7, 32)).astype(np.float32)
    path = export(model, [torch.from_numpy(tokens)], folder / f"encoder_{exporter}.onnx",
                  exporter, ["tokens"], ["encoded"])
    return Exported(model, path, {"tokens": tokens})


def two_layer_lstm(exporter: str, folder: Path) -> Exported:
    torch.manual_seed(0)
    model = TwoLayerLSTM()
    sequence = np.random.default_rng(2).standard_normal((3, 6, 8)).astype(np.float32)
    path = export(model, [torch.from_numpy(sequence)], folder / f"lstm_{exporter}.onnx",
                  exporter, ["sequence"], ["output", "hidden", "cell"])
    return Exported(model, path, {"sequence": sequence})


ZOO: dict[str, Callable[[str, Path], Exported]] = {
    "resnet_style_cnn": resnet_style_cnn,
    "transformer_encoder_layer": transformer_encoder_layer,
    "two_layer_lstm": two_layer_lstm,
}

# torch 2.13's TorchScript exporter cannot trace nn.MultiheadAttention
# (scaled_dot_product_attention receives is_causal as a Tensor).
UNSUPPORTED = {("transformer_encoder_layer", "torchscript")}
