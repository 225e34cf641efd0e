"""PyTorch models built in code, shared by the model tests and the benchmarks.

Each entry of ``ZOO`` exports its model with a given exporter into a folder and returns the
module, the .onnx path and a set of inputs. Models are small enough for the test suite but real
in structure: a ResNet-style CNN with BatchNorm, a transformer encoder layer, a 2-layer LSTM, a
BERT-style encoder (token + position embeddings, two GELU encoder layers, sequence 128, hidden
128, 4 heads, int64 token ids), a MobileNetV2-style net (inverted residual blocks with
depthwise convolutions and ReLU6, 1x3x96x96 input: 96x96 keeps the suite fast while every block
still sees a spatial extent above 3x3), a GPT-2-style decoder (token + position embeddings,
pre-LayerNorm blocks with masked causal self-attention and a 4x tanh-GELU MLP, a final
LayerNorm and an LM head tied to the token embedding; sequence 128, hidden 256, 4 heads, 2
blocks), LeNet-5 on 1x1x28x28 and an MLP 784-512-256-10. The last five run at batch 1, the batch
the benchmarks (benchmarks/models.py) measure.
"""

from __future__ import annotations

import math
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

    def __init__(self, features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=features, hidden_size=hidden, num_layers=2,
                            batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output, (hidden, cell) = self.lstm(x)
        return output, hidden, cell


class BertStyleEncoder(nn.Module):
    """Token + learned position embeddings, LayerNorm, a stack of post-norm GELU encoder
    layers, and a final LayerNorm (BERT's structure at a small width)."""

    def __init__(self, vocab: int, sequence: int, hidden: int, heads: int, layers: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(sequence, hidden)
        self.norm = nn.LayerNorm(hidden)
        layer = nn.TransformerEncoderLayer(d_model=hidden, nhead=heads,
                                           dim_feedforward=4 * hidden, dropout=0.0,
                                           activation="gelu", batch_first=True)
        # enable_nested_tensor only affects padded batches in training; off keeps the
        # exported graph the plain dense one.
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers,
                                             enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        embedded = self.norm(self.tokens(ids) + self.positions(positions))
        return self.final_norm(self.encoder(embedded))


class AttentionEncoder(nn.Module):
    """Token + position embeddings, one pre-norm self-attention block written with plain
    tensor ops, a GELU MLP and a mean-pooled linear head. Unlike nn.MultiheadAttention, whose
    tracing export writes the traced sequence length into a Reshape, every reshape here follows
    the input's shape: the export stays valid for any batch and sequence length."""

    def __init__(self, vocab: int = 50, positions: int = 512, hidden: int = 16,
                 heads: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(positions, hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(),
                                 nn.Linear(2 * hidden, hidden))
        self.head = nn.Linear(hidden, 3)
        self.heads = heads

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batch, sequence = ids.shape
        positions = torch.arange(sequence, device=ids.device).unsqueeze(0)
        x = self.tokens(ids) + self.positions(positions)
        width = x.shape[-1] // self.heads
        q, k, v = (t.reshape(batch, sequence, self.heads, width).transpose(1, 2)
                   for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        attention = torch.softmax(q @ k.transpose(-1, -2) / width ** 0.5, dim=-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(batch, sequence, -1))
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(dim=1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand conv + BN + ReLU6, 3x3 depthwise conv + BN + ReLU6,
    1x1 project conv + BN, plus the input when stride is 1 and the widths match."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = channels_in * expand
        self.residual = stride == 1 and channels_in == channels_out
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, channels_out, 1, bias=False), nn.BatchNorm2d(channels_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Style(nn.Module):
    """A stride-2 stem, inverted residual stages (16 -> 24 -> 32 -> 64 channels, expansion 6,
    residual adds inside each stage), a 1x1 conv to 256, global average pool and a classifier."""

    # (expansion, channels out, blocks, stride of the first block), as in MobileNetV2's table
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2))

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, padding=1, bias=False),
                                   nn.BatchNorm2d(32), nn.ReLU6()]
        width = 32
        for expand, channels, blocks, stride in self.STAGES:
            for index in range(blocks):
                layers.append(InvertedResidual(width, channels, stride if index == 0 else 1,
                                               expand))
                width = channels
        layers += [nn.Conv2d(width, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CausalSelfAttention(nn.Module):
    """GPT-2's attention: one fused QKV projection, scores masked above the diagonal, softmax,
    the weighted sum of values, an output projection. Written with plain matmuls (not
    nn.MultiheadAttention) so both exporters trace it; the mask is a constant buffer."""

    def __init__(self, sequence: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.project = nn.Linear(hidden, hidden)
        causal = torch.tril(torch.ones(sequence, sequence, dtype=torch.bool))
        self.register_buffer("future", ~causal.view(1, 1, sequence, sequence))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, sequence, hidden = x.shape
        q, k, v = self.qkv(x).split(hidden, dim=2)
        # [batch, heads, sequence, head width]
        q, k, v = (t.view(batch, sequence, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(self.future[:, :, :sequence, :sequence], float("-inf"))
        mixed = torch.softmax(scores, dim=-1) @ v
        return self.project(mixed.transpose(1, 2).reshape(batch, sequence, hidden))


class GPT2Block(nn.Module):
    """Pre-LayerNorm: x + attention(ln(x)), then x + mlp(ln(x)) with a 4x tanh-GELU MLP."""

    def __init__(self, sequence: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = CausalSelfAttention(sequence, hidden, heads)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT2StyleDecoder(nn.Module):
    """Token + learned position embeddings, a stack of GPT-2 blocks, a final LayerNorm and the
    LM head (the token embedding, transposed), returning next-token logits per position."""

    def __init__(self, vocab: int, sequence: int, hidden: int, heads: int, layers: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(sequence, hidden)
        self.blocks = nn.Sequential(*(GPT2Block(sequence, hidden, heads) for _ in range(layers)))
        self.final_norm = nn.LayerNorm(hidden)
        # GPT-2's initialization: it keeps the tied head's logits of order 1 (with unit-variance
        # embeddings they would be of order sqrt(hidden)).
        for embedding in (self.tokens, self.positions):
            nn.init.normal_(embedding.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        hidden = self.final_norm(self.blocks(self.tokens(ids) + self.positions(positions)))
        return hidden @ self.tokens.weight.t()


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 digits: conv 5x5 (padded) to 6, pool, conv 5x5 to 16, pool,
    fully connected 400-120-84-10 (ReLU and max pooling, as in today's renditions)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                                        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


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


def bert_style_encoder(exporter: str, folder: Path) -> Exported:
    torch.manual_seed(0)
    vocab, sequence = 1000, 128
    model = BertStyleEncoder(vocab, sequence, hidden=128, heads=4, layers=2)
    ids = np.random.default_rng(3).integers(0, vocab, (1, sequence), dtype=np.int64)
    path = export(model, [torch.from_numpy(ids)], folder / f"bert_{exporter}.onnx", exporter,
                  ["ids"], ["hidden"])
    return Exported(model, path, {"ids": ids})


def mobilenet_v2_style(exporter: str, folder: Path) -> Exported:
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    model = MobileNetV2Style()
    _randomize_batchnorm(model, rng)
    image = rng.standard_normal((1, 3, 96, 96)).astype(np.float32)
    path = export(model, [torch.from_numpy(image)], folder / f"mobilenet_{exporter}.onnx",
                  exporter, ["image"], ["logits"])
    return Exported(model, path, {"image": image})


def gpt2_style_decoder(exporter: str, folder: Path) -> Exported:
    torch.manual_seed(0)
    vocab, sequence = 1000, 128
    model = GPT2StyleDecoder(vocab, sequence, hidden=256, heads=4, layers=2)
    ids = np.random.default_rng(5).integers(0, vocab, (1, sequence), dtype=np.int64)
    path = export(model, [torch.from_numpy(ids)], folder / f"gpt2_{exporter}.onnx", exporter,
                  ["ids"], ["logits"])
    return Exported(model, path, {"ids": ids})


def lenet(exporter: str, folder: Path) -> Exported:
    torch.manual_seed(0)
    model = LeNet5()
    image = np.random.default_rng(6).standard_normal((1, 1, 28, 28)).astype(np.float32)
    path = export(model, [torch.from_numpy(image)], folder / f"lenet_{exporter}.onnx", exporter,
                  ["image"], ["logits"])
    return Exported(model, path, {"image": image})


def mlp(exporter: str, folder: Path) -> Exported:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    features = np.random.default_rng(7).standard_normal((1, 784)).astype(np.float32)
    path = export(model, [torch.from_numpy(features)], folder / f"mlp_{exporter}.onnx", exporter,
                  ["features"], ["logits"])
    return Exported(model, path, {"features": features})


ZOO: dict[str, Callable[[str, Path], Exported]] = {
    "resnet_style_cnn": resnet_style_cnn,
    "transformer_encoder_layer": transformer_encoder_layer,
    "two_layer_lstm": two_layer_lstm,
    "bert_style_encoder": bert_style_encoder,
    "mobilenet_v2_style": mobilenet_v2_style,
    "gpt2_style_decoder": gpt2_style_decoder,
    "lenet": lenet,
    "mlp": mlp,
}

# torch 2.13's TorchScript exporter cannot trace nn.MultiheadAttention
# (scaled_dot_product_attention receives is_causal as a Tensor).
# The BERT-style encoder, whose layers run inside nn.TransformerEncoder, does export with it.
UNSUPPORTED = {("transformer_encoder_layer", "torchscript")}
