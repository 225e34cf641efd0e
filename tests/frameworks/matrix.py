"""Rows of the framework compatibility matrix, written by the end-to-end framework tests.

Each test of a framework path (export -> ``kiln compile`` -> run -> compare with onnxruntime)
ends with :func:`check_and_record`: it appends the outcome to the JSON-lines file named by
``$KILN_MATRIX_OUT`` when that is set (``benchmarks/compat_matrix.py`` sets it, runs the tests
and renders the table), then asserts. Without the variable it only asserts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

MATRIX_ENV = "KILN_MATRIX_OUT"


def max_error(got: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """The largest absolute difference over all outputs (inf on a shape mismatch)."""
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        g, e = np.asarray(g), np.asarray(e)
        if g.shape != e.shape:
            return float("inf")
        if g.size:
            diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
            worst = max(worst, float(np.nanmax(diff)) if not np.isnan(diff).all() else 0.0)
    return worst


def record(framework: str, exporter: str, model: str, status: str, error: float | None,
           note: str = "") -> None:
    """Append one matrix row when ``$KILN_MATRIX_OUT`` is set."""
    path = os.environ.get(MATRIX_ENV)
    if not path:
        return
    row = {"framework": framework, "exporter": exporter, "model": model, "status": status,
           "max_error": error, "note": note}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def check_and_record(
    framework: str, exporter: str, model: str, got: Sequence[np.ndarray],
    expected: Sequence[np.ndarray], rtol: float, atol: float, note: str = "",
) -> None:
    """Record whether ``got`` matches onnxruntime's ``expected`` within tolerance, then assert
    it (NaNs must agree in place)."""
    ok = len(got) == len(expected) and all(
        np.asarray(g).shape == np.asarray(e).shape
        and np.allclose(np.asarray(g, dtype=np.float64), np.asarray(e, dtype=np.float64),
                        rtol=rtol, atol=atol, equal_nan=True)
        for g, e in zip(got, expected, strict=False)
    )
    error = max_error(got, expected) if len(got) == len(expected) else None
    record(framework, exporter, model, "pass" if ok else "fail", error, note)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64),
                                   np.asarray(e, dtype=np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"{framework}/{exporter}/{model}")
