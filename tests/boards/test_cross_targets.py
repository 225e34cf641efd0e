"""The cross matrix: each board target compiles the digits CNN and a ResNet-style CNN with
``kiln compile --target T``, links examples/c/kiln_run.c with the board's cross gcc, runs it under
qemu-user with 1 and 2 threads and matches Kiln's reference executor; the kernels use the board's
SIMD (read back from the library with the board's objdump).

Boards: AArch64, ARMv7 hard-float (both NEON), RV64GC (scalar FP only) and RV64GC+V
(``riscv64-rvv-linux-gnu``, run on qemu's ``rv64,v=true,vlen=128``). Tests skip, naming the
program and its Debian package, where a cross gcc, binutils or qemu-user is missing.

Tolerance, float32 throughout: rtol 1e-4, atol 1e-5 as for compiled-vs-reference on the host
(summation order and FMA contraction differ from the reference; ARMv7's NEON also flushes
subnormals to zero, which these models' values never reach).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from boardcheck import (
    BOARD_TARGETS,
    ET_DYN,
    board,
    board_report,
    cross_compile,
    elf_header,
    kiln_compile,
    link_kiln_run,
    qemu_command,
    read_raw,
    require_tool,
    require_toolchain,
    run_on_board,
    write_raw,
)

from kiln.compiler.codegen import Target, assembly, create_module, emit_kernel
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.kernel_ir import Buffer, Const, Kernel, Loop, LoopKind, Var

RTOL, ATOL = 1e-4, 1e-5  # float32: see the module docstring
THREADS = (1, 2)
RVV = "riscv64-rvv-linux-gnu"


@dataclass(frozen=True)
class Built:
    """A model compiled for one board, with kiln_run linked beside it."""

    library: Path
    program: Path
    model: board_report.Model
    expected: list[np.ndarray]


BuildFn = Callable[[str, board_report.Model], Built]


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> BuildFn:
    """Compile (once per session) a model for a board with the CLI and link kiln_run to it."""
    cache: dict[tuple[str, str, tuple[tuple[int, ...], ...]], Built] = {}
    references: dict[tuple[str, tuple[tuple[int, ...], ...]], list[np.ndarray]] = {}

    def built(target: str, model: board_report.Model) -> Built:
        require_toolchain(target)
        shapes = tuple(a.shape for a in model.inputs.values())
        if (target, model.name, shapes) not in cache:
            folder = tmp_path_factory.mktemp(f"{target}-{model.name}")
            library = folder / "model.so"
            kiln_compile(model.path, library, target,
                         *board_report.input_shape_options(model.inputs))
            if (model.name, shapes) not in references:
                references[model.name, shapes] = board_report.reference_outputs(model)
            cache[target, model.name, shapes] = Built(
                library, link_kiln_run(target, library, folder / "kiln_run"), model,
                references[model.name, shapes])
        return cache[target, model.name, shapes]

    return built


@pytest.fixture(scope="session")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> board_report.Model:
    """tests/models/zoo.py's ResNet-style CNN (batch 2), exported once per session."""
    return board_report.resnet_model(tmp_path_factory.mktemp("resnet"))


def _run_and_compare(target: str, model: board_report.Model, build: BuildFn,
                     folder: Path) -> tuple[Built, list[np.ndarray]]:
    """``model`` built for ``target`` and run by kiln_run under qemu with each thread count;
    every run must match the reference. Returns the build and every run's outputs."""
    qemu_command(target)  # skip before compiling where qemu is missing
    built = build(target, model)
    inputs = [write_raw(folder / f"in{i}.raw", array)
              for i, array in enumerate(model.inputs.values())]
    outputs = []
    for threads in THREADS:
        paths = [folder / f"out{j}_t{threads}.raw" for j in range(len(built.expected))]
        done = run_on_board(target, [built.program, "--threads", str(threads), *inputs, *paths],
                            built.program.parent)
        assert done.returncode == 0, f"kiln_run on {target} failed:\n{done.stderr}"
        for name, array in model.inputs.items():
            shape = ",".join(map(str, array.shape))
            assert f"input {name} dtype=3 shape=[{shape}]" in done.stdout
        for path, want in zip(paths, built.expected, strict=True):
            got = read_raw(path, want.dtype, want.shape)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{target}, {threads} thread(s)")
            outputs.append(got)
    return built, outputs


