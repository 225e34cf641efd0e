"""Keras models built in code and their ONNX export through tf2onnx, shared by the framework
tests and the NHWC transpose tests.

tf2onnx 1.17's ``from_keras`` fails on Keras 3 models, so each model is exported as the
``tf.function`` calling it (``from_function``) with a symbolic batch dimension, opset 17.
Import this module only after ``pytest.importorskip("tensorflow")``: it imports TensorFlow,
with its C++ logging silenced (``TF_CPP_MIN_LOG_LEVEL`` must be set before the import).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

keras = tf.keras


@dataclass
class KerasExport:
    model: keras.Model
    path: Path
    inputs: dict[str, np.ndarray]


def export(model: keras.Model, sample: np.ndarray, path: Path) -> KerasExport:
    """``model`` as ONNX (input ``x`` with a symbolic batch), with ``sample`` as its inputs."""
    function = tf.function(lambda x: model(x))
    spec = tf.TensorSpec((None, *sample.shape[1:]), tf.float32, name="x")
    proto, _ = tf2onnx.convert.from_function(function, input_signature=(spec,), opset=17,
                                             output_path=str(path))
    assert proto is not None
    return KerasExport(model, path, {"x": sample})


def _randomize_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial moving statistics, so BatchNormalization is not the identity at inference."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.5, 2, n)])


def cnn(folder: Path, batch: int = 2, channels: int = 3) -> KerasExport:
    """Conv2D/BatchNorm/ReLU/MaxPool twice (16 and 32 channels, NHWC 16x16 images of
    ``channels``), Flatten, Dense: tf2onnx leaves a Transpose to NCHW at the input and one back
    to NHWC before the Flatten."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    image = keras.Input((16, 16, channels))
    x = layers.Conv2D(16, 3, padding="same")(image)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    model = keras.Model(image, layers.Dense(10)(x))
    rng = np.random.default_rng(0)
    _randomize_batchnorm(model, rng)
    sample = rng.standard_normal((batch, 16, 16, channels)).astype(np.float32)
    return export(model, sample, folder / f"keras_cnn_{channels}.onnx")


def _sequence_model(recurrent: Callable[[], keras.layers.Layer], name: str,
                    folder: Path) -> KerasExport:
    """``recurrent`` over 6 steps of 4 features at batch 2, then a Dense of 3."""
    keras.utils.set_random_seed(0)
    sequence = keras.Input((6, 4))
    model = keras.Model(sequence, keras.layers.Dense(3)(recurrent()(sequence)))
    sample = np.random.default_rng(1).standard_normal((2, 6, 4)).astype(np.float32)
    return export(model, sample, folder / f"keras_{name}.onnx")


def lstm(folder: Path) -> KerasExport:
    """An LSTM of 16 returning the sequence (tf2onnx: one ONNX LSTM between Transposes)."""
    return _sequence_model(lambda: keras.layers.LSTM(16, return_sequences=True), "lstm", folder)


def bidirectional_lstm(folder: Path) -> KerasExport:
    """A Bidirectional LSTM of 8 (tf2onnx: one bidirectional ONNX LSTM)."""
    return _sequence_model(lambda: keras.layers.Bidirectional(keras.layers.LSTM(8)),
                           "bidirectional_lstm", folder)


def gru(folder: Path) -> KerasExport:
    """A GRU of 16: tf2onnx 1.17 does not recognize Keras 3's GRU and exports its while loop as
    an ONNX Loop whose outputs have a run-time shape."""
    return _sequence_model(lambda: keras.layers.GRU(16), "gru", folder)


def keras_outputs(exported: KerasExport) -> list[np.ndarray]:
    """The Keras model's own outputs on the export's inputs."""
    return [np.asarray(exported.model(exported.inputs["x"], training=False))]
