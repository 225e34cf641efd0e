"""``write_gpu_dump``: ``kiln compile --target cuda --dump``: each kernel of a CUDA build as text.

Per distinct kernel (file stems as codegen/dump.py makes them): ``<kernel>.kir`` (its kernel
IR, as bound to blocks and threads), ``<kernel>.ll`` / ``<kernel>.opt.ll`` (its NVPTX module
before / after LLVM's pipeline), ``<kernel>.ptx`` (what the artifact holds) and, where the CUDA
toolkit's ``ptxas`` and ``cuobjdump`` are installed, ``<kernel>.sass`` (the machine code for
the target architecture); plus ``plan.txt`` (codegen/dump.py), with each kernel's launch
configuration appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...lower.kernel_printer import print_kernel
from ...plan.plan import Plan
from ..dump import PLAN_FILE, distinct_kernels, file_stems, plan_text
from ..llvm.compile import optimize, parse
from ..target import Target
from .kernel import bind_to_gpu
from .libdevice import link_libdevice
from .ptx import KernelPTX, kernel_module, sass


def write_gpu_dump(plan: Plan, compiled: Sequence[KernelPTX], target: Target,
                   folder: str | Path, opt_level: int) -> list[Path]:
    """Write the dump of a CUDA build into ``folder``; the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kernels = distinct_kernels(plan)
    stems = file_stems([k.name for k in kernels])
    by_name = {k.name: k for k in compiled}
    written: list[Path] = []
    for kernel in kernels:
        module, _ = kernel_module(kernel, target, [])
        parsed = parse(module, target)
        link_libdevice(parsed)
        emitted = str(parsed)
        ptx = by_name[kernel.name].ptx
        texts = {".kir": print_kernel(bind_to_gpu(kernel)), ".ll": emitted,
                 ".opt.ll": str(optimize(emitted, target, opt_level)), ".ptx": ptx}
        machine = sass(ptx, target.cpu)
        if machine is not None:
            texts[".sass"] = machine
        for suffix, text in texts.items():
            path = folder / f"{stems[kernel.name]}{suffix}"
            path.write_text(text)
            written.append(path)
    launches = [f"  {k.name}: grid {k.launch.grid} x {k.launch.threads} threads"
                for k in compiled]
    path = folder / PLAN_FILE
    path.write_text(plan_text(plan, target, opt_level, stems)
                    + "\nGPU launches (files: <stem>.kir .ll .opt.ll .ptx [.sass]):\n"
                    + "\n".join(launches) + "\n")
    written.append(path)
    return written
