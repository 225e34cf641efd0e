"""The Caffe-era "light" zoo models shipped with onnx (AlexNet, ZFNet-512, GoogLeNet/Inception
v1 and v2, ResNet-50, SqueezeNet, VGG-19, DenseNet-121, ShuffleNet; tests/conformance/light.py),
end to end: ``kiln compile`` at -O3 -> run the library -> compare with onnxruntime on the same
file (a compatibility matrix row each). Slow tier: each -O3 compile takes seconds to a minute.

Inputs and tolerances are light.py's (those of onnx's backend test runner); the models'
exporter is recorded as "onnx zoo" (they come as .onnx files, converted from Caffe by the onnx
project).
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))

from e2e import compile_and_run, onnxruntime_run  # noqa: E402
from light import LIGHT, MODELS, dummy_inputs  # noqa: E402
from matrix import check_and_record  # noqa: E402

# The weights of the light variants are ConstantOfShape fills, so outputs often match to the bit.
LIGHT_NOTE = "onnx's light variant: the real architecture, weights filled with one value"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_light_zoo_model(name: str, tmp_path: Path) -> None:
    path = LIGHT / f"light_{name}.onnx"
    inputs = dummy_inputs(onnx.load(path, load_external_data=False))
    got = compile_and_run(path, inputs, tmp_path)
    rtol, atol = MODELS[name]
    check_and_record("Caffe (onnx model zoo)", "onnx zoo", name, got,
                     onnxruntime_run(path, inputs), rtol=rtol, atol=atol, note=LIGHT_NOTE)
