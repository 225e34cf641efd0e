"""``write_dump``: a planned model's kernels as text at every stage (``kiln compile --dump``).

For each distinct kernel of the plan (one per name, as the model module defines them), files
named after it (made file-safe, and unique ignoring case):

- ``<kernel>.kir``: the kernel IR (``lower/kernel_printer.py``);
- ``<kernel>.ll``: its LLVM IR before optimization: a module of its own with only this kernel,
  its outlined parallel bodies, the functions they declare and the custom scalar functions
  linked in (``llvm.parse``), i.e. what the optimizer gets;
- ``<kernel>.opt.ll``: that module after LLVM's pipeline at the build's opt level
  (``llvm.optimize``, the one the build runs);
- ``<kernel>.s``: the target's assembly of the optimized module;

plus ``plan.txt``: the model's inputs and outputs, the kernels with their files and the graph
ops each implements, and every call in order with where each buffer lives (input / output
slot, weights or arena byte offset).

A kernel is emitted with external linkage here: alone in its module with internal linkage the
optimizer would delete it. In the model's own module LLVM may instead inline a kernel into the
plan function, so the build's machine code can differ from the dump by that inlining.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..lower.kernel_ir import Buffer, Kernel
from ..lower.kernel_printer import format_buffer, print_kernel
from ..plan.plan import Call, Location, Place, Plan
from .llvm import create_module, emit_assembly, emit_kernel, optimize, parse
from .target import Target

SUFFIXES = (".kir", ".ll", ".opt.ll", ".s")
PLAN_FILE = "plan.txt"
_NAME_LIMIT = 100  # file name characters taken from a kernel name (file systems allow 255)


def write_dump(plan: Plan, target: Target, folder: str | Path, opt_level: int) -> list[Path]:
    """Write the dump of ``plan`` compiled for ``target`` at ``opt_level`` into ``folder``
    (created if missing); the paths written, each kernel's four files then ``plan.txt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kernels = distinct_kernels(plan)
    stems = file_stems([k.name for k in kernels])
    written: list[Path] = []
    for kernel in kernels:
        texts = kernel_texts(kernel, target, opt_level)
        for suffix, text in zip(SUFFIXES, texts, strict=True):
            path = folder / f"{stems[kernel.name]}{suffix}"
            path.write_text(text)
            written.append(path)
    path = folder / PLAN_FILE
    path.write_text(plan_text(plan, target, opt_level, stems))
    written.append(path)
    return written


def distinct_kernels(plan: Plan) -> list[Kernel]:
    """The plan's kernels in first-call order, one per name."""
    found: dict[str, Kernel] = {}
    for call in plan.calls:
        found.setdefault(call.kernel.name, call.kernel)
    return list(found.values())


def file_stems(names: list[str]) -> dict[str, str]:
    """A file-safe stem for each name: other characters than letters, digits, ``_``, ``-`` and
    ``.`` become ``_``, long names are cut, and a stem equal to an earlier one ignoring case
    (case-insensitive file systems) gets a ``_2``, ``_3``... suffix."""
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:_NAME_LIMIT].lstrip(".") or "kernel"
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}_{n}"
        taken.add(stem.lower())
        stems[name] = stem
    return stems


def kernel_texts(kernel: Kernel, target: Target, opt_level: int) -> tuple[str, str, str, str]:
    """The kernel IR, LLVM IR, optimized LLVM IR and assembly of ``kernel``."""
    module = create_module(kernel.name, target)
    emit_kernel(module, kernel, target, export=True)
    parsed = parse(module, target)
    parsed.name = kernel.name
    emitted = str(parsed)
    optimized = optimize(emitted, target, opt_level)
    optimized.name = kernel.name
    return (print_kernel(kernel), emitted, str(optimized),
            emit_assembly(optimized, target, opt_level))


def plan_text(plan: Plan, target: Target, opt_level: int, stems: dict[str, str]) -> str:
    """The text of ``plan.txt``."""
    kernels = distinct_kernels(plan)
    lines = [
        f"plan: {len(plan.calls)} calls of {len(kernels)} kernels; target {target.name} "
        f"({target.triple}, cpu {target.cpu}), LLVM -O{opt_level}",
        f"arena: {plan.arena_bytes} bytes ({plan.unshared_bytes} without reuse); "
        f"weights: {len(plan.weights)} bytes",
        "",
        "inputs:",
        *(f"  input[{i}] {format_buffer(b)}" for i, b in enumerate(plan.inputs)),
        "outputs:",
        *(f"  output[{i}] {format_buffer(replace(b, name=name))}"
          for i, (b, name) in enumerate(zip(plan.outputs, plan.output_names, strict=True))),
        "",
        "kernels (files: <stem>.kir .ll .opt.ll .s):",
    ]
    width = max((len(k.name) for k in kernels), default=0)
    for kernel in kernels:
        calls = sum(call.kernel.name == kernel.name for call in plan.calls)
        stem = "" if stems[kernel.name] == kernel.name else f"  files {stems[kernel.name]}.*"
        source = ", ".join(kernel.source) or "-"
        lines.append(f"  {kernel.name:<{width}}  calls {calls}{stem}  source: {source}")
    lines += ["", "calls:"]
    for index, call in enumerate(plan.calls):
        lines += _call_lines(index, call)
    return "\n".join(lines) + "\n"


def _call_lines(index: int, call: Call) -> list[str]:
    kernel = call.kernel
    check = "  (then checks for a reported data error)" if call.may_report else ""
    lines = [f"  {index}: {kernel.name}{check}"]
    roles = (["in"] * len(kernel.inputs) + ["out"] * len(kernel.outputs)
             + ["scratch"] * len(kernel.scratch))
    for role, buffer, location in zip(roles, kernel.params, call.args, strict=True):
        lines.append(f"    {role:<7} {_location(location, buffer):<24} {format_buffer(buffer)}")
    return lines


def _location(location: Location, buffer: Buffer) -> str:
    if location.place in (Place.INPUT, Place.OUTPUT):
        return f"{location.place.value}[{location.at}]"
    place = "weights" if location.place is Place.WEIGHT else location.place.value
    return f"{place}+{location.at}..{location.at + buffer.nbytes}"
