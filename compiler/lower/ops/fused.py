"""Lowering of FUSED nodes: a fused group becomes one kernel by kernel-IR inlining.

- ``elementwise`` groups: one loop nest over the group's output shape whose body stores every
  output of the group, each the composition of its nodes' scalar expressions (operands read
  with numpy broadcasting, every intermediate rounded to its own type as the unfused ops do).
- groups with an anchor (a Conv, MatMul, Gemm, pool, reduction, normalization...): the anchor
  is lowered by its own registered lowering on the fused node's buffers, then rewritten
  (compiler/lower/inline.py):
  (1) prologue: each load of a value made by an elementwise prologue node becomes that node's
      expression at the loaded position (its operands loaded with broadcasting, recursively);
  (2) epilogue: the anchor's single store ``out[idx] = v`` becomes stores of every epilogue
      output at ``idx``, the epilogue's expression with ``v`` in place of the anchor's value.
  (2) is legal only when the anchor stores its output exactly once and never reads it back;
  otherwise the anchor writes a scratch buffer and the same kernel runs the epilogue as a
  second loop nest over it (still one kernel, one more pass over memory).
  Anchors built of matmul tiles (GEMM, convolution) accumulate in their output and end each
  tile with one scalar "finish" store that reads only the element it writes: there the single
  epilogue output of the anchor's type is the accumulation buffer and the finish store becomes
  the epilogue, applied while the tile is in cache. A prologue value that a tile reads (tiles
  read memory, not expressions) is computed into scratch first.

Run-time extents: a body value's symbolic dims are the node's expressions of them (one object
per symbol, so equal extents are known equal); a body operand whose run-time extent is not its
consumer's reads with a run-time select, and the kernel Reports shapes that do not broadcast
(common.py), as the unfused ops do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ...ir.graph import Graph, Node, Value
from ...ir.op import Op
from ...ir.rules.fused import retyped_body
from ...ir.schema import op_def
from ...ir.types import UNKNOWN, DType
from ..inline import Rewriter, accesses, walk
from ..kernel_ir import (
    DIMS,
    Block,
    Buffer,
    Expr,
    Kernel,
    Load,
    MatmulTile,
    Stmt,
    Store,
    as_expr,
    extent_mul,
)
from ..registry import LowerContext, lowering, lowering_for
from .common import (
    Check,
    Extent,
    broadcast_conditions,
    broadcast_index,
    checked,
    product,
    same_extent,
)
from .elementwise import SCALAR, elementwise_expr
from .elementwise_scalar import loop_over


class FusedGroup:
    """The body of one FUSED node, with buffers bound to the node's, ready to be inlined."""

    @classmethod
    def of(cls, ctx: LowerContext) -> FusedGroup:
        """The group of the FUSED node ``ctx`` lowers, its body retyped to the node's shapes."""
        body: Graph = ctx.attr("body")
        types = [v.type if outer is None else outer.type
                 for v, outer in zip(body.inputs, ctx.node.inputs, strict=True)]
        if any(v.type != t for v, t in zip(body.inputs, types, strict=True)):
            body = retyped_body(body, types)
        return cls(ctx, body)

    def __init__(self, ctx: LowerContext, body: Graph) -> None:
        self.ctx = ctx
        self.body = body
        self.producers: dict[str, Node] = {}
        self.consts: dict[str, np.ndarray] = body.constants()
        for node in body.nodes:
            if node.op is not Op.CONSTANT:
                for value in node.outputs:
                    if value is not None:
                        self.producers[value.name] = node
        self.buffers: dict[str, Buffer] = {
            v.name: ctx.input(i) for i, v in enumerate(body.inputs)}
        self.outputs: dict[str, Buffer] = {
            v.name: ctx.output(k) for k, v in enumerate(body.outputs)}
        anchors = [n for n in body.nodes if n.op is not Op.CONSTANT and n.op not in SCALAR]
        if len(anchors) > 1:
            raise ctx.fail(f"a fused body has at most one non-elementwise node, found "
                           f"{', '.join(n.describe() for n in anchors)}")
        self.anchor = anchors[0] if anchors else None
        self.anchor_buffer: Buffer | None = None
        self._memo: dict[tuple[object, ...], tuple[Sequence[Expr], Expr]] = {}
        # run-time broadcast checks of the body's operand reads (see common.py)
        self.checks: list[Check] = []

    def extents(self, value: Value) -> tuple[Extent, ...]:
        """The kernel extents of body value ``value``: its buffer's when it is a body input or
        output, else its type's (a symbolic dim is the node's expression of it)."""
        bound = self.buffers.get(value.name) or self.outputs.get(value.name)
        if bound is not None:
            return bound.shape
        found: list[Extent] = []
        for dim in value.type.shape:
            if isinstance(dim, int):
                found.append(dim)
            elif dim == UNKNOWN or self.ctx.dims is None:
                raise self.ctx.fail(f"body value %{value.name} has extents known only from "
                                    "values at run time, which a fused group cannot size")
            else:
                found.append(self.ctx.dims.extent(dim))
        return tuple(found)

    def element(self, name: str, index: Sequence[Expr], anchor_value: Expr | None = None) -> Expr:
        """Body value ``name`` at position ``index`` (an index into its own shape); the
        anchor's result is ``anchor_value`` when given, else read from its buffer."""
        key = (name, id(anchor_value), *map(id, index))
        found = self._memo.get(key)
        if found is not None:
            return found[1]
        data = self.consts.get(name)
        node = self.producers.get(name)
        if data is not None:
            value = self._constant(name, data)
        elif node is not None and node is self.anchor and anchor_value is not None:
            value = anchor_value
        elif node is None or node is self.anchor:
            buffer = self.buffers.get(name) if node is None else self.anchor_buffer
            assert buffer is not None
            value = buffer.load(*index)
        else:
            out = node.outputs[0]
            assert out is not None
            out_shape = self.extents(out)
            shapes = [() if v is None else self.extents(v) for v in node.inputs]
            self.checks.extend(c for c in broadcast_conditions(out_shape, shapes,
                                                               node.describe())
                               if all(c[1] != m for _, m in self.checks))
            operands = [
                None if v is None else self.element(
                    v.name, tuple(broadcast_index(index, Buffer("", DType.I64, shape),
                                                  out_shape)), anchor_value)
                for v, shape in zip(node.inputs, shapes, strict=True)
            ]
            value = elementwise_expr(node.op, op_def(node.op).with_defaults(node.attrs),
                                     operands, out.type.dtype)
        self._memo[key] = (index, value)  # the index kept alive, so its ids stay unique
        return value

    def _constant(self, name: str, data: np.ndarray) -> Expr:
        if data.size != 1:
            raise self.ctx.fail(f"body constant %{name} of {data.size} elements is read "
                                "element-wise; only one-element constants may live in a body")
        return as_expr(data.reshape(-1)[0].item(), DType.from_numpy(data.dtype))

    def downstream_outputs(self) -> list[str]:
        """Body outputs computed from the anchor's result by the epilogue."""
        assert self.anchor is not None
        reached = {v.name for v in self.anchor.outputs if v is not None}
        for node in self.body.nodes:
            if node is not self.anchor and any(v is not None and v.name in reached
                                               for v in node.inputs):
                reached.update(v.name for v in node.outputs if v is not None)
        anchor_out = self.anchor.outputs[0]
        assert anchor_out is not None
        return [v.name for v in self.body.outputs if v.name in reached
                and v.name != anchor_out.name]

    def store_all(self, names: Sequence[str], index: Sequence[Expr],
                  anchor_value: Expr | None = None) -> list[Stmt]:
        return [Store(self.outputs[n], tuple(index), self.element(n, index, anchor_value))
                for n in names]

    def with_sources(self, kernels: Sequence[Kernel]) -> list[Kernel]:
        """``kernels`` whose source is the group's non-constant nodes."""
        sources = tuple(n.name for n in self.body.nodes if n.op is not Op.CONSTANT and n.name)
        return [replace(k, source=sources or k.source) for k in kernels]

    def output_shape(self) -> tuple[Extent, ...]:
        """The shape every output of an elementwise group has."""
        shape = self.extents(self.body.outputs[0])
        for value in self.body.outputs:
            found = self.extents(value)
            if len(found) != len(shape) or not all(
                    same_extent(a, b) for a, b in zip(found, shape, strict=True)):
                raise self.ctx.fail(f"elementwise group output %{value.name} has shape "
                                    f"{list(value.type.shape)}, expected "
                                    f"{list(self.body.outputs[0].type.shape)}")
        return shape

    def anchor_context(self, result: Value) -> tuple[LowerContext, Buffer]:
        """The context lowering the anchor (whose one output is ``result``) on the fused
        node's buffers, and the buffer it writes ``result`` to (``anchor_buffer``)."""
        ctx, anchor = self.ctx, self.anchor
        assert anchor is not None

        def buffer(value: Value) -> Buffer:
            found = self.buffers.get(value.name) or self.outputs.get(value.name)
            return found if found is not None else Buffer(value.name, value.type.dtype,
                                                          self.extents(value))

        inputs = [None if v is None else buffer(v) for v in anchor.inputs]
        # the fused node's constant operands (weights) stay visible to the anchor's lowering
        outer = {v.name: ctx.const(i) for i, v in enumerate(self.body.inputs)}
        out = buffer(result)
        self.anchor_buffer = out
        actx = LowerContext(
            anchor, op_def(anchor.op).with_defaults(anchor.attrs), inputs,
            [None if v is None else out for v in anchor.outputs],
            [None if v is None else self.consts.get(v.name, outer.get(v.name))
             for v in anchor.inputs],
            f"{ctx.name}_{anchor.op.value}",
            ctx.machine,
            dims=ctx.dims,
        )
        return actx, out

    def prologue(self, load: Load, result: str) -> Expr | None:
        """The expression replacing the anchor's ``load`` of a prologue value or constant
        (None: a load to keep; ``result`` is the anchor's own result)."""
        name = load.buffer.name
        if name in self.consts or (name in self.producers and name != result):
            return self.element(name, load.indices)
        return None


