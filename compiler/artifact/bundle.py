"""The static bundle (``kiln compile --static``): a model as one relocatable object, for boards
without an operating system's loader, allocator or threads.

    model.o            an ELF relocatable for the target: ``ld -r`` of the generated code
                       (kernels, plan, descriptor), the freestanding bundle runtime
                       (runtime/c/kiln_bundle.c, compiled -ffreestanding) and, with embedded
                       weights, the weights blob (.rodata); then ``objcopy
                       --keep-global-symbols`` turns every symbol but the API functions local.
    model.h            self-contained: kiln.h's types, the bundle API (kiln_bundle.h) and the
                       model's macros (arena and weights bytes, I/O counts, shapes, sizes).
    model.weights.bin  external weights only: the raw blob (no header: the caller places it
                       in flash or RAM, 64-byte aligned); ``kiln_bundle_check_weights``
                       verifies its checksum.

The object needs from outside only libm functions, memcpy/memset/memmove and the compiler's
runtime helpers (libgcc: ``__aeabi_ldivmod`` and friends on 32-bit ARM). Its code is
position-independent, so it links into static executables, PIEs and firmware images alike.
Two bundles in one program need distinct API names: ``prefix`` renames ``kiln_bundle_*`` to
``PREFIX_*`` (``objcopy --redefine-sym``) and the header's ``KILN_`` macros to ``PREFIX_``
upper-cased; the internal symbols are local and never clash.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

from kiln.runtime import abi

from .header import TensorSpec, c_identifier, dtype_code, tensor_macros
from .link import (
    ArtifactError,
    TargetSpec,
    binutil,
    compile_c,
    include_dir,
    run_tool,
    runtime_object,
)
from .weights import weights_assembly

BUNDLE_RUNTIME = "kiln_bundle.c"
# Freestanding: no libc headers or calls, and no stack protector (it would need libc's
# __stack_chk_fail and guard); PIC like the generated code. -Os: nothing in it is hot (the
# kernels are the generated code), and at -O2 its inlined message writing is 4x the size.
BUNDLE_CFLAGS = ("-Os", "-fPIC", "-ffreestanding", "-fno-stack-protector",
                 "-fvisibility=hidden", "-Wall", "-Wextra")
DEFAULT_PREFIX = "kiln_bundle"
# The functions of kiln_bundle.h, after the prefix.
API_FUNCTIONS: tuple[str, ...] = (
    "arena_bytes", "weights_bytes", "weights_embedded", "num_inputs", "num_outputs",
    "input_info", "output_info", "check_weights", "run", "last_error",
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Bundle:
    """The files of a static bundle and the memory its caller provides."""

    object: Path
    header: Path
    weights: Path | None  # the raw weights blob; None when embedded in the object
    arena_bytes: int
    weights_bytes: int


def weights_path_for_bundle(object_file: str | os.PathLike[str]) -> Path:
    """Where a bundle's external weights go: ``model.o`` -> ``model.weights.bin``."""
    path = Path(object_file)
    return path.with_name(f"{path.stem}.weights.bin")


def check_prefix(prefix: str) -> None:
    """An ArtifactError unless ``prefix`` can start the API's C names."""
    if not _IDENTIFIER.fullmatch(prefix):
        raise ArtifactError(f"bundle prefix {prefix!r} is not a C identifier")