@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_digits_on_board(target: str, build: BuildFn, tmp_path: Path) -> None:
    """One image, as deployed (image=1,1,8,8); the library is a shared object for the board's
    machine and word size, and so is the program."""
    built, _ = _run_and_compare(target, board_report.digits_model(1), build, tmp_path)
    bits, kind, machine = elf_header(built.library)
    assert (kind, machine) == (ET_DYN, board(target).elf_machine)
    assert bits == (32 if target.startswith("armv7") else 64)
    assert elf_header(built.program)[2] == board(target).elf_machine


@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_held_out_digits_batch_on_board(target: str, build: BuildFn, tmp_path: Path) -> None:
    """32 held-out digits in one batch: the same classes as the reference."""
    built, outputs = _run_and_compare(target, board_report.digits_model(32), build, tmp_path)
    for logits in outputs:
        np.testing.assert_array_equal(logits.argmax(1), built.expected[0].argmax(1))


@pytest.mark.slow  # 9 to 19 s per board on 2 shared cores, mostly compiling the model
@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_resnet_style_cnn_on_board(target: str, build: BuildFn, resnet: board_report.Model,
                                   tmp_path: Path) -> None:
    _run_and_compare(target, resnet, build, tmp_path)


# What each board's kernels must contain, as "mnemonic operands" lines of objdump -d:
# vector FMAs on 4 x f32 registers (AArch64 fmla v.4s, by element too; ARMv7 vmla/vfma.f32 on q
# or d registers; RVV vfmacc/vfmadd after a vsetivli of 4 e32 elements at LMUL 1, which is
# Kiln's 4 lanes at VLEN 128), and on RV64GC without V scalar fmadd.s.
REQUIRED = {
    "aarch64-linux-gnu": [r"fmla v\d+\.4s, v\d+\.4s, v\d+\.(4s|s\[\d\])"],
    "armv7-linux-gnueabihf": [r"v(mla|fma)\.f32 ([qd]\d+, ){2}[qd]\d+(\[\d\])?"],
    "riscv64-linux-gnu": [r"fmadd\.s f\w+,f\w+,f\w+,f\w+"],
    RVV: [r"vf(macc|madd)\.v[vf] v\d+,", r"vsetivli \w+,4,e32,m1,"],
}


@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_kernels_use_the_board_simd(target: str, build: BuildFn) -> None:
    require_tool(target, "objdump")
    require_tool(target, "objcopy")
    found = board(target)
    functions = board_report.parse_objdump(
        board_report.disassemble(found, build(target, board_report.digits_model(1)).library))
    code = board_report.generated_code(functions)
    lines = [f"{i.mnemonic} {i.operands}" for i in code]
    for pattern in REQUIRED[target]:
        assert any(re.match(pattern, line) for line in lines), f"no {pattern!r} in the kernels"
    mix = board_report.instruction_mix(found.arch, code)
    if found.simd:
        assert mix.simd_fma > 0 and mix.simd_fp > mix.scalar_fp, mix
    else:  # RV64GC: no vector unit, so no vector instruction at all
        assert mix.simd_fp == mix.vector_config == 0, mix
        assert not any(i.mnemonic.startswith("v") for i in code)
    if found.arch == "riscv64":  # every word decoded: nothing hides as .4byte
        assert mix.undecoded == 0, mix


def test_rvv_code_needs_the_vector_unit(build: BuildFn, tmp_path: Path) -> None:
    """The RVV library dies with SIGILL on qemu's default RV64 CPU (no V): the matching runs
    above did execute vector instructions."""
    scalar_board = "riscv64-linux-gnu"
    qemu_command(scalar_board)
    built = build(RVV, board_report.digits_model(1))
    image = write_raw(tmp_path / "in.raw", built.model.inputs["image"])
    done = run_on_board(scalar_board, [built.program, image, tmp_path / "out.raw"],
                        built.program.parent)
    assert done.returncode == -signal.SIGILL, (done.returncode, done.stderr)


