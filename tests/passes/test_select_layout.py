"""select_layout: the block chosen from the machine, which ops run blocked (golden structure of
ResNet-, SqueezeNet-, Inception-, DenseNet-, AlexNet- and MobileNet-style graphs: transforms only
at the boundaries), inverse transforms cancelled, the padded-channel invariant, and soundness:
the reference before and after the pass agree on random inputs (and compiled at -O3)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kiln.compiler import build, reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Node, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ir.verify import verify
from kiln.compiler.machine import Machine
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.select_layout import block_for, select_layout

RNG = np.random.default_rng(0)
Body = Callable[[GraphBuilder, Value], list[Value]]


def ops(graph: Graph) -> list[str]:
    return [n.op.value for n in graph.nodes if n.op is not Op.CONSTANT]


def transforms(graph: Graph) -> int:
    return sum(n.op is Op.LAYOUT_TRANSFORM for n in graph.nodes)


def nodes(graph: Graph, op: Op) -> list[Node]:
    return [n for n in graph.nodes if n.op is op]


def conv(b: GraphBuilder, x: Value, out: int, k: int = 3, bias: bool = True,
         **attrs: object) -> Value:
    channels = int(x.type.shape[1]) // int(attrs.get("group", 1))  # type: ignore[call-overload]
    w = b.constant((RNG.standard_normal((out, channels, k, k)) / k).astype(np.float32))
    operands = [x, w]
    if bias:
        operands.append(b.constant(RNG.standard_normal(out).astype(np.float32)))
    if "auto_pad" not in attrs:
        attrs.setdefault("pads", [k // 2] * 4)
    return b.add1(Op.CONV, operands, attrs)


def relu(b: GraphBuilder, x: Value) -> Value:
    return b.add1(Op.RELU, [x])


def pool(b: GraphBuilder, x: Value, op: Op = Op.MAX_POOL, **attrs: object) -> Value:
    attrs.setdefault("kernel_shape", [2, 2])
    attrs.setdefault("strides", [2, 2])
    return b.add1(op, [x], attrs)


def graph(shape: tuple[int, ...], body: Body, fold: bool = True) -> Graph:
    b = GraphBuilder(fold=fold)
    x = b.add_input("x", TensorType(DType.F32, shape))
    return b.finish(body(b, x))


def assert_sound(before: Graph, after: Graph, seeds: int = 2) -> None:
    verify(after)
    assert [v.type for v in after.outputs] == [v.type for v in before.outputs]
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        feeds = {v.name: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
                 for v in before.inputs}
        for want, got in zip(reference.run(before, feeds), reference.run(after, feeds),
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def blocked(before: Graph, block: int = 8) -> Graph:
    """``before`` through the pass (block ``block``), checked sound."""
    after = select_layout(before, block=block)
    assert_sound(before, after)
    return after


@pytest.mark.parametrize(("bits", "block"), [(512, 16), (256, 8), (128, 4), (64, 4)])
def test_block_is_the_machines_f32_lanes_at_least_4(bits: int, block: int) -> None:
    machine = Machine(vector_bits=bits)
    assert block_for(machine) == block
    before = graph((1, 16, 6, 6), lambda b, x: [conv(b, x, 16)])
    (node,) = nodes(select_layout(before, machine=machine), Op.CONV_NCHWC)
    assert node.attrs["block"] == block
    assert nodes(select_layout(before, block=8, machine=machine), Op.CONV_NCHWC)[0].attrs[
        "block"] == 8


def residual_block(b: GraphBuilder, x: Value) -> list[Value]:
    y = relu(b, conv(b, x, 16))
    y = conv(b, y, 16, bias=False)
    y = b.add1(Op.ADD, [y, b.constant(RNG.standard_normal((16, 1, 1)).astype(np.float32))])
    y = relu(b, b.add1(Op.ADD, [y, x]))
    return [pool(b, y)]


def test_residual_block_stays_blocked_through_the_pool() -> None:
    after = blocked(graph((1, 16, 6, 6), residual_block))
    assert ops(after) == [
        "layout_transform", "conv_nchwc", "relu", "conv_nchwc", "add", "add", "relu",
        "max_pool_nchwc", "layout_transform",
    ]
    first, last = nodes(after, Op.LAYOUT_TRANSFORM)
    assert (first.attrs["src_layout"], first.attrs["dst_layout"]) == ("NCHW", "NCHW8c")
    assert (last.attrs["src_layout"], last.attrs["dst_layout"]) == ("NCHW8c", "NCHW")
    assert last.attrs["channels"] == 16
    # The weights are blocked at compile time; the NCHW originals are gone.
    shapes = sorted(n.outputs[0].type.shape for n in nodes(after, Op.CONSTANT))
    assert shapes == [(1, 2, 1, 1, 8), (2, 2, 3, 3, 8, 8), (2, 2, 3, 3, 8, 8), (2, 8)]


def test_a_machine_without_blocked_layouts_keeps_the_graph() -> None:
    before = graph((1, 16, 6, 6), residual_block)
    assert select_layout(before, machine=Machine(blocked_layouts=False)) is before


def test_image_stem_reads_nchw_in_place() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = conv(b, x, 20, k=3, strides=[2, 1], dilations=[1, 2], pads=[1, 2, 0, 1])
        return [conv(b, relu(b, y), 12, k=3, auto_pad="SAME_UPPER")]

    after = blocked(graph((2, 5, 9, 8), body))
    assert ops(after) == ["conv_nchwc", "relu", "conv_nchwc", "layout_transform"]
    stem = nodes(after, Op.CONV_NCHWC)[0]
    assert stem.attrs["src_layout"] == "NCHW" and stem.inputs[0].name == "x"
    # As many channels as the block: the input is transformed instead.
    wide = select_layout(graph((1, 8, 6, 6), lambda b, x: [conv(b, x, 8)]), block=8)
    assert ops(wide) == ["layout_transform", "conv_nchwc", "layout_transform"]


def test_value_used_in_both_layouts_is_transformed_once() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = relu(b, conv(b, x, 8))
        return [conv(b, y, 8), b.add1(Op.TRANSPOSE, [y], {"perm": [0, 1, 3, 2]}), y]

    before = graph((1, 8, 5, 5), body)
    after = blocked(before)
    # In: x; out: the second conv and y (shared by the transpose and the output).
    assert transforms(after) == 3
    assert [v.name for v in after.outputs] == [v.name for v in before.outputs]


@pytest.mark.parametrize("case", ["group", "dynamic_weights", "narrow_1x1", "f64", "conv1d",
                                  "depthwise_plain_input"])
def test_ineligible_convs_are_left_alone(case: str) -> None:
    b = GraphBuilder()
    dtype = DType.F64 if case == "f64" else DType.F32
    shape = (1, 8, 7) if case == "conv1d" else (1, 8, 5, 5)
    x = b.add_input("x", TensorType(dtype, shape))
    k = 1 if case == "narrow_1x1" else 3
    in_channels = {"group": 4, "depthwise_plain_input": 1}.get(case, 8)
    w_shape = (8, in_channels, *([k] * (len(shape) - 2)))
    w = (b.add_input("w", TensorType(dtype, w_shape)) if case == "dynamic_weights"
         else b.constant(RNG.standard_normal(w_shape).astype(dtype.numpy)))
    attrs = {"group": 8 // in_channels}
    before = b.finish([b.add1(Op.CONV, [x, w], attrs)])
    assert select_layout(before, block=8) is before


def test_depthwise_and_pointwise_convs_follow_a_blocked_input() -> None:
    """MobileNetV2's start: the stem, then an inverted residual: expand 1x1, depthwise 3x3,
    Clip(0, 6), project 1x1 to a narrow width, residual add; only the output is transformed."""
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        zero, six = b.constant(np.float32(0)), b.constant(np.float32(6))
        x = b.add1(Op.CLIP, [conv(b, x, 40, strides=[2, 2]), zero, six])
        y = b.add1(Op.CLIP, [conv(b, x, 48, k=1, pads=[0] * 4), zero, six])
        y = b.add1(Op.CLIP, [conv(b, y, 48, group=48), zero, six])
        y = conv(b, y, 12, k=1, pads=[0] * 4)
        return [b.add1(Op.ADD, [y, conv(b, x, 12, k=1, pads=[0] * 4)])]

    after = blocked(graph((1, 3, 12, 12), body))
    assert ops(after) == ["conv_nchwc", "clip", "conv_nchwc", "clip", "conv_nchwc", "clip",
                          "conv_nchwc", "conv_nchwc", "add", "layout_transform"]
    depthwise = nodes(after, Op.CONV_NCHWC)[2]
    assert depthwise.attrs["group"] == 48 and depthwise.inputs[1].type.shape == (6, 1, 3, 3, 1, 8)


@pytest.mark.parametrize(("op", "attrs"), [
    (Op.MAX_POOL, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    (Op.MAX_POOL, {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1,
                   "dilations": [1, 2]}),
    (Op.AVERAGE_POOL, {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 0, 1, 1],
                       "ceil_mode": 1}),
    (Op.AVERAGE_POOL, {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0], "count_include_pad": 1}),
    (Op.AVERAGE_POOL, {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}),
    (Op.GLOBAL_AVERAGE_POOL, {}),
    (Op.GLOBAL_MAX_POOL, {}),
])
def test_pools_of_blocked_tensors_are_blocked(op: Op, attrs: dict[str, object]) -> None:
    after = blocked(graph((1, 5, 9, 8), lambda b, x: [b.add1(op, [conv(b, x, 12)], attrs)]))
    blocked_op = "max_pool_nchwc" if op in (Op.MAX_POOL, Op.GLOBAL_MAX_POOL) \
        else "average_pool_nchwc"
    assert ops(after) == ["conv_nchwc", blocked_op, "layout_transform"]


def test_pools_with_indices_or_of_plain_tensors_stay_nchw() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y, where = b.add(Op.MAX_POOL, [conv(b, x, 8)], {"kernel_shape": [2, 2]}, outputs=2)
        assert y is not None and where is not None
        return [y, where, pool(b, x)]

    after = blocked(graph((1, 5, 6, 6), body))
    assert ops(after) == ["conv_nchwc", "layout_transform", "max_pool", "max_pool"]


def test_concat_of_whole_blocks_is_blocked_else_nchw() -> None:
    def fire(b: GraphBuilder, x: Value, squeeze: int, expand: int) -> Value:
        s = relu(b, conv(b, x, squeeze, k=1, pads=[0] * 4))
        left = relu(b, conv(b, s, expand, k=1, pads=[0] * 4))
        return b.add1(Op.CONCAT, [left, relu(b, conv(b, s, expand))], {"axis": 1})

    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = pool(b, relu(b, conv(b, x, 16, strides=[2, 2])), kernel_shape=[3, 3])
        y = fire(b, fire(b, y, 8, 16), 8, 12)  # 12 + 12 channels: not whole blocks of 8
        return [b.add1(Op.FLATTEN, [b.add1(Op.GLOBAL_AVERAGE_POOL, [y])])]

    after = blocked(graph((1, 3, 21, 21), body))
    concats = nodes(after, Op.CONCAT)
    assert [c.outputs[0].type.rank for c in concats] == [5, 4]
    # The 12-channel branches go back to NCHW for the last concat, which stays NCHW.
    assert transforms(after) == 2
    assert ops(after)[-3:] == ["concat", "global_average_pool", "flatten"]


def squeezenet(b: GraphBuilder, x: Value) -> list[Value]:
    """SqueezeNet's shape: stem, pools, fire modules (squeeze 1x1 16, expands 1x1 and 3x3
    concatenated), a final 1x1 conv, global average pool, flatten, softmax."""
    y = pool(b, relu(b, conv(b, x, 32, strides=[2, 2])), kernel_shape=[3, 3], ceil_mode=1)
    for squeeze, expand in ((8, 16), (8, 16), (16, 32)):
        s = relu(b, conv(b, y, squeeze, k=1, pads=[0] * 4))
        y = b.add1(Op.CONCAT, [relu(b, conv(b, s, expand, k=1, pads=[0] * 4)),
                               relu(b, conv(b, s, expand))], {"axis": 1})
    y = pool(b, y, kernel_shape=[3, 3], ceil_mode=1)
    y = b.add1(Op.GLOBAL_AVERAGE_POOL, [relu(b, conv(b, y, 10, k=1, pads=[0] * 4))])
    return [b.add1(Op.SOFTMAX, [b.add1(Op.FLATTEN, [y])])]


def inception(b: GraphBuilder, x: Value) -> list[Value]:
    """Inception v1's shape: stem, LRN, an inception module (1x1 / 1x1-3x3 / 1x1-5x5 /
    pool-1x1 branches concatenated), average pool, reshape, Gemm."""
    y = pool(b, relu(b, conv(b, x, 16, k=5, strides=[2, 2])), kernel_shape=[3, 3])
    y = b.add1(Op.LRN, [y], {"size": 5, "alpha": 1e-4, "beta": 0.75})
    branches = [
        relu(b, conv(b, y, 16, k=1, pads=[0] * 4)),
        relu(b, conv(b, relu(b, conv(b, y, 8, k=1, pads=[0] * 4)), 16)),
        relu(b, conv(b, relu(b, conv(b, y, 4, k=1, pads=[0] * 4)), 8, k=5)),
        relu(b, conv(b, pool(b, y, kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4), 8, k=1,
                     pads=[0] * 4)),
    ]
    y = b.add1(Op.CONCAT, branches, {"axis": 1})
    y = pool(b, y, Op.AVERAGE_POOL, kernel_shape=[int(d) for d in y.type.shape[2:]])
    flat = b.add1(Op.RESHAPE, [y, b.constant(np.array([1, 48], np.int64))])
    w = b.constant(RNG.standard_normal((10, 48)).astype(np.float32))
    return [b.add1(Op.GEMM, [flat, w], {"transB": 1})]


def densenet(b: GraphBuilder, x: Value) -> list[Value]:
    """DenseNet's shape: BatchNorm-ReLU-conv layers whose outputs are concatenated onto
    their inputs, a transition (BN, 1x1 conv, average pool), global pool."""
    def batch_norm(y: Value) -> Value:
        c = int(y.type.shape[1])
        params = [RNG.standard_normal(c), RNG.standard_normal(c), RNG.standard_normal(c),
                  RNG.random(c) + 0.5]
        return b.add1(Op.BATCH_NORMALIZATION,
                      [y, *(b.constant(p.astype(np.float32)) for p in params)])

    y = pool(b, relu(b, conv(b, x, 16, k=5, strides=[2, 2])), kernel_shape=[3, 3])
    for _ in range(2):
        grown = conv(b, relu(b, batch_norm(y)), 8)
        y = b.add1(Op.CONCAT, [y, grown], {"axis": 1})
    y = pool(b, conv(b, relu(b, batch_norm(y)), 16, k=1, pads=[0] * 4), Op.AVERAGE_POOL)
    return [b.add1(Op.GLOBAL_AVERAGE_POOL, [relu(b, batch_norm(y))])]


def resnet(b: GraphBuilder, x: Value) -> list[Value]:
    y = pool(b, relu(b, conv(b, x, 16, k=7, strides=[2, 2])), kernel_shape=[3, 3],
             pads=[1] * 4)
    return [b.add1(Op.FLATTEN, [b.add1(Op.GLOBAL_AVERAGE_POOL, residual_block(b, y))])]


@pytest.mark.parametrize(("body", "shape"), [
    (squeezenet, (1, 3, 33, 33)), (inception, (1, 3, 27, 27)), (densenet, (1, 3, 27, 27)),
    (resnet, (1, 3, 30, 30)),
])
def test_cnns_are_transformed_only_at_the_boundary(body: Body, shape: tuple[int, ...]) -> None:
    """The image goes straight into the stem; one transform before the classifier head."""
    after = blocked(graph(shape, body))
    assert transforms(after) == 1
    assert all(op not in ops(after) for op in ("conv", "max_pool", "average_pool", "lrn",
                                                "global_average_pool", "batch_normalization"))


def test_lrn_and_elementwise_ops_keep_padded_channels_zero() -> None:
    """With 12 channels in blocks of 8 the last block has 4 padded lanes: ReLU, Clip(0, 6) and
    Mul by a scalar keep them zero and run blocked; Sigmoid and Add of 1 would not (and stay
    NCHW); the LRN after them sums across the padded lanes."""
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = conv(b, x, 12)
        y = b.add1(Op.CLIP, [y, b.constant(np.float32(0)), b.constant(np.float32(6))])
        y = b.add1(Op.MUL, [y, b.constant(np.float32(3))])
        y = b.add1(Op.LRN, [y], {"size": 5, "alpha": 0.1, "beta": 0.75, "bias": 2.0})
        shifted = b.add1(Op.ADD, [y, b.constant(np.float32(1))])
        return [b.add1(Op.SIGMOID, [y]), shifted]

    after = blocked(graph((1, 3, 6, 6), body))
    assert ops(after) == ["conv_nchwc", "clip", "mul", "lrn_nchwc", "layout_transform", "add",
                          "sigmoid"]
    # Without padded lanes, any elementwise op runs blocked.
    after = blocked(graph((1, 3, 6, 6), lambda b, x: [
        b.add1(Op.ADD, [b.add1(Op.SIGMOID, [conv(b, x, 16)]), b.constant(np.float32(1))])]))
    assert ops(after) == ["conv_nchwc", "sigmoid", "add", "layout_transform"]


def test_batch_norm_becomes_a_blocked_per_channel_affine() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        params = [b.constant((RNG.random(12) + 0.5).astype(np.float32)) for _ in range(4)]
        return [b.add1(Op.BATCH_NORMALIZATION, [conv(b, x, 12), *params], {"epsilon": 1e-3})]

    after = blocked(graph((1, 3, 6, 6), body))
    assert ops(after) == ["conv_nchwc", "mul", "add", "layout_transform"]


def splat_weights(b: GraphBuilder, shape: tuple[int, ...], value: float) -> Value:
    return b.add1(Op.CONSTANT_OF_SHAPE, [b.constant(np.array(shape, np.int64))],
                  {"value": np.array([value], np.float32)})


def test_constant_of_shape_weights_are_blocked_into_constants() -> None:
    """The light ONNX models make their weights with ConstantOfShape: blocked, they are
    constants (packed at compile time), whether a channel is padded or not."""
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = relu(b, conv(b, x, 16))
        y = b.add1(Op.CONV, [y, splat_weights(b, (16, 16, 3, 3), 0.01),
                             splat_weights(b, (16,), 0.5)], {"pads": [1] * 4})
        return [b.add1(Op.CONV, [y, splat_weights(b, (12, 16, 1, 1), -0.02)])]

    after = blocked(graph((1, 3, 6, 6), body, fold=False))
    assert ops(after) == ["conv_nchwc", "relu", "conv_nchwc", "conv_nchwc", "layout_transform"]
    weights = [n.inputs[1].type.shape for n in nodes(after, Op.CONV_NCHWC)]
    assert weights == [(2, 1, 3, 3, 8, 8), (2, 2, 3, 3, 8, 8), (2, 2, 1, 1, 8, 8)]
    assert {n.inputs[1].name for n in nodes(after, Op.CONV_NCHWC)} <= {
        n.outputs[0].name for n in nodes(after, Op.CONSTANT)}
    # Read in NCHW form too, the ConstantOfShape stays for that reader.
    twice = blocked(graph((1, 16, 6, 6), lambda b, x: [
        b.add1(Op.ADD, [x, splat_weights(b, (1, 16, 6, 6), 2.0)]),
        b.add1(Op.CONV, [x, splat_weights(b, (16, 16, 3, 3), 0.01)])], fold=False))
    assert ops(twice) == ["constant_of_shape", "add", "layout_transform", "conv_nchwc",
                          "layout_transform"]


def test_inverse_transforms_cancel_and_pass_is_idempotent() -> None:
    for body, shape in ((residual_block, (1, 16, 6, 6)), (squeezenet, (1, 3, 33, 33))):
        once = select_layout(graph(shape, body), block=8)
        assert select_layout(once, block=8) is once
    # Hand-made boundary in the middle: from_blocked then to_blocked of the same value.
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(DType.F32, (1, 16, 4, 4)))
    blocked_x = b.add1(Op.LAYOUT_TRANSFORM, [x], {"src_layout": "NCHW", "dst_layout": "NCHW8c"})
    y = b.add1(Op.RELU, [blocked_x])
    plain = b.add1(Op.LAYOUT_TRANSFORM, [y], {"src_layout": "NCHW8c", "dst_layout": "NCHW",
                                              "channels": 16})
    again = b.add1(Op.LAYOUT_TRANSFORM, [plain],
                   {"src_layout": "NCHW", "dst_layout": "NCHW8c"})
    z = b.add1(Op.NEG, [again])
    out = b.add1(Op.LAYOUT_TRANSFORM, [z], {"src_layout": "NCHW8c", "dst_layout": "NCHW",
                                            "channels": 16})
    before = b.finish([out])
    after = blocked(before)
    assert ops(after) == ["layout_transform", "relu", "neg", "layout_transform"]


def test_control_flow_body_reads_the_nchw_form_by_name() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (1, 8, 4, 4)))
    cond = b.add_input("cond", TensorType(DType.BOOL, ()))
    y = relu(b, conv(b, x, 8))
    branch = b.sub("then")
    then = branch.finish([branch.add1(Op.NEG, [y])])
    other = b.sub("else")
    otherwise = other.finish([other.add1(Op.ABS, [y])])
    out = b.add1(Op.IF, [cond], {"then_branch": then, "else_branch": otherwise})
    before = b.finish([out])
    after = select_layout(before, block=8)
    verify(after)
    assert "conv_nchwc" in ops(after)
    feeds = {"x": RNG.standard_normal((1, 8, 4, 4)).astype(np.float32), "cond": np.array(True)}
    np.testing.assert_allclose(reference.run(after, feeds)[0], reference.run(before, feeds)[0],
                               rtol=1e-4, atol=1e-4)


def test_compiled_blocked_network_matches_nchw_at_o3() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = relu(b, conv(b, x, 64, k=7, strides=[2, 2], pads=[3, 3, 3, 3]))
        y = pool(b, y, kernel_shape=[3, 3], pads=[1] * 4)
        z = relu(b, conv(b, y, 64))
        z = relu(b, b.add1(Op.ADD, [conv(b, z, 64, k=1, pads=[0, 0, 0, 0]), y]))
        z = b.add1(Op.CONCAT, [z, conv(b, z, 48, group=16)], {"axis": 1})  # grouped: NCHW
        z = b.add1(Op.LRN, [relu(b, conv(b, z, 112, group=112))], {"size": 5})  # depthwise
        z = pool(b, z, Op.AVERAGE_POOL, kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4)
        return [b.add1(Op.GLOBAL_AVERAGE_POOL, [relu(b, conv(b, z, 40, k=1, pads=[0] * 4))])]

    before = graph((1, 3, 32, 32), body)
    optimized = optimize(before, 3, verify_each=True)
    feeds = {"x": RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    want = reference.run(before, feeds)[0]
    np.testing.assert_allclose(build(before, opt_level=3).run(feeds)[0], want, rtol=1e-4,
                               atol=1e-4)
    assert transforms(optimized) + sum(transforms(n.attrs["body"])
                                       for n in nodes(optimized, Op.FUSED)) <= 3
