"""Per-layer convolution speed: Kiln's tiled kernels vs onnxruntime (prints, asserts nothing).

For each layer shape (ResNet-50's, MobileNet-style depthwise ones) and thread count it times:
- ``blocked``: Kiln's ConvNCHWc kernel alone (blocked input and output, as inside a blocked
  network; the padded-input fill included);
- ``-O3``: Kiln on a one-Conv graph at -O3 (select_layout: layout transforms in and out);
- ``-O2``: Kiln on the same graph at -O2 (the NCHW lowering), unless ``--no-plain``;
- ``ort``: onnxruntime on the same one-Conv model (its own NCHWc reorders inside);
each the best of ``--repeat`` runs after a warm-up, and prints GFLOP/s (2 * multiply-adds of
the convolution / seconds). Every Kiln result is checked against onnxruntime first.

    python benchmarks/bench_layout.py [--threads 1 2] [--repeat 20] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kiln.compiler import build
from kiln.compiler.codegen import Target
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.passes.select_layout import block_for
from kiln.compiler.reference.kernels.layout import (
    block_bias,
    block_depthwise_weights,
    block_weights,
    from_blocked,
    to_blocked,
)


@dataclass(frozen=True)
class Layer:
    name: str
    channels: int
    size: int
    out_channels: int
    kernel: int
    stride: int
    pad: int
    group: int = 1

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def flops(self) -> int:
        return (2 * self.out_channels * self.out_size ** 2 * (self.channels // self.group)
                * self.kernel ** 2)


LAYERS = [
    Layer("stem 7x7/2", 3, 224, 64, 7, 2, 3),
    Layer("res2 3x3", 64, 56, 64, 3, 1, 1),
    Layer("res2 1x1 expand", 64, 56, 256, 1, 1, 0),
    Layer("res2 1x1 reduce", 256, 56, 64, 1, 1, 0),
    Layer("res3 3x3/2", 128, 56, 128, 3, 2, 1),
    Layer("res3 3x3", 128, 28, 128, 3, 1, 1),
    Layer("res4 1x1", 256, 14, 1024, 1, 1, 0),
    Layer("res4 3x3", 256, 14, 256, 3, 1, 1),
    Layer("res5 3x3", 512, 7, 512, 3, 1, 1),
    Layer("res5 1x1", 2048, 7, 512, 1, 1, 0),
    Layer("dw 3x3 32@112", 32, 112, 32, 3, 1, 1, 32),
    Layer("dw 3x3/2 96@112", 96, 112, 96, 3, 2, 1, 96),
    Layer("dw 3x3 144@56", 144, 56, 144, 3, 1, 1, 144),
    Layer("dw 3x3 576@14", 576, 14, 576, 3, 1, 1, 576),
    Layer("dw 3x3 960@7", 960, 7, 960, 3, 1, 1, 960),
]


def weights(layer: Layer, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fan_in = layer.channels // layer.group * layer.kernel ** 2
    w = rng.standard_normal((layer.out_channels, layer.channels // layer.group, layer.kernel,
                             layer.kernel)) / np.sqrt(fan_in)
    return w.astype(np.float32), rng.standard_normal(layer.out_channels).astype(np.float32)


def _attrs(layer: Layer) -> dict[str, object]:
    return {"strides": [layer.stride] * 2, "pads": [layer.pad] * 4,
            "kernel_shape": [layer.kernel] * 2, "group": layer.group}


def conv_graph(layer: Layer) -> Graph:
    """One Conv with bias on a [1, C, size, size] input."""
    w, bias = weights(layer)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (1, layer.channels, layer.size, layer.size)))
    y = b.add1(Op.CONV, [x, b.constant(w), b.constant(bias)], _attrs(layer))
    return b.finish([y])


def blocked_graph(layer: Layer, block: int) -> Graph:
    """The layer's ConvNCHWc alone: blocked input (plain for a stem of few channels) and
    blocked output."""
    w, bias = weights(layer)
    depthwise = layer.group > 1
    plain_input = layer.channels < block and not depthwise
    b = GraphBuilder(fold=False)
    shape = ((1, layer.channels, layer.size, layer.size) if plain_input else
             (1, -(-layer.channels // block), layer.size, layer.size, block))
    x = b.add_input("x", TensorType(DType.F32, shape))
    packed = block_depthwise_weights(w, block) if depthwise else block_weights(w, block)
    attrs = {**_attrs(layer), "block": block}
    if not depthwise:
        attrs["group"] = 1
    if plain_input:
        attrs["src_layout"] = "NCHW"
    y = b.add1(Op.CONV_NCHWC, [x, b.constant(packed), b.constant(block_bias(bias, block))],
               attrs)
    return b.finish([y])


def best(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` runs, after a quarter second of warm-up runs (the first
    runs page the buffers in and wait for the core's clock to rise)."""
    start = time.perf_counter()
    while time.perf_counter() - start < 0.25:
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ort_session(layer: Layer, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    w, bias = weights(layer)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    node.attribute.extend(helper.make_attribute(k, v) for k, v in _attrs(layer).items())
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       [1, layer.channels, layer.size, layer.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def measure(layer: Layer, threads: int, repeat: int, plain: bool, block: int) -> list[str]:
    x = np.random.default_rng(1).standard_normal(
        (1, layer.channels, layer.size, layer.size)).astype(np.float32)
    session = ort_session(layer, threads)
    want = session.run(None, {"x": x})[0]
    results = {"ort": best(lambda: session.run(None, {"x": x}), repeat)}
    plain_input = layer.channels < block and layer.group == 1
    xb = x if plain_input else to_blocked(x, block)
    blocked = build(blocked_graph(layer, block), opt_level=3, threads=threads)
    got = from_blocked(blocked.run({"x": xb})[0], layer.out_channels)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    results["blocked"] = best(lambda: blocked.run({"x": xb}), repeat)
    for level in (3, 2) if plain else (3,):
        exe = build(conv_graph(layer), opt_level=level, threads=threads)
        np.testing.assert_allclose(exe.run({"x": x})[0], want, rtol=1e-3, atol=1e-3)
        results[f"-O{level}"] = best(functools.partial(exe.run, {"x": x}), repeat)
    gflops = {k: layer.flops / v / 1e9 for k, v in results.items()}
    shape = (f"{layer.channels}x{layer.size}^2->{layer.out_channels} k{layer.kernel}"
             f"/s{layer.stride}" + (f" g{layer.group}" if layer.group > 1 else ""))
    cells = " ".join(f"{gflops.get(k, float('nan')):8.1f}" for k in
                     ("blocked", "-O3", "-O2", "ort"))
    ratio = results["ort"] / results["blocked"]
    return [f"{layer.name:17} {shape:30} {threads:>3} {cells} {ratio:8.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="layers whose name contains one of these")
    parser.add_argument("--no-plain", action="store_true", help="skip the -O2 NCHW lowering")
    args = parser.parse_args()
    block = block_for(Target.parse("host").machine())
    layers = [layer for layer in LAYERS
              if not args.only or any(o in layer.name for o in args.only)]
    print(f"GFLOP/s, block {block}; ort/blocked > 1: the Kiln kernel is faster")
    print(f"{'layer':17} {'shape':30} {'thr':>3} {'blocked':>8} {'-O3':>8} {'-O2':>8} "
          f"{'ort':>8} {'ort/blk':>8}")
    for layer in layers:
        for threads in args.threads:
            for row in measure(layer, threads, args.repeat, not args.no_plain, block):
                print(row, flush=True)


if __name__ == "__main__":
    main()
