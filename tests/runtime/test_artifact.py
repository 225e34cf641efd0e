"""The artifact builder's pieces: weights layout and checksum, weights file and assembly,
toolchain selection and its errors, the runtime object cache, the header and link errors."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from runtime_fixture import INPUTS, OUTPUTS, compile_fixture

from kiln.compiler.artifact import ArtifactError, build_library, fnv1a64, pack_weights
from kiln.compiler.artifact.header import c_identifier, c_string, render_header
from kiln.compiler.artifact.link import runtime_object, toolchain_for, version_script
from kiln.compiler.artifact.weights import (
    weights_assembly,
    weights_file_header,
    weights_path_for,
)
from kiln.compiler.errors import KilnError
from kiln.runtime import abi


def _fnv_reference(data: bytes) -> int:
    value = abi.FNV64_OFFSET
    for byte in data:
        value = ((value ^ byte) * abi.FNV64_PRIME) % 2**64
    return value


def test_pack_weights_aligns_every_array() -> None:
    arrays = [np.arange(3, dtype=np.float32), np.ones((2, 5), np.int64),
              np.array(True), np.zeros(0, np.float64), np.arange(40, dtype=np.uint8)[::2]]
    blob, offsets = pack_weights(arrays)
    assert offsets == [0, 64, 192, 256, 256]
    assert len(blob) == 320
    for array, offset in zip(arrays, offsets, strict=True):
        data = np.ascontiguousarray(array).tobytes()
        assert blob[offset:offset + len(data)] == data
    assert pack_weights([]) == (b"", [])


@pytest.mark.parametrize(("data", "expected"), [
    (b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8),
])
def test_fnv1a64_known_values(data: bytes, expected: int) -> None:
    assert fnv1a64(data) == expected


def test_fnv1a64_matches_the_definition() -> None:
    data = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert fnv1a64(data) == _fnv_reference(data)


def test_weights_file_header_layout() -> None:
    header = weights_file_header(b"abc")
    assert len(header) == abi.WEIGHTS_HEADER_BYTES
    assert header[:8] == b"KILNWTS1"
    assert struct.unpack("<QQ", header[8:24]) == (3, _fnv_reference(b"abc"))
    assert header[24:] == bytes(40)
    assert weights_path_for("/a/model.so") == Path("/a/model.bin")
    assert weights_path_for("/a/model") == Path("/a/model.bin")


def test_weights_assembly_defines_the_symbol(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(bytes(range(100)))
    (tmp_path / "w.s").write_text(weights_assembly("weights.bin"))
    subprocess.run(["cc", "-c", "w.s", "-o", "w.o"], cwd=tmp_path, check=True)
    symbols = subprocess.run(["nm", "-S", str(tmp_path / "w.o")], capture_output=True,
                             text=True, check=True).stdout.split()
    assert symbols[-3:] == ["0000000000000064", "R", abi.WEIGHTS_SYMBOL]
    with pytest.raises(ValueError, match="unsafe file name"):
        weights_assembly('a"b')


def test_toolchains() -> None:
    assert toolchain_for("host").compiler == os.environ.get("KILN_CC", "cc")
    assert toolchain_for("aarch64-unknown-linux-gnu").compiler == "aarch64-linux-gnu-gcc"
    assert toolchain_for("armv7-linux-gnueabihf").compiler == "arm-linux-gnueabihf-gcc"
    assert toolchain_for("riscv64-linux-gnu").apt_package == "gcc-riscv64-linux-gnu"
    with pytest.raises(ArtifactError, match="no C toolchain known for target architecture 'mips'"):
        toolchain_for("mips-linux-gnu")


def test_missing_cross_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KilnError, match=r"'aarch64-linux-gnu-gcc' for target architecture "
                                        r"aarch64 was not found on PATH \(on Debian/Ubuntu: "
                                        r"apt-get install gcc-aarch64-linux-gnu\)"):
        runtime_object("aarch64-linux-gnu")


def test_runtime_object_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    first = runtime_object("host")
    assert first.parent == tmp_path / "runtime"
    stamp = first.stat().st_mtime_ns
    assert runtime_object("host") == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "runtime").iterdir()] == [first.name]


def test_version_script_lists_exactly_the_abi() -> None:
    script = version_script()
    assert all(f"    {name};" in script for name in abi.EXPORTED_SYMBOLS)
    assert "local:\n    *;" in script and "kiln__" not in script


def test_header_names_are_sanitized_and_compile(tmp_path: Path) -> None:
    assert c_identifier("input:0") == "INPUT_0" and c_identifier("1st") == "_1ST"
    assert c_string('a"b\\c?é') == r'"a\"b\\c\077\303\251"'
    text = render_header([("a.b", "f32", (2, 3)), ("a-b", "bool", ()), ("1st", abi.DTYPE_CODES
                                                                         ["i8"], (4,))],
                         [("y */ z", "bf16", (1,))], model_name="my-model")
    assert "#define KILN_INPUT_A_B 0" in text and "#define KILN_INPUT_A_B_1 1" in text
    assert "#define KILN_INPUT_A_B_SHAPE {2, 3}" in text
    assert "#define KILN_INPUT__1ST_DTYPE KILN_I8" in text
    assert "KILN_INPUT_A_B_1_SHAPE" not in text  # scalars have no shape initializer
    assert "#define KILN_OUTPUT_Y____Z_BYTES 2LL" in text
    assert "#ifndef KILN_MODEL_MY_MODEL_H" in text
    (tmp_path / "m.h").write_text(text)
    (tmp_path / "m.c").write_text('#include "m.h"\n#include "m.h"\n'
                                  "static const int64_t s[] = KILN_INPUT_A_B_SHAPE;\n"
                                  "int main(void) { return (int)s[0] + KILN_NUM_OUTPUTS; }\n")
    subprocess.run(["cc", "-Wall", "-Werror", "-fsyntax-only", "m.c"], cwd=tmp_path, check=True)


def test_link_failure_names_the_missing_symbol(tmp_path: Path) -> None:
    (tmp_path / "empty.c").write_text("int unrelated = 1;\n")
    subprocess.run(["cc", "-fPIC", "-c", "empty.c", "-o", "empty.o"], cwd=tmp_path, check=True)
    missing = "(?s)linking model.so failed.*undefined reference to `kiln__model"
    with pytest.raises(ArtifactError, match=missing):
        build_library((tmp_path / "empty.o").read_bytes(), tmp_path / "model.so", inputs=[],
                      outputs=[])
    assert not (tmp_path / "model.so").exists()


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="aarch64 cross compiler not installed")
def test_cross_build_for_aarch64(tmp_path: Path) -> None:
    code = compile_fixture(tmp_path / "fixture.o", [], compiler="aarch64-linux-gnu-gcc")
    built = build_library(code, tmp_path / "model.so", inputs=INPUTS, outputs=OUTPUTS,
                          weights=pack_weights([np.zeros(4099, np.float32)])[0],
                          target="aarch64-unknown-linux-gnu")
    described = subprocess.run(["file", str(built.library)], capture_output=True, text=True)
    assert "aarch64" in described.stdout.lower() or "ARM aarch64" in described.stdout
