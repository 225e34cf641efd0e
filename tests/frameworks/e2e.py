"""End-to-end helpers of the framework tests: compile an exported .onnx file with the
``kiln compile`` command (in process, through ``kiln.compiler.cli.main``), run the library with
``kiln.runtime``, and run the same file with onnxruntime, the oracle; scikit-learn models to
ONNX and their comparison.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matrix import check_and_record

SKLEARN_OPSET = {"": 17, "ai.onnx.ml": 3}


def compile_and_run(model: Path, inputs: Mapping[str, np.ndarray], folder: Path,
                    opt_level: int = 3) -> list[np.ndarray]:
    """``kiln compile model -O opt_level --input-shape ...`` (each input bound to its array's
    shape) into ``folder``, then the library run on ``inputs``."""
    from kiln import runtime
    from kiln.compiler.cli import main

    library = folder / f"{model.stem}_{'x'.join(_shape_tag(a) for a in inputs.values())}.so"
    shapes = [f"{name}={','.join(map(str, array.shape))}" for name, array in inputs.items()]
    argv = ["compile", str(model), "-o", str(library), f"-O{opt_level}"]
    for shape in shapes:
        argv += ["--input-shape", shape]
    assert main(argv) == 0, f"kiln compile {model.name} failed"
    return runtime.load(library, threads=1).run(dict(inputs))


def _shape_tag(array: np.ndarray) -> str:
    return "_".join(map(str, array.shape)) or "scalar"


def onnxruntime_run(model: Path, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of ``model`` under onnxruntime's CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return list(session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()}))


def sklearn_onnx(model: Any, sample: np.ndarray) -> Any:
    """The ONNX model (skl2onnx, ``SKLEARN_OPSET``) of fitted ``model``, an estimator or a
    pipeline, with the zipmap option off on a final classifier that has it (LinearSVC has none:
    it outputs no probabilities)."""
    from skl2onnx import to_onnx
    from sklearn.base import is_classifier
    from sklearn.svm import LinearSVC

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    zipmap = is_classifier(final) and not isinstance(final, LinearSVC)
    options = {id(final): {"zipmap": False}} if zipmap else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(model, sample, options=options, target_opset=SKLEARN_OPSET)


def compare_sklearn(name: str, got: Sequence[np.ndarray], expected: Sequence[np.ndarray],
                    rtol: float, atol: float, note: str = "") -> None:
    """A scikit-learn model's outputs: the labels (int64) exactly, then all of them recorded
    in the framework matrix within ``rtol``/``atol``."""
    for g, e in zip(got, expected, strict=True):
        if e.dtype == np.int64:
            np.testing.assert_array_equal(g, e, err_msg=f"{name} labels")
    check_and_record("scikit-learn", "skl2onnx", name, list(got), list(expected), rtol, atol,
                     note=note)
