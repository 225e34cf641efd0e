"""Layout selection: run convolutions on channel-blocked NCHW[b]c tensors where that is faster.

Pre: any graph (only static, 2-D, group-1 f32 Convs with constant weights and bias change).
Post: each such Conv (a 1x1 one only with at least ``min_pointwise_channels`` input and output
channels) is a ConvNCHWc on weights blocked at compile time; the tensors between blocked ops
stay blocked, so layout transforms appear only at the boundaries with ops that want NCHW (and
at graph outputs).

    before: %y = conv(%x, %w, %b) {pads=[1,1,1,1]} : f32[1,64,56,56]
            %r = relu(%y) : f32[1,64,56,56]
            %z = conv(%r, %w2) : f32[1,64,56,56]
            return %z
    after:  %x.b = layout_transform(%x) {dst_layout="NCHW8c", src_layout="NCHW"}
            %y.b = conv_nchwc(%x.b, %w.b, %b.b) {block=8, pads=[1,1,1,1]} : f32[1,8,56,56,8]
            %r.b = relu(%y.b) : f32[1,8,56,56,8]
            %z.b = conv_nchwc(%r.b, %w2.b) {block=8} : f32[1,8,56,56,8]
            %z = layout_transform(%z.b) {channels=64, dst_layout="NCHW", ...} : f32[1,64,56,56]
            return %z

How: one walk in order keeps, per original value, its NCHW form and/or its blocked form, each
made on demand. A blocked Conv asks for its input's blocked form; ops that do not care about
layout (zero-preserving elementwise ops: the padded channels must stay zero) run on the blocked
form when their operands have one (per-channel constants are blocked at compile time); every
other op, and the graph outputs, ask for the NCHW form. A form asked for twice is made once, and
a value never goes blocked -> NCHW -> blocked, so adjacent inverse transforms never appear;
existing ones (a graph that went through this pass) cancel: a to-blocked transform of a value
with a blocked form is that form. The NCHW form of a value keeps its original name (control-flow
bodies read enclosing values by name). The pipeline counts layout_transform nodes before and
after to report transforms inserted/removed.

The block is a parameter because the pass has no target: b should be the f32 lanes of the
target's vectors (8 for AVX2, 16 for AVX-512); the default 8 suits both (on AVX-512 an 8-lane
row is one ymm register and the blocks stay small for narrow layers).

Measured with benchmarks/bench_layout.py (one Conv with bias, NCHW lowering vs transform in +
ConvNCHWc + transform out; block 8, one thread, best of 10, on a shared 2-core AVX-512 host):
    stem 7x7/2  3x224x224 -> 64    163.7 ms vs 11.7 ms  (14x)
    3x3         64x56x56 -> 64      88.4 ms vs  3.0 ms  (30x)
    1x1         64x56x56 -> 256     53.4 ms vs  1.8 ms  (30x)
    3x3         128x28x28 -> 128   175.5 ms vs  2.8 ms  (62x)
    1x1         256x14x14 -> 256    13.3 ms vs  0.40 ms (33x)
    3x3         256x14x14 -> 256   171.7 ms vs  3.1 ms  (56x)
    3x3         512x7x7 -> 512     152.5 ms vs  3.8 ms  (40x)
    3x3         16x56x56 -> 16       4.4 ms vs  0.20 ms (22x)
    1x1         32x112x112 -> 16     2.9 ms vs  0.28 ms (10x)
    1x1         16x56x56 -> 16      0.047 ms vs 0.058 ms (0.8x)
    1x1         8x28x28 -> 8        0.017 ms vs 0.017 ms (1.0x)
Every conv with a window gains; narrow 1x1 convs (where the NCHW lowering already vectorizes
over pixels and the two transforms cost as much as the conv) do not, hence
``min_pointwise_channels`` = 32.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.rules.layout import PLAIN, block_of, blocked_layout
from ..ir.rules.nn_geometry import kernel_shape_of, resolve_window
from ..ir.types import DType
from ..machine import Machine
from ..reference.kernels.layout import block_bias, block_weights, to_blocked

# Elementwise ops with f(0, ..., 0) == 0: they keep a blocked tensor's padded channels zero.
ZERO_PRESERVING = frozenset({
    Op.RELU, Op.LEAKY_RELU, Op.NEG, Op.ABS, Op.ADD, Op.SUB, Op.MUL, Op.SUM, Op.MAX, Op.MIN,
})
DEFAULT_BLOCK = 8
DEFAULT_MIN_POINTWISE_CHANNELS = 32


def select_layout(
    graph: Graph, block: int = DEFAULT_BLOCK,
    min_pointwise_channels: int = DEFAULT_MIN_POINTWISE_CHANNELS,
    machine: Machine | None = None,
) -> Graph:
    """``graph`` with eligible convolutions blocked (the same object when none is); the
    ``machine`` (when given) is the CPU it chooses for."""
    walk = _Walk(graph, block, min_pointwise_channels)
    for node in graph.nodes:
        walk.visit(node)
    if not walk.changed:
        return graph
    return walk.builder.finish([walk.plain(v) for v in graph.outputs])


def _names(graph: Graph) -> Iterator[str]:
    for value in graph.inputs:
        yield value.name
    for node in graph.walk():
        for value in node.outputs:
            if value is not None:
                yield value.name


class _Walk:
    """The graph being rebuilt and the NCHW / blocked forms of each original value."""

    def __init__(self, graph: Graph, block: int, min_pointwise_channels: int) -> None:
        self.block = block
        self.min_pointwise_channels = min_pointwise_channels
        self.taken = set(_names(graph))
        self.builder = GraphBuilder(graph.name, fold=False)
        self.changed = False
        self.types = {v.name: v for v in graph.inputs}
        # Per original value name: the value in its original layout, and its blocked form.
        self.nchw: dict[str, Value] = {}
        self.blocked: dict[str, Value] = {}
        # Constants are added when first read, so weights only their blocked form reads vanish.
        self.pending: dict[str, Node] = {}
        for value in graph.inputs:
            self.nchw[value.name] = self.builder.add_input(value.name, value.type)

    def fresh(self, hint: str) -> str:
        name, count = hint, 0
        while name in self.taken:
            count += 1
            name = f"{hint}.{count}"
        self.taken.add(name)
        return name

    def plain(self, old: Value) -> Value:
        """The NCHW form of ``old`` (transformed back from its blocked form if need be)."""
        found = self.nchw.get(old.name)
        if found is None and old.name in self.pending:
            node = self.pending.pop(old.name)
            found = self.builder.constant(node.attrs["value"], old.name, node.name)
            self.nchw[old.name] = found
        if found is None:
            found = self.builder.add1(
                Op.LAYOUT_TRANSFORM, [self.blocked[old.name]],
                {"src_layout": blocked_layout(self.block), "dst_layout": PLAIN,
                 "channels": int(old.type.shape[1])},
                output=old.name,
            )
            self.nchw[old.name] = found
        return found

    def to_blocked(self, old: Value) -> Value:
        """The blocked form of the rank-4 ``old`` (transformed from NCHW if need be)."""
        found = self.blocked.get(old.name)
        if found is None:
            found = self.builder.add1(
                Op.LAYOUT_TRANSFORM, [self.plain(old)],
                {"src_layout": PLAIN, "dst_layout": blocked_layout(self.block)},
                output=self.fresh(f"{old.name}.nchw{self.block}c"),
            )
            self.blocked[old.name] = found
        return found

    def const(self, old: Value | None) -> np.ndarray | None:
        if old is None:
            return None
        if old.name in self.pending:
            return np.asarray(self.pending[old.name].attrs["value"])
        return self.builder.const_value(self.nchw.get(old.name))

    def visit(self, node: Node) -> None:
        self.types.update({v.name: v for v in node.outputs if v is not None})
        if node.op is Op.CONSTANT:
            out = node.outputs[0]
            assert out is not None
            self.pending[out.name] = node
        elif node.op is Op.LAYOUT_TRANSFORM:
            self._transform(node)
        elif node.op is Op.CONV and self._eligible(node):
            self._conv(node)
            self.changed = True
        elif node.op in ZERO_PRESERVING and self._elementwise(node):
            pass
        else:
            self._copy(node)

    def _copy(self, node: Node) -> None:
        inputs = [None if v is None else self.plain(v) for v in node.inputs]
        for body in node.subgraphs():
            # Bodies read enclosing values by name: those need their NCHW form.
            for inner in body.walk():
                for value in inner.inputs:
                    if value is not None and value.name in self.types:
                        self.plain(self.types[value.name])
        outs = self.builder.add(node.op, inputs, node.attrs, name=node.name,
                                outputs=[None if v is None else v.name for v in node.outputs])
        for old, new in zip(node.outputs, outs, strict=True):
            if old is not None and new is not None:
                self.nchw[old.name] = new

    def _transform(self, node: Node) -> None:
        """An existing transform of our block becomes a form of its input's value, so an
        inverse pair cancels; transforms of other blocks are copied as they are."""
        src = block_of(str(node.attrs["src_layout"]))
        dst = block_of(str(node.attrs["dst_layout"]))
        value, out = node.inputs[0], node.outputs[0]
        assert value is not None and out is not None
        if dst == self.block:
            self.changed |= value.name in self.blocked
            self.nchw[out.name] = self.to_blocked(value)
        elif src == self.block and int(node.attrs.get("channels") or 0) == out.type.shape[1]:
            self.blocked[out.name] = self.plain(value)
        else:
            self._copy(node)

    def _eligible(self, node: Node) -> bool:
        x, w = node.inputs[0], node.inputs[1]
        assert x is not None and w is not None
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        return (
            x.type.dtype is DType.F32 and x.type.rank == 4 and x.type.is_static
            and int(node.attrs.get("group") or 1) == 1
            and self.const(w) is not None and (bias is None or self.const(bias) is not None)
            and (w.type.shape[2:] != (1, 1)
                 or min(int(x.type.shape[1]), int(w.type.shape[0])) >= self.min_pointwise_channels)
        )

    def _conv(self, node: Node) -> None:
        x, w, out = node.inputs[0], node.inputs[1], node.outputs[0]
        assert x is not None and w is not None and out is not None
        weights = self.const(w)
        assert weights is not None
        kernel = kernel_shape_of(node.attrs, weights.shape[2:], 2, ValueError)
        win = resolve_window(node.attrs, x.type.shape[2:], kernel, ValueError)
        inputs = [self.to_blocked(x), self.builder.constant(
            block_weights(weights, self.block), self.fresh(f"{w.name}.blocked"))]
        bias = self.const(node.inputs[2] if len(node.inputs) > 2 else None)
        if bias is not None:
            inputs.append(self.builder.constant(block_bias(bias, self.block),
                                                self.fresh(f"{out.name}.bias.blocked")))
        attrs = {"kernel_shape": list(kernel), "strides": list(win.strides),
                 "dilations": list(win.dilations), "pads": list(win.pads), "block": self.block}
        self.blocked[out.name] = self.builder.add1(
            Op.CONV_NCHWC, inputs, attrs, name=node.name,
            output=self.fresh(f"{out.name}.nchw{self.block}c"))

    def _elementwise(self, node: Node) -> bool:
        """Run ``node`` on blocked operands when one operand is blocked and the others can
        be (same-shape tensors, per-channel or single-element constants)."""
        out = node.outputs[0]
        assert out is not None
        if out.type.rank != 4 or not any(v is not None and v.name in self.blocked
                                         for v in node.inputs):
            return False
        operands: list[Value] = []
        for value in node.inputs:
            assert value is not None
            operand = self._blocked_operand(value, out)
            if operand is None:
                return False
            operands.append(operand)
        self.blocked[out.name] = self.builder.add1(
            node.op, operands, node.attrs, name=node.name,
            output=self.fresh(f"{out.name}.nchw{self.block}c"))
        return True

    def _blocked_operand(self, value: Value, out: Value) -> Value | None:
        if value.name in self.blocked or value.type.shape == out.type.shape:
            return self.to_blocked(value)
        data = self.const(value)
        if data is None:
            return None
        if data.size == 1:
            return self.nchw[value.name]
        channels = int(out.type.shape[1])
        if data.ndim not in (3, 4) or data.shape[-3:] != (channels, 1, 1) or data.size != channels:
            return None
        plain = data.reshape(1, channels, 1, 1)
        return self.builder.constant(to_blocked(plain, self.block),
                                     self.fresh(f"{value.name}.nchw{self.block}c"))
