"""One compiled library for every batch size (and sequence length): exported models whose
inputs keep free axes compile once with ``kiln compile`` (no --input-shape) and match
onnxruntime at several sizes.

- scikit-learn: skl2onnx exports ``X`` as ``[None, n_features]`` (an unnamed batch dim).
- PyTorch: an embedding + self-attention encoder (``zoo.AttentionEncoder``) exported with a
  dynamic ``batch`` and ``seq`` axis by both exporters (the tracing one computes every reshape
  target from Shape ops at run time; the dynamo one names the symbols).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from e2e import SKLEARN_OPSET, onnxruntime_run, sklearn_onnx
from matrix import check_and_record

from kiln import runtime
from kiln.compiler.cli import main

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))


def compile_once(model: Path, folder: Path, *extra: str) -> runtime.Model:
    """``kiln compile model`` with no --input-shape: the free axes stay free."""
    library = folder / f"{model.stem}.so"
    assert main(["compile", str(model), "-o", str(library), "-O3", *extra]) == 0
    return runtime.load(library, threads=1)


SKLEARN_MODELS = ["logistic_regression", "random_forest", "gradient_boosting"]


def _sklearn_model(name: str, x: np.ndarray, y: np.ndarray) -> object:
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=6, max_depth=5, random_state=0).fit(x, y)
    return GradientBoostingRegressor(n_estimators=8, max_depth=3, random_state=0).fit(x, y)


@pytest.mark.parametrize("name", SKLEARN_MODELS)
def test_sklearn_model_with_an_unnamed_batch_dim(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    onnx_model = sklearn_onnx(_sklearn_model(name, x, y), x[:1])
    assert onnx_model.graph.input[0].type.tensor_type.shape.dim[0].dim_param in ("", "N")
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    model = compile_once(path, tmp_path)
    assert model.inputs[0].shape == (None, 5)
    for batch in (1, 7, 1000):
        sample = rng.standard_normal((batch, 5)).astype(np.float32)
        got = model.run({"X": sample})
        expected = onnxruntime_run(path, {"X": sample})
        for g, e in zip(got, expected, strict=True):
            if e.dtype == np.int64:
                np.testing.assert_array_equal(g, e, err_msg=f"{name} labels at batch {batch}")
        check_and_record("scikit-learn", "skl2onnx", f"{name} (dynamic batch {batch})", got,
                         expected, 1e-4, 1e-5, note=f"opsets {SKLEARN_OPSET}")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_model_with_dynamic_batch_and_sequence(exporter: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = _encoder(torch)
    path = _export(module, torch, tmp_path / f"encoder_{exporter}.onnx", exporter)
    model = compile_once(path, tmp_path)
    assert model.inputs[0].shape == (None, None)
    rng = np.random.default_rng(1)
    for batch, seq in ((1, 16), (3, 40), (2, 512), (1, 1)):
        ids = rng.integers(0, 50, (batch, seq)).astype(np.int64)
        got = model.run({"ids": ids})
        expected = onnxruntime_run(path, {"ids": ids})
        with torch.no_grad():
            np.testing.assert_allclose(got[0], module(torch.from_numpy(ids)).numpy(),
                                       rtol=1e-4, atol=1e-5)
        check_and_record("PyTorch", exporter, f"attention encoder (dynamic {batch}x{seq})",
                         got, expected, 1e-4, 1e-5)


def _encoder(torch: object) -> object:
    """``zoo.AttentionEncoder`` at width 16, positions up to 512."""
    from zoo import AttentionEncoder

    torch.manual_seed(0)  # type: ignore[attr-defined]
    return AttentionEncoder().eval()


def _export(module: object, torch: object, path: Path, exporter: str) -> Path:
    from torch_export import export

    ids = torch.randint(0, 50, (2, 8))  # type: ignore[attr-defined]
    return export(module, [ids], path, exporter, ["ids"], ["logits"],  # type: ignore[arg-type]
                  {"ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})


def test_bounds_size_the_arena_and_are_checked(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = _export(_encoder(torch), torch, tmp_path / "encoder.onnx", "torchscript")
    model = compile_once(path, tmp_path, "--input-shape", "ids=1..4,1..64")
    ids = np.zeros((4, 64), np.int64)
    np.testing.assert_allclose(model.run({"ids": ids})[0], onnxruntime_run(path, {"ids": ids})[0],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(runtime.KilnRuntimeError, match="outside the bounds 1..64"):
        model.run({"ids": np.zeros((1, 65), np.int64)})
