"""The per-model C header (``model.h`` beside ``model.so``).

It holds the whole ABI of kiln.h (so a C program needs only this one file) and, for each input
and output, comments and macros with its index, name, dtype, rank, shape, element count and
byte size, under names sanitized to C identifiers (``KILN_INPUT_<NAME>_SHAPE`` ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from math import prod
from pathlib import Path
from typing import Any

from kiln.runtime import abi

from .link import include_dir

# (name, dtype, shape); dtype is the IR spelling ("f32"), a kiln_dtype code, or a DType.
TensorSpec = tuple[str, Any, Sequence[int]]


def dtype_code(dtype: Any) -> int:
    """The kiln_dtype code of ``dtype``: an int code, the IR spelling, or an enum of it."""
    if isinstance(dtype, int) and dtype in abi.DTYPE_NAMES:
        return dtype
    name = getattr(dtype, "value", dtype)
    if name not in abi.DTYPE_CODES:
        raise ValueError(f"unknown element type {dtype!r}")
    return abi.DTYPE_CODES[name]


def c_identifier(name: str) -> str:
    """``name`` upper-cased with every non-alphanumeric character replaced by '_'."""
    text = re.sub(r"[^0-9A-Za-z]", "_", name).upper()
    return f"_{text}" if not text or text[0].isdigit() else text


def c_string(text: str) -> str:
    """A C string literal for ``text`` (UTF-8, octal escapes for anything unusual)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F and char != "?":  # '?' is escaped: no trigraphs
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    return text.replace("*/", "* /")


def _unique_identifiers(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    result = []
    for name in names:
        base = candidate = c_identifier(name)
        suffix = 1
        while candidate in seen:
            candidate = f"{base}_{suffix}"
            suffix += 1
        seen.add(candidate)
        result.append(candidate)
    return result


def tensor_macros(kind: str, tensors: Sequence[TensorSpec], namespace: str = "KILN") -> list[str]:
    """The macro lines of the ``kind`` ("input" or "output") tensors: ``{namespace}_NUM_INPUTS``
    and per tensor ``{namespace}_INPUT_<NAME>`` (its index), ``_NAME``, ``_DTYPE``, ``_RANK``,
    ``_SHAPE``, ``_NUMEL`` and ``_BYTES``."""
    lines = [f"/* {kind.capitalize()}s */",
             f"#define {namespace}_NUM_{kind.upper()}S {len(tensors)}"]
    identifiers = _unique_identifiers([name for name, _, _ in tensors])
    for index, ((name, dtype, shape), ident) in enumerate(zip(tensors, identifiers, strict=True)):
        code = dtype_code(dtype)
        dims = [int(d) for d in shape]  # -1: an extent known only at run time
        numel = prod(dims)
        prefix = f"{namespace}_{kind.upper()}_{ident}"
        shape_text = ", ".join(map(str, dims))
        lines += [
            "",
            f"/* {kind} {index}: {_comment(name)}: {abi.DTYPE_NAMES[code]}[{shape_text}] */",
            f"#define {prefix} {index}",
            f"#define {prefix}_NAME {c_string(name)}",
            f"#define {prefix}_DTYPE {abi.DTYPE_ENUMERATORS[code]}",
            f"#define {prefix}_RANK {len(dims)}",
        ]
        if dims:  # C has no empty initializer: scalars get no _SHAPE
            lines.append(f"#define {prefix}_SHAPE {{{shape_text}}}")
        if -1 in dims:
            lines.append(f"/* {prefix}_SHAPE has run-time extents (-1): kiln_infer_shapes */")
            continue
        lines += [
            f"#define {prefix}_NUMEL {numel}LL",
            f"#define {prefix}_BYTES {numel * abi.itemsize(code)}LL",
        ]
    return lines


def render_header(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                  model_name: str = "model") -> str:
    """The text of the model header."""
    guard = f"KILN_MODEL_{c_identifier(model_name)}_H"
    abi_text = (include_dir() / "kiln.h").read_text()
    lines = [
        f"/* {_comment(model_name)}: a model compiled by Kiln. Generated; do not edit.",
        " *",
        " * Link with the library (e.g. cc main.c ./model.so) and call the kiln_* functions below.",
        " * Scalars (rank 0) have no _SHAPE macro.",
        " */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        abi_text.rstrip("\n"),
        "",
        *tensor_macros("input", inputs),
        "",
        *tensor_macros("output", outputs),
        "",
        f"#endif /* {guard} */",
        "",
    ]
    return "\n".join(lines)


def write_header(path: str | os.PathLike[str], inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], model_name: str | None = None) -> Path:
    """Write the model header to ``path`` (model name defaults to the file's stem)."""
    target = Path(path)
    target.write_text(render_header(inputs, outputs, model_name or target.stem))
    return target
