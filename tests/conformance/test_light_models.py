"""The nine real-architecture "light" models shipped with onnx match their expected outputs,
through the reference executor and through the compiled library at -O3 (``build(...).run``).
Inputs and tolerances: see light.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from harness import compare
from light import LIGHT, MODELS, dummy_inputs
from onnx import numpy_helper

from kiln.compiler import reference
from kiln.frontends.onnx import load_onnx


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["reference", "compiled"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_light_model(name: str, engine: str) -> None:
    path = LIGHT / f"light_{name}.onnx"
    model = onnx.load(path)
    graph = load_onnx(path)
    inputs = dummy_inputs(model)
    if engine == "compiled":
        from kiln.compiler import build

        shapes = {k: v.shape for k, v in inputs.items()}
        outputs = build(graph, input_shapes=shapes, opt_level=3).run(inputs)
    else:
        outputs = reference.run(graph, inputs)
    rtol, atol = MODELS[name]
    for index, actual in enumerate(outputs):
        expected = numpy_helper.to_array(
            onnx.load_tensor(str(LIGHT / f"light_{name}_output_{index}.pb"))
        )
        problem = compare(np.asarray(actual), expected, rtol, atol)
        assert problem is None, f"{name} output {index}: {problem}"
