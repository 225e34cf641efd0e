"""kiln.runtime on the fixture model: signature, results across thread counts, input checks,
reported run-time errors, busy detection, concurrent instances, bf16, external weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from runtime_fixture import HERE, Fixture, N, expected_chunks, expected_out, feeds

from kiln.runtime import KilnRuntimeError, TensorInfo, load
from kiln.runtime.abi import Status


def test_signature(embedded: Fixture) -> None:
    with load(embedded.library, threads=1) as model:
        assert model.inputs == [
            TensorInfo("x", np.dtype(np.float32), (N,)),
            TensorInfo("idx", np.dtype(np.int64), ()),
            TensorInfo("delay_ms", np.dtype(np.int32), ()),
            TensorInfo("h", np.dtype(ml_dtypes.bfloat16), (3,)),
        ]
        assert [(o.name, o.dtype, o.shape) for o in model.outputs] == [
            ("out", np.float32, (N,)), ("sel", np.float32, ()), ("chunks", np.int32, ()),
            ("nested", np.int32, ()), ("h2", np.dtype(ml_dtypes.bfloat16), (3,))]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_results_for_every_thread_count(embedded: Fixture, threads: int) -> None:
    x = np.random.default_rng(threads).standard_normal(N).astype(np.float32)
    with load(embedded.library, threads=threads) as model:
        for _ in range(3):  # an instance is reusable
            out, sel, chunks, nested, h2 = model.run(feeds(x, idx=17))
            np.testing.assert_array_equal(out, expected_out(x))
            assert sel == x[17] and sel.shape == () and sel.dtype == np.float32
            # nested loops run serially inside each chunk
            assert int(chunks) == int(nested) == expected_chunks(threads)
            assert h2.view(np.uint16).tolist() == [0x3F80, 0x4000, 0xC040]


def test_default_threads_is_online_cpus(embedded: Fixture) -> None:
    import os

    with load(embedded.library) as model:
        assert int(model.run(feeds())[2]) == expected_chunks(os.cpu_count() or 1)


def test_outputs_are_fresh_and_inputs_may_be_strided(embedded: Fixture) -> None:
    wide = np.linspace(0, 1, 2 * N, dtype=np.float32)
    x = wide[::2]
    assert not x.flags.c_contiguous
    with load(embedded.library, threads=2) as model:
        first = model.run(feeds(x))
        second = model.run(feeds(x))
    np.testing.assert_array_equal(first[0], expected_out(np.ascontiguousarray(x)))
    assert not np.shares_memory(first[0], second[0])


def test_read_only_and_exact_inputs_give_the_same_results(embedded: Fixture) -> None:
    x = np.linspace(-1, 1, N, dtype=np.float32)
    frozen = x.copy()
    frozen.flags.writeable = False
    with load(embedded.library, threads=1) as model:
        exact = model.run(feeds(x))  # contiguous, exact dtype and shape: the fast path
        read_only = model.run(feeds(frozen))
        strided = model.run(feeds(np.repeat(x, 2)[::2]))  # made contiguous by the checked path
    for a, b, c in zip(exact, read_only, strided, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(exact[0], expected_out(x))


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.pop("idx"), r"missing \['idx'\]; the model takes \['x', 'idx', 'delay_ms', 'h'\]"),
    (lambda f: f.update(y=f["x"]), r"unexpected \['y'\]"),
    (lambda f: f.update(x=f["x"].astype(np.float64)),
     r"input 'x': expected dtype float32, got float64"),
    (lambda f: f.update(x=f["x"][:10]), r"input 'x': expected shape \(4099,\), got \(10,\)"),
    (lambda f: f.update(idx=np.array([5])), r"input 'idx': expected shape \(\), got \(1,\)"),
    (lambda f: f.update(h=np.zeros(3, np.float16)),
     r"input 'h': expected dtype bfloat16 \(or its bits as uint16\), got float16"),
])
def test_wrong_inputs_name_expected_and_actual(embedded: Fixture, change, message) -> None:
    inputs = feeds()
    change(inputs)
    with load(embedded.library, threads=1) as model, pytest.raises(KilnRuntimeError,
                                                                   match=message):
        model.run(inputs)


def test_bf16_accepts_ml_dtypes_and_raw_bits(embedded: Fixture) -> None:
    values = np.array([1.0, -2.5, 3.0], ml_dtypes.bfloat16)
    with load(embedded.library, threads=1) as model:
        h2 = model.run({**feeds(), "h": values})[4]
        assert h2.dtype == ml_dtypes.bfloat16 and h2.tolist() == values.tolist()
        bits = model.run({**feeds(), "h": values.view(np.uint16)})[4]
        np.testing.assert_array_equal(bits.view(np.uint16), values.view(np.uint16))


def test_reported_error_fails_the_run_and_instance_recovers(embedded: Fixture) -> None:
    with load(embedded.library, threads=2) as model:
        with pytest.raises(KilnRuntimeError, match="RUNTIME.*gather: index out of range$") as err:
            model.run(feeds(idx=N))
        assert err.value.status is Status.RUNTIME
        assert isinstance(err.value, ValueError)
        assert float(model.run(feeds(idx=0))[1]) == -3.0


def test_concurrent_run_on_one_instance_is_busy(embedded: Fixture) -> None:
    with load(embedded.library, threads=1) as model:
        slow = threading.Thread(target=model.run, args=(feeds(delay_ms=600),))
        slow.start()
        time.sleep(0.15)
        with pytest.raises(KilnRuntimeError, match="BUSY.*already running") as err:
            model.run(feeds())
        slow.join()
        assert err.value.status is Status.BUSY
        model.run(feeds())  # free again


def test_two_instances_run_concurrently_on_two_threads(embedded: Fixture) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(N).astype(np.float32) for _ in range(2)]
    failures: list[BaseException] = []

    def work(x: np.ndarray, threads: int) -> None:
        try:
            with load(embedded.library, threads=threads) as model:
                for _ in range(50):
                    np.testing.assert_array_equal(model.run(feeds(x))[0], expected_out(x))
        except BaseException as error:  # reported to the main thread below
            failures.append(error)

    workers = [threading.Thread(target=work, args=(x, 2)) for x in xs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []


def test_closed_model_and_bad_arguments(embedded: Fixture, tmp_path: Path) -> None:
    model = load(embedded.library, threads=1)
    model.close()
    model.close()  # idempotent
    with pytest.raises(KilnRuntimeError, match="is closed"):
        model.run(feeds())
    with pytest.raises(KilnRuntimeError, match="no model library at"):
        load(tmp_path / "missing.so")
    with pytest.raises(KilnRuntimeError, match="threads must be an int"):
        load(embedded.library, threads=1.5)  # type: ignore[arg-type]
    with pytest.raises(KilnRuntimeError, match="INVALID_ARGUMENT.*num_threads 100000"):
        load(embedded.library, threads=100000)
    plain = tmp_path / "plain.so"
    source = tmp_path / "plain.c"
    source.write_text("int answer(void) { return 42; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(plain)], check=True)
    with pytest.raises(KilnRuntimeError, match="not a Kiln model library.*kiln_abi_version"):
        load(plain)


def test_external_weights_load_beside_library_and_from_a_path(external: Fixture,
                                                               tmp_path: Path) -> None:
    x = feeds()["x"]
    assert external.library.with_suffix(".bin").stat().st_size == 64 + len(external.blob)
    with load(external.library, threads=2) as model:
        np.testing.assert_array_equal(model.run(feeds())[0], expected_out(x))
    elsewhere = tmp_path / "elsewhere.bin"
    shutil.copyfile(external.library.with_suffix(".bin"), elsewhere)
    with load(external.library, threads=1, weights_path=elsewhere) as model:
        np.testing.assert_array_equal(model.run(feeds())[0], expected_out(x))


def _corrupt(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[200] ^= 0x01
    return bytes(flipped)


@pytest.mark.parametrize(("mangle", "message"), [
    (None, "cannot open weights file '.*': No such file"),
    (lambda d: d[:40], "too short for its header"),
    (lambda d: b"NOTKILN!" + d[8:], "not a Kiln weights file"),
    (lambda d: d[:-100], r"is 16412 bytes, expected 16512 \(truncated"),
    (lambda d: d + b"\0", "expected 16512"),
    (_corrupt, r"corrupt \(checksum mismatch\)"),
    (lambda d: d[:16] + bytes(8) + d[24:], "has checksum 0000000000000000 but"),
    (lambda d: d[:8] + (5).to_bytes(8, "little") + d[16:], "holds 5 bytes but this model needs"),
])
def test_bad_external_weights_are_clear_errors(external: Fixture, tmp_path: Path, mangle,
                                               message) -> None:
    weights = tmp_path / "w.bin"
    if mangle is not None:
        weights.write_bytes(mangle(external.library.with_suffix(".bin").read_bytes()))
    with pytest.raises(KilnRuntimeError, match=f"WEIGHTS.*{message}") as err:
        load(external.library, weights_path=weights)
    assert err.value.status is Status.WEIGHTS


def test_default_weights_file_missing(external: Fixture, tmp_path: Path) -> None:
    lonely = tmp_path / "lonely.so"
    shutil.copyfile(external.library, lonely)
    with pytest.raises(KilnRuntimeError, match=f"cannot open weights file '{tmp_path}/lonely.bin'"):
        load(lonely)


BLOCKED_SCRIPT = """
import json, sys
for name in ("onnx", "llvmlite", "ml_dtypes", "numba", "onnxruntime", "torch", "kiln.compiler"):
    sys.modules[name] = None  # any import of these now fails
import numpy as np
from kiln.runtime import load
model = load(sys.argv[1], threads=2)
x = np.arange(4099, dtype=np.float32)
out = model.run({"x": x, "idx": np.array(3, np.int64), "delay_ms": np.array(0, np.int32),
                 "h": np.array([1, 2, 3], np.uint16)})
print(json.dumps({"sum": float(out[0].sum()), "sel": float(out[1]),
                  "h2": [str(out[4].dtype), out[4].tolist()],
                  "h_dtype": str(model.inputs[3].dtype)}))
"""


def test_runtime_works_without_llvmlite_onnx_and_ml_dtypes(embedded: Fixture) -> None:
    done = subprocess.run([sys.executable, "-c", BLOCKED_SCRIPT, str(embedded.library)],
                          capture_output=True, text=True, cwd=HERE, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    x = np.arange(N, dtype=np.float32)
    assert result["sum"] == pytest.approx(float(expected_out(x).sum()), rel=1e-6)
    assert result["sel"] == 3.0
    assert result["h2"] == ["uint16", [1, 2, 3]]
    assert result["h_dtype"] == "uint16"
