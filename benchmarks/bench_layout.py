"""NCHW vs NCHW[b]c convolution latency for ResNet-style layers (prints, asserts nothing).

For each shape it compiles one Conv (NCHW lowering) and the same Conv rewritten by
``select_layout`` (forced: every eligible conv blocked, transforms included in the timing), runs
both on the same input, checks they agree, and prints the best latency of each.

    python benchmarks/bench_layout.py [--block 8] [--threads N] [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kiln.compiler import build
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.passes.select_layout import select_layout

# (name, C, H=W, OC, kernel, stride, pad): ResNet-50 layers and a MobileNet-style 1x1.
SHAPES = [
    ("stem 7x7/2", 3, 224, 64, 7, 2, 3),
    ("res2 3x3", 64, 56, 64, 3, 1, 1),
    ("res2 1x1 expand", 64, 56, 256, 1, 1, 0),
    ("res3 3x3", 128, 28, 128, 3, 1, 1),
    ("res4 1x1", 256, 14, 256, 1, 1, 0),
    ("res4 3x3", 256, 14, 256, 3, 1, 1),
    ("res5 3x3", 512, 7, 512, 3, 1, 1),
    ("narrow 1x1", 16, 56, 16, 1, 1, 0),
    ("narrow 3x3", 16, 56, 16, 3, 1, 1),
    ("mbv2 1x1 project", 32, 112, 16, 1, 1, 0),
    ("tiny 1x1", 8, 28, 8, 1, 1, 0),
]


def conv_graph(c: int, size: int, oc: int, k: int, stride: int, pad: int, seed: int = 0) -> Graph:
    """One Conv with bias on a [1, c, size, size] input."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (1, c, size, size)))
    w = b.constant((rng.standard_normal((oc, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32))
    bias = b.constant(rng.standard_normal(oc).astype(np.float32))
    y = b.add1(Op.CONV, [x, w, bias], {"strides": [stride] * 2, "pads": [pad] * 4})
    return b.finish([y])


def latency(graph: Graph, x: np.ndarray, threads: int | None, repeat: int) -> tuple[float, list]:
    """Best-of-``repeat`` seconds of one run (after a warm-up; the minimum is what survives
    other processes sharing the cores) and the outputs."""
    exe = build(graph, threads=threads)
    out = exe.run({"x": x})
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        exe.run({"x": x})
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{'layer':18} {'shape':28} {'NCHW ms':>9} {'NCHWc ms':>9} {'speedup':>8}")
    for name, c, size, oc, k, stride, pad in SHAPES:
        graph = conv_graph(c, size, oc, k, stride, pad)
        blocked = select_layout(graph, block=args.block, min_pointwise_channels=0)
        x = np.random.default_rng(1).standard_normal((1, c, size, size)).astype(np.float32)
        plain_s, plain_out = latency(graph, x, args.threads, args.repeat)
        blocked_s, blocked_out = latency(blocked, x, args.threads, args.repeat)
        np.testing.assert_allclose(blocked_out[0], plain_out[0], rtol=1e-4, atol=1e-4)
        shape = f"{c}x{size}x{size} -> {oc} k{k}/s{stride}"
        print(f"{name:18} {shape:28} {plain_s * 1e3:9.3f} {blocked_s * 1e3:9.3f} "
              f"{plain_s / blocked_s:7.2f}x")


if __name__ == "__main__":
    main()
