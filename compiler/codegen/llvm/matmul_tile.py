"""Vector code for ``MatmulTile``: the register-blocked multiply-accumulate microkernel.

The tile's ``rows`` x ``cols`` accumulators are ``rows`` x ceil(cols / lanes) vectors of the
target's widest float vector type (entry-block allocas that LLVM promotes to registers). Each
contraction step loads the B row's vectors once and, for each tile row, broadcasts one A
element and does a multiply-add (``llvm.fmuladd``: one FMA where the target has it) into the
row's accumulators: ``rows * vectors`` FMAs for ``vectors`` loads and ``rows`` broadcasts. The
contraction axes become counted loops with their A and B offsets advanced by strides. A partial
last vector (``cols`` not a multiple of the lanes) uses masked loads and stores, so no memory
past the tile is touched. Dtypes other than f32/f64, scalar-only targets and column groups that
split a vector fall back to the tile's scalar meaning (``MatmulTile.expanded``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llvmlite import ir

from ...ir.types import DType
from ...lower.kernel_ir import MatmulTile
from . import math as fmath
from .expr import value_type

if TYPE_CHECKING:
    from .kernel import Env, FunctionEmitter

I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()


def emit_matmul_tile(emitter: FunctionEmitter, tile: MatmulTile, env: Env) -> None:
    dtype = tile.c.dtype
    lanes = emitter.target.vector_bits // (dtype.itemsize * 8)
    if (dtype not in (DType.F32, DType.F64) or lanes < 2
            or (tile.c_group > 0 and tile.c_group % lanes)):
        emitter.stmt(tile.expanded(), env)
        return
    _TileEmitter(emitter, tile, env, lanes).emit()


class _TileEmitter:
    def __init__(self, emitter: FunctionEmitter, tile: MatmulTile, env: Env, lanes: int) -> None:
        self.emitter = emitter
        self.tile = tile
        self.lanes = lanes
        self.element = value_type(tile.c.dtype)
        self.vector = ir.VectorType(self.element, lanes)
        self.vectors = -(-tile.cols // lanes)
        tail = tile.cols - (self.vectors - 1) * lanes
        self.tail_mask = None if tail == lanes else ir.Constant(
            ir.VectorType(I1, lanes), [i < tail for i in range(lanes)])
        emitter._env = env
        self.c_at, self.a_at, self.b_at = (emitter.expr(e) for e in tile.offsets)

    @property
    def b(self) -> ir.IRBuilder:
        return self.emitter.builder

    def pointer(self, name: str, offset: ir.Value, extra: int = 0) -> ir.Value:
        if extra:
            offset = self.b.add(offset, I64(extra))
        return self.b.gep(self.emitter.buffers[name], [offset], inbounds=True,
                          source_etype=self.element)

    def mask(self, v: int) -> ir.Constant | None:
        return self.tail_mask if v == self.vectors - 1 else None

    def load_vector(self, pointer: ir.Value, mask: ir.Constant | None) -> ir.Value:
        if mask is None:
            return self.b.load(pointer, typ=self.vector, align=self.tile.c.dtype.itemsize)
        fn = fmath.declare(self.b.module, f"llvm.masked.load.{_suffix(self.vector)}.p0",
                           self.vector, [PTR, I32, mask.type, self.vector])
        return self.b.call(fn, [pointer, I32(self.tile.c.dtype.itemsize), mask,
                                ir.Constant(self.vector, None)])

    def store_vector(self, value: ir.Value, pointer: ir.Value, mask: ir.Constant | None) -> None:
        if mask is None:
            self.b.store(value, pointer, align=self.tile.c.dtype.itemsize)
            return
        fn = fmath.declare(self.b.module, f"llvm.masked.store.{_suffix(self.vector)}.p0",
                           VOID, [self.vector, PTR, I32, mask.type])
        self.b.call(fn, [value, pointer, I32(self.tile.c.dtype.itemsize), mask])

    def c_pointer(self, row: int, v: int) -> ir.Value:
        tile = self.tile
        column = v * self.lanes
        if tile.c_group > 0:
            column = column // tile.c_group * tile.c_group_stride + column % tile.c_group
        return self.pointer(tile.c.name, self.c_at, row * tile.c_row_stride + column)

    def emit(self) -> None:
        tile = self.tile
        slots = [[self.emitter.alloca(self.vector, name=f"acc{r}.{v}")
                  for v in range(self.vectors)] for r in range(tile.rows)]
        zero = ir.Constant(self.vector, [0.0] * self.lanes)
        for r, row in enumerate(slots):
            for v, slot in enumerate(row):
                start = (self.load_vector(self.c_pointer(r, v), self.mask(v))
                         if tile.accumulate else zero)
                self.b.store(start, slot)
        self.contract(0, self.a_at, self.b_at, slots)
        for r, row in enumerate(slots):
            for v, slot in enumerate(row):
                value = self.b.load(slot, typ=self.vector)
                self.store_vector(value, self.c_pointer(r, v), self.mask(v))

    def contract(self, depth: int, a_at: ir.Value, b_at: ir.Value,
                 slots: list[list[ir.Value]]) -> None:
        """The loops over axes ``depth..``; A and B offsets of the current step so far."""
        tile = self.tile
        if depth == len(tile.axes):
            self.step(a_at, b_at, slots)
            return
        axis = tile.axes[depth]
        if axis.extent <= 0:
            return
        b = self.b
        function = self.emitter.function
        preheader = b.block
        header = function.append_basic_block(f"tile.k{depth}")
        exit_block = function.append_basic_block(f"tile.k{depth}.exit")
        b.branch(header)
        b.position_at_end(header)
        k = b.phi(I64, name=f"tile.k{depth}")
        k.add_incoming(I64(0), preheader)
        inner_a = b.add(a_at, b.mul(k, I64(axis.a_stride))) if axis.a_stride else a_at
        inner_b = b.add(b_at, b.mul(k, I64(axis.b_stride))) if axis.b_stride else b_at
        self.contract(depth + 1, inner_a, inner_b, slots)
        b = self.b
        following = b.add(k, I64(1))
        k.add_incoming(following, b.block)
        b.cbranch(b.icmp_signed("<", following, I64(axis.extent)), header, exit_block)
        b.position_at_end(exit_block)

    def step(self, a_at: ir.Value, b_at: ir.Value, slots: list[list[ir.Value]]) -> None:
        tile, b = self.tile, self.b
        row = [self.load_vector(self.pointer(tile.b.name, b_at, v * self.lanes), self.mask(v))
               for v in range(self.vectors)]
        undefined = ir.Constant(self.vector, None)
        broadcast = ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes)
        fmuladd = fmath.declare(b.module, f"llvm.fmuladd.{_suffix(self.vector)}", self.vector,
                                [self.vector] * 3)
        for r in range(tile.rows):
            scalar = b.load(self.pointer(tile.a.name, a_at, r * tile.a_row_stride),
                            typ=self.element)
            splat = b.shuffle_vector(b.insert_element(undefined, scalar, I32(0)), undefined,
                                     broadcast)
            for v in range(self.vectors):
                acc = b.load(slots[r][v], typ=self.vector)
                b.store(b.call(fmuladd, [splat, row[v], acc]), slots[r][v])


def _suffix(vector: ir.VectorType) -> str:
    return f"v{vector.count}{'f32' if str(vector.element) == 'float' else 'f64'}"
