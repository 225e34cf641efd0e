"""scikit-learn tree ensembles through skl2onnx, end to end: decision trees, random forests,
extra trees and gradient boosting (classifiers, two and three classes, and regressors) exported
with zipmap off, compiled (``kiln compile`` for one, ``build`` for the rest) at batch 1 and a
batch whose last row block is short, run and compared with onnxruntime; labels exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed")
pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from e2e import compare_sklearn, compile_and_run, onnxruntime_run, sklearn_onnx  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402

from kiln.compiler.driver import build  # noqa: E402
from kiln.frontends.onnx import load_onnx  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5
BATCHES = (1, 133)
FEATURES = 8

MODELS: dict[str, tuple[Any, int]] = {  # name: (estimator, classes; 0 for a regressor)
    "DecisionTreeClassifier": (DecisionTreeClassifier(max_depth=6, random_state=0), 3),
    "DecisionTreeRegressor": (DecisionTreeRegressor(max_depth=6, random_state=0), 0),
    "RandomForestClassifier-binary": (RandomForestClassifier(10, max_depth=5, random_state=0),
                                      2),
    "RandomForestClassifier": (RandomForestClassifier(10, max_depth=5, random_state=0), 3),
    "RandomForestRegressor": (RandomForestRegressor(10, max_depth=6, random_state=0), 0),
    "ExtraTreesClassifier": (ExtraTreesClassifier(10, max_depth=5, random_state=0), 3),
    "ExtraTreesRegressor": (ExtraTreesRegressor(10, max_depth=5, random_state=0), 0),
    "GradientBoostingClassifier-binary": (GradientBoostingClassifier(
        n_estimators=10, max_depth=3, random_state=0), 2),
    "GradientBoostingClassifier": (GradientBoostingClassifier(
        n_estimators=10, max_depth=3, random_state=0), 3),
    "GradientBoostingRegressor": (GradientBoostingRegressor(
        n_estimators=10, max_depth=3, random_state=0), 0),
    "HistGradientBoostingClassifier": (HistGradientBoostingClassifier(
        max_iter=10, random_state=0), 3),
    "HistGradientBoostingRegressor": (HistGradientBoostingRegressor(
        max_iter=10, random_state=0), 0),
}


def fitted(name: str) -> Any:
    estimator, classes = MODELS[name]
    if classes:
        x, y = make_classification(300, FEATURES, n_informative=5, n_classes=classes,
                                   random_state=0)
    else:
        x, y = make_regression(300, FEATURES, n_informative=5, noise=0.5, random_state=0)
    return estimator.fit(x.astype(np.float32), y)


def export(name: str, folder: Path) -> Path:
    try:
        onx = sklearn_onnx(fitted(name), np.zeros((1, FEATURES), np.float32))
    except ValueError as error:  # skl2onnx 1.20 writes numpy bools into int lists for HGB
        pytest.skip(f"skl2onnx cannot convert {name}: {str(error)[:120]}")
    path = folder / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def inputs(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).normal(size=(rows, FEATURES)).astype(np.float32) * 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tree_model(name: str, tmp_path: Path) -> None:
    path = export(name, tmp_path)
    graph = load_onnx(str(path))
    x_name = graph.inputs[0].name
    for rows in BATCHES:
        x = inputs(rows)
        got = build(graph, input_shapes={x_name: (rows, FEATURES)}).run({x_name: x})
        compare_sklearn(name, got, onnxruntime_run(path, {x_name: x}), RTOL, ATOL,
                        note=f"build, batch {rows}")


def test_random_forest_through_the_cli(tmp_path: Path) -> None:
    path = export("RandomForestClassifier", tmp_path)
    x = {"X": inputs(64)}
    got = compile_and_run(path, x, tmp_path)
    compare_sklearn("RandomForestClassifier", got, onnxruntime_run(path, x), RTOL, ATOL,
                    note="kiln compile, batch 64")
