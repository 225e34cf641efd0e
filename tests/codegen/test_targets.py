"""Targets: parsing, derived vector widths, and object / assembly emission for the host and the
cross targets (checked by parsing the ELF header: class, machine, float ABI flags)."""

from __future__ import annotations

import struct
from functools import cache

import pytest

from kiln.compiler.codegen import (
    CodegenError,
    Target,
    assembly,
    create_module,
    emit_assembly,
    emit_kernel,
    emit_object,
    optimize,
    optimize_and_emit,
    optimized_ir,
)
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.kernel_ir import (
    Binary,
    Buffer,
    Cast,
    Const,
    Kernel,
    Loop,
    LoopKind,
    Report,
    Unary,
    Var,
    block,
)

# spec -> (ELF class, e_machine, vector bits)
CROSS = {
    "x86_64": (2, 62, 128),
    "x86_64-avx2": (2, 62, 256),
    "x86_64-avx512": (2, 62, 512),
    "aarch64-linux-gnu": (2, 183, 128),
    "armv7-linux-gnueabihf": (1, 40, 128),
    "riscv64-linux-gnu": (2, 243, 64),
}


@cache
def _sample_kernels() -> tuple[Kernel, ...]:
    """Kernels touching every codegen path: every dtype, inline math, libm, halves,
    parallel outlining, Report."""
    n = 64
    i = Var("i")
    kernels = []
    for dtype in (DType.F16, DType.BF16, DType.F32, DType.F64):
        x, y = Buffer("x", dtype, (n,)), Buffer("y", dtype, (n,))
        value = Unary("tanh", Unary("exp", x.load(i))) + Unary("erf", x.load(i))
        value = Binary("max", value, Unary("sin", Unary("log", x.load(i))))
        kernels.append(Kernel(f"math_{dtype.value}", (x,), (y,),
                              Loop(i, Const(n, DType.I64), y.store([i], value),
                                   LoopKind.PARALLEL)))
    for dtype in (DType.I8, DType.I64, DType.U32, DType.BOOL):
        x, y = Buffer("x", DType.F64, (n,)), Buffer("y", dtype, (n,))
        cast = Cast(x.load(i), dtype)
        value = cast if dtype is DType.BOOL else Binary("div", cast, Binary("pow", cast, cast))
        kernels.append(Kernel(f"ints_{dtype.value}", (x,), (y,), Loop(
            i, Const(n, DType.I64), block(y.store([i], value), Report("sample report")),
            LoopKind.VECTORIZE, 4)))
    return tuple(kernels)


def _module(target: Target):  # type: ignore[no-untyped-def]
    module = create_module("sample", target)
    for kernel in _sample_kernels():
        emit_kernel(module, kernel, target, export=True)
    return module


def _elf_header(data: bytes) -> tuple[int, int, int]:
    assert data[:4] == b"\x7fELF", "not an ELF object"
    elf_class = data[4]
    machine = struct.unpack_from("<H", data, 18)[0]
    flags = struct.unpack_from("<I", data, 48 if elf_class == 2 else 36)[0]
    return elf_class, machine, flags


@pytest.mark.parametrize("spec", list(CROSS))
def test_cross_targets_emit_objects(spec: str) -> None:
    target = Target.parse(spec)
    elf_class, machine, vector_bits = CROSS[spec]
    assert target.vector_bits == vector_bits
    assert target.pointer_bits == (64 if elf_class == 2 else 32)
    optimized = optimize(_module(target), target, opt_level=2)
    obj = emit_object(optimized, target)
    got_class, got_machine, flags = _elf_header(obj)
    assert (got_class, got_machine) == (elf_class, machine)
    if spec.startswith("riscv64"):
        assert flags & 0x6 == 0x4, "riscv64 objects must use the lp64d (double-float) ABI"
    if spec.startswith("armv7"):
        # EABI5 records the float ABI as a build attribute: Tag_ABI_VFP_args = VFP registers
        assert flags >> 24 == 5
    text = emit_assembly(optimized, target)
    if spec.startswith("armv7"):
        assert ".eabi_attribute\t28, 1" in text, "armv7 gnueabihf must use the hard-float ABI"
    # half conversions are integer code: no libgcc helper is referenced on any target
    for helper in ("__extendhfsf2", "__truncsfhf2", "__truncdfhf2", "__gnu_h2f_ieee"):
        assert helper not in text


def test_host_target() -> None:
    host = Target.parse("host")
    assert host.is_host and host.triple.startswith("x86_64")
    assert host.vector_bits == (512 if "+avx512f" in host.features else
                                256 if "+avx2" in host.features else 128)
    assert not Target.parse("aarch64-linux-gnu").is_host
    assert Target.parse("x86_64").is_host
    assert Target.parse("x86_64-unknown-linux-gnu", cpu="haswell",
                        features="+avx2").vector_bits == 256


def test_unknown_target_is_a_clear_error() -> None:
    with pytest.raises(CodegenError, match="unknown target 'sparc'"):
        Target.parse("sparc")


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_opt_levels_verify_and_vectorize(opt_level: int) -> None:
    target = Target.parse("x86_64-avx2")
    text = optimized_ir(_module(target), target, opt_level)
    assert "define" in text
    if opt_level >= 2:
        assert "<8 x float>" in text or "<4 x double>" in text
    obj = optimize_and_emit(_module(target), target, opt_level)
    assert _elf_header(obj)[1] == 62


def test_avx512_assembly_uses_zmm() -> None:
    target = Target.parse("x86_64-avx512")
    n = 256
    i = Var("i")
    x, y = Buffer("x", DType.F32, (n,)), Buffer("y", DType.F32, (n,))
    kernel = Kernel("wide", (x,), (y,), Loop(i, Const(n, DType.I64), y.store(
        [i], Unary("exp", x.load(i))), LoopKind.VECTORIZE, 16))
    module = create_module("wide", target)
    emit_kernel(module, kernel, target, export=True)
    text = assembly(module, target)
    assert "zmm" in text and "call" not in text.split("wide:")[1].split(".Lfunc_end")[0]