def api_symbols(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The global symbols of a bundle object whose API is named ``prefix``."""
    return [f"{prefix}_{name}" for name in API_FUNCTIONS]


def write_bundle(
    object_code: bytes,
    output: str | os.PathLike[str],
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    weights: bytes,
    arena_bytes: int,
    external_weights: bool,
    target: TargetSpec = "host",
    prefix: str = DEFAULT_PREFIX,
) -> Bundle:
    """Write the bundle object ``output`` (``model.o``), ``model.h`` beside it and, with
    ``external_weights``, ``model.weights.bin``. ``object_code`` is the model's object file
    (the descriptor, plan and kernels), ``weights`` the packed blob."""
    check_prefix(prefix)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-bundle-") as work:
        folder = Path(work)
        model_object = folder / "model.o"
        model_object.write_bytes(object_code)
        objects = [model_object, runtime_object(target, BUNDLE_RUNTIME, BUNDLE_CFLAGS)]
        if not external_weights:
            (folder / "weights.bin").write_bytes(weights)
            source = folder / "weights.s"
            source.write_text(weights_assembly("weights.bin"))
            objects.append(compile_c(source, folder / "weights.o", target, flags=()))
        merged = folder / "merged.o"
        run_tool([binutil(target, "ld"), "-r", "-o", str(merged), *map(str, objects)],
                 f"merging {output.name}")
        _publish_api(target, merged, folder, prefix, output)
    weights_file = None
    if external_weights:
        weights_file = weights_path_for_bundle(output)
        _write_atomically(weights_file, weights)
    header = output.with_suffix(".h")
    _write_atomically(header, render_bundle_header(
        inputs, outputs, arena_bytes=arena_bytes, weights_bytes=len(weights),
        weights_embedded=not external_weights, model_name=output.stem, prefix=prefix,
    ).encode())
    return Bundle(output, header, weights_file, arena_bytes, len(weights))


def _publish_api(target: TargetSpec, merged: Path, folder: Path, prefix: str,
                 output: Path) -> None:
    """Copy ``merged`` to ``output`` with only the API global, renamed to ``prefix``."""
    keep = folder / "keep.txt"
    keep.write_text("".join(f"{name}\n" for name in api_symbols(prefix)))
    renames = folder / "renames.txt"
    renames.write_text("".join(f"{old} {new}\n" for old, new in
                               zip(api_symbols(), api_symbols(prefix), strict=True)))
    staged = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        # objcopy renames first, then applies the keep list (to the new names).
        run_tool([binutil(target, "objcopy"), f"--redefine-syms={renames}",
                  f"--keep-global-symbols={keep}", str(merged), str(staged)],
                 f"localizing the internal symbols of {output.name}")
        os.replace(staged, output)
    finally:
        staged.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _io_bytes(tensors: Sequence[TensorSpec]) -> int:
    """Bytes of the tensors laid out one after another, each at a 64-byte aligned offset."""
    alignment = abi.ARENA_ALIGNMENT
    sizes = (prod(int(d) for d in shape) * abi.itemsize(dtype_code(dtype))
             for _, dtype, shape in tensors)
    return sum(-(-size // alignment) * alignment for size in sizes)


def render_bundle_header(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    arena_bytes: int,
    weights_bytes: int,
    weights_embedded: bool,
    model_name: str = "model",
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The text of a bundle's ``model.h``."""
    namespace = "KILN" if prefix == DEFAULT_PREFIX else prefix.upper()
    api = (include_dir() / "kiln_bundle.h").read_text().replace('#include "kiln.h"\n\n', "")
    if prefix != DEFAULT_PREFIX:
        api = (api.replace(f"{DEFAULT_PREFIX}_", f"{prefix}_")
               .replace("KILN_BUNDLE_API_H", f"KILN_BUNDLE_API_{namespace}_H"))
    guard = f"KILN_BUNDLE_{c_identifier(model_name)}_{namespace}_H"
    name = model_name.replace("*/", "* /")
    embedded = int(weights_embedded)
    lines = [
        f"/* {name}: a model compiled by Kiln as a static bundle. Generated; do not edit.",
        " *",
        f" * Link {name}.o into the program and call the {prefix}_* functions below, giving",
        f" * them the arena ({namespace}_MODEL_ARENA_BYTES) and, unless",
        f" * {namespace}_MODEL_WEIGHTS_EMBEDDED, the weights ({name}.weights.bin,",
        f" * {namespace}_MODEL_WEIGHTS_BYTES), both 64-byte aligned. Scalars (rank 0) have no",
        " * _SHAPE macro.",
        " */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        (include_dir() / "kiln.h").read_text().rstrip("\n"),
        "",
        api.rstrip("\n"),
        "",
        "/* Memory the caller provides, in bytes */",
        f"#define {namespace}_MODEL_ARENA_BYTES {arena_bytes}LL",
        f"#define {namespace}_MODEL_WEIGHTS_BYTES {weights_bytes}LL",
        f"#define {namespace}_MODEL_WEIGHTS_EMBEDDED {embedded}",
        "/* all inputs and outputs, each at a 64-byte aligned offset */",
        f"#define {namespace}_MODEL_IO_BYTES {_io_bytes([*inputs, *outputs])}LL",
        "",
        *tensor_macros("input", inputs, namespace),
        "",
        *tensor_macros("output", outputs, namespace),
        "",
        f"#endif /* {guard} */",
        "",
    ]
    return "\n".join(lines)
