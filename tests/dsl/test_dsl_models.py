"""Whole models built with the DSL layer API, end to end.

Each model (LeNet-5 from ``examples/dsl/lenet.py``, an MLP, a pre-norm transformer block, a
small causal language model and a user-defined residual CNN with BatchNorm) is traced with a
symbolic batch dimension, then:

* compiled with ``build`` (at -O2, and -O3 for the CNNs) for one batch size and compared with
  the reference executor;
* exported with ``save_onnx`` and run by onnxruntime at another batch size, compared with the
  reference executor;
* given the weights of the same network written with torch.nn (``load_state_dict`` of its
  ``state_dict()``, renamed where torch's module names differ), and compared with torch.

Tolerances, float32 throughout: compiled vs reference and onnxruntime vs reference use
``dslcheck``'s table (``rtol=1e-4, atol=1e-5``: summation order, FMA contraction and vectorized
exp/erf differ by engine and target); reference vs torch uses ``test_dsl_layers``'
``rtol=1e-5, atol=1e-5`` (the same float32 math; only the summation order of dot products of up
to 784 terms differs).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
tnn = torch.nn

from dslcheck import assert_close  # noqa: E402
from torchcheck import assert_matches, renamed  # noqa: E402

from kiln.compiler import build, reference  # noqa: E402
from kiln.frontends import dsl  # noqa: E402
from kiln.frontends.dsl import layers  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dsl" / "lenet.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dsl_lenet_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TorchLeNet(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(),
                                       tnn.MaxPool2d(2), tnn.Conv2d(6, 16, 5), tnn.ReLU(),
                                       tnn.MaxPool2d(2))
        self.classifier = tnn.Sequential(tnn.Flatten(), tnn.Linear(400, 120), tnn.ReLU(),
                                         tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def mlp() -> layers.Sequential:
    return layers.Sequential(layers.Linear(784, 256), layers.ReLU(), layers.Linear(256, 128),
                             layers.ReLU(), layers.Linear(128, 10))


def torch_mlp() -> tnn.Module:
    return tnn.Sequential(tnn.Linear(784, 256), tnn.ReLU(), tnn.Linear(256, 128), tnn.ReLU(),
                          tnn.Linear(128, 10))


def torch_encoder_layer() -> tnn.Module:
    return tnn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)


class TinyLanguageModel(layers.Module):
    """Token and position embeddings, one causal transformer block, a final norm and a head."""

    def __init__(self, vocab: int = 50, sequence: int = 8, dim: int = 32) -> None:
        rng = np.random.default_rng(3)
        self.tokens = layers.Embedding(vocab, dim, rng=rng)
        self.positions = layers.Embedding(sequence, dim, rng=rng)
        self.block = layers.TransformerBlock(dim, 4, 2 * dim, causal=True, rng=rng)
        self.norm = layers.LayerNorm(dim)
        self.head = layers.Linear(dim, vocab, rng=rng)

    def forward(self, ids: dsl.Tensor) -> dsl.Tensor:
        positions = np.arange(ids.shape[-1])
        hidden = self.block(self.tokens(ids) + self.positions(dsl.constant(positions)))
        return self.head(self.norm(hidden))


class TorchTinyLanguageModel(tnn.Module):
    def __init__(self, vocab: int = 50, sequence: int = 8, dim: int = 32) -> None:
        super().__init__()
        self.tokens = tnn.Embedding(vocab, dim)
        self.positions = tnn.Embedding(sequence, dim)
        self.block = tnn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0,
                                                 activation="gelu", batch_first=True,
                                                 norm_first=True)
        self.norm = tnn.LayerNorm(dim)
        self.head = tnn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[-1]
        hidden = self.tokens(ids) + self.positions(torch.arange(length))
        mask = tnn.Transformer.generate_square_subsequent_mask(length)
        return self.head(self.norm(self.block(hidden, src_mask=mask, is_causal=True)))


class ResidualBlock(layers.Module):
    """A user-defined layer: conv-BN-ReLU, conv-BN, plus a strided 1x1 projection shortcut."""

    def __init__(self, channels_in: int, channels_out: int, stride: int,
                 rng: np.random.Generator) -> None:
        self.conv1 = layers.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False, rng=rng)
        self.bn1 = layers.BatchNorm2d(channels_out)
        self.conv2 = layers.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False, rng=rng)
        self.bn2 = layers.BatchNorm2d(channels_out)
        self.shortcut = layers.Sequential(
            layers.Conv2d(channels_in, channels_out, 1, stride, bias=False, rng=rng),
            layers.BatchNorm2d(channels_out))

    def forward(self, x: dsl.Tensor) -> dsl.Tensor:
        y = dsl.nn.relu(self.bn1(self.conv1(x)))
        return dsl.nn.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResidualCNN(layers.Module):
    def __init__(self) -> None:
        rng = np.random.default_rng(4)
        self.stem = layers.Sequential(layers.Conv2d(3, 8, 3, padding=1, rng=rng),
                                      layers.BatchNorm2d(8), layers.ReLU())
        self.stages = [ResidualBlock(8, 16, 2, rng), ResidualBlock(16, 16, 1, rng)]
        self.head = layers.Sequential(layers.AvgPool2d(8), layers.Flatten(),
                                      layers.Linear(16, 10, rng=rng))

    def forward(self, x: dsl.Tensor) -> dsl.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class TorchResidualBlock(tnn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(channels_out)
        self.conv2 = tnn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(channels_out)
        self.shortcut = tnn.Sequential(
            tnn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
            tnn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TorchResidualCNN(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.BatchNorm2d(8),
                                   tnn.ReLU())
        self.stages = tnn.ModuleList([TorchResidualBlock(8, 16, 2), TorchResidualBlock(16, 16, 1)])
        self.head = tnn.Sequential(tnn.AvgPool2d(8), tnn.Flatten(), tnn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def randomized_batchnorm(module: tnn.Module) -> tnn.Module:
    """``module`` with non-trivial BatchNorm statistics and affine weights (torch starts them at
    mean 0, variance 1, weight 1, bias 0)."""
    rng = np.random.default_rng(5)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, tnn.BatchNorm2d):
                for value, low, high in ((norm.running_mean, -0.5, 0.5), (norm.bias, -0.5, 0.5),
                                         (norm.running_var, 0.5, 1.5), (norm.weight, 0.5, 1.5)):
                    value.copy_(torch.from_numpy(rng.uniform(low, high, value.shape)))
    return module


@dataclass(frozen=True)
class Case:
    """A DSL model, its input spec (with a symbolic batch), its torch twin and inputs."""

    make: Callable[[], layers.Module]
    spec: dsl.TensorSpec
    make_torch: Callable[[], tnn.Module]
    opt_levels: tuple[int, ...] = (2,)
    # torch's state dict -> the DSL model's names (identity where the names agree).
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = dict

    def inputs(self, batch: int) -> np.ndarray:
        shape = (batch, *self.spec.shape[1:])
        rng = np.random.default_rng(batch)
        if self.spec.dtype.is_int:
            return rng.integers(0, 50, shape, dtype=np.int64)
        return rng.standard_normal(shape).astype(np.float32)


CASES = {
    "lenet": Case(lambda: _example().LeNet(), dsl.f32["batch", 1, 28, 28], TorchLeNet, (2, 3)),
    "mlp": Case(mlp, dsl.f32["batch", 784], torch_mlp),
    "transformer_block": Case(lambda: layers.TransformerBlock(32, 4, 64, rng=2),
                              dsl.f32["batch", 8, 32], torch_encoder_layer, rename=renamed),
    "tiny_language_model": Case(TinyLanguageModel, dsl.i64["batch", 8], TorchTinyLanguageModel,
                                rename=renamed),
    "residual_cnn": Case(ResidualCNN, dsl.f32["batch", 3, 16, 16],
                         lambda: randomized_batchnorm(TorchResidualCNN()), (2, 3)),
}


@dataclass(frozen=True)
class Traced:
    net: layers.Module
    model: dsl.Model


_TRACED: dict[str, Traced] = {}


def traced(name: str) -> Traced:
    """The case's model traced once per process (with its own initial weights)."""
    if name not in _TRACED:
        net = CASES[name].make()
        _TRACED[name] = Traced(net, dsl.trace(net, x=CASES[name].spec))
    return _TRACED[name]


