"""The model library from C: a program built with the system compiler links the fixture model
through its generated model.h; plus the exported symbols, the stack flags and the warning-free
build of the C runtime."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from runtime_fixture import HERE, WEIGHTS, Fixture, N, expected_chunks

from kiln.compiler.artifact.link import RUNTIME_CFLAGS, include_dir, runtime_source_dir
from kiln.runtime.abi import ABI_VERSION, EXPORTED_SYMBOLS, Status


@pytest.fixture(scope="module")
def c_results(embedded: Fixture, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = embedded.library.parent
    program = tmp_path_factory.mktemp("c") / "abi_main"
    subprocess.run(
        ["cc", "-O1", "-Wall", "-Wextra", "-Werror", "-pthread", f"-I{folder}",
         str(HERE / "abi_main.c"), str(embedded.library), f"-Wl,-rpath,{folder}", "-o",
         str(program)],
        check=True, capture_output=True, text=True)
    done = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def _status(results: dict[str, str], key: str) -> tuple[Status, str]:
    code, _, message = results[key].partition(" ")
    return Status(int(code)), message


def test_c_program_queries_the_model(c_results: dict[str, str]) -> None:
    assert c_results["abi"] == f"{ABI_VERSION} {ABI_VERSION}"
    assert c_results["counts"] == "4 5 4 5"
    assert [c_results[f"input{i}"] for i in range(4)] == ["x 3 1", "idx 8 0", "delay_ms 7 0",
                                                            "h 2 1"]
    assert c_results["output0"] == f"out 3 {N} out"
    assert c_results["macros"] == f"{N} {4 * N} 2 6"


def test_c_program_runs_the_model(c_results: dict[str, str]) -> None:
    assert _status(c_results, "create") == (Status.OK, "")
    assert _status(c_results, "run") == (Status.OK, "")
    total, sel, chunks, nested, h2 = c_results["results"].split()
    x = [i * 0.25 for i in range(N)]
    assert float(total) == pytest.approx(sum(2 * v for v in x) + float(WEIGHTS.sum()), rel=1e-6)
    assert (float(sel), int(h2)) == (1.75, 0xC040)
    assert int(chunks) == int(nested) == expected_chunks(3)
    assert _status(c_results, "run_again") == (Status.OK, "")
    # A success leaves the last failure's message in place (errno-like).
    assert c_results["last_error_kept"] == "kiln_run: gather: index out of range"
    assert c_results["threads"] == f"0 0 {2 * 10 + WEIGHTS[10]:.1f} {2 * 20 + WEIGHTS[10]:.1f}"


@pytest.mark.parametrize(("key", "status", "message"), [
    ("info_bad_index", Status.INVALID_ARGUMENT,
     "kiln_input_info: index 99 out of range (the model has 4 inputs)"),
    ("info_negative", Status.INVALID_ARGUMENT,
     "kiln_output_info: index -1 out of range (the model has 5 outputs)"),
    ("info_null", Status.INVALID_ARGUMENT, "kiln_input_info: info is NULL"),
    ("create_null", Status.INVALID_ARGUMENT, "kiln_create: out is NULL"),
    ("create_too_many", Status.INVALID_ARGUMENT, "kiln_create: num_threads 1048576 exceeds 1024"),
    ("run_null_instance", Status.INVALID_ARGUMENT, "kiln_run: instance is NULL"),
    ("run_null_inputs", Status.INVALID_ARGUMENT, "kiln_run: inputs is NULL"),
    ("run_null_outputs", Status.INVALID_ARGUMENT, "kiln_run: outputs is NULL"),
    ("run_null_input", Status.INVALID_ARGUMENT, "kiln_run: input 1 ('idx') is NULL"),
    ("run_bad_index", Status.RUNTIME, "kiln_run: gather: index out of range"),
])
def test_c_error_codes_and_messages(c_results: dict[str, str], key: str, status: Status,
                                    message: str) -> None:
    assert _status(c_results, key) == (status, message)


def test_only_the_abi_is_exported(embedded: Fixture) -> None:
    listed = subprocess.run(["nm", "-D", "--defined-only", str(embedded.library)],
                            capture_output=True, text=True, check=True).stdout
    assert sorted(line.split()[-1] for line in listed.splitlines()) == sorted(EXPORTED_SYMBOLS)


def test_library_stack_is_not_executable(embedded: Fixture) -> None:
    headers = subprocess.run(["readelf", "-lW", str(embedded.library)], capture_output=True,
                             text=True, check=True).stdout
    (stack,) = [line for line in headers.splitlines() if "GNU_STACK" in line]
    assert stack.split()[-2] == "RW"


def test_runtime_compiles_without_warnings(tmp_path: Path) -> None:
    source = runtime_source_dir() / "c" / "kiln_runtime.c"
    done = subprocess.run(
        ["cc", *RUNTIME_CFLAGS, "-Werror", "-Wshadow", "-Wconversion", "-Wno-sign-conversion",
         f"-I{include_dir()}", "-c", str(source), "-o", str(tmp_path / "runtime.o")],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
