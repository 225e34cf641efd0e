"""Kernels in GPU form -> PTX text (one LLVM module, hence one PTX module, per kernel), and
``ptxas`` (CUDA toolkit, optional) to check PTX and report registers / shared memory / spills.

Each kernel compiles alone: its module holds the ``.entry``, the math it inlines and the
libdevice functions it calls. The default pipeline of the opt level runs with the NVPTX
target machine (address space inference, NVVM reflection), then LLVM's NVPTX backend prints
the PTX (``.version`` from the target's ``+ptxNN`` feature, ``.target`` its ``sm_NN``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llvmlite import ir

from ...lower.kernel_ir import Kernel
from ..llvm.compile import create_module, emit_assembly, optimize, parse
from ..target import CodegenError, Target
from .kernel import LaunchConfig, emit_gpu_kernel
from .libdevice import link_libdevice


@dataclass(frozen=True)
class KernelPTX:
    """One compiled kernel: its entry name, PTX module text and launch configuration."""

    name: str
    ptx: str
    launch: LaunchConfig
    params: int  # pointer parameters before the error word


def kernel_module(kernel: Kernel, target: Target, messages: list[str]
                  ) -> tuple[ir.Module, LaunchConfig]:
    """The LLVM IR module of one kernel and its launch configuration."""
    module = create_module(f"kiln_{kernel.name}", target)
    _, launch = emit_gpu_kernel(module, kernel, target, messages)
    return module, launch


def compile_kernel(kernel: Kernel, target: Target, opt_level: int = 2,
                   messages: list[str] | None = None) -> KernelPTX:
    """PTX for ``kernel``; its Report texts are appended to ``messages`` (codes index it)."""
    table = [] if messages is None else messages
    module, launch = kernel_module(kernel, target, table)
    ref = parse(module, target)
    link_libdevice(ref)
    ref = optimize(str(ref), target, opt_level)
    return KernelPTX(kernel.name, emit_assembly(ref, target, opt_level), launch,
                     len(kernel.params))


def optimized_kernel_ir(kernel: Kernel, target: Target, opt_level: int = 2) -> str:
    """The optimized LLVM IR of one kernel (for ``--dump``)."""
    module, _ = kernel_module(kernel, target, [])
    ref = parse(module, target)
    link_libdevice(ref)
    return str(optimize(str(ref), target, opt_level))


def compile_kernels(kernels: Sequence[Kernel], target: Target, opt_level: int = 2
                    ) -> tuple[list[KernelPTX], list[str]]:
    """PTX of each distinct kernel (by name, first occurrence order) and the message table."""
    messages: list[str] = []
    compiled: dict[str, KernelPTX] = {}
    for kernel in kernels:
        if kernel.name not in compiled:
            compiled[kernel.name] = compile_kernel(kernel, target, opt_level, messages)
    return list(compiled.values()), messages


# -- ptxas ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PtxasInfo:
    """What ``ptxas -v`` reports for one entry."""

    kernel: str
    arch: str
    registers: int
    shared_bytes: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int


def ptxas_path() -> str | None:
    return shutil.which("ptxas") or next(
        (str(p) for p in (Path("/usr/local/cuda/bin/ptxas"),) if p.is_file()), None)


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def run_ptxas(ptx: str, arch: str, output: Path | None = None) -> list[PtxasInfo]:
    """Assemble ``ptx`` for ``arch`` (``sm_90``) with ``ptxas -v``; the per-entry report.
    ``output`` receives the cubin if given. Raises ``CodegenError`` with ptxas' message on
    failure, or when ptxas is not installed."""
    tool = ptxas_path()
    if tool is None:
        raise CodegenError("ptxas (CUDA toolkit) is not installed")
    with tempfile.TemporaryDirectory(prefix="kiln-ptxas-") as work:
        source = Path(work) / "kernel.ptx"
        source.write_text(ptx)
        cubin = output or Path(work) / "kernel.cubin"
        done = subprocess.run([tool, f"-arch={arch}", "-v", str(source), "-o", str(cubin)],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CodegenError(f"ptxas -arch={arch} rejected the PTX: {done.stderr.strip()}")
    return parse_ptxas_report(done.stderr + done.stdout)


def parse_ptxas_report(text: str) -> list[PtxasInfo]:
    """The entries of a ``ptxas -v`` report."""
    infos: list[PtxasInfo] = []
    current: dict[str, object] | None = None

    def flush() -> None:
        if current is not None:
            infos.append(PtxasInfo(**current))  # type: ignore[arg-type]

    for line in text.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            flush()
            current = {"kernel": entry.group(1), "arch": entry.group(2), "registers": 0,
                       "shared_bytes": 0, "stack_bytes": 0, "spill_stores": 0,
                       "spill_loads": 0}
            continue
        if current is None:
            continue
        frame = _FRAME.search(line)
        if frame:
            current["stack_bytes"], current["spill_stores"], current["spill_loads"] = (
                int(g) for g in frame.groups())
        used = _USED.search(line)
        if used:
            current["registers"] = int(used.group(1))
            smem = _SMEM.search(line)
            current["shared_bytes"] = int(smem.group(1)) if smem else 0
    flush()
    return infos


def cuobjdump_path() -> str | None:
    return shutil.which("cuobjdump") or next(
        (str(p) for p in (Path("/usr/local/cuda/bin/cuobjdump"),) if p.is_file()), None)


def sass(ptx: str, arch: str) -> str | None:
    """The SASS of ``ptx`` for ``arch`` (ptxas, then ``cuobjdump -sass``); None without
    the tools."""
    tool = cuobjdump_path()
    if tool is None or ptxas_path() is None:
        return None
    with tempfile.TemporaryDirectory(prefix="kiln-sass-") as work:
        cubin = Path(work) / "kernel.cubin"
        run_ptxas(ptx, arch, cubin)
        done = subprocess.run([tool, "-sass", str(cubin)], capture_output=True, text=True,
                              check=False)
    return done.stdout if done.returncode == 0 else None