@lowering(Op.FUSED)
def lower_fused(ctx: LowerContext) -> list[Kernel]:
    group = FusedGroup.of(ctx)
    return group.with_sources(_elementwise(group) if group.anchor is None else _anchored(group))


def _elementwise(group: FusedGroup) -> list[Kernel]:
    """One loop nest over the (common) output shape storing every output of the group."""
    names = [v.name for v in group.body.outputs]
    shape = group.output_shape()
    nest = loop_over(shape, lambda index: Block(tuple(group.store_all(names, index))), "i",
                     extent_mul(product(shape), len(names)), vectorize=True)
    return [group.ctx.kernel(checked(group.checks, nest))]


def _anchored(group: FusedGroup) -> list[Kernel]:
    ctx, anchor = group.ctx, group.anchor
    assert anchor is not None
    present = [v for v in anchor.outputs if v is not None]
    if len(present) != 1:
        raise ctx.fail(f"the anchor {anchor.describe()} of a fused group must have one output")
    result = present[0]
    actx, out = group.anchor_context(result)
    fn = lowering_for(anchor.op)
    if fn is None:
        raise ctx.fail(f"no lowering for the anchor {anchor.describe()}")
    kernels = fn(actx)
    ctx.scratch_buffers.extend(actx.scratch_buffers)
    ctx.derived.update(actx.derived)

    def prologue(load: Load) -> Expr | None:
        return group.prologue(load, result.name)

    bodies = [Rewriter(on_load=prologue).stmt(k.body) for k in kernels]
    bodies = _materialize_tile_operands(group, bodies, result.name)
    epilogue = group.downstream_outputs()
    if epilogue:
        counts = [accesses(b, out.name) for b in bodies]
        in_place = _in_place_target(group, bodies, out, epilogue, result.name)
        if sum(s for s, _ in counts) == 1 and sum(n for _, n in counts) == 0:
            bodies = [_inline_epilogue(group, b, out, epilogue, result.name) for b in bodies]
        elif in_place is not None:
            group.anchor_buffer = in_place
            bodies = [_inline_epilogue(group, _rename(b, out, in_place), in_place, epilogue,
                                       result.name) for b in bodies]
        else:
            bodies[-1] = _separate_epilogue(group, bodies, out, epilogue)
            bodies[:-1] = [_rename(b, out, group.anchor_buffer) for b in bodies[:-1]]
    outputs = [b for b in ctx.outputs if b is not None]
    made = [ctx.kernel(checked(group.checks, b), outputs=outputs) for b in bodies]
    _check_bound(ctx, made)
    return made


