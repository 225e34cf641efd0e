"""Models built in code with PyTorch, exported with ``torch.onnx.export``, run through Kiln.

Each model of ``zoo.ZOO`` (a ResNet-style CNN with BatchNorm, a ``TransformerEncoderLayer``, a
2-layer LSTM, a BERT-style encoder, a MobileNetV2-style net, a GPT-2-style decoder, LeNet-5, an
MLP) is exported in eval mode with each exporter that can handle it. ``load_onnx`` +
``reference.run`` is compared on the same random inputs with onnxruntime and with the torch
module itself, and the compiled library (``build(...).run``) with the reference executor.

Tolerances, float32 throughout: Kiln vs onnxruntime ``rtol=1e-4, atol=1e-5`` (both run the same
ONNX graph; only summation order differs). Kiln vs torch ``rtol=1e-4, atol=1e-4``: the exporters
rewrite some computations (fused attention into MatMul/Softmax, BatchNorm folded into Conv by
the TorchScript exporter), which moves results by a few float32 ulps of values of order 1.
Compiled vs reference: ``rtol=1e-4, atol=1e-5`` (summation order, vectorized math functions).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
from torch_export import EXPORTERS, assert_all_close, run_three_ways  # noqa: E402
from zoo import UNSUPPORTED, ZOO  # noqa: E402

from kiln.frontends.onnx import load_onnx  # noqa: E402

VS_ONNXRUNTIME = {"rtol": 1e-4, "atol": 1e-5}
VS_TORCH = {"rtol": 1e-4, "atol": 1e-4}
COMPILED_VS_REFERENCE = {"rtol": 1e-4, "atol": 1e-5}
CASES = [(name, exporter) for name in ZOO for exporter in EXPORTERS]


def _exported(name: str, exporter: str, folder: Path):  # type: ignore[no-untyped-def]
    if (name, exporter) in UNSUPPORTED:
        pytest.skip(f"torch 2.13's {exporter} exporter cannot export {name}")
    return ZOO[name](exporter, folder)


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_reference_matches_onnxruntime_and_torch(name: str, exporter: str, tmp_path: Path) -> None:
    model = _exported(name, exporter, tmp_path)
    results = run_three_ways(model.module, model.path, model.inputs)
    if results.onnxruntime is not None:
        assert_all_close(results.kiln, results.onnxruntime, what="kiln vs onnxruntime",
                         **VS_ONNXRUNTIME)
    assert_all_close(results.kiln, results.torch, what="kiln vs torch", **VS_TORCH)


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_compiled_matches_reference(name: str, exporter: str, tmp_path: Path) -> None:
    from kiln.compiler import build, reference

    model = _exported(name, exporter, tmp_path)
    graph = load_onnx(model.path)
    shapes = {k: v.shape for k, v in model.inputs.items()}
    compiled = build(graph, input_shapes=shapes).run(model.inputs)
    assert_all_close(compiled, reference.run(graph, model.inputs), what="compiled vs reference",
                     **COMPILED_VS_REFERENCE)
