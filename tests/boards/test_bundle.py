"""Static bundles (``kiln compile --static``, ``build_bundle``) on the host and under qemu-user.

For the host and each cross target (AArch64, ARMv7 hard float, RISC-V 64): the digits model
(external weights through the CLI, embedded ones through ``build_bundle``) and a ResNet-style
CNN are bundled, linked statically with examples/boards/run_bundle.c, run (cross targets under
qemu) and compared with the reference executor; the object's symbols are checked (only the API
is global, and nothing but libm, memcpy/memset/memmove and libgcc's helpers is undefined); the
API's argument checks (misaligned weights or arena, missing buffers, a damaged weights blob)
run in tests/boards/bundle_errors.c. Host only: a kernel's run-time failure, two bundles with
--prefix in one program, the header's macros, and the CLI's usage errors.

Tolerance, float32: ``rtol=1e-4, atol=1e-5`` (the suite's compiled-vs-reference bound: the
kernels sum in another order than numpy and use Kiln's vectorized math functions).
Cross targets skip, naming the missing program and its Debian package, without the cross gcc,
its binutils or qemu-user. The ResNet-style runs under qemu are marked slow (5 to 7 s each).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from boardcheck import (
    BOARD_TARGETS,
    cross_compile,
    kiln_compile,
    read_raw,
    require_tool,
    require_toolchain,
    run_on_board,
    write_raw,
)

from kiln.compiler import build, build_bundle, reference
from kiln.compiler.cli import main as kiln_main
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.frontends.onnx import load_onnx
from kiln.runtime import abi

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"
RUN_BUNDLE_C = ROOT / "examples" / "boards" / "run_bundle.c"
ERRORS_C = Path(__file__).with_name("bundle_errors.c")
TARGETS = ("host", *BOARD_TARGETS)
COMPILED_VS_REFERENCE = {"rtol": 1e-4, "atol": 1e-5}
API = {f"kiln_bundle_{name}" for name in (
    "arena_bytes", "weights_bytes", "weights_embedded", "num_inputs", "num_outputs",
    "input_info", "output_info", "check_weights", "run", "last_error")}
STRING_FUNCTIONS = {"memcpy", "memset", "memmove"}


# --- toolchain: the host's cc, or a board's cross gcc and qemu ------------------------------

def _host_cc() -> str:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) on PATH (apt-get install gcc)")
    return "cc"


def _gcc(target: str) -> str:
    return _host_cc() if target == "host" else require_toolchain(target).gcc


def _nm(target: str) -> str:
    if target == "host":
        if shutil.which("nm") is None:
            pytest.skip("nm not found on PATH (apt-get install binutils)")
        return "nm"
    return require_tool(target, "nm")


def _link(target: str, sources: Sequence[Path], include: Path, output: Path) -> Path:
    """A static executable of C sources and objects, ``include`` on the include path."""
    flags = [f"-I{include}", "-lm", "-static"]
    if target != "host":
        return cross_compile(target, sources, output, flags)
    command = [_host_cc(), "-O2", *map(str, sources), "-o", str(output), *flags]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr}{done.stdout}"
    return output


def _execute(target: str, argv: Sequence[str | Path],
             cwd: Path) -> subprocess.CompletedProcess[str]:
    if target == "host":
        return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd)
    return run_on_board(target, argv, cwd)


def _symbols(target: str, obj: Path, *options: str) -> set[str]:
    done = subprocess.run([_nm(target), "--format=posix", *options, str(obj)],
                          capture_output=True, text=True, check=True)
    return {line.split()[0].split("@")[0] for line in done.stdout.splitlines() if line.strip()}


def _allowed_undefined(target: str) -> set[str]:
    """What a bundle may leave to the final link: the target's libm (its exported names),
    memcpy/memset/memmove and libgcc's helpers (e.g. __aeabi_ldivmod on ARM)."""
    gcc = _gcc(target)

    def path_of(option: str) -> Path:
        return Path(subprocess.run([gcc, option], capture_output=True, text=True,
                                   check=True).stdout.strip())

    libm = _symbols(target, path_of("-print-file-name=libm.so.6"), "-D", "--defined-only")
    libgcc = _symbols(target, path_of("-print-libgcc-file-name"), "-g", "--defined-only")
    return libm | libgcc | STRING_FUNCTIONS


