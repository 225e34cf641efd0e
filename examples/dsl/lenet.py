"""Build LeNet-5 with Kiln's Python DSL, compile it ahead of time, run it and check it.

The network is written with the DSL's torch-style layers (weights drawn like torch's defaults
from a seeded generator), traced with a symbolic batch dimension into a Kiln graph, saved as
ONNX, compiled for this machine into a shared library (the batch bound to ``--batch``), run on
a batch of random images, and checked against Kiln's reference executor.

    python examples/dsl/lenet.py [--batch 8] [--output build/lenet.so]

The traced model is ``model`` at top level, so the command line compiles this file directly:

    kiln compile examples/dsl/lenet.py --input-shape x=8,1,28,28 -o lenet.so

Prints the graph's signature, the ``kiln compile`` commands that build the same library from
this file and from the saved ONNX file, the predicted classes and the largest difference from
the reference.
Exits non-zero when the compiled logits differ from the reference beyond float32 tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kiln.compiler import build
from kiln.frontends import dsl
from kiln.frontends.dsl.layers import Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential

HERE = Path(__file__).resolve().parent
# float32 tolerances for compiled vs reference logits (summation order, vectorized math).
RTOL, ATOL = 1e-4, 1e-5


class LeNet(Module):
    """LeNet-5 for 28x28 images: conv 5x5 (padded) to 6, pool, conv 5x5 to 16, pool, fully
    connected 400-120-84-10. Weight names match the same network written with torch.nn."""

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        rng = np.random.default_rng(0) if rng is None else rng
        self.features = Sequential(
            Conv2d(1, 6, 5, padding=2, rng=rng), ReLU(), MaxPool2d(2),
            Conv2d(6, 16, 5, rng=rng), ReLU(), MaxPool2d(2),
        )
        self.classifier = Sequential(
            Flatten(), Linear(400, 120, rng=rng), ReLU(), Linear(120, 84, rng=rng), ReLU(),
            Linear(84, 10, rng=rng),
        )

    def forward(self, x: dsl.Tensor) -> dsl.Tensor:
        return self.classifier(self.features(x))


# What `kiln compile examples/dsl/lenet.py` compiles (the one DSL model this file defines).
net = LeNet()
model = dsl.trace(net, name="lenet", x=dsl.f32["batch", 1, 28, 28])


def shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it (shorter to print)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per run (default 8)")
    parser.add_argument("--output", type=Path, default=HERE / "build" / "lenet.so",
                        help="where to write the compiled library (the .onnx goes beside it)")
    args = parser.parse_args(argv)

    weights = sum(array.size for _, array in net.parameters())
    print(f"traced {type(net).__name__}: {len(model.graph.nodes)} nodes, {weights:,} weights, "
          f"x: {model.graph.inputs[0].type} -> {model.graph.outputs[0].type}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = args.output.with_suffix(".onnx")
    model.save_onnx(onnx_path)
    shape = (args.batch, 1, 28, 28)
    start = time.perf_counter()
    executable = build(model.graph, opt_level=2, input_shapes={"x": shape})
    executable.export(args.output)
    dims = ",".join(map(str, shape))
    print(f"compiled -> {shown(args.output)} in {time.perf_counter() - start:.2f} s; the same "
          "from this file or from the ONNX file:")
    for source in (Path(__file__), onnx_path):
        print(f"  kiln compile {shown(source)} --input-shape x={dims} -O2 -o {shown(args.output)}")

    images = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (logits,) = executable.run({"x": images})
    (expected,) = model.reference(x=images)
    print(f"predicted classes (untrained weights): {logits.argmax(axis=1).tolist()}")
    difference = float(np.max(np.abs(logits - expected)))
    if not np.allclose(logits, expected, rtol=RTOL, atol=ATOL):
        print(f"error: compiled logits differ from the reference executor by up to "
              f"{difference:.2e} (rtol={RTOL}, atol={ATOL})", file=sys.stderr)
        return 1
    print(f"reference executor: max |logit difference| {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
