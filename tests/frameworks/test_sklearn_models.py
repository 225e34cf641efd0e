"""scikit-learn through skl2onnx, end to end: fitted estimators and pipelines converted with
the zipmap option off (the documented path: ZipMap's sequence of maps has no Kiln type), then
compiled (the command line ``kiln compile --input-shape`` for one, ``build`` for the rest, the
batch dim that skl2onnx leaves unnamed bound to the test's batch), run with
``kiln.runtime.load`` and compared with onnxruntime; labels must match exactly."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed")
pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from e2e import SKLEARN_OPSET, compare_sklearn, sklearn_onnx  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline, make_union  # noqa: E402
from sklearn.preprocessing import (  # noqa: E402
    Binarizer,
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)
from sklearn.svm import SVC, SVR, LinearSVC  # noqa: E402

from kiln.compiler.driver import build  # noqa: E402
from kiln.frontends.onnx import load_onnx  # noqa: E402
from kiln.runtime import load  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
BATCH = 16


def classification(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(120, 6, n_informative=4, n_classes=n_classes,
                               random_state=seed)
    return x.astype(np.float32), y


def regression(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_regression(120, 6, noise=0.5, random_state=seed)
    return x.astype(np.float32), y


def run_both(onx: Any, x: np.ndarray, library: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"X": x})
    got = load(library).run({"X": x})
    return got, expected


def build_and_run(name: str, model: Any, x: np.ndarray, y: np.ndarray, tmp_path: Path) -> None:
    with warnings.catch_warnings():  # SVC's probability parameter is deprecated in 1.9
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(x, y)
    onx = sklearn_onnx(model, x[:1])
    test = x[:BATCH]
    executable = build(load_onnx(onx), input_shapes={"X": test.shape})
    library = executable.export(tmp_path / f"{name}.so")
    got, expected = run_both(onx, test, library)
    compare_sklearn(name, got, expected, RTOL, ATOL)


CASES: dict[str, tuple[Any, Any]] = {
    "LogisticRegression (binary)": (lambda: LogisticRegression(), lambda: classification(2)),
    "LogisticRegression (3 classes)": (lambda: LogisticRegression(), lambda: classification(3)),
    "StandardScaler+LogisticRegression": (
        lambda: make_pipeline(StandardScaler(), LogisticRegression()), lambda: classification(4)),
    "MinMaxScaler+Normalizer+LogisticRegression": (
        lambda: make_pipeline(MinMaxScaler(), Normalizer(), LogisticRegression()),
        lambda: classification(3, 1)),
    "Binarizer+LogisticRegression": (
        lambda: make_pipeline(Binarizer(threshold=0.1), LogisticRegression()),
        lambda: classification(2, 2)),
    "LinearRegression": (lambda: LinearRegression(), regression),
    "StandardScaler+Ridge": (lambda: make_pipeline(StandardScaler(), Ridge()), regression),
    "union(StandardScaler, MaxAbsScaler)+LogisticRegression": (
        lambda: make_pipeline(make_union(StandardScaler(), MaxAbsScaler()),
                              LogisticRegression()), lambda: classification(3, 11)),
    "LinearSVC (binary)": (lambda: LinearSVC(), lambda: classification(2)),
    "LinearSVC (3 classes)": (lambda: LinearSVC(), lambda: classification(3)),
    "SVC rbf (binary)": (lambda: SVC(kernel="rbf"), lambda: classification(2)),
    "SVC rbf (3 classes)": (lambda: SVC(kernel="rbf"), lambda: classification(3)),
    "SVC poly": (lambda: SVC(kernel="poly", degree=3), lambda: classification(3, 3)),
    "SVC sigmoid": (lambda: SVC(kernel="sigmoid"), lambda: classification(3, 4)),
    "SVC linear": (lambda: SVC(kernel="linear"), lambda: classification(4, 5)),
    "SVC rbf probability (binary)": (lambda: SVC(probability=True, random_state=0),
                                     lambda: classification(2, 9)),
    "StandardScaler+SVC poly probability": (
        lambda: make_pipeline(StandardScaler(), SVC(kernel="poly", probability=True,
                                                    random_state=0)),
        lambda: classification(4, 10)),
    "StandardScaler+SVR": (lambda: make_pipeline(StandardScaler(), SVR()), regression),
    "SVR linear": (lambda: SVR(kernel="linear"), regression),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sklearn_model(name: str, tmp_path: Path) -> None:
    make_model, make_data = CASES[name]
    x, y = make_data()
    build_and_run(name, make_model(), x, y, tmp_path)


def test_imputer_pipeline(tmp_path: Path) -> None:
    x, y = classification(3, 6)
    x[::5, 2] = np.nan
    x[1::7, 0] = np.nan
    build_and_run("SimpleImputer+LogisticRegression",
                  make_pipeline(SimpleImputer(), LogisticRegression()), x, y, tmp_path)


@pytest.mark.parametrize("encoder", [OneHotEncoder, OrdinalEncoder])
def test_integer_encoder_pipeline(encoder: type, tmp_path: Path) -> None:
    """Integer categories: OneHotEncoder -> OneHotEncoder nodes, OrdinalEncoder ->
    ArrayFeatureExtractor + LabelEncoder nodes."""
    gen = np.random.default_rng(7)
    x = gen.integers(0, 4, (120, 3)).astype(np.int64) * 3
    y = (x[:, 0] + x[:, 1] > 9).astype(np.int64)
    build_and_run(f"{encoder.__name__}+LogisticRegression",
                  make_pipeline(encoder(), LogisticRegression()), x, y, tmp_path)


def test_string_class_labels_are_refused() -> None:
    x, y = classification(2)
    model = LogisticRegression().fit(x, np.array(["no", "yes"])[y])
    with pytest.raises(Exception, match="integer class labels"):
        load_onnx(sklearn_onnx(model, x[:1]))


def test_cli_compile_svc(tmp_path: Path) -> None:
    """The command line path: ``kiln compile model.onnx --input-shape X=N,F -o model.so``."""
    x, y = classification(3, 8)
    model = make_pipeline(StandardScaler(), SVC()).fit(x, y)
    onx = sklearn_onnx(model, x[:1])
    path = tmp_path / "svc.onnx"
    path.write_bytes(onx.SerializeToString())
    library = tmp_path / "svc.so"
    test = x[:BATCH]
    done = subprocess.run(
        [sys.executable, "-m", "kiln.compiler.cli", "compile", str(path), "--input-shape",
         f"X={test.shape[0]},{test.shape[1]}", "-o", str(library)],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    got, expected = run_both(onx, test, library)
    compare_sklearn("StandardScaler+SVC (kiln compile)", got, expected, RTOL, ATOL)


def test_zipmap_is_refused_with_the_option_to_use() -> None:
    x, y = classification(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = to_onnx(LogisticRegression().fit(x, y), x[:1], target_opset=SKLEARN_OPSET)
    with pytest.raises(Exception, match="'zipmap': False"):
        load_onnx(onx)
