"""PyTorch through both ``torch.onnx.export`` paths of torch 2.13 (TorchScript-based and
dynamo-based), end to end: export -> ``kiln compile`` at -O3 -> run the library -> compare with
onnxruntime on the same file (a compatibility matrix row per model and exporter).

The models are tests/models/zoo.py's (tests/models/test_torch_models.py holds them to torch and
the reference executor; here the compiled library meets onnxruntime). The small ones run in the
default tier; the transformer-sized ones, whose exports and -O3 compiles take tens of seconds,
are marked slow. A symbolic batch: LeNet-5 exported with a named batch dimension
(TorchScript ``dynamic_axes``, dynamo ``dynamic_shapes``) imports with the dimension as a
symbol and compiles at two batch sizes (``--input-shape``), each run matching onnxruntime.

Tolerances, float32: ``rtol=1e-4, atol=1e-5``, as Kiln vs onnxruntime in
test_torch_models.py (the same graph; summation order and vectorized math functions differ).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="pip install torch==2.13.0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from e2e import compile_and_run, onnxruntime_run  # noqa: E402
from matrix import check_and_record, record  # noqa: E402
from torch_export import EXPORTERS, export  # noqa: E402
from zoo import UNSUPPORTED, ZOO, LeNet5  # noqa: E402

from kiln.frontends.onnx import load_onnx  # noqa: E402

TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
FAST = ("lenet", "mlp", "two_layer_lstm")
CASES = [pytest.param(name, exporter, marks=() if name in FAST else pytest.mark.slow)
         for name in ZOO for exporter in EXPORTERS]


def _exporter_label(exporter: str) -> str:
    return f"torch.onnx ({exporter})"


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_zoo_model(name: str, exporter: str, tmp_path: Path) -> None:
    if (name, exporter) in UNSUPPORTED:
        record("PyTorch", _exporter_label(exporter), name, "unsupported", None,
               note=f"torch {torch.__version__}'s {exporter} exporter cannot export it")
        pytest.skip(f"torch's {exporter} exporter cannot export {name}")
    exported = ZOO[name](exporter, tmp_path)
    got = compile_and_run(exported.path, exported.inputs, tmp_path)
    check_and_record("PyTorch", _exporter_label(exporter), name, got,
                     onnxruntime_run(exported.path, exported.inputs), **TOLERANCE)


def _export_symbolic_batch(exporter: str, path: Path) -> Path:
    """LeNet-5 with input ``image`` and output ``logits`` sharing the symbolic dim
    ``batch``."""
    torch.manual_seed(0)
    model = LeNet5().eval()
    sample = (torch.zeros(2, 1, 28, 28),)
    if exporter == "torchscript":
        return export(model, sample, path, exporter, ["image"], ["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    # tests/models/torch_export.export passes no dynamic shapes to the dynamo exporter
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, sample, dynamo=True, verbose=False, input_names=["image"],
            output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    assert program is not None
    program.save(str(path))
    return path


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_symbolic_batch(exporter: str, tmp_path: Path) -> None:
    path = _export_symbolic_batch(exporter, tmp_path / f"lenet_batch_{exporter}.onnx")
    batch = load_onnx(path).inputs[0].type.shape[0]
    assert isinstance(batch, str), f"the batch dim imported as {batch!r}, not a symbol"
    rng = np.random.default_rng(9)
    got: list[np.ndarray] = []
    expected: list[np.ndarray] = []
    for size in (1, 3):
        inputs = {"image": rng.standard_normal((size, 1, 28, 28)).astype(np.float32)}
        got += compile_and_run(path, inputs, tmp_path)
        expected += onnxruntime_run(path, inputs)
    check_and_record("PyTorch", _exporter_label(exporter), "lenet, symbolic batch", got,
                     expected, note="one library per batch size: 1 and 3", **TOLERANCE)
