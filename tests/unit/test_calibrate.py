"""The machine calibration ``kiln profile`` divides by (kiln.compiler.profile.calibrate): the FMA
peak loop (what it computes, the instruction it compiles to, a positive rate), the bandwidth
measurement's arithmetic, the cache (measured once, refreshed on request, keyed by machine,
robust to damaged files) and one real measurement checked against what the hardware allows."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kiln.compiler.codegen.target import Target
from kiln.compiler.profile import calibrate
from kiln.compiler.profile.calibrate import FmaLoop, PeakProbe, Peaks


@pytest.fixture(autouse=True)
def cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has a calibration cache of its own, never the user's."""
    path = tmp_path / "calibration.json"
    monkeypatch.setenv("KILN_CALIBRATION_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def probe() -> PeakProbe:
    return calibrate.peak_probe()


@pytest.fixture(scope="module")
def fma_loop(probe: PeakProbe) -> FmaLoop:
    return probe.loop


def test_fma_loop_computes_its_chains(fma_loop: FmaLoop) -> None:
    vectors = fma_loop.vectors()
    start = np.ctypeslib.as_array(vectors).reshape(-1, fma_loop.lanes).astype(np.float64)
    scale, shift, chains = start[0], start[1], start[2:]
    iterations = 50
    fma_loop.function(iterations, vectors)
    for _ in range(iterations):
        chains = chains * scale + shift
    got = np.ctypeslib.as_array(vectors).reshape(-1, fma_loop.lanes)[2:]
    np.testing.assert_allclose(got, chains, rtol=1e-5)
    assert len(set(got[:, 0].tolist())) == fma_loop.accumulators  # no two chains merged


def test_fma_loop_uses_the_widest_vector_fma(fma_loop: FmaLoop) -> None:
    target = Target.parse("host")
    assert fma_loop.lanes == target.vector_bits // 32
    if target.arch != "x86_64" or "fma" not in target.features:
        pytest.skip("checks x86 FMA code generation")
    register = {512: "zmm", 256: "ymm"}.get(target.vector_bits, "xmm")
    assert fma_loop.fma_instruction().startswith("vfmadd")
    assert fma_loop.fma_instruction().endswith(register)
    body = [line for line in fma_loop.assembly.splitlines() if "vfmadd" in line]
    assert len(body) >= fma_loop.accumulators


def test_probe_runs_a_burst_per_thread(probe: PeakProbe) -> None:
    for threads in (1, 2):
        probe.runner(threads)()
    # one FMA (2 FLOPs) per lane, chain and iteration on each thread
    per_thread = probe.iterations * probe.loop.accumulators * probe.loop.lanes * 2
    assert probe.flops(1) == per_thread and probe.flops(2) == 2 * per_thread
    assert probe.peak_gflops(0.5, 2) == pytest.approx(2 * per_thread / 0.5 / 1e9)


def test_peak_is_positive(probe: PeakProbe) -> None:
    peak = calibrate.measure_peak(probe, [2, 1], seconds=0.02)
    assert set(peak.gflops) == {1, 2} and min(peak.gflops.values()) > 0
    assert peak.instruction == probe.loop.fma_instruction()
    assert "GFLOP/s at 1 thread(s)" in peak.lines()[0]


def test_copy_bandwidth_counts_each_byte_read_and_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[bool] = []

    def one_pass(run, seconds, at_least=1):  # type: ignore[no-untyped-def]
        run()
        copied.append(True)
        return 0.5  # seconds: the rate is bytes moved / 0.5 s

    monkeypatch.setattr(calibrate, "_fastest", one_pass)
    size = 3 << 20
    for threads in (1, 3):
        assert calibrate.copy_bandwidth(nbytes=size, threads=threads) == pytest.approx(
            2 * size / 0.5 / 1e9)
    assert len(copied) == 2


def test_copy_bandwidth_default_buffer_exceeds_the_last_level_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    monkeypatch.setattr(calibrate, "MIN_COPY_BYTES", 2 << 20)  # small buffers: a fast test
    monkeypatch.setattr(calibrate, "_fastest", lambda run, seconds, at_least=1: 1.0)
    for cache in (256 << 10, 1 << 20):
        monkeypatch.setattr(calibrate, "last_level_cache_bytes", lambda c=cache: c)
        sizes.append(round(calibrate.copy_bandwidth(threads=1) * 1e9 / 2))
    assert sizes == [2 << 20, 4 << 20]


def test_last_level_cache_is_found() -> None:
    assert calibrate.last_level_cache_bytes() >= 1 << 20


FAKE = Peaks(100.0, 20.0, "fake cpu", "2025-01-01T00:00:00Z")


@pytest.fixture
def measurements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Stands in for the 1-2 s measurement: each call returns FAKE with the call's number as
    its bandwidth, and is counted."""
    calls: list[int] = []

    def measure(progress):  # type: ignore[no-untyped-def]
        calls.append(len(calls) + 1)
        progress("calibrating (fake)")
        return Peaks(FAKE.gflops_per_thread, float(len(calls)), FAKE.cpu, FAKE.measured_at)

    monkeypatch.setattr(calibrate, "measure_peaks", measure)
    yield calls


def test_peaks_are_measured_once_and_cached(measurements: list[int], cache_path: Path) -> None:
    said: list[str] = []
    first = calibrate.machine_peaks(progress=said.append)
    assert measurements == [1] and said == ["calibrating (fake)"]
    stored = json.loads(cache_path.read_text())
    assert stored["format"] == calibrate.FORMAT and stored["version"] == calibrate.FORMAT_VERSION
    assert stored["machines"] == {calibrate.calibration_key(): {
        "gflops_per_thread": 100.0, "gbytes_per_second": 1.0, "cpu": "fake cpu",
        "measured_at": FAKE.measured_at}}
    said.clear()
    assert calibrate.machine_peaks(progress=said.append) == first
    assert measurements == [1] and said == []  # silent when the cache answers
    refreshed = calibrate.machine_peaks(refresh=True, progress=said.append)
    assert measurements == [1, 2] and refreshed.gbytes_per_second == 2.0
    assert calibrate.machine_peaks() == refreshed


def test_other_machines_entries_are_kept_not_used(measurements: list[int],
                                                  cache_path: Path) -> None:
    other = {"gflops_per_thread": 1.0, "gbytes_per_second": 1.0, "cpu": "other",
             "measured_at": "x"}
    cache_path.write_text(json.dumps({"format": calibrate.FORMAT,
                                      "version": calibrate.FORMAT_VERSION,
                                      "machines": {"another machine": other}}))
    assert calibrate.machine_peaks().cpu == "fake cpu"
    assert measurements == [1]
    assert json.loads(cache_path.read_text())["machines"]["another machine"] == other


@pytest.mark.parametrize("content", [
    "not json", json.dumps([1, 2]), json.dumps({"format": "kiln-tune", "machines": {}}),
    json.dumps({"format": calibrate.FORMAT, "version": 99, "machines": {}}),
])
def test_an_unusable_cache_is_replaced(measurements: list[int], cache_path: Path,
                                       content: str) -> None:
    cache_path.write_text(content)
    said: list[str] = []
    assert calibrate.machine_peaks(progress=said.append).cpu == "fake cpu"
    assert measurements == [1]
    assert said[0].startswith(f"ignoring the calibration cache {cache_path}")
    assert calibrate.calibration_key() in json.loads(cache_path.read_text())["machines"]


@pytest.mark.parametrize("entry", [
    {"gflops_per_thread": -1.0, "gbytes_per_second": 1.0, "cpu": "c", "measured_at": "t"},
    {"gflops_per_thread": "fast", "gbytes_per_second": 1.0, "cpu": "c", "measured_at": "t"},
    {"gflops_per_thread": 1.0, "gbytes_per_second": math.inf, "cpu": "c", "measured_at": "t"},
    {"gflops_per_thread": 1.0, "cpu": "c", "measured_at": "t"},
    None,
])
def test_a_malformed_entry_is_measured_again(measurements: list[int], cache_path: Path,
                                             entry: object) -> None:
    cache_path.write_text(json.dumps({
        "format": calibrate.FORMAT, "version": calibrate.FORMAT_VERSION,
        "machines": {calibrate.calibration_key(): entry}}).replace("Infinity", "1e999"))
    assert calibrate.machine_peaks().cpu == "fake cpu"
    assert measurements == [1]


def test_an_unwritable_cache_is_reported_not_fatal(measurements: list[int], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("KILN_CALIBRATION_CACHE", str(blocker / "calibration.json"))
    said: list[str] = []
    assert calibrate.machine_peaks(progress=said.append).cpu == "fake cpu"
    assert said[-1].startswith("could not write the calibration cache")


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KILN_CALIBRATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert calibrate.default_cache_path() == tmp_path / "kiln" / "calibration.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert calibrate.default_cache_path() == tmp_path / "home" / ".cache" / "kiln" / \
        "calibration.json"


def test_the_key_names_the_cpu_and_its_features() -> None:
    key = calibrate.calibration_key()
    target = Target.parse("host")
    assert key.startswith(calibrate.cpu_name() + "|")
    assert target.triple in key and target.cpu in key


def test_a_real_calibration(cache_path: Path) -> None:
    """The measurement itself (about 1-2 s): positive rates no faster than the hardware can go,
    at most 2 FMA pipes x lanes x 2 FLOPs at 6 GHz, and below 1 TB/s of memory bandwidth."""
    said: list[str] = []
    peaks = calibrate.machine_peaks(refresh=True, progress=said.append)
    lanes = max(1, Target.parse("host").vector_bits // 32)
    assert 0 < peaks.gflops_per_thread <= 2 * lanes * 2 * 6.0
    assert 0 < peaks.gbytes_per_second < 1000
    assert peaks.cpu == calibrate.cpu_name()
    assert said and all(line.startswith("calibrating") for line in said)
    assert calibrate.machine_peaks() == peaks
