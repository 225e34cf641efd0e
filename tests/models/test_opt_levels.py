"""The model suite compiled at -O0 and at -O3 gives the same outputs as the reference executor
and as each other ("the model suites pass at -O3 exactly as at -O0").

Models: every model of ``zoo.ZOO`` with each exporter that can export it (a ResNet-style CNN, a
transformer encoder layer, a 2-layer LSTM, a BERT-style encoder, a MobileNetV2-style net, a
GPT-2-style decoder, LeNet-5, an MLP; the
first exporter of ``EXPORTERS`` that works is in the fast tier, the other one ``slow``), the
bundled digits CNN at batch 16. (The nine ONNX "light" models are held to their expected
outputs compiled at -O3 in tests/conformance/test_light_models.py; at -O0, where LLVM does not
optimize either, VGG-19 alone takes minutes, so they stay out of the suite.)

Tolerances, float32: compiled vs reference ``rtol=1e-4, atol=1e-5`` as in test_torch_models.py
(summation order, vectorized math functions). -O3 vs -O0 uses the same bound: fusion and
layout changes may reorder sums (BatchNorm folded into conv weights, blocked channels) but must
not move results further than a different summation order does.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from kiln.compiler import build, reference
from kiln.compiler.ir.graph import Graph
from kiln.frontends.onnx import load_onnx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "conformance"))
from harness import compare  # noqa: E402

LEVELS = (0, 3)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
DIGITS = ROOT / "examples" / "digits"


def _build_at_levels(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[int, list]:
    """Outputs of ``graph`` compiled at each of ``LEVELS``, on ``inputs``."""
    shapes = {k: v.shape for k, v in inputs.items()}
    return {level: build(graph, opt_level=level, input_shapes=shapes).run(inputs)
            for level in LEVELS}


def _assert_close(actual: list, expected: list, rtol: float, atol: float, what: str) -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs vs {len(expected)}"
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        problem = compare(np.asarray(a), np.asarray(e), rtol, atol)
        assert problem is None, f"{what}, output {index}: {problem}"


def _check_levels(graph: Graph, inputs: Mapping[str, np.ndarray], what: str) -> dict[int, list]:
    """-O0 and -O3 each match the reference executor, and each other."""
    expected = reference.run(graph, dict(inputs))
    got = _build_at_levels(graph, inputs)
    for level in LEVELS:
        _assert_close(got[level], expected, what=f"{what} -O{level} vs reference", **TOLERANCE)
    _assert_close(got[3], got[0], what=f"{what} -O3 vs -O0", **TOLERANCE)
    return got


def _zoo_cases() -> list[object]:
    try:
        from zoo import UNSUPPORTED, ZOO
    except ImportError:  # torch missing
        return []
    from torch_export import EXPORTERS

    cases = []
    for name in ZOO:
        exporters = [e for e in EXPORTERS if (name, e) not in UNSUPPORTED]
        # The fast tier checks each model once; its other exports are slow-tier variants.
        cases += [pytest.param(name, exporter, id=f"{name}-{exporter}",
                               marks=[pytest.mark.slow] if index else [])
                  for index, exporter in enumerate(exporters)]
    return cases


@pytest.mark.parametrize(("name", "exporter"), _zoo_cases())
def test_zoo_model_same_at_o0_and_o3(name: str, exporter: str, tmp_path: Path) -> None:
    from zoo import ZOO

    model = ZOO[name](exporter, tmp_path)
    _check_levels(load_onnx(model.path), model.inputs, f"{name} ({exporter})")


def test_digits_model_same_at_o0_and_o3() -> None:
    with np.load(DIGITS / "digits_test.npz") as data:
        images = data["images"][:16]
    got = _check_levels(load_onnx(DIGITS / "digits_cnn.onnx"), {"image": images}, "digits")
    assert (got[3][0].argmax(axis=1) == got[0][0].argmax(axis=1)).all()
