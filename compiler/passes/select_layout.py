"""Layout selection: run CNNs on channel-blocked NCHW[b]c tensors end to end (a pass).

Pre: any graph. Post: the same computation, where the convolutions and the ops between them run
on channel-blocked tensors (``compiler/ir/rules/layout.py`` defines the layout and the blocked
ops), so that layout transforms appear only at the boundaries with ops that need NCHW: the
graph's outputs, a Flatten or Reshape after the final pool, ops no blocked form exists for.

    before: %y = conv(%x, %w, %b) {pads=[1,1,1,1]} : f32[1,64,56,56]   (%x: f32[1,3,56,56])
            %r = relu(%y) : f32[1,64,56,56]
            %p = max_pool(%r) {kernel_shape=[2,2], strides=[2,2]} : f32[1,64,28,28]
            %z = conv(%p, %w2) : f32[1,64,28,28]
            return %z
    after:  %y.b = conv_nchwc(%x, %w.b, %b.b) {block=16, src_layout="NCHW", ...}
                 : f32[1,4,56,56,16]
            %r.b = relu(%y.b) : f32[1,4,56,56,16]
            %p.b = max_pool_nchwc(%r.b) {kernel_shape=[2,2], strides=[2,2]} : f32[1,4,28,28,16]
            %z.b = conv_nchwc(%p.b, %w2.b) {block=16} : f32[1,4,28,28,16]
            %z = layout_transform(%z.b) {channels=64, dst_layout="NCHW", ...} : f32[1,64,28,28]
            return %z

The block b is the target's f32 vector lanes (``Machine.f32_lanes``: 16 with AVX-512, 8 with
AVX2, 4 with NEON; never below 4), so one pixel's lanes are one vector register; the ``block``
parameter overrides it (tests).

What runs blocked. Convolutions: static 2-D f32 Convs with constant weights and bias become
ConvNCHWc on weights blocked at compile time: group 1 ones, and depthwise ones (group = input
channels = output channels). A Conv whose input has only its NCHW form is blocked when it has a
window and group 1; with fewer input channels than b (the image) it reads the NCHW input in
place (``src_layout="NCHW"``), else the input is transformed; 1x1 and depthwise Convs are
blocked only when their input already is (see the measurements below). Other grouped
convolutions stay NCHW. A ConstantOfShape counts as constant (the light ONNX models hold their
weights so): its blocked weights are a constant like any other, which the convolution's
lowering packs at compile time, instead of a fill run at every inference that the lowering can
only read as it is (ResNet-50 light, one thread: 145 ms -> 110 ms per run, the library's
weights 3.5 MB -> 95 MB, the size of real ResNet-50 weights).

Other ops follow a blocked input: MaxPool (without Indices), AveragePool, GlobalAveragePool
and GlobalMaxPool (MaxPoolNCHWc / AveragePoolNCHWc; a global pool is the pool over the whole
plane), LRN (LRNNCHWc), an inference BatchNormalization with constant parameters (a Mul and an
Add by blocked per-channel constants), a Concat along channels when every input's channel count
is a multiple of b (a Concat of the blocks), and elementwise ops whose other operands are
tensors of the output's shape, per-channel or one-element constants.

NHWC inputs (TensorFlow models through tf2onnx): a Transpose NHWC -> NCHW of a tensor whose
channels fill whole blocks is deferred, and the value's blocked form is made from the NHWC
tensor in one reorder (viewed as [N, H, W, C/b, b], transposed to [N, C/b, H, W, b]) instead of
the Transpose then the transform (3x3 Conv of 16 outputs on a 1x56x56x64 NHWC image, one thread:
834 us -> 643 us; 1x14x14x256: 240 us -> 165 us); the Transpose is added only if something reads
its NCHW result. With fewer channels than b (the image), the stem Conv reads the transposed NCHW
tensor in place. The transform out of blocked form and a Transpose back to NHWC before a Flatten
and a Dense fold into the Dense weights afterwards (``simplify.absorb_moves``).

The invariant: the padded channels of a blocked tensor (past C when b does not divide C) hold
zeros. LRN sums across them, and a convolution multiplies them by zero weights, which an inf or
NaN would not survive. Each blocked op keeps it (pools and LRN map zeros to zeros, weights and
per-channel constants are zero padded); an elementwise op is blocked on a padded tensor only
when it maps what the padded lanes hold (zeros, and the values of one-element constants) to
zero, which the pass checks by evaluating the op on them (ReLU, Clip(0, 6), Mul by 2: yes;
Sigmoid, Add of 1: no).

How: one walk in order keeps, per original value, its NCHW form and/or its blocked form, each
made on demand. A form asked for twice is made once, and a value never goes blocked -> NCHW ->
blocked, so adjacent inverse transforms never appear; existing ones (a graph that went through
this pass) cancel: a to-blocked transform of a value with a blocked form is that form. The NCHW
form of a value keeps its original name (control-flow bodies read enclosing values by name).
Constants and ConstantOfShape nodes are added when first read in NCHW form, so weights only a
blocked op reads vanish. The pipeline counts layout_transform nodes before and after to report
transforms inserted/removed.

Measured (one Conv with bias; the NCHW lowering vs transform in + ConvNCHWc + transform out;
block 16, one thread, best of 10 CPU times on a shared 2-core AVX-512 host):
    1x1      64x56x56 -> 256    1.31 ms vs 2.64 ms
    1x1      256x14x14 -> 256   0.38 ms vs 0.40 ms
    1x1      16x56x56 -> 16     0.055 ms vs 0.125 ms
    3x3      16x56x56 -> 16     0.16 ms vs 0.24 ms
    3x3      128x28x28 -> 128   2.68 ms vs 2.63 ms
    dw 3x3   96x56x56           0.25 ms vs 0.44 ms
The NCHW 1x1 (a GEMM) and depthwise lowerings beat the blocked ones once a transform is paid,
hence those are blocked only after a blocked producer; the gain of blocking is in the chains of
blocked ops between the model's boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..errors import KilnError
from ..ir import symbolic
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.rules.layout import PLAIN, block_of, blocked_layout
from ..ir.rules.nn_geometry import kernel_shape_of, resolve_window
from ..ir.types import DType
from ..lower.ops.elementwise import SCALAR
from ..machine import DEFAULT_MACHINE, Machine
from ..reference.kernels.layout import (
    block_bias,
    block_depthwise_weights,
    block_weights,
    to_blocked,
)

MIN_BLOCK = 4
_POOLS = {
    Op.MAX_POOL: Op.MAX_POOL_NCHWC, Op.AVERAGE_POOL: Op.AVERAGE_POOL_NCHWC,
    Op.GLOBAL_MAX_POOL: Op.MAX_POOL_NCHWC, Op.GLOBAL_AVERAGE_POOL: Op.AVERAGE_POOL_NCHWC,
}


def block_for(machine: Machine) -> int:
    """The block of ``machine``: its f32 vector lanes, at least ``MIN_BLOCK``."""
    return max(MIN_BLOCK, machine.f32_lanes)


def select_layout(graph: Graph, block: int | None = None,
                  machine: Machine = DEFAULT_MACHINE) -> Graph:
    """``graph`` running blocked where it can (the same object when nothing changes); the
    block is ``block`` if given, else ``machine``'s (none for a machine without blocked
    layouts: the graph is returned as it is)."""
    if block is None and not machine.blocked_layouts:
        return graph
    walk = _Walk(graph, block_for(machine) if block is None else block)
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


def _is_f32_image(value: Value) -> bool:
    """An f32 [N, C, H, W] tensor with static C, H, W (what a blocked form can be made of);
    the batch N may be a symbol (bound at run time: the blocked ops loop over it) when the
    others are not 0, not an extent known only from values (``?``), which no blocked op would
    know how to compute."""
    shape = value.type.shape
    return (value.type.dtype is DType.F32 and value.type.rank == 4
            and all(isinstance(d, int) for d in shape[1:])
            and (isinstance(shape[0], int)
                 or (symbolic.is_symbolic(shape[0]) and all(d > 0 for d in shape[1:]))))


def _keeps_zero(node: Node, lanes: list[np.ndarray | None | bool]) -> bool:
    """Whether ``node``'s op maps the padded lanes of its operands to zero: ``lanes`` holds per
    operand True (a blocked operand: zero there), a one-element constant, or None (absent)."""
    builder = GraphBuilder()  # folds the node: every operand is a constant
    zero = np.zeros(1, np.float32)
    operands = [None if lane is None else builder.constant(zero if lane is True else lane)
                for lane in lanes]
    try:
        result = builder.const_value(builder.add1(node.op, operands, node.attrs))
    except KilnError:
        return False
    return result is not None and not np.any(result)


class _Walk:
    """The graph being rebuilt and the NCHW / blocked forms of each original value."""

    def __init__(self, graph: Graph, block: int) -> None:
        self.block = block
        self.taken = set(_names(graph))
        self.builder = GraphBuilder(graph.name, fold=False)
        self.changed = False
        self.types = {v.name: v for v in graph.inputs}
        # Per original value name: the value in its original layout, and its blocked form.
        self.nchw: dict[str, Value] = {}
        self.blocked: dict[str, Value] = {}
        # Constants and ConstantOfShapes (of a constant shape) are added when first read in
        # NCHW form, so weights that only blocked ops read vanish; so are the NHWC -> NCHW
        # Transposes whose blocked form is made from their NHWC input (``nhwc``).
        self.pending: dict[str, Node] = {}
        self.nhwc: dict[str, Value] = {}
        # ConstantOfShape values by name: (the one value, the shape).
        self.splats: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
        self.handlers: dict[Op, Callable[[Node], bool]] = {
            Op.CONV: self._conv, Op.LRN: self._lrn, Op.CONCAT: self._concat,
            Op.BATCH_NORMALIZATION: self._batch_norm,
            **{op: self._pool for op in _POOLS}, **{op: self._elementwise for op in SCALAR},
        }
        for value in graph.inputs:
            self.nchw[value.name] = self.builder.add_input(value.name, value.type)

    def fresh(self, hint: str) -> str:
        name, count = hint, 0
        while name in self.taken:
            count += 1
            name = f"{hint}.{count}"
        self.taken.add(name)
        return name

    def blocked_name(self, old: Value) -> str:
        return self.fresh(f"{old.name}.nchw{self.block}c")

    def plain(self, old: Value) -> Value:
        """The NCHW form of ``old`` (transformed back from its blocked form if need be)."""
        found = self.nchw.get(old.name)
        if found is None and old.name in self.pending:
            node = self.pending.pop(old.name)
            if node.op is Op.CONSTANT:
                found = self.builder.constant(node.attrs["value"], old.name, node.name)
            else:
                operands = [self.plain(v) for v in node.inputs if v is not None]
                found = self.builder.add1(node.op, operands, node.attrs, name=node.name,
                                          output=old.name)
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
        if found is None and old.name in self.nhwc:
            found = self._blocked_from_nhwc(self.nhwc[old.name], old)
            self.blocked[old.name] = found
        elif found is None:
            found = self.builder.add1(
                Op.LAYOUT_TRANSFORM, [self.plain(old)],
                {"src_layout": PLAIN, "dst_layout": blocked_layout(self.block)},
                output=self.blocked_name(old),
            )
            self.blocked[old.name] = found
        return found

    def known(self, old: Value | None) -> np.ndarray | None:
        """The compile-time value of ``old``: a constant's data, a ConstantOfShape's fill."""
        if old is None:
            return None
        if old.name in self.splats:
            value, shape = self.splats[old.name]
            return np.full(shape, value.reshape(()))
        if old.name in self.pending and self.pending[old.name].op is Op.CONSTANT:
            return np.asarray(self.pending[old.name].attrs["value"])
        return self.builder.const_value(self.nchw.get(old.name))

    def emit(self, node: Node, op: Op, inputs: list[Value | None], attrs: dict) -> bool:
        """Add the blocked form of ``node``'s (first) output, computed by ``op``."""
        out = node.outputs[0]
        assert out is not None
        self.blocked[out.name] = self.builder.add1(op, inputs, attrs, name=node.name,
                                                   output=self.blocked_name(out))
        self.changed = True
        return True

    def visit(self, node: Node) -> None:
        self.types.update({v.name: v for v in node.outputs if v is not None})
        out = node.outputs[0] if node.outputs else None
        if node.op is Op.CONSTANT:
            assert out is not None
            self.pending[out.name] = node
        elif node.op is Op.CONSTANT_OF_SHAPE and self._splat(node):
            pass
        elif node.op is Op.LAYOUT_TRANSFORM:
            self._transform(node)
        elif node.op is Op.TRANSPOSE and self._defer_nhwc(node):
            pass
        elif not (node.op in self.handlers and self.handlers[node.op](node)):
            self._copy(node)

    def _splat(self, node: Node) -> bool:
        shape, out = node.inputs[0], node.outputs[0]
        assert out is not None
        if self.known(shape) is None or not out.type.is_static:
            return False
        value = node.attrs.get("value")
        value = np.zeros(1, np.float32) if value is None else np.asarray(value)
        self.splats[out.name] = (value, tuple(int(d) for d in out.type.shape))
        self.pending[out.name] = node
        return True

    def _defer_nhwc(self, node: Node) -> bool:
        """Defer a Transpose NHWC -> NCHW of a static f32 tensor whose channels fill whole
        blocks: its blocked form is then one reorder of the NHWC input (``_blocked_from_nhwc``),
        not the transpose and a transform; its NCHW form is made if something reads it."""
        x, out = node.inputs[0], node.outputs[0]
        assert x is not None and out is not None
        if not (_is_f32_image(x) and tuple(node.attrs.get("perm") or ()) == (0, 3, 1, 2)
                and int(x.type.shape[3]) % self.block == 0):
            return False
        self.pending[out.name] = node
        self.nhwc[out.name] = x
        return True

    def _blocked_from_nhwc(self, x: Value, old: Value) -> Value:
        """NCHW[b]c from NHWC (C a multiple of b): [N, H, W, C] viewed as [N, H, W, C/b, b]
        and transposed to [N, C/b, H, W, b]."""
        n, h, w, c = x.type.shape
        # A symbolic batch is what is left of the elements (-1): H, W and C are static.
        batch = n if isinstance(n, int) else -1
        shape = self.builder.constant(np.array([batch, h, w, int(c) // self.block, self.block],
                                               np.int64),
                                      self.fresh(f"{old.name}.nhwc_shape"))
        split = self.builder.add1(Op.RESHAPE, [self.plain(x), shape],
                                  output=self.fresh(f"{old.name}.nhwc"))
        self.changed = True
        return self.builder.add1(Op.TRANSPOSE, [split], {"perm": [0, 3, 1, 2, 4]},
                                 output=self.blocked_name(old))

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

    def _conv(self, node: Node) -> bool:
        x, w, out = node.inputs[0], node.inputs[1], node.outputs[0]
        assert x is not None and w is not None and out is not None
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        weights, biases = self.known(w), self.known(bias)
        if not (_is_f32_image(x) and _is_f32_image(out) and weights is not None
                and (bias is None or biases is not None)):
            return False
        channels, out_channels = int(x.type.shape[1]), int(w.type.shape[0])
        group = int(node.attrs.get("group") or 1)
        depthwise = group > 1 and group == channels == out_channels
        has_blocked = x.name in self.blocked
        if (group > 1 or w.type.shape[2:] == (1, 1)) and not has_blocked:
            return False  # NCHW depthwise and 1x1 convs beat a transform and the blocked one
        if group > 1 and not depthwise:
            return False
        in_place = not has_blocked and channels < self.block
        kernel = kernel_shape_of(node.attrs, w.type.shape[2:], 2, ValueError)
        win = resolve_window(node.attrs, x.type.shape[2:], kernel, ValueError)
        block = self.block
        make = block_depthwise_weights if depthwise else block_weights
        inputs = [self.plain(x) if in_place else self.to_blocked(x),
                  self.builder.constant(make(weights, block), self.fresh(f"{w.name}.blocked"))]
        if biases is not None:
            inputs.append(self.builder.constant(block_bias(biases, block),
                                                self.fresh(f"{out.name}.bias.blocked")))
        attrs = {"kernel_shape": list(kernel), "strides": list(win.strides),
                 "dilations": list(win.dilations), "pads": list(win.pads), "block": block}
        if depthwise:
            attrs["group"] = group
        if in_place:
            attrs["src_layout"] = PLAIN
        return self.emit(node, Op.CONV_NCHWC, inputs, attrs)

    def _pool(self, node: Node) -> bool:
        x = node.inputs[0]
        assert x is not None
        if x.name not in self.blocked or any(v is not None for v in node.outputs[1:]):
            return False
        if node.op in (Op.GLOBAL_AVERAGE_POOL, Op.GLOBAL_MAX_POOL):
            attrs = {"kernel_shape": [int(d) for d in x.type.shape[2:]]}
        else:
            attrs = {k: v for k, v in node.attrs.items() if k != "storage_order"}
        return self.emit(node, _POOLS[node.op], [self.blocked[x.name]], attrs)

    def _lrn(self, node: Node) -> bool:
        x = node.inputs[0]
        assert x is not None
        return x.name in self.blocked and self.emit(node, Op.LRN_NCHWC, [self.blocked[x.name]],
                                                    dict(node.attrs))

    def _concat(self, node: Node) -> bool:
        """A Concat of channels, each input's a multiple of b: a Concat of the blocks."""
        values = [v for v in node.inputs if v is not None]
        if int(node.attrs["axis"]) not in (1, -3) or not all(
                _is_f32_image(v) and int(v.type.shape[1]) % self.block == 0 for v in values):
            return False
        if not any(v.name in self.blocked for v in values):
            return False
        return self.emit(node, Op.CONCAT, [self.to_blocked(v) for v in values], {"axis": 1})

    def _batch_norm(self, node: Node) -> bool:
        """An inference BatchNormalization with constant parameters: x * a + c per channel,
        a = scale / sqrt(var + eps) and c = B - mean * a computed in float64."""
        x = node.inputs[0]
        assert x is not None
        if (x.name not in self.blocked or node.attrs.get("training_mode")
                or any(v is not None for v in node.outputs[1:])):
            return False
        params = [self.known(v) for v in node.inputs[1:5]]
        if any(p is None for p in params):
            return False
        scale, shift, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        a = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        c = shift - mean * a
        out = node.outputs[0]
        assert out is not None
        scaled = self.builder.add1(Op.MUL, [self.blocked[x.name], self.channel_constant(
            a, f"{out.name}.scale")], name=node.name, output=self.fresh(f"{out.name}.scaled"))
        return self.emit(node, Op.ADD, [scaled, self.channel_constant(c, f"{out.name}.shift")],
                         {})

    def channel_constant(self, values: np.ndarray, hint: str) -> Value:
        """A per-channel f32 vector as a blocked [1, CB, 1, 1, b] constant (zero padded)."""
        plain = values.astype(np.float32).reshape(1, -1, 1, 1)
        return self.builder.constant(to_blocked(plain, self.block),
                                     self.fresh(f"{hint}.nchw{self.block}c"))

    def _elementwise(self, node: Node) -> bool:
        """Run ``node`` on blocked operands when one operand is blocked and the others can
        be (f32 tensors of the output's shape, per-channel or one-element constants), and the
        padded channels stay zero."""
        out = node.outputs[0]
        assert out is not None
        if not (_is_f32_image(out) and len(node.outputs) == 1
                and any(v is not None and v.name in self.blocked for v in node.inputs)):
            return False
        channels = int(out.type.shape[1])
        # Per operand: what makes its blocked form, and what its padded lanes hold.
        makers: list[Callable[[], Value | None]] = []
        lanes: list[np.ndarray | None | bool] = []
        for value in node.inputs:
            if value is None:
                makers.append(lambda: None)
                lanes.append(None)
                continue
            if value.name in self.blocked or (
                    _is_f32_image(value) and value.type.shape == out.type.shape):
                makers.append(lambda v=value: self.to_blocked(v))
                lanes.append(True)
                continue
            data = self.known(value)
            if data is not None and data.size == 1:
                makers.append(lambda v=value: self.plain(v))
                lanes.append(data)
            elif data is not None and data.ndim in (3, 4) and data.size == channels \
                    and data.shape[-3:] == (channels, 1, 1) and data.dtype == np.float32:
                makers.append(lambda v=value, d=data: self.channel_constant(d.reshape(-1),
                                                                            v.name))
                lanes.append(True)
            else:
                return False
        if channels % self.block and not _keeps_zero(node, lanes):
            return False
        return self.emit(node, node.op, [make() for make in makers], dict(node.attrs))