# --- models -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A model to bundle: its graph (or file, for the CLI), input shape and one input."""

    name: str
    path: Path
    graph: Graph
    image: np.ndarray


@pytest.fixture(scope="session")
def digits() -> Case:
    image = np.load(DIGITS / "digits_test.npz")["images"][3:4]
    path = DIGITS / "digits_cnn.onnx"
    return Case("digits", path, load_onnx(path), image)


@pytest.fixture(scope="session")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """The zoo's ResNet-style CNN at batch 1, exported once per session."""
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    from zoo import resnet_style_cnn

    exported = resnet_style_cnn("torchscript", tmp_path_factory.mktemp("resnet"), batch=1)
    return Case("resnet", exported.path, load_onnx(exported.path), exported.inputs["image"])


def _bundle(case: Case, folder: Path, target: str, weights: str, via_cli: bool) -> Path:
    """Compile ``case`` into ``folder``/model.o; returns the object."""
    output = folder / "model.o"
    shape = ",".join(map(str, case.image.shape))
    if target != "host":
        require_toolchain(target)
    if via_cli:
        kiln_compile(case.path, output, target, "--static", "--weights", weights,
                     "--input-shape", f"image={shape}")
    else:
        build_bundle(case.graph, output, target=target, input_shapes={"image": case.image.shape},
                     weights=weights)
    assert (folder / "model.h").is_file()
    assert (folder / "model.weights.bin").is_file() == (weights == "external")
    return output


