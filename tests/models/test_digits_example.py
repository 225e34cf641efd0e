"""The bundled example (examples/digits): its data, its accuracy through Kiln, and the script
that the README's main command runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _classify_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_classify", EXAMPLE / "classify.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    with np.load(EXAMPLE / "digits_test.npz") as data:
        return data["images"], data["labels"]


def test_held_out_split_is_stratified_and_scaled(test_split: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = test_split
    assert images.shape == (360, 1, 8, 8) and images.dtype == np.float32
    assert labels.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of ~180 per class


def test_compiled_model_classifies_the_split_accurately(
    test_split: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    from kiln.runtime import load

    images, labels = test_split
    library = tmp_path / "digits.so"
    _classify_module().compile_model(EXAMPLE / "digits_cnn.onnx", len(images), library)
    with load(str(library)) as model:
        (logits,) = model.run({"image": images})
    assert logits.shape == (360, 10) and logits.dtype == np.float32
    assert (logits.argmax(axis=1) == labels).mean() > 0.95


def test_classify_script_agrees_with_the_oracles(tmp_path: Path) -> None:
    """The README's main job: exits 0 (compiled logits within tolerance of the reference
    executor, and of onnxruntime when present)."""
    done = subprocess.run([sys.executable, str(EXAMPLE / "classify.py"), "--output",
                           str(tmp_path / "digits.so")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kiln (compiled): 353/360 correct, accuracy 98.06%" in done.stdout