def _tiles(bodies: Sequence[Stmt]) -> list[MatmulTile]:
    return [n for b in bodies for n in walk(b) if isinstance(n, MatmulTile)]


def _materialize_tile_operands(group: FusedGroup, bodies: list[Stmt], result: str) -> list[Stmt]:
    """Bodies whose tiles read prologue values from scratch filled by a loop nest first."""
    ctx = group.ctx
    computed = {}
    for tile in _tiles(bodies):
        for operand in (tile.a, tile.b):
            name = operand.name
            if name not in computed and name != result and (
                    name in group.producers or name in group.consts):
                computed[name] = ctx.scratch("prologue", operand.dtype, operand.shape)
    if not computed:
        return bodies
    fills = [loop_over(buffer.shape, lambda index, n=name, t=buffer: Store(
        t, tuple(index), group.element(n, index)), "pro", buffer.numel, vectorize=True)
        for name, buffer in computed.items()]
    renamed = [Rewriter(on_buffer=lambda b: computed.get(b.name, b)).stmt(body)
               for body in bodies]
    return [Block((*fills, renamed[0])), *renamed[1:]]


def _in_place_target(group: FusedGroup, bodies: Sequence[Stmt], out: Buffer,
                     names: Sequence[str], result: str) -> Buffer | None:
    """The output to accumulate tiles in and finish in place, if the anchor is tiled, ends
    with one finish store reading only its own element, and the epilogue has one output of the
    anchor's type (see the module docstring); else None."""
    if len(names) != 1 or result in group.outputs:
        return None
    target = group.outputs[names[0]]
    if (target.shape, target.dtype) != (out.shape, out.dtype):
        return None
    if not any(t.c.name == out.name for t in _tiles(bodies)):
        return None
    nodes = [n for b in bodies for n in walk(b)]
    stores = [n for n in nodes if isinstance(n, Store) and n.buffer.name == out.name]
    if len(stores) != 1:
        return None
    position = [id(i) for i in stores[0].indices]
    if any(isinstance(n, Load) and n.buffer.name == out.name
           and [id(i) for i in n.indices] != position for n in nodes):
        return None
    if any(target.name in (t.a.name, t.b.name) for t in _tiles(bodies)):
        return None
    return target


