"""Shared helpers of the board tests: cross toolchains, qemu-user runs, ``kiln compile``, raw I/O.

The board table (Kiln target name, GNU cross prefix, qemu binary and CPU flags, ELF machine),
the build steps and the qemu runner live in benchmarks/board_report.py, which measures the same
runs; here each lookup skips the test where the host lacks a program, naming it and the Debian
package that provides it, and failed steps fail the test with their output. ``BOARD_TARGETS``
lists the boards: AArch64, ARMv7 (hard float), RISC-V 64 without and with the V extension
(``riscv64-rvv-linux-gnu``, run on a qemu CPU with 128-bit vector registers).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import board_report  # noqa: E402
from board_report import BOARDS, Board  # noqa: E402

BOARD_TARGETS: tuple[str, ...] = tuple(BOARDS)

# e_machine values of the ELF header (elf.h)
EM_ARM, EM_AARCH64, EM_RISCV = 40, 183, 243
# e_type values
ET_REL, ET_EXEC, ET_DYN = 1, 2, 3


def board(target: str) -> Board:
    """The board entry of a target name in ``BOARD_TARGETS``."""
    return BOARDS[target]


def require_toolchain(target: str) -> Board:
    """The board of ``target``; skips the test when its cross gcc or C library is missing."""
    found = board(target)
    reason = board_report.missing_compiler(found)
    if reason:
        pytest.skip(reason)
    return found


def require_tool(target: str, tool: str) -> str:
    """The name of ``target``'s binutils program ``tool`` (objdump, size, nm, readelf); skips
    the test when it is missing."""
    found = board(target)
    reason = board_report.missing_tool(found, tool)
    if reason:
        pytest.skip(reason)
    return found.tool(tool)


def qemu_command(target: str) -> list[str]:
    """The qemu-user command prefix for ``target`` (-L sysroot, CPU flags); skips the test
    when qemu or the target's libraries are missing."""
    found = board(target)
    reason = board_report.missing_qemu(found)
    if reason:
        pytest.skip(reason)
    return board_report.qemu_command(found)


def run_on_board(target: str, argv: Sequence[str | Path], cwd: Path,
                 timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run a ``target`` executable with its arguments under qemu in ``cwd`` (skips without
    qemu); the caller checks the return code."""
    qemu_command(target)
    done = board_report.run_on_board(board(target), argv, cwd, timeout)
    return subprocess.CompletedProcess([str(a) for a in argv], done.returncode, done.stdout,
                                       done.stderr)


def cross_compile(target: str, sources: Sequence[str | Path], output: Path,
                  flags: Sequence[str] = ()) -> Path:
    """Compile and link C sources (and objects or libraries) with ``target``'s gcc, the runtime
    headers on the include path (skips without the toolchain)."""
    return board_report.cross_compile(require_toolchain(target), sources, output, flags)


def link_kiln_run(target: str, library: Path, output: Path) -> Path:
    """examples/c/kiln_run.c linked against a model library, found next to the program."""
    return board_report.link_kiln_run(require_toolchain(target), library, output)


def kiln_compile(model: Path, output: Path, target: str, *options: str) -> str:
    """``kiln compile MODEL --target TARGET -o OUTPUT OPTIONS...`` as a user runs it; returns
    what it printed (a failure raises with the command's output)."""
    return board_report.kiln_compile(model, output, target, *options)


def elf_header(path: Path) -> tuple[int, int, int]:
    """(class bits 32/64, e_type, e_machine) of a little-endian ELF file."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    assert head[5] == 1, f"{path} is not little-endian"
    bits = {1: 32, 2: 64}[head[4]]
    return bits, int.from_bytes(head[16:18], "little"), int.from_bytes(head[18:20], "little")


def write_raw(path: Path, array: np.ndarray) -> Path:
    """A tensor as the C examples read it: dense row-major little-endian elements."""
    np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tofile(path)
    return path


def read_raw(path: Path, dtype: np.dtype | type, shape: Sequence[int]) -> np.ndarray:
    """A tensor written by the C examples; its size must match ``shape`` exactly."""
    data = np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<"))
    assert data.size == int(np.prod(shape)), f"{path}: {data.size} elements, wanted {shape}"
    return data.reshape(tuple(shape)).astype(np.dtype(dtype))
