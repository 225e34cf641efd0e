"""The nine real-architecture "light" models shipped with onnx match their expected outputs.

Inputs are what onnx's backend runner feeds these models (``generate_dummy_data`` with
``random=False``): for each float input, ``arange(n).reshape(shape) / n`` as float32, where
dims without a value count as 1. Tolerances are those of ``onnx.backend.test.case.model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import compare
from onnx import numpy_helper

from kiln.compiler import reference
from kiln.frontends.onnx import load_onnx

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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_light_model(name: str) -> None:
    path = LIGHT / f"light_{name}.onnx"
    model = onnx.load(path)
    graph = load_onnx(path)
    outputs = reference.run(graph, dummy_inputs(model))
    rtol, atol = MODELS[name]
    for index, actual in enumerate(outputs):
        expected = numpy_helper.to_array(
            onnx.load_tensor(str(LIGHT / f"light_{name}_output_{index}.pb"))
        )
        problem = compare(np.asarray(actual), expected, rtol, atol)
        assert problem is None, f"{name} output {index}: {problem}"