def _inline_epilogue(group: FusedGroup, body: Stmt, out: Buffer, names: Sequence[str],
                     result: str) -> Stmt:
    def store(s: Store) -> Stmt | None:
        if s.buffer.name != out.name:
            return None
        kept = [s] if result in group.outputs else []
        return Block((*kept, *group.store_all(names, s.indices, s.value)))

    return Rewriter(on_store=store).stmt(body)


def _separate_epilogue(group: FusedGroup, bodies: list[Stmt], out: Buffer,
                       names: Sequence[str]) -> Stmt:
    """The last anchor kernel writing the anchor's result to a real buffer (scratch unless it
    is an output), followed by the epilogue loop nest over that buffer."""
    ctx = group.ctx
    target = out
    if out.name not in {b.name for b in ctx.outputs if b is not None}:
        target = ctx.scratch("anchor", out.dtype, out.shape)
    group.anchor_buffer = target
    shape = out.shape
    nest = loop_over(shape, lambda index: Block(tuple(group.store_all(names, index))), "epi",
                     extent_mul(product(shape), len(names)), vectorize=True)
    return Block((_rename(bodies[-1], out, target), nest))


def _rename(body: Stmt, old: Buffer, new: Buffer) -> Stmt:
    if old.name == new.name:
        return body
    return Rewriter(
        on_load=lambda ld: Load(new, ld.indices) if ld.buffer.name == old.name else None,
        on_store=lambda s: Store(new, s.indices, s.value) if s.buffer.name == old.name else None,
        on_buffer=lambda b: new if b.name == old.name else b,
    ).stmt(body)


def _check_bound(ctx: LowerContext, kernels: Sequence[Kernel]) -> None:
    """Every buffer a kernel touches is one of its parameters (no body value left over; the
    run's dims become a parameter when the graph lowering binds the kernel)."""
    for kernel in kernels:
        params = {b.name for b in kernel.params} | {DIMS.name}
        for node in walk(kernel.body):
            touched = [node.buffer] if isinstance(node, Load | Store) else (
                [node.a, node.b, node.c] if isinstance(node, MatmulTile) else [])
            for buffer in touched:
                if buffer.name not in params:
                    raise ctx.fail(f"fused kernel {kernel.name} still accesses body value "
                                   f"%{buffer.name} (an unsupported fusion pattern)")
