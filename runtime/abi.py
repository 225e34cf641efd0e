"""The constants of Kiln's C ABI (runtime/include/kiln.h), shared by the runtime and the compiler.

The compiler imports this module (never the reverse) for the dtype codes it writes into a
model's descriptor, the status codes, the exported symbol list and the external weights file
format, so both sides agree by construction. Keep it in sync with kiln.h and kiln_internal.h.
"""

from __future__ import annotations

import enum

import numpy as np

ABI_VERSION = 3
# Libraries of older ABI versions this runtime still opens: version 1 lacks only the profiling
# functions (kiln_profile_*), so such a library loads and reports profiling disabled; version 2
# lacks only the functions of run-time extents (a library of either is static).
OLDEST_ABI_VERSION = 1
PROFILING_ABI_VERSION = 2
SHAPED_ABI_VERSION = 3


class Status(enum.IntEnum):
    """``kiln_status`` values."""

    OK = 0
    INVALID_ARGUMENT = 1
    OUT_OF_MEMORY = 2
    WEIGHTS = 3
    THREADS = 4
    BUSY = 5
    RUNTIME = 6
    NOT_PROFILED = 7
    SHAPE = 8


# ``kiln_dtype`` codes keyed by the IR's dtype spelling (``DType.value`` in the compiler).
DTYPE_CODES: dict[str, int] = {
    "f16": 1, "bf16": 2, "f32": 3, "f64": 4,
    "i8": 5, "i16": 6, "i32": 7, "i64": 8,
    "u8": 9, "u16": 10, "u32": 11, "u64": 12,
    "bool": 13,
}
DTYPE_NAMES: dict[int, str] = {code: name for name, code in DTYPE_CODES.items()}

# The C enumerator of each code, for generated headers.
DTYPE_ENUMERATORS: dict[int, str] = {code: f"KILN_{name.upper()}"
                                     for name, code in DTYPE_CODES.items()}

# numpy has no bfloat16; without ml_dtypes a bf16 tensor travels as its raw uint16 bits.
_NUMPY: dict[str, np.dtype] = {
    "f16": np.dtype(np.float16), "bf16": np.dtype(np.uint16), "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64), "i8": np.dtype(np.int8), "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32), "i64": np.dtype(np.int64), "u8": np.dtype(np.uint8),
    "u16": np.dtype(np.uint16), "u32": np.dtype(np.uint32), "u64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
}
BF16 = DTYPE_CODES["bf16"]


def storage_dtype(code: int) -> np.dtype:
    """The numpy dtype whose bytes hold one element of ``code`` (bf16 -> uint16 bits)."""
    return _NUMPY[DTYPE_NAMES[code]]


def itemsize(code: int) -> int:
    return storage_dtype(code).itemsize


# The profiling queries (ABI version 2); a library compiled without profiling has them too.
PROFILE_SYMBOLS: tuple[str, ...] = (
    "kiln_profile_enabled", "kiln_profile_num_kernels", "kiln_profile_kernel_info",
    "kiln_profile_counters", "kiln_profile_run_stats", "kiln_profile_reset",
    "kiln_profile_trace",
)
# The functions of run-time extents (ABI version 3); a static library has them too.
SHAPED_SYMBOLS: tuple[str, ...] = ("kiln_infer_shapes", "kiln_run_shaped", "kiln_output")
# The functions a model library exports; everything else is hidden at link time.
EXPORTED_SYMBOLS: tuple[str, ...] = (
    "kiln_abi_version", "kiln_num_inputs", "kiln_num_outputs", "kiln_input_info",
    "kiln_output_info", "kiln_create", "kiln_destroy", "kiln_run", "kiln_last_error",
    *PROFILE_SYMBOLS, *SHAPED_SYMBOLS,
)
# kiln_kernel_info.source_ops joins the node names with this.
SOURCE_OPS_SEPARATOR = ","
# Trace events an instance keeps (KILN_PROFILE_TRACE_EVENTS); past it the oldest are dropped.
PROFILE_TRACE_EVENTS = 1 << 16

# Symbols the generated code defines or calls (kiln_internal.h).
MODEL_SYMBOL = "kiln__model"
WEIGHTS_SYMBOL = "kiln__weights"
PARALLEL_FOR_SYMBOL = "kiln__parallel_for"
REPORT_ERROR_SYMBOL = "kiln__report_error"
FAILED_SYMBOL = "kiln__failed"
PROFILE_BEGIN_SYMBOL = "kiln__profile_begin"
PROFILE_END_SYMBOL = "kiln__profile_end"
ARENA_SYMBOL = "kiln__arena"
DYNAMIC_SYMBOL = "kiln__dynamic"
# kiln__bind's failure codes (kiln_internal.h): an input extent differs from the one the
# model (or the other inputs) fix, a bounded symbol is out of its bounds, a free one is 0.
BIND_FAILURES: dict[str, int] = {"extent": 1, "bounds": 2, "empty": 3}

# External weights file: 64-byte header (magic, u64 byte count, u64 FNV-1a 64 checksum of the
# bytes, zero padding; little-endian), then the bytes. Offsets inside the blob are multiples of
# WEIGHTS_ALIGNMENT, as is the blob's address at run time.
WEIGHTS_MAGIC = b"KILNWTS1"
WEIGHTS_HEADER_BYTES = 64
WEIGHTS_ALIGNMENT = 64
ARENA_ALIGNMENT = 64
FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
