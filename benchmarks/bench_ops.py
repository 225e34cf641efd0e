"""Single-op and small fused-pattern latency, Kiln (-O3) vs onnxruntime, in one run.

    python benchmarks/bench_ops.py [--runs 50] [--threads 1 2] [--cases NAME ...]

Each case is a tiny ONNX model built with onnx.helper at a realistic shape (transformer rows,
CNN feature maps). Kiln compiles it once (``build(graph, opt_level=3)``) and runs it through
``kiln.runtime`` with each thread count; onnxruntime runs it in a session limited to the same
threads. Both are timed through their Python APIs (median of ``--runs`` runs after warm-up) and
the table shows the ratio onnxruntime/Kiln (above 1: Kiln is faster) and Kiln's kernel count.
The ``identity`` case is the per-call floor of each API (Python, argument checks, one copy).
Absolute times on a shared machine are noise; ratios from one run are the figure to read.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from bench_models import median_latency
from onnx import TensorProto, helper, numpy_helper

OPSET = 20
IR_VERSION = 9  # what onnxruntime releases of the last years all read
FLOAT = TensorProto.FLOAT


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]


class Net:
    """A one-output ONNX graph under construction: inputs, constant initializers, nodes."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.inputs: list[onnx.ValueInfoProto] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.initializers: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def input(self, name: str, shape: Sequence[int], dtype: type = np.float32,
              high: int = 0) -> str:
        """A graph input fed random data (integers in [0, high) when ``high``)."""
        if high:
            data = self.rng.integers(0, high, size=shape).astype(dtype)
        else:
            data = self.rng.standard_normal(shape).astype(dtype)
        self.feeds[name] = data
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def const(self, value: np.ndarray | float | Sequence[int]) -> str:
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = f"c{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, shape: Sequence[int], scale: float = 1.0) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op_type: str, inputs: Sequence[str], **attrs: object) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def case(self, name: str, output: str) -> Case:
        out = helper.make_tensor_value_info(output, FLOAT, None)
        graph = helper.make_graph(self.nodes, name, self.inputs, [out], self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  ir_version=IR_VERSION)
        return Case(name, model, self.feeds)


def unary(name: str, op_type: str, shape: Sequence[int], **attrs: object) -> Case:
    net = Net()
    return net.case(name, net.op(op_type, [net.input("x", shape)], **attrs))


def softmax(name: str, shape: Sequence[int]) -> Case:
    return unary(name, "Softmax", shape, axis=-1)


def layer_norm(name: str, shape: Sequence[int], residual: bool = False) -> Case:
    net = Net()
    x = net.input("x", shape)
    if residual:  # the post-attention residual of a transformer block: LN(x + y)
        x = net.op("Add", [x, net.input("y", shape)])
    width = shape[-1]
    return net.case(name, net.op("LayerNormalization",
                                 [x, net.weight([width]), net.weight([width])], axis=-1))


def broadcast(name: str, op_type: str, shape: Sequence[int]) -> Case:
    net = Net()
    return net.case(name, net.op(op_type, [net.input("x", shape), net.weight(shape[-1:])]))


def gelu_erf(name: str, shape: Sequence[int], bias: bool = False) -> Case:
    """GELU as torch exports nn.GELU(): x * 0.5 * (1 + erf(x / sqrt(2)))."""
    net = Net()
    x = net.input("x", shape)
    if bias:  # the FFN pattern: MatMul output + bias, then GELU
        x = net.op("Add", [x, net.weight(shape[-1:])])
    e = net.op("Erf", [net.op("Div", [x, net.const(np.float32(math.sqrt(2)))])])
    half = net.op("Mul", [x, net.const(np.float32(0.5))])
    return net.case(name, net.op("Mul", [half, net.op("Add", [e, net.const(np.float32(1))])]))


