"""Classify the bundled held-out digits with Kiln and print the accuracy.

Loads ``digits_cnn.onnx`` with Kiln's ONNX frontend, runs the 360 held-out images of
``digits_test.npz`` through the reference executor in one batch (the model's symbolic ``batch``
dimension takes the batch size), and prints the accuracy. When onnxruntime is installed it also
runs the model there and reports how closely the two agree.

    python examples/digits/classify.py [--model digits_cnn.onnx] [--data digits_test.npz]

Exits non-zero when the logits differ from onnxruntime's beyond float32 tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kiln.compiler import reference
from kiln.frontends.onnx import load_onnx

HERE = Path(__file__).resolve().parent
# float32 tolerances for comparing logits with onnxruntime (summation order differs).
RTOL, ATOL = 1e-4, 1e-5


def classify(model_path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of ``images`` ([n, 1, 8, 8] float32) computed by Kiln's reference executor."""
    graph = load_onnx(model_path)
    (logits,) = reference.run(graph, {"image": images})
    return logits


def onnxruntime_logits(model_path: Path, images: np.ndarray) -> np.ndarray | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": images})[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=HERE / "digits_cnn.onnx")
    parser.add_argument("--data", type=Path, default=HERE / "digits_test.npz")
    args = parser.parse_args(argv)

    with np.load(args.data) as data:
        images, labels = data["images"], data["labels"]
    start = time.perf_counter()
    logits = classify(args.model, images)
    elapsed = time.perf_counter() - start
    predicted = logits.argmax(axis=1)
    correct = int((predicted == labels).sum())
    print(f"kiln (reference executor): {correct}/{len(labels)} correct, "
          f"accuracy {correct / len(labels):.2%} ({elapsed:.2f} s)")

    expected = onnxruntime_logits(args.model, images)
    if expected is None:
        print("onnxruntime: not installed, comparison skipped")
        return 0
    max_diff = float(np.max(np.abs(logits - expected)))
    agree = int((expected.argmax(axis=1) == predicted).sum())
    print(f"onnxruntime: predictions agree on {agree}/{len(labels)} images, "
          f"max |logit difference| {max_diff:.2e}")
    if not np.allclose(logits, expected, rtol=RTOL, atol=ATOL):
        print(f"error: logits differ from onnxruntime beyond rtol={RTOL}, atol={ATOL}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
