"""The runtime's profiling on profile_fixture.c, a hand-written profiling build (three kernel
calls: a sleep, a parallel loop that makes a pool worker take part, one timed any number of
times): counters, run totals, trace events from every thread, the bounded trace ring, reset,
the Python API and the C ABI (profile_abi.c) with its error codes; the same model without
profiling, and an ABI version 1 library (before profiling), report profiling disabled."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from runtime_fixture import HERE

from kiln.compiler.artifact import build_library
from kiln.compiler.artifact.link import include_dir
from kiln.runtime import KernelInfo, KilnRuntimeError, load
from kiln.runtime.abi import PROFILE_TRACE_EVENTS, Status

INPUTS = [("delay_us", "i32", ()), ("wait_for", "i32", ()), ("repeats", "i32", ())]
OUTPUTS = [("chunks", "i32", ())]
# The fixture's table (profile_fixture.c), as the ABI must hand it back.
KERNELS = [
    KernelInfo(0, "k0_sleep", ("sleep_a", "sleep_b"), 1000, 64),
    KernelInfo(1, "k1_parallel", ("spread",), 123456789012, 4096),
    KernelInfo(2, "k2_repeat", (), 0, 0),
]
DELAY_US = 3000


def _build(folder: Path, defines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["cc", "-O2", "-fPIC", "-Wall", "-Wextra", "-Werror", f"-I{include_dir()}", *defines,
         "-c", str(HERE / "profile_fixture.c"), "-o", str(folder / "fixture.o")],
        check=True, capture_output=True, text=True)
    code = (folder / "fixture.o").read_bytes()
    return build_library(code, folder / "model.so", inputs=INPUTS, outputs=OUTPUTS).library


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("profiled"), [])


@pytest.fixture(scope="module")
def unprofiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("unprofiled"), ["-DKILN_TEST_NO_PROFILE"])


def feeds(delay_us: int = 0, wait_for: int = 0, repeats: int = 0) -> dict[str, np.ndarray]:
    return {"delay_us": np.array(delay_us, np.int32), "wait_for": np.array(wait_for, np.int32),
            "repeats": np.array(repeats, np.int32)}


def test_kernel_table(profiled: Path) -> None:
    with load(profiled, threads=1) as model:
        assert model.profiling
        assert model.kernel_info() == KERNELS


@pytest.mark.parametrize("threads", [1, 2])
def test_counters_and_trace(profiled: Path, threads: int) -> None:
    runs = 4
    with load(profiled, threads=threads) as model:
        for _ in range(runs):
            chunks = model.run(feeds(delay_us=DELAY_US, wait_for=threads, repeats=1))[0]
            assert int(chunks) == (1 if threads == 1 else 4 * threads)
        counters = model.profile()
        events = model.trace_events()
    assert counters.runs == runs
    assert [(k.index, k.name, k.flops, k.calls) for k in counters.kernels] == \
        [(k.index, k.name, k.flops, runs) for k in KERNELS]
    sleep = counters.kernels[0]
    assert sleep.total_ns >= runs * DELAY_US * 1000
    assert sleep.mean_ns == sleep.total_ns / runs
    assert counters.kernel_ns == sum(k.total_ns for k in counters.kernels) <= counters.run_ns

    # thread 0 records every kernel call whole, in plan order
    spans = [e for e in events if e.thread == 0]
    assert [e.kernel for e in spans] == [0, 1, 2] * runs
    assert all(e.begin_ns <= e.end_ns for e in events)
    assert all(a.end_ns <= b.begin_ns for a, b in zip(spans, spans[1:], strict=False))
    per_kernel = [sum(e.end_ns - e.begin_ns for e in spans if e.kernel == k) for k in range(3)]
    assert per_kernel == [k.total_ns for k in counters.kernels]
    # the pool worker's chunks belong to kernel 1 and lie within one of its calls
    workers = [e for e in events if e.thread != 0]
    assert {e.thread for e in workers} == set(range(1, threads))
    parallel = [e for e in spans if e.kernel == 1]
    for event in workers:
        assert event.kernel == 1
        assert any(p.begin_ns <= event.begin_ns <= event.end_ns <= p.end_ns for p in parallel)


def test_reset(profiled: Path) -> None:
    with load(profiled, threads=2) as model:
        model.run(feeds(wait_for=2, repeats=3))
        assert model.profile().kernels[2].calls == 3
        model.reset_profile()
        counters = model.profile()
        assert (counters.runs, counters.run_ns) == (0, 0)
        assert all((k.calls, k.total_ns) == (0, 0) for k in counters.kernels)
        assert model.trace_events() == []
        model.run(feeds())
        assert [k.calls for k in model.profile().kernels] == [1, 1, 0]
    with pytest.raises(KilnRuntimeError, match="is closed"):
        model.profile()


def test_trace_ring_keeps_the_newest_events(profiled: Path) -> None:
    extra = 1000
    repeats = PROFILE_TRACE_EVENTS + extra
    with load(profiled, threads=1) as model:
        model.run(feeds(repeats=repeats))
        events = model.trace_events()
        assert model.profile().kernels[2].calls == repeats
    # recorded: kernel 0, kernel 1, then `repeats` of kernel 2; the oldest overflow is dropped
    assert len(events) == PROFILE_TRACE_EVENTS
    assert {e.kernel for e in events} == {2}
    assert all(a.end_ns <= b.begin_ns for a, b in zip(events, events[1:], strict=False))


def test_queries_wait_for_a_running_instance(profiled: Path) -> None:
    with load(profiled, threads=1) as model:
        worker = threading.Thread(target=model.run, args=(feeds(delay_us=300_000),))
        worker.start()
        try:
            while model.profile().kernels[0].calls == 0 and worker.is_alive():
                pass
        except KilnRuntimeError as error:
            assert error.status is Status.BUSY
            assert "the instance is running on another thread" in str(error)
        else:
            pytest.fail("a query during a run must report BUSY")
        worker.join()
        assert model.profile().kernels[0].calls == 1


def test_unprofiled_model_reports_profiling_disabled(unprofiled: Path) -> None:
    with load(unprofiled, threads=2) as model:
        assert int(model.run(feeds(wait_for=2))[0]) == 8
        assert not model.profiling
        assert model.kernel_info() == []
        for query in (model.profile, model.trace_events, model.reset_profile):
            with pytest.raises(KilnRuntimeError, match="compiled without profiling") as error:
                query()
            assert error.value.status is Status.NOT_PROFILED


def _c_program(library: Path, folder: Path, threads: int, runs: int) -> list[list[str]]:
    """profile_abi.c's output lines: [key, rest], or a kernel line's tab-separated fields."""
    program = folder / "profile_abi"
    subprocess.run(
        ["cc", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{include_dir()}",
         str(HERE / "profile_abi.c"), str(library), f"-Wl,-rpath,{library.parent}", "-o",
         str(program)],
        check=True, capture_output=True, text=True)
    done = subprocess.run([str(program), str(threads), str(runs)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") if line.startswith("kernel ") else line.split(" ", 1)
            for line in done.stdout.splitlines()]


def _lines(output: list[list[str]]) -> dict[str, str]:
    return {line[0]: line[1] for line in output if len(line) == 2}


@pytest.fixture(scope="module")
def c_output(profiled: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    return _c_program(profiled, tmp_path_factory.mktemp("c"), threads=2, runs=3)


def test_c_program_reads_the_profile(c_output: list[list[str]]) -> None:
    output = c_output
    found = _lines(output)
    assert (found["enabled"], found["kernels"]) == ("1", "3")
    assert [line[1:] for line in output if line[0].startswith("kernel ")] == [
        [k.name, ",".join(k.source_ops), str(k.flops), str(k.bytes)] for k in KERNELS]
    counters = [line[1].split() for line in output if line[0] == "counters"]
    assert [(c[0], c[1]) for c in counters] == [("0", "3"), ("1", "3"), ("2", "0")]
    runs, run_ns = map(int, found["run_stats"].split())
    assert runs == 3 and sum(int(c[2]) for c in counters) <= run_ns
    count, kept = map(int, found["trace_count"].split())
    events = [list(map(int, line[1].split())) for line in output if line[0] == "event"]
    # zero inputs: no worker has to join kernel 1, so count only thread 0's spans exactly
    assert count == kept == len(events) and [e[0] for e in events if e[1] == 0] == [0, 1] * 3
    assert all(0 <= e[1] < 2 and e[2] <= e[3] for e in events)
    assert found["reset"] == "0 "
    assert (found["reset_run_stats"], found["reset_trace_count"]) == ("0 0", "0 0")


@pytest.mark.parametrize(("key", "status", "message"), [
    ("info_bad_index", Status.INVALID_ARGUMENT,
     "kiln_profile_kernel_info: kernel index 3 out of range (the plan has 3 kernel calls)"),
    ("info_null", Status.INVALID_ARGUMENT, "kiln_profile_kernel_info: info is NULL"),
    ("counters_bad_index", Status.INVALID_ARGUMENT,
     "kiln_profile_counters: kernel index -1 out of range (the plan has 3 kernel calls)"),
    ("counters_null", Status.INVALID_ARGUMENT, "kiln_profile_counters: calls or total_ns is NULL"),
    ("counters_null_instance", Status.INVALID_ARGUMENT,
     "kiln_profile_counters: instance is NULL"),
    ("run_stats_null", Status.INVALID_ARGUMENT,
     "kiln_profile_run_stats: runs or total_ns is NULL"),
    ("trace_null_count", Status.INVALID_ARGUMENT, "kiln_profile_trace: count is NULL"),
    ("trace_null_events", Status.INVALID_ARGUMENT,
     "kiln_profile_trace: events is NULL or capacity 4 is negative"),
    ("trace_negative", Status.INVALID_ARGUMENT,
     "kiln_profile_trace: events is NULL or capacity -1 is negative"),
    ("reset_null", Status.INVALID_ARGUMENT, "kiln_profile_reset: instance is NULL"),
])
def test_c_error_codes(c_output: list[list[str]], key: str, status: Status,
                       message: str) -> None:
    code, _, text = _lines(c_output)[key].partition(" ")
    assert (Status(int(code)), text) == (status, message)


def test_c_program_on_an_unprofiled_model(unprofiled: Path, tmp_path: Path) -> None:
    found = _lines(_c_program(unprofiled, tmp_path, threads=2, runs=2))
    assert (found["enabled"], found["kernels"]) == ("0", "0")
    for key, function in [("info_bad_index", "kiln_profile_kernel_info"),
                          ("run_stats_status", "kiln_profile_run_stats"),
                          ("trace", "kiln_profile_trace"), ("reset", "kiln_profile_reset"),
                          ("counters_bad_index", "kiln_profile_counters")]:
        assert found[key] == (f"{int(Status.NOT_PROFILED)} {function}: the model was compiled "
                              "without profiling (compile it with --profile)")


ABI_V1_LIBRARY = r"""
#include <stdint.h>
#include <stddef.h>
typedef struct { const char *name; int32_t dtype, rank; const int64_t *shape; } info;
static int instance;
int32_t kiln_abi_version(void) { return 1; }
int32_t kiln_num_inputs(void) { return 0; }
int32_t kiln_num_outputs(void) { return 0; }
int kiln_input_info(int32_t i, info *out) { (void)i; (void)out; return 1; }
int kiln_output_info(int32_t i, info *out) { (void)i; (void)out; return 1; }
int kiln_create(int32_t t, const char *w, void **out) { (void)t; (void)w; *out = &instance;
                                                        return 0; }
void kiln_destroy(void *inst) { (void)inst; }
int kiln_run(void *inst, const void *in, void *out) { (void)inst; (void)in; (void)out;
                                                      return 0; }
const char *kiln_last_error(void) { return ""; }
"""


def test_abi_version_1_library_loads_without_profiling(tmp_path: Path) -> None:
    source = tmp_path / "v1.c"
    source.write_text(ABI_V1_LIBRARY)
    library = tmp_path / "v1.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", str(source), "-o",
                    str(library)], check=True, capture_output=True, text=True)
    with load(library) as model:
        assert model.run({}) == []
        assert not model.profiling and model.kernel_info() == []
        with pytest.raises(KilnRuntimeError, match="compiled without profiling"):
            model.profile()
