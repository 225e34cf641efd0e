"""The fixture model of the runtime tests: fixture_model.c (a hand-written stand-in for generated
code) built into a library through the real artifact pipeline (``build_library``), plus the
feeds and expected results the tests share."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiln.compiler.artifact import build_library, fnv1a64, pack_weights
from kiln.compiler.artifact.link import include_dir

HERE = Path(__file__).resolve().parent
N = 4099
# kiln_runtime.c's KILN_CHUNKS_PER_THREAD: a parallel loop is split into this many chunks per
# thread (claimed dynamically); one thread runs the loop whole.
CHUNKS_PER_THREAD = 4


def expected_chunks(threads: int, n: int = N) -> int:
    return 1 if threads == 1 else min(n, threads * CHUNKS_PER_THREAD)
WEIGHTS = (np.arange(N, dtype=np.float32) * 0.5 - 7.0).astype(np.float32)
INPUTS = [("x", "f32", (N,)), ("idx", "i64", ()), ("delay_ms", "i32", ()), ("h", "bf16", (3,))]
OUTPUTS = [("out", "f32", (N,)), ("sel", "f32", ()), ("chunks", "i32", ()),
           ("nested", "i32", ()), ("h2", "bf16", (3,))]


@dataclass(frozen=True)
class Fixture:
    library: Path
    external: bool
    blob: bytes = field(repr=False)


def compile_fixture(out: Path, defines: list[str], compiler: str = "cc") -> bytes:
    """Object code of fixture_model.c, as the codegen would hand it to build_library."""
    subprocess.run(
        [compiler, "-O2", "-fPIC", "-Wall", "-Wextra", "-Werror", f"-I{include_dir()}", *defines,
         "-c", str(HERE / "fixture_model.c"), "-o", str(out)],
        check=True, capture_output=True, text=True)
    return out.read_bytes()


def build_fixture(folder: Path, external: bool) -> Fixture:
    folder.mkdir(parents=True, exist_ok=True)
    blob, offsets = pack_weights([WEIGHTS])
    assert offsets == [0]
    defines = ["-DKILN_TEST_EXTERNAL", f"-DKILN_TEST_CHECKSUM={fnv1a64(blob):#x}ULL"] \
        if external else []
    code = compile_fixture(folder / "fixture.o", defines)
    built = build_library(code, folder / "model.so", inputs=INPUTS, outputs=OUTPUTS,
                          weights=blob, external_weights=external)
    return Fixture(built.library, external, blob)


def feeds(x: np.ndarray | None = None, idx: int = 5, delay_ms: int = 0) -> dict[str, np.ndarray]:
    if x is None:
        x = np.linspace(-3, 3, N, dtype=np.float32)
    return {"x": x, "idx": np.array(idx, np.int64), "delay_ms": np.array(delay_ms, np.int32),
            "h": np.array([0x3F80, 0x4000, 0xC040], np.uint16)}


def expected_out(x: np.ndarray) -> np.ndarray:
    return 2 * x + WEIGHTS