def _run_bundle(case: Case, folder: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """run_bundle linked with folder/model.o, run on the case's image: its logits and the
    reference executor's."""
    program = _link(target, [RUN_BUNDLE_C, folder / "model.o"], folder, folder / "run_bundle")
    write_raw(folder / "in.raw", case.image)
    weights = ["model.weights.bin"] if (folder / "model.weights.bin").exists() else []
    done = _execute(target, [program, *weights, "in.raw", "out.raw"], folder)
    assert done.returncode == 0, done.stderr
    shape = ",".join(map(str, case.image.shape))
    assert f"input image dtype=3 shape=[{shape}]" in done.stdout  # 3: KILN_F32
    expected = reference.run(case.graph, {"image": case.image})[0]
    assert (f"output logits dtype=3 shape=[{','.join(map(str, expected.shape))}]"
            in done.stdout)
    return read_raw(folder / "out.raw", np.float32, expected.shape), expected


def _check_symbols(target: str, obj: Path) -> None:
    assert _symbols(target, obj, "-g", "--defined-only") == API
    undefined = _symbols(target, obj, "-u")
    assert undefined <= _allowed_undefined(target), undefined - _allowed_undefined(target)


# --- per target -------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", ["external", "embed"])
@pytest.mark.parametrize("target", TARGETS)
def test_digits_bundle_matches_the_reference(digits: Case, tmp_path: Path, target: str,
                                             weights: str) -> None:
    # the CLI writes the external-weights bundle, build_bundle the embedded one
    obj = _bundle(digits, tmp_path, target, weights, via_cli=weights == "external")
    got, expected = _run_bundle(digits, tmp_path, target)
    np.testing.assert_allclose(got, expected, **COMPILED_VS_REFERENCE)
    _check_symbols(target, obj)


@pytest.mark.parametrize("target", [
    pytest.param(t, marks=() if t == "host" else pytest.mark.slow) for t in TARGETS])
def test_resnet_bundle_matches_the_reference(resnet: Case, tmp_path: Path, target: str) -> None:
    obj = _bundle(resnet, tmp_path, target, "external", via_cli=False)
    got, expected = _run_bundle(resnet, tmp_path, target)
    np.testing.assert_allclose(got, expected, **COMPILED_VS_REFERENCE)
    _check_symbols(target, obj)


@pytest.mark.parametrize("target", TARGETS)
def test_bundle_checks_its_arguments(digits: Case, tmp_path: Path, target: str) -> None:
    _bundle(digits, tmp_path, target, "external", via_cli=False)
    program = _link(target, [ERRORS_C, tmp_path / "model.o"], tmp_path, tmp_path / "errors")
    done = _execute(target, [program, "model.weights.bin"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines.pop("sizes") == "1 1 1 1"  # the header's macros agree with the queries
    ok, invalid = f"{int(abi.Status.OK)} ", f"{int(abi.Status.INVALID_ARGUMENT)} "
    assert lines == {
        "check": ok,
        "check_damaged": f"{int(abi.Status.WEIGHTS)} kiln_bundle_check_weights: the weights' "
                         "checksum differs from the one this model was compiled with (another "
                         "build's weights, or damaged)",
        "run": ok,
        "run_null_weights": invalid + "kiln_bundle_run: weights is NULL, but this bundle was "
                            "compiled with external weights: pass the contents of its "
                            ".weights.bin",
        "run_misaligned_weights": invalid + "kiln_bundle_run: weights is not 64-byte aligned "
                                  "(KILN_BUNDLE_ALIGNMENT)",
        "run_misaligned_arena": invalid + "kiln_bundle_run: arena is not 64-byte aligned "
                                "(KILN_BUNDLE_ALIGNMENT)",
        "run_null_arena": invalid + "kiln_bundle_run: arena is NULL (it needs "
                          "KILN_MODEL_ARENA_BYTES bytes)",
        "run_null_inputs": invalid + "kiln_bundle_run: inputs is NULL",
        "run_null_output": invalid + "kiln_bundle_run: output 0 ('logits') is NULL",
        "input_info_range": invalid + "kiln_bundle_input_info: index 5 out of range (the model "
                            "has 1)",
        "output_info_null": invalid + "kiln_bundle_output_info: info is NULL",
        "run_again": ok,
    }


# --- host only --------------------------------------------------------------------------------

def test_bundle_files_and_sizes_match_the_library_build(digits: Case, tmp_path: Path) -> None:
    bundle = build_bundle(digits.graph, tmp_path / "b" / "model.o",
                          input_shapes={"image": (1, 1, 8, 8)})
    library = build(digits.graph, input_shapes={"image": (1, 1, 8, 8)}, weights="external")
    exported = library.export(tmp_path / "lib" / "model.so")
    assert bundle.object == tmp_path / "b" / "model.o"
    assert bundle.header == tmp_path / "b" / "model.h"
    assert bundle.weights == tmp_path / "b" / "model.weights.bin"
    assert bundle.arena_bytes == library.stats.arena_bytes
    assert bundle.weights_bytes == library.stats.weights_bytes
    # the raw blob is the library's weights file without its 64-byte header
    blob = exported.with_suffix(".bin").read_bytes()[abi.WEIGHTS_HEADER_BYTES:]
    assert bundle.weights.read_bytes() == blob
    header = bundle.header.read_text()
    assert f"#define KILN_MODEL_ARENA_BYTES {library.stats.arena_bytes}LL" in header
    assert f"#define KILN_MODEL_WEIGHTS_BYTES {len(blob)}LL" in header
    assert "#define KILN_MODEL_WEIGHTS_EMBEDDED 0" in header
    # 256 input bytes and 40 output bytes, each rounded up to 64
    assert "#define KILN_MODEL_IO_BYTES 320LL" in header
    assert "#define KILN_INPUT_IMAGE_SHAPE {1, 1, 8, 8}" in header


def test_model_header_stands_alone(digits: Case, tmp_path: Path) -> None:
    build_bundle(digits.graph, tmp_path / "model.o", input_shapes={"image": (1, 1, 8, 8)})
    (tmp_path / "main.c").write_text(
        '#include "model.h"\n#include "model.h"\n'
        "_Static_assert(KILN_NUM_INPUTS == 1 && KILN_NUM_OUTPUTS == 1, \"counts\");\n"
        "_Static_assert(KILN_BUNDLE_ALIGNMENT == 64, \"alignment\");\n"
        "int main(void) { return kiln_bundle_run(0, 0, 0, 0) == KILN_OK; }\n")
    done = subprocess.run([_host_cc(), "-std=c11", "-Wall", "-Werror", "-c", "main.c"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _gather_graph() -> Graph:
    builder = GraphBuilder()
    table = builder.add_input("table", TensorType(DType.F32, (4, 3)))
    index = builder.add_input("index", TensorType(DType.I64, (2,)))
    return builder.finish([builder.add1(Op.GATHER, [table, index], {"axis": 0})])


def test_a_kernel_failure_is_reported_and_a_good_run_follows(tmp_path: Path) -> None:
    graph = _gather_graph()
    build_bundle(graph, tmp_path / "model.o", weights="embed")
    program = _link("host", [RUN_BUNDLE_C, tmp_path / "model.o"], tmp_path,
                    tmp_path / "run_bundle")
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_raw(tmp_path / "table.raw", table)
    write_raw(tmp_path / "bad.raw", np.array([1, 7], np.int64))
    done = _execute("host", [program, "table.raw", "bad.raw", "out.raw"], tmp_path)
    assert done.returncode == 1
    assert re.fullmatch(r"run_bundle: run: kiln_bundle_run: gather.*index is out of range "
                        r"\[-4, 4\)\n", done.stderr), done.stderr
    write_raw(tmp_path / "good.raw", np.array([3, -4], np.int64))
    done = _execute("host", [program, "table.raw", "good.raw", "out.raw"], tmp_path)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read_raw(tmp_path / "out.raw", np.float32, (2, 3)),
                                  table[[3, 0]])


def test_prefix_lets_two_bundles_share_a_program(digits: Case, tmp_path: Path) -> None:
    shapes = {"image": (1, 1, 8, 8)}
    for prefix, weights in (("first", "embed"), ("second", "external")):
        build_bundle(digits.graph, tmp_path / f"{prefix}.o", input_shapes=shapes,
                     weights=weights, prefix=prefix)
        assert _symbols("host", tmp_path / f"{prefix}.o", "-g", "--defined-only") == {
            name.replace("kiln_bundle", prefix) for name in API}
    (tmp_path / "two.c").write_text("""
#include <stdio.h>
#include <string.h>
#include "first.h"
#include "second.h"
#define ALIGNED __attribute__((aligned(64)))
static unsigned char arena[FIRST_MODEL_ARENA_BYTES + SECOND_MODEL_ARENA_BYTES] ALIGNED;
static unsigned char weights[SECOND_MODEL_WEIGHTS_BYTES] ALIGNED;
static float image[FIRST_INPUT_IMAGE_NUMEL];
static float a[FIRST_OUTPUT_LOGITS_NUMEL], b[SECOND_OUTPUT_LOGITS_NUMEL];
int main(void) {
    FILE *f = fopen("second.weights.bin", "rb");
    if (!f || fread(weights, 1, sizeof weights, f) != sizeof weights) return 2;
    f = fopen("in.raw", "rb");
    if (!f || fread(image, 1, sizeof image, f) != sizeof image) return 2;
    const void *in[] = {image};
    void *out_a[] = {a}, *out_b[] = {b};
    if (first_run(NULL, arena, in, out_a) != KILN_OK) return 3;
    if (second_run(weights, arena + FIRST_MODEL_ARENA_BYTES, in, out_b) != KILN_OK) return 4;
    return memcmp(a, b, sizeof a) != 0;
}
""")
    write_raw(tmp_path / "in.raw", digits.image)
    program = _link("host", [tmp_path / "two.c", tmp_path / "first.o", tmp_path / "second.o"],
                    tmp_path, tmp_path / "two")
    done = _execute("host", [program], tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("options", "message"), [
    (["--static", "--profile"], "a static bundle (--static) cannot be a profiling build"),
    (["--prefix", "m"], "--prefix names a static bundle's API: it needs --static"),
    (["--static", "--prefix", "9m"], "bundle prefix '9m' is not a C identifier"),
])
def test_cli_static_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 options: list[str], message: str) -> None:
    status = kiln_main(["compile", str(DIGITS / "digits_cnn.onnx"), "--input-shape",
                        "image=1,1,8,8", "-o", str(tmp_path / "model.o"), *options])
    assert status == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
