"""Model weights in the artifact: the blob layout, its checksum, and its two homes.

* ``pack_weights`` lays constant arrays out in one blob, each at a 64-byte aligned offset.
* Embedded weights become read-only data of the library: ``weights_assembly`` writes a tiny
  GNU assembler file that ``.incbin``s the blob under the symbol ``kiln__weights`` (every GNU
  target assembler understands it, and it copies 100 MB in a blink where emitting the bytes
  through LLVM IR would not).
* External weights go to a ``.bin`` file beside the library (``write_weights_file``): a 64-byte
  header (magic, byte count, FNV-1a 64 checksum) and the blob; the runtime checks all three.

The checksum is FNV-1a 64 (byte-serial, so numpy cannot vectorize it); a 20-line LLVM
function JIT-compiled once per process computes it at memory speed.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from llvmlite import ir

from kiln.runtime import abi


def _align(offset: int, alignment: int = abi.WEIGHTS_ALIGNMENT) -> int:
    return -(-offset // alignment) * alignment


def pack_weights(arrays: Sequence[np.ndarray]) -> tuple[bytes, list[int]]:
    """One blob holding every array's C-order bytes at 64-byte aligned offsets.

    Returns the blob and each array's offset. The blob's length is a multiple of 64 (zero
    padding), so the layout of a prefix does not depend on what follows.
    """
    parts: list[bytes] = []
    offsets: list[int] = []
    size = 0
    for array in arrays:
        offsets.append(size)
        data = np.ascontiguousarray(array).tobytes()
        padded = _align(len(data))
        parts.append(data)
        parts.append(bytes(padded - len(data)))
        size += padded
    return b"".join(parts), offsets


@functools.cache
def _fnv1a64_native() -> Callable[[int, int], int]:
    """JIT-compile ``u64 fnv(const u8 *data, u64 size)`` for the host."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    i8, i64 = ir.IntType(8), ir.IntType(64)
    module = ir.Module(name="kiln_fnv1a64")
    module.triple = llvm.get_process_triple()
    function = ir.Function(module, ir.FunctionType(i64, [ir.PointerType(i8), i64]), "fnv1a64")
    data, size = function.args
    entry, loop, done = (function.append_basic_block(n) for n in ("entry", "loop", "done"))
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_unsigned("==", size, i64(0)), done, loop)
    builder.position_at_end(loop)
    index = builder.phi(i64, "index")
    hash_ = builder.phi(i64, "hash")
    byte = builder.zext(builder.load(builder.gep(data, [index])), i64)
    mixed = builder.mul(builder.xor(hash_, byte), i64(abi.FNV64_PRIME))
    following = builder.add(index, i64(1))
    index.add_incoming(i64(0), entry)
    index.add_incoming(following, loop)
    hash_.add_incoming(i64(abi.FNV64_OFFSET), entry)
    hash_.add_incoming(mixed, loop)
    builder.cbranch(builder.icmp_unsigned("<", following, size), loop, done)
    builder.position_at_end(done)
    result = builder.phi(i64, "result")
    result.add_incoming(i64(abi.FNV64_OFFSET), entry)
    result.add_incoming(mixed, loop)
    builder.ret(result)

    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    machine = llvm.Target.from_default_triple().create_target_machine(opt=2)
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    prototype = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64)
    native = prototype(engine.get_function_address("fnv1a64"))
    native.engine = engine  # keep the JIT (and the code it owns) alive with the function
    return native


def fnv1a64(data: bytes | bytearray | memoryview) -> int:
    """FNV-1a 64 hash of ``data`` (the checksum the runtime verifies)."""
    view = np.frombuffer(data, dtype=np.uint8)
    if view.size == 0:
        return abi.FNV64_OFFSET
    return int(_fnv1a64_native()(view.ctypes.data, view.size))


def weights_path_for(library: str | os.PathLike[str]) -> Path:
    """Where the runtime looks for a library's external weights: ``.so`` -> ``.bin``."""
    text = os.fspath(library)
    return Path((text[:-3] if text.endswith(".so") else text) + ".bin")


def weights_file_header(data: bytes, checksum: int | None = None) -> bytes:
    """The 64-byte header of an external weights file for ``data``."""
    if checksum is None:
        checksum = fnv1a64(data)
    header = abi.WEIGHTS_MAGIC + struct.pack("<QQ", len(data), checksum)
    return header.ljust(abi.WEIGHTS_HEADER_BYTES, b"\0")


def write_weights_file(path: str | os.PathLike[str], data: bytes,
                       checksum: int | None = None) -> Path:
    """Write the external weights file (header + blob) atomically; returns its path."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(weights_file_header(data, checksum))
        file.write(data)
    os.replace(temporary, target)
    return target


def weights_assembly(blob_name: str) -> str:
    """GNU assembler source defining ``kiln__weights`` as the bytes of file ``blob_name``.

    ``blob_name`` is resolved relative to the assembler's working directory; it must not
    contain quotes or backslashes.
    """
    if any(c in blob_name for c in '"\\\n'):
        raise ValueError(f"unsafe file name for .incbin: {blob_name!r}")
    symbol = abi.WEIGHTS_SYMBOL
    # %object/%progbits (not @...): '@' starts a comment in the ARM assembler.
    return (
        '\t.section .rodata.kiln_weights,"a",%progbits\n'
        f"\t.balign {abi.WEIGHTS_ALIGNMENT}\n"
        f"\t.globl {symbol}\n"
        f"\t.hidden {symbol}\n"
        f"\t.type {symbol}, %object\n"
        f"{symbol}:\n"
        f'\t.incbin "{blob_name}"\n'
        f"\t.size {symbol}, . - {symbol}\n"
        '\t.section .note.GNU-stack,"",%progbits\n'
    )
