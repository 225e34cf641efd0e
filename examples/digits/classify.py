"""Compile the bundled digits classifier ahead of time, classify the held-out digits, print the
accuracy.

Loads ``digits_cnn.onnx`` with Kiln's ONNX frontend, compiles it for this machine into a shared
library (``--output``, default ``build/digits_cnn.so`` beside this script; the model's symbolic
``batch`` dimension is bound to the 360 held-out images of ``digits_test.npz``), runs the library
through ``kiln.runtime`` and prints the accuracy. It checks the logits against Kiln's reference
executor and, when installed, onnxruntime.

    python examples/digits/classify.py [--model digits_cnn.onnx] [--data digits_test.npz]

Exits non-zero when the compiled logits differ from either beyond float32 tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kiln.compiler import build, reference
from kiln.frontends.onnx import load_onnx
from kiln.runtime import load

HERE = Path(__file__).resolve().parent
# float32 tolerances for comparing logits (summation order and math functions differ).
RTOL, ATOL = 1e-4, 1e-5


def compile_model(model_path: Path, batch: int, library: Path) -> float:
    """Compile the model for ``batch`` images into ``library``; returns the seconds it took."""
    start = time.perf_counter()
    graph = load_onnx(model_path)
    build(graph, input_shapes={"image": (batch, 1, 8, 8)}).export(library)
    return time.perf_counter() - start


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
    parser.add_argument("--output", type=Path, default=HERE / "build" / "digits_cnn.so",
                        help="where to write the compiled library")
    args = parser.parse_args(argv)

    with np.load(args.data) as data:
        images, labels = data["images"], data["labels"]
    seconds = compile_model(args.model, len(images), args.output)
    print(f"compiled {args.model.name} -> {args.output} in {seconds:.2f} s")
    with load(str(args.output)) as compiled:
        start = time.perf_counter()
        (logits,) = compiled.run({"image": images})
        elapsed = time.perf_counter() - start
    predicted = logits.argmax(axis=1)
    correct = int((predicted == labels).sum())
    print(f"kiln (compiled): {correct}/{len(labels)} correct, "
          f"accuracy {correct / len(labels):.2%} ({elapsed * 1e3:.2f} ms for the batch)")

    (oracle,) = reference.run(load_onnx(args.model), {"image": images})
    if not np.allclose(logits, oracle, rtol=RTOL, atol=ATOL):
        print(f"error: compiled logits differ from the reference executor beyond rtol={RTOL}, "
              f"atol={ATOL}", file=sys.stderr)
        return 1
    print(f"reference executor: max |logit difference| {np.max(np.abs(logits - oracle)):.2e}")

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
