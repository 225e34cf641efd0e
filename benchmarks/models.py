"""The PyTorch-built models the benchmarks measure, all at batch 1.

Models come from tests/models/zoo.py (where the model tests hold them to the reference executor
and onnxruntime) at the sizes the zoo builds them: the MobileNetV2-style net (1x3x96x96), the
BERT-style encoder (sequence 128), the GPT-2-style decoder (sequence 128), LeNet-5 and the MLP.
The one exception is the LSTM: the zoo's runs batch 3 over 6 steps of width 16 to keep the suite
fast, which would time call overhead rather than an LSTM; ``lstm`` here is the same 2-layer
architecture at batch 1, 32 steps, 64 features, hidden width 128.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "models"))

import torch  # noqa: E402
from torch_export import export  # noqa: E402
from zoo import ZOO, Exported, TwoLayerLSTM  # noqa: E402


def lstm(exporter: str, folder: Path) -> Exported:
    """zoo's two-layer LSTM at benchmark size: batch 1, 32 steps, 64 features, hidden 128."""
    torch.manual_seed(0)
    model = TwoLayerLSTM(features=64, hidden=128)
    sequence = np.random.default_rng(8).standard_normal((1, 32, 64)).astype(np.float32)
    path = export(model, [torch.from_numpy(sequence)], folder / f"bench_lstm_{exporter}.onnx",
                  exporter, ["sequence"], ["output", "hidden", "cell"])
    return Exported(model, path, {"sequence": sequence})


# benchmark name -> builder (exporter, folder) -> Exported
BENCH_MODELS: dict[str, Callable[[str, Path], Exported]] = {
    "mobilenet_v2_style": ZOO["mobilenet_v2_style"],
    "bert_style_encoder": ZOO["bert_style_encoder"],
    "gpt2_style_decoder": ZOO["gpt2_style_decoder"],
    "lstm": lstm,
    "lenet": ZOO["lenet"],
    "mlp": ZOO["mlp"],
}