@pytest.mark.parametrize("name", CASES)
def test_traced_graph_keeps_the_symbolic_batch(name: str) -> None:
    graph = traced(name).model.graph
    (x,) = graph.inputs
    assert x.name == "x" and x.type.shape == CASES[name].spec.shape
    assert [o.type.shape[0] for o in graph.outputs] == ["batch"]


@pytest.mark.parametrize(("name", "opt_level"),
                         [(name, level) for name, case in CASES.items()
                          for level in case.opt_levels])
def test_compiled_matches_reference(name: str, opt_level: int) -> None:
    model = traced(name).model
    x = CASES[name].inputs(3)
    executable = build(model.graph, opt_level=opt_level, input_shapes={"x": x.shape})
    (compiled,) = executable.run({"x": x})
    (expected,) = model.reference(x=x)
    assert_close(compiled, expected, f"{name} -O{opt_level}")


@pytest.mark.parametrize("name", CASES)
def test_onnx_export_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = traced(name).model
    path = tmp_path / f"{name}.onnx"
    model.save_onnx(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (declared,) = session.get_inputs()
    assert declared.name == "x" and declared.shape[0] == "batch"
    x = CASES[name].inputs(5)
    (produced,) = session.run(None, {"x": x})
    (expected,) = model.reference(x=x)
    assert_close(produced, expected, f"{name} onnxruntime")


@pytest.mark.parametrize("name", CASES)
def test_matches_torch_with_the_same_weights(name: str) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    theirs = case.make_torch().eval()
    net = case.make()
    net.load_state_dict(case.rename(theirs.state_dict()))
    model = dsl.trace(net, x=case.spec)
    x = case.inputs(4)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    (actual,) = model.reference(x=x)
    assert_matches(actual, expected)


def test_kiln_compile_builds_the_exported_onnx(tmp_path: Path) -> None:
    """``kiln compile`` (as the example prints it) builds a library from the exported file that
    agrees with the traced graph."""
    from kiln.compiler.cli import main
    from kiln.runtime import load

    model = traced("mlp").model
    model.save_onnx(str(tmp_path / "mlp.onnx"))
    library = tmp_path / "mlp.so"
    assert main(["compile", str(tmp_path / "mlp.onnx"), "--input-shape", "x=2,784", "-O2",
                 "-o", str(library)]) == 0
    x = CASES["mlp"].inputs(2)
    with load(str(library)) as compiled:
        (logits,) = compiled.run({"x": x})
    assert_close(logits, reference.run(model.graph, {"x": x})[0], "kiln compile")


def test_example_script_runs_and_agrees(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--batch", "4", "--output",
                           str(tmp_path / "lenet.so")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reference executor: max |logit difference|" in done.stdout
    assert (tmp_path / "lenet.so").exists() and (tmp_path / "lenet.onnx").exists()