def test_board_presets_and_features() -> None:
    """The RVV preset, and +v on the plain RISC-V target, give 128-bit vectors (4 x f32) and
    32 vector registers; a wider zvl<N>b widens the vectors; -v turns them off again."""
    for target in (Target.parse(RVV), Target.parse("riscv64-linux-gnu", features="+v")):
        assert target.triple == "riscv64-unknown-linux-gnu" and target.abi == "lp64d"
        assert "+v" in target.features.split(",") and "+d" in target.features.split(",")
        assert (target.vector_bits, target.machine().f32_lanes) == (128, 4)
        assert target.machine().vector_registers == 32
    wide = Target.parse(RVV, features="+zvl256b")
    assert (wide.vector_bits, wide.machine().f32_lanes) == (256, 8)
    plain = Target.parse(RVV, features="-v")
    assert (plain.vector_bits, plain.machine().f32_lanes) == (64, 1)
    assert Target.parse("riscv64-linux-gnu").machine().f32_lanes == 1
    # the same rule on the NEON boards: features add to the preset's, the last mention wins
    assert Target.parse("aarch64-linux-gnu", features="+fp16").features == "+neon,+fp16"
    assert Target.parse("armv7-linux-gnueabihf", features="-neon").machine().f32_lanes == 1


def test_rvv_assembly_without_cross_tools() -> None:
    """LLVM alone (no toolchain needed): a 4-wide f32 loop becomes RVV code, 4 x e32 at
    LMUL 1 (VLEN 128)."""
    target = Target.parse(RVV)
    i = Var("i")
    x, y = Buffer("x", DType.F32, (64,)), Buffer("y", DType.F32, (64,))
    kernel = Kernel("axpy", (x,), (y,), Loop(
        i, Const(64, DType.I64), y.store([i], x.load(i) * x.load(i) + y.load(i)),
        LoopKind.VECTORIZE, 4))
    module = create_module("rvv", target)
    emit_kernel(module, kernel, target, export=True)
    text = assembly(module, target)
    assert re.search(r"vsetivli\s+\w+, 4, e32, m1", text), text
    # a separate multiply and add: the kernel IR asks for no contraction
    assert re.search(r"vfmul\.vv", text) and re.search(r"vfadd\.vv", text), text


@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_profiling_build_on_board(target: str, tmp_path: Path) -> None:
    """A board without Python profiles a ``--profile`` build through the C ABI:
    tests/runtime/profile_abi.c, cross-compiled and run under qemu, reads one row of counters
    per plan call, each called once per run, and trace events."""
    qemu_command(target)
    model = board_report.digits_model(1)
    library = tmp_path / "model.so"
    kiln_compile(model.path, library, target, "--profile",
                 *board_report.input_shape_options(model.inputs))
    reader = Path(__file__).resolve().parents[1] / "runtime" / "profile_abi.c"
    program = cross_compile(target, [reader, library], tmp_path / "profile_abi",
                            ["-Wl,-rpath,$ORIGIN"])
    runs = 3
    done = run_on_board(target, [program, "2", str(runs)], tmp_path)
    assert done.returncode == 0, f"profile_abi on {target} failed:\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert "enabled 1" in lines
    kernels = int(next(line for line in lines if line.startswith("kernels ")).split()[1])
    counters = [line.split() for line in lines if line.startswith("counters ")]
    assert kernels > 0 and len(counters) == kernels
    assert all(int(calls) == runs and int(ns) > 0 for _, _, calls, ns in counters)
    named = [line.split("\t") for line in lines if line.startswith("kernel ")]
    assert {"/0/Conv", "/7/Gemm"} <= {op for row in named for op in row[2].split(",")}
    count = next(line for line in lines if line.startswith("trace_count ")).split()
    assert int(count[1]) >= runs * kernels
