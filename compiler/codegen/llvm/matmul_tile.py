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

The integer form (u8 x s8 quads into int32) keeps ``lanes`` int32 accumulators per vector; a
contraction step loads each B vector (``lanes`` columns x 4 bytes) and, per row, broadcasts the
row's 4 A bytes as one int32. With AVX-512 VNNI (512-bit vectors) or AVX-VNNI / AVX-512 VNNI+VL
(256-bit) that is one ``vpdpbusd`` per accumulator: the u8 operand (A's broadcast or B's vector)
times the s8 one, 4 products summed into each lane without saturation. Elsewhere each of the 4
byte positions is a widening multiply-add (the bytes of position q gathered by a shuffle,
extended to int32), which every vector target compiles.
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
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()


def emit_matmul_tile(emitter: FunctionEmitter, tile: MatmulTile, env: Env) -> None:
    dtype = tile.c.dtype
    if tile.is_integer:
        lanes = emitter.target.vector_bits // 32
        if lanes < 4:
            emitter.stmt(tile.expanded(), env)
        else:
            _IntegerTileEmitter(emitter, tile, env, lanes).emit()
        return
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

    def pointer(self, name: str, offset: ir.Value, extra: int = 0,
                element: ir.Type | None = None) -> ir.Value:
        if extra:
            offset = self.b.add(offset, I64(extra))
        return self.b.gep(self.emitter.buffers[name], [offset], inbounds=True,
                          source_etype=element or self.element)

    def mask(self, v: int) -> ir.Constant | None:
        return self.tail_mask if v == self.vectors - 1 else None

    def load_vector(self, pointer: ir.Value, mask: ir.Constant | None,
                    vector: ir.VectorType | None = None) -> ir.Value:
        vector = vector or self.vector
        align = self.tile.c.dtype.itemsize if vector is self.vector else 1
        if mask is None:
            return self.b.load(pointer, typ=vector, align=align)
        fn = fmath.declare(self.b.module, f"llvm.masked.load.{_suffix(vector)}.p0",
                           vector, [PTR, I32, mask.type, vector])
        return self.b.call(fn, [pointer, I32(align), mask, ir.Constant(vector, None)])

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
        zero = ir.Constant(self.vector, [self.element(0)] * self.lanes)
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


class _IntegerTileEmitter(_TileEmitter):
    """The integer form: int32 accumulators, B vectors of ``lanes`` 4-byte quads."""

    def __init__(self, emitter: FunctionEmitter, tile: MatmulTile, env: Env, lanes: int) -> None:
        super().__init__(emitter, tile, env, lanes)
        self.bytes = ir.VectorType(I8, 4 * lanes)
        tail = tile.cols - (self.vectors - 1) * lanes
        self.byte_mask = None if tail == lanes else ir.Constant(
            ir.VectorType(I1, 4 * lanes), [i < 4 * tail for i in range(4 * lanes)])
        self.vnni = _vnni(emitter.target.features, 32 * lanes)

    def step(self, a_at: ir.Value, b_at: ir.Value, slots: list[list[ir.Value]]) -> None:
        tile, b = self.tile, self.b
        row = [self.load_vector(self.pointer(tile.b.name, b_at, v * 4 * self.lanes, I8),
                                self.byte_mask if v == self.vectors - 1 else None, self.bytes)
               for v in range(self.vectors)]
        undefined = ir.Constant(self.vector, None)
        broadcast = ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes)
        for r in range(tile.rows):
            quad = b.load(self.pointer(tile.a.name, a_at, r * tile.a_row_stride, I8), typ=I32,
                          align=1)
            splat = b.shuffle_vector(b.insert_element(undefined, quad, I32(0)), undefined,
                                     broadcast)
            for v in range(self.vectors):
                acc = b.load(slots[r][v], typ=self.vector)
                b.store(self.dot(acc, b.bitcast(splat, self.bytes), row[v]), slots[r][v])

    def dot(self, acc: ir.Value, a_bytes: ir.Value, b_bytes: ir.Value) -> ir.Value:
        """acc + the per-lane sums of the 4 products of A's and B's bytes."""
        b, tile = self.b, self.tile
        if self.vnni is not None:
            u8, s8 = (a_bytes, b_bytes) if tile.a.dtype is DType.U8 else (b_bytes, a_bytes)
            fn = fmath.declare(b.module, self.vnni, self.vector, [self.vector, self.bytes,
                                                                  self.bytes])
            return b.call(fn, [acc, u8, s8])
        for q in range(4):
            picked = [ir.Constant(ir.VectorType(I32, self.lanes),
                                  [4 * i + q for i in range(self.lanes)])]
            terms = [b.shuffle_vector(x, ir.Constant(self.bytes, None), picked[0])
                     for x in (a_bytes, b_bytes)]
            wide = [b.sext(x, self.vector) if buffer.dtype is DType.I8 else b.zext(x, self.vector)
                    for x, buffer in zip(terms, (tile.a, tile.b), strict=True)]
            acc = b.add(acc, b.mul(wide[0], wide[1]))
        return acc


def _vnni(features: str, bits: int) -> str | None:
    """The vpdpbusd intrinsic for ``bits``-wide vectors when the features have it."""
    enabled: set[str] = set()
    for feature in filter(None, (f.strip() for f in features.split(","))):
        (enabled.add if feature[0] == "+" else enabled.discard)(feature[1:])
    if bits == 512 and "avx512vnni" in enabled:
        return "llvm.x86.avx512.vpdpbusd.512"
    if bits == 256 and ("avxvnni" in enabled or {"avx512vnni", "avx512vl"} <= enabled):
        return "llvm.x86.avx512.vpdpbusd.256"
    return None


def _suffix(vector: ir.VectorType) -> str:
    suffix = {"float": "f32", "double": "f64"}.get(str(vector.element), str(vector.element))
    return f"v{vector.count}{suffix}"