def gelu_tanh(name: str, shape: Sequence[int]) -> Case:
    """GELU(approximate='tanh') as torch exports it below opset 20:
    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))."""
    net = Net()
    x = net.input("x", shape)
    cube = net.op("Pow", [x, net.const(np.float32(3))])
    inner = net.op("Add", [x, net.op("Mul", [cube, net.const(np.float32(0.044715))])])
    t = net.op("Tanh", [net.op("Mul", [inner, net.const(np.float32(math.sqrt(2 / math.pi)))])])
    half = net.op("Mul", [x, net.const(np.float32(0.5))])
    return net.case(name, net.op("Mul", [half, net.op("Add", [t, net.const(np.float32(1))])]))


def clip(name: str, shape: Sequence[int]) -> Case:
    net = Net()
    x = net.input("x", shape)
    return net.case(name, net.op("Clip", [x, net.const(np.float32(0)), net.const(np.float32(6))]))


def pool(name: str, op_type: str, shape: Sequence[int], **attrs: object) -> Case:
    return unary(name, op_type, shape, **attrs)


def reduce_mean(name: str, shape: Sequence[int]) -> Case:
    net = Net()
    x = net.input("x", shape)
    return net.case(name, net.op("ReduceMean", [x, net.const(np.array([-1], np.int64))],
                                 keepdims=1))


def transpose(name: str, shape: Sequence[int], perm: Sequence[int]) -> Case:
    return unary(name, "Transpose", shape, perm=list(perm))


def gather(name: str, vocab: int, width: int, ids: int) -> Case:
    net = Net()
    table = net.weight([vocab, width])
    index = net.input("ids", [1, ids], np.int64, high=vocab)
    return net.case(name, net.op("Gather", [table, index], axis=0))


def concat(name: str, shape: Sequence[int], axis: int) -> Case:
    net = Net()
    return net.case(name, net.op("Concat", [net.input("a", shape), net.input("b", shape)],
                                 axis=axis))


def reshape(name: str, shape: Sequence[int], target: Sequence[int]) -> Case:
    net = Net()
    x = net.input("x", shape)
    return net.case(name, net.op("Reshape", [x, net.const(np.array(target, np.int64))]))


def attention_softmax(name: str, heads: int, seq: int) -> Case:
    """The scores path of BERT attention: softmax(scores / sqrt(d) + mask)."""
    net = Net()
    scores = net.input("scores", [1, heads, seq, seq])
    scaled = net.op("Div", [scores, net.const(np.float32(8.0))])
    masked = net.op("Add", [scaled, net.weight([1, 1, 1, seq])])
    return net.case(name, net.op("Softmax", [masked], axis=-1))


