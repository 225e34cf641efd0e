"""TensorFlow/Keras models through tf2onnx, end to end: export (``from_function``, NHWC
images, symbolic batch) -> ``kiln compile`` at -O3 -> run the library -> compare with
onnxruntime on the same file (a compatibility matrix row) and with Keras' own outputs.

Tolerances, float32: vs onnxruntime ``rtol=1e-4, atol=1e-5`` (the same graph; summation order
differs). vs Keras ``rtol=1e-4, atol=1e-4``: tf2onnx folds BatchNormalization into the
convolution weights, which moves results by a few ulps of values of order 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's first import
pytest.importorskip("tensorflow", reason="pip install tensorflow-cpu")
pytest.importorskip("tf2onnx", reason="pip install tf2onnx")

import keras_models  # noqa: E402
from e2e import compile_and_run, onnxruntime_run  # noqa: E402
from matrix import check_and_record  # noqa: E402

VS_ONNXRUNTIME = {"rtol": 1e-4, "atol": 1e-5}
VS_KERAS = {"rtol": 1e-4, "atol": 1e-4}
MODELS: dict[str, Callable[[Path], keras_models.KerasExport]] = {
    "CNN (Conv2D/BatchNorm/MaxPool/Dense, NHWC)": keras_models.cnn,
    "LSTM": keras_models.lstm,
    "Bidirectional LSTM": keras_models.bidirectional_lstm,
    "GRU (a Loop in ONNX)": keras_models.gru,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_keras_model(name: str, tmp_path: Path) -> None:
    exported = MODELS[name](tmp_path)
    got = compile_and_run(exported.path, exported.inputs, tmp_path)
    expected = onnxruntime_run(exported.path, exported.inputs)
    for ours, theirs in zip(got, keras_models.keras_outputs(exported), strict=True):
        np.testing.assert_allclose(ours, theirs, err_msg=f"{name}: kiln vs keras", **VS_KERAS)
    check_and_record("TensorFlow/Keras", "tf2onnx", name, got, expected, **VS_ONNXRUNTIME)
