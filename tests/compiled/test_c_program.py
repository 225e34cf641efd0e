"""A C program, built with the system compiler, links a compiled model and runs it: no Python
in the loop. Its outputs must match the reference executor."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kiln.compiler import build, reference
from kiln.frontends.onnx import load_onnx

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")
@pytest.mark.parametrize("weights", ["embed", "external"])
def test_c_program_runs_the_digits_model(tmp_path: Path, weights: str) -> None:
    graph = load_onnx(DIGITS / "digits_cnn.onnx")
    images = np.load(DIGITS / "digits_test.npz")["images"][:16]
    library = build(graph, input_shapes={"image": images.shape}, weights=weights).export(
        tmp_path / "model.so"
    )
    assert library.with_suffix(".h").exists()
    assert library.with_suffix(".bin").exists() == (weights == "external")
    program = tmp_path / "kiln_run"
    subprocess.run(
        ["cc", "-O2", "-I", str(ROOT / "runtime" / "include"), str(ROOT / "examples" / "c" /
         "kiln_run.c"), "-o", str(program), str(library), "-Wl,-rpath,$ORIGIN"],
        check=True, capture_output=True, text=True,
    )
    images.tofile(tmp_path / "image.raw")
    result = subprocess.run(
        [str(program), "--threads", "2", str(tmp_path / "image.raw"), str(tmp_path / "out.raw")],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )
    assert "input image dtype=3 shape=[16,1,8,8]" in result.stdout
    assert "output logits dtype=3 shape=[16,10]" in result.stdout
    logits = np.fromfile(tmp_path / "out.raw", dtype=np.float32).reshape(16, 10)
    expected = reference.run(graph, {"image": images})[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")
def test_c_program_reports_a_missing_weights_file(tmp_path: Path) -> None:
    graph = load_onnx(DIGITS / "digits_cnn.onnx")
    library = build(graph, input_shapes={"image": (1, 1, 8, 8)}, weights="external").export(
        tmp_path / "model.so"
    )
    library.with_suffix(".bin").unlink()
    program = tmp_path / "kiln_run"
    subprocess.run(
        ["cc", "-I", str(ROOT / "runtime" / "include"), str(ROOT / "examples" / "c" /
         "kiln_run.c"), "-o", str(program), str(library), "-Wl,-rpath,$ORIGIN"],
        check=True, capture_output=True,
    )
    np.zeros((1, 1, 8, 8), np.float32).tofile(tmp_path / "in.raw")
    result = subprocess.run([str(program), str(tmp_path / "in.raw"), str(tmp_path / "o.raw")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "kiln_run: create:" in result.stderr and "model.bin" in result.stderr