def cases() -> list[Case]:
    nchw = [1, 64, 56, 56]
    return [
        unary("identity [1,16]", "Identity", [1, 16]),
        softmax("softmax [1,4,128,128]", [1, 4, 128, 128]),
        softmax("softmax [1,12,128,128]", [1, 12, 128, 128]),
        attention_softmax("div+add+softmax [1,12,128,128]", 12, 128),
        layer_norm("layernorm [1,128,768]", [1, 128, 768]),
        layer_norm("layernorm [1,128,128]", [1, 128, 128]),
        layer_norm("add+layernorm [1,128,768]", [1, 128, 768], residual=True),
        broadcast("add [1,128,768]+[768]", "Add", [1, 128, 768]),
        broadcast("mul [1,128,768]*[768]", "Mul", [1, 128, 768]),
        gelu_erf("gelu erf [1,128,3072]", [1, 128, 3072]),
        gelu_erf("bias+gelu erf [1,128,3072]", [1, 128, 3072], bias=True),
        gelu_tanh("gelu tanh [1,128,3072]", [1, 128, 3072]),
        unary("Gelu op [1,128,3072]", "Gelu", [1, 128, 3072]),
        unary("relu [1,64,56,56]", "Relu", nchw),
        clip("clip 0..6 [1,64,56,56]", nchw),
        unary("sigmoid [1,64,56,56]", "Sigmoid", nchw),
        pool("maxpool 3x3/2 [1,64,112,112]", "MaxPool", [1, 64, 112, 112],
             kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        pool("avgpool 3x3/2 [1,64,112,112]", "AveragePool", [1, 64, 112, 112],
             kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        pool("avgpool 2x2/2 [1,64,112,112]", "AveragePool", [1, 64, 112, 112],
             kernel_shape=[2, 2], strides=[2, 2]),
        pool("globalavgpool [1,2048,7,7]", "GlobalAveragePool", [1, 2048, 7, 7]),
        pool("globalavgpool [1,64,112,112]", "GlobalAveragePool", [1, 64, 112, 112]),
        pool("globalmaxpool [1,2048,7,7]", "GlobalMaxPool", [1, 2048, 7, 7]),
        reduce_mean("reducemean -1 [1,128,768]", [1, 128, 768]),
        transpose("transpose [1,128,12,64] 0213", [1, 128, 12, 64], [0, 2, 1, 3]),
        transpose("transpose [1,12,128,64] 0132", [1, 12, 128, 64], [0, 1, 3, 2]),
        transpose("transpose [1,256,3136] 021", [1, 256, 3136], [0, 2, 1]),
        gather("gather [30522,768] x128", 30522, 768, 128),
        concat("concat 2x[1,64,56,56] axis 1", nchw, 1),
        concat("concat 2x[1,128,384] axis -1", [1, 128, 384], -1),
        reshape("reshape [1,128,768]->[1,128,12,64]", [1, 128, 768], [1, 128, 12, 64]),
        unary("flatten [1,2048,1,1]", "Flatten", [1, 2048, 1, 1], axis=1),
    ]


def bench(case: Case, threads: Sequence[int], runs: int) -> list[tuple[int, str, float]]:
    """(threads, table row, ratio onnxruntime / Kiln) per thread count."""
    import onnxruntime

    from kiln.compiler import build
    from kiln.frontends.onnx import load_onnx
    from kiln.runtime import load

    exe = build(load_onnx(case.model), opt_level=3)
    rows = []
    for count in threads:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = count
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(case.model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        expected = session.run(None, case.inputs)[0]
        ort = median_latency(lambda s=session: s.run(None, case.inputs), runs, warmup=5)
        with load(str(exe.library), threads=count) as model:
            got = model.run(case.inputs)[0]
            kiln = median_latency(lambda m=model: m.run(case.inputs), runs, warmup=5)
        agree = "" if np.allclose(got, expected, rtol=1e-3, atol=1e-4) else "  MISMATCH"
        rows.append((count, f"{case.name:36} {count:>3} {exe.stats.kernels:>3} "
                     f"{kiln * 1e6:10.1f} {ort * 1e6:10.1f} {ort / kiln:8.2f}{agree}",
                     ort / kiln))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", nargs="*", help="only these cases (substring match)")
    args = parser.parse_args(argv)
    selected = [c for c in cases()
                if not args.cases or any(s in c.name for s in args.cases)]
    print(f"{'case':36} {'thr':>3} {'krn':>3} {'kiln us':>10} {'ort us':>10} {'ort/kiln':>8}")
    ratios: dict[int, list[float]] = {t: [] for t in args.threads}
    for case in selected:
        try:
            rows = bench(case, args.threads, args.runs)
        except Exception as error:  # one failing case must not hide the others' numbers
            print(f"{case.name:36} failed: {type(error).__name__}: {error}"[:200])
            continue
        for count, row, ratio in rows:
            print(row, flush=True)
            ratios[count].append(ratio)
    for count, values in ratios.items():
        if values:
            geomean = float(np.exp(np.mean(np.log(values))))
            print(f"geometric mean ort/kiln at {count} thread(s): {geomean:.3f} "
                  f"over {len(values)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
