"""The nine real-architecture "light" models shipped with onnx, and the inputs onnx feeds them.

Inputs are what onnx's backend runner feeds these models (``generate_dummy_data`` with
``random=False``): for each float input, ``arange(n).reshape(shape) / n`` as float32, where
dims without a value count as 1. Tolerances are those of ``onnx.backend.test.case.model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
# model name -> (rtol, atol), as in onnx.backend.test.case.model.collect_testcases
MODELS = {
    "bvlc_alexnet": (1e-3, 1e-7), "densenet121": (2e-3, 1e-7), "inception_v1": (1e-3, 1e-7),
    "inception_v2": (1e-3, 1e-7), "resnet50": (1e-3, 1e-7), "shufflenet": (1e-3, 1e-7),
    "squeezenet": (1e-3, 1e-7), "vgg19": (1e-3, 1e-7), "zfnet512": (1e-3, 1e-7),
}


def dummy_inputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    initialized = {t.name for t in model.graph.initializer}
    feeds = {}
    for info in model.graph.input:
        if info.name in initialized:
            continue
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else 1 for d in info.type.tensor_type.shape.dim
        )
        n = int(np.prod(shape))
        feeds[info.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds
