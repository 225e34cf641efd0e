"""The AOT artifact: object code + C runtime + weights -> ``model.so`` (+ ``model.h``, ``.bin``).

``build_library`` is the one call the build pipeline makes; the pieces (``link``, ``weights``,
``header``) are public for tests and tools.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .header import TensorSpec, write_header
from .link import (
    ArtifactError,
    TargetSpec,
    compile_c,
    link_shared_library,
    runtime_object,
    toolchain_for,
)
from .weights import (
    fnv1a64,
    pack_weights,
    weights_assembly,
    weights_path_for,
    write_weights_file,
)

__all__ = [
    "ArtifactError", "BuiltLibrary", "TensorSpec", "build_library", "fnv1a64", "pack_weights",
    "toolchain_for", "weights_path_for", "write_header",
]


@dataclass(frozen=True)
class BuiltLibrary:
    library: Path
    header: Path
    weights_file: Path | None


def build_library(
    object_code: bytes,
    library: str | os.PathLike[str],
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    weights: bytes = b"",
    external_weights: bool = False,
    target: TargetSpec = "host",
) -> BuiltLibrary:
    """Build ``library`` (``model.so``) and ``model.h`` beside it.

    ``object_code``: the model's object file (defines ``kiln__model``); ``weights``: the packed
    blob. Embedded weights become the symbol ``kiln__weights`` inside the library; external ones
    go to the ``.bin`` beside it (``weights_path_for``), whose checksum must be the one the
    descriptor holds (``fnv1a64(weights)``). ``inputs``/``outputs`` name the tensors for the
    header: ``(name, dtype, shape)``.
    """
    library = Path(library)
    with tempfile.TemporaryDirectory(prefix="kiln-artifact-") as work:
        folder = Path(work)
        model_object = folder / "model.o"
        model_object.write_bytes(object_code)
        objects = [model_object, runtime_object(target)]
        if not external_weights:
            (folder / "weights.bin").write_bytes(weights)
            source = folder / "weights.s"
            source.write_text(weights_assembly("weights.bin"))
            objects.append(compile_c(source, folder / "weights.o", target, flags=()))
        link_shared_library(objects, library, target)
    weights_file = None
    if external_weights:
        weights_file = write_weights_file(weights_path_for(library), weights)
    header = write_header(library.with_suffix(".h"), inputs, outputs)
    return BuiltLibrary(library, header, weights_file)
