"""The CUDA runtime without a GPU: the artifact format (round trip, corrupt / truncated /
foreign files -> clear errors), ``kiln.runtime.load`` dispatching on the magic, the clear
errors where there is no driver or no device, and ``CudaModel``'s use of the driver API
against a stand-in driver (host memory for device memory, a Python function for the kernel):
input checks, copies, launches in plan order with the planned pointers and launch shapes,
the error word's message, JIT failures with their log, kernel timing. Running real PTX needs
a GPU (tests/codegen/test_nvptx_models.py, ``@pytest.mark.gpu``)."""

# ruff: noqa: N802  (the stand-in driver's methods carry the CUDA driver API's names)

from __future__ import annotations

import ctypes
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.runtime import KilnRuntimeError, load
from kiln.runtime.cuda import (
    FORMAT_VERSION,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    CudaDriver,
    CudaError,
    CudaModel,
    encode_artifact,
    parse_artifact,
    read_artifact,
)

N = 6


def _manifest(messages: list[str] | None = None) -> dict[str, Any]:
    """One input x (f32[2,3]), one output y; kernel "scale" reads x and a weight, writes the
    arena; kernel "copy" copies the arena to y."""
    return {
        "arch": "sm_80", "features": "+ptx78",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [2, 3]}],
        "outputs": [{"name": "y", "dtype": "f32", "shape": [2, 3]}],
        "arena_bytes": 64 + 4 * N,
        "weights": {"offset": 0, "bytes": 4 * N},
        "kernels": [
            {"name": "scale", "grid": 2, "threads": 3, "params": 3, "source": ["mul"],
             "ptx": {"offset": 4 * N, "bytes": 10}},
            {"name": "copy", "grid": 1, "threads": 6, "params": 2, "source": [],
             "ptx": {"offset": 4 * N + 10, "bytes": 9}},
        ],
        "calls": [{"kernel": 0, "args": [["input", 0], ["weight", 0], ["arena", 64]]},
                  {"kernel": 1, "args": [["arena", 64], ["output", 0]]}],
        "messages": messages or [],
    }


WEIGHTS = np.arange(1, N + 1, dtype=np.float32)
PAYLOAD = WEIGHTS.tobytes() + b"// scale\n\0" + b"// copy\n\0"


def _artifact_bytes(messages: list[str] | None = None) -> bytes:
    return encode_artifact(_manifest(messages), PAYLOAD)


def test_artifact_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.kiln"
    path.write_bytes(_artifact_bytes())
    artifact = read_artifact(path)
    assert artifact.manifest == _manifest()
    assert artifact.weights == WEIGHTS.tobytes()
    assert artifact.ptx(1) == "// copy\n\0"
    [x] = artifact.tensors(output=False)
    assert (x.name, x.dtype, x.shape) == ("x", np.dtype(np.float32), (2, 3))


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:HEADER_BYTES - 1], "not a Kiln CUDA artifact"),
    (lambda d: b"KILNXXXX" + d[8:], "not a Kiln CUDA artifact"),
    (lambda d: d[:-3], "truncated or corrupt"),
    (lambda d: d + b"x", "truncated or corrupt"),
    (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "corrupt: checksum mismatch"),
    (lambda d: d[:8] + (99).to_bytes(4, "little") + d[12:], "format 99"),
])
def test_corrupt_artifacts_are_clear_errors(tmp_path: Path, damage: Callable[[bytes], bytes],
                                            message: str) -> None:
    path = tmp_path / "bad.kiln"
    path.write_bytes(damage(_artifact_bytes()))
    with pytest.raises(KilnRuntimeError, match=message):
        read_artifact(path)
    if message != "not a Kiln CUDA artifact":  # a foreign file is not taken for one
        with pytest.raises(KilnRuntimeError, match=message):
            load(path)  # the artifact is checked before the driver is looked for


def test_unreadable_manifest() -> None:
    body = b"{not json" + PAYLOAD
    header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, 9, len(PAYLOAD), zlib.crc32(body))
    with pytest.raises(KilnRuntimeError, match="unreadable manifest"):
        parse_artifact(header.ljust(HEADER_BYTES, b"\0") + body)


def test_no_driver_is_a_clear_error() -> None:
    with pytest.raises(CudaError, match=r"no CUDA driver \(libkiln-missing-cuda\.so\.1\) found"):
        CudaDriver("libkiln-missing-cuda.so.1")


def test_load_without_a_gpu(tmp_path: Path) -> None:
    from kiln.runtime.cuda import unavailable

    if unavailable() is None:
        pytest.skip("this machine has a GPU")
    path = tmp_path / "m.kiln"
    path.write_bytes(_artifact_bytes())
    with pytest.raises(CudaError, match="no CUDA (driver|device)"):
        load(path)
    with pytest.raises(KilnRuntimeError, match="its weights are inside it"):
        load(path, weights_path=tmp_path / "w.bin")


# -- a stand-in for libcuda ------------------------------------------------------------------

CUDA_ERROR_OUT_OF_MEMORY = 2
CUDA_ERROR_INVALID_PTX = 218
CUDA_ERROR_NO_DEVICE = 100
_NAMES = {CUDA_ERROR_OUT_OF_MEMORY: (b"CUDA_ERROR_OUT_OF_MEMORY", b"out of memory"),
          CUDA_ERROR_INVALID_PTX: (b"CUDA_ERROR_INVALID_PTX", b"a PTX JIT compilation failed"),
          CUDA_ERROR_NO_DEVICE: (b"CUDA_ERROR_NO_DEVICE", b"no CUDA-capable device")}


class FakeCuda:
    """The driver functions CudaModel calls, on host memory; ``kernels`` maps a kernel name to
    a Python function of (grid, threads, device pointers)."""

    def __init__(self, kernels: dict[str, Callable[[int, int, list[int]], None]],
                 devices: int = 1) -> None:
        self.kernels = kernels
        self.devices = devices
        self.memory: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self.launches: list[tuple[str, int, int, list[int]]] = []
        self.modules: dict[int, bytes] = {}
        self.functions: dict[int, str] = {}
        self.fail: dict[str, int] = {}
        self.log = b""

    def __getattr__(self, name: str) -> Callable[..., int]:
        if name.startswith("cu"):
            def ok(*args: object) -> int:
                return self.fail.get(name, 0)
            return ok
        raise AttributeError(name)

    def cuInit(self, flags: int) -> int:
        return 0 if self.devices else CUDA_ERROR_NO_DEVICE

    def cuDeviceGetCount(self, count: Any) -> int:
        count._obj.value = self.devices
        return 0

    def cuDeviceGetName(self, buffer: Any, size: int, device: int) -> int:
        buffer.value = b"Fake GPU"
        return 0

    def cuGetErrorName(self, code: int, out: Any) -> int:
        out._obj.value = _NAMES[code][0]
        return 0

    def cuGetErrorString(self, code: int, out: Any) -> int:
        out._obj.value = _NAMES[code][1]
        return 0

    def cuMemAlloc_v2(self, out: Any, nbytes: int) -> int:
        if "cuMemAlloc_v2" in self.fail:
            return self.fail["cuMemAlloc_v2"]
        block = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(block)] = block
        out._obj.value = ctypes.addressof(block)
        return 0

    def cuMemFree_v2(self, pointer: int) -> int:
        del self.memory[pointer]
        return 0

    def cuMemcpyHtoDAsync_v2(self, device: int, host: int, nbytes: int, stream: object) -> int:
        ctypes.memmove(device, host, nbytes)
        return 0

    def cuMemcpyDtoHAsync_v2(self, host: int, device: int, nbytes: int, stream: object) -> int:
        ctypes.memmove(host, device, nbytes)
        return 0

    def cuMemsetD32Async(self, device: int, value: int, count: int, stream: object) -> int:
        (ctypes.c_uint32 * count).from_address(device)[:] = [value] * count
        return 0

    def cuModuleLoadDataEx(self, out: Any, image: bytes, count: int, options: Any,
                           values: Any) -> int:
        if self.log:
            ctypes.memmove(values[0], self.log + b"\0", len(self.log) + 1)
            return CUDA_ERROR_INVALID_PTX
        out._obj.value = len(self.modules) + 1
        self.modules[len(self.modules) + 1] = image
        return 0

    def cuModuleGetFunction(self, out: Any, module: object, name: bytes) -> int:
        out._obj.value = 1000 + len(self.functions)
        self.functions[1000 + len(self.functions)] = name.decode()
        return 0

    def cuLaunchKernel(self, function: Any, gx: int, gy: int, gz: int, bx: int, by: int,
                       bz: int, shared: int, stream: object, params: Any, extra: object) -> int:
        name = self.functions[function.value]
        pointers = [ctypes.c_uint64.from_address(params[i]).value for i in range(len(params))]
        assert (gy, gz, by, bz, shared, extra) == (1, 1, 1, 1, 0, None)
        self.launches.append((name, gx, bx, pointers))
        self.kernels[name](gx, bx, pointers)
        return 0

    def cuEventElapsedTime(self, out: Any, start: object, end: object) -> int:
        out._obj.value = 0.25
        return 0


def _floats(pointer: int, count: int = N) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(pointer))


def _scale(grid: int, threads: int, p: list[int]) -> None:
    x, w, out, error = p
    _floats(out)[:] = _floats(x) * _floats(w)
    if _floats(x)[0] < 0:
        ctypes.c_uint32.from_address(error).value = 1


def _copy(grid: int, threads: int, p: list[int]) -> None:
    source, target, _ = p
    _floats(target)[:] = _floats(source)


def _driver(fake: FakeCuda) -> CudaDriver:
    driver = CudaDriver.__new__(CudaDriver)
    driver._dll = fake  # type: ignore[attr-defined]
    return driver


def _model(fake: FakeCuda, messages: list[str] | None = None) -> CudaModel:
    return CudaModel(parse_artifact(_artifact_bytes(messages), "m.kiln"), 0, _driver(fake))


def test_model_runs_the_plan_through_the_driver() -> None:
    fake = FakeCuda({"scale": _scale, "copy": _copy})
    model = _model(fake)
    assert model.device_name == "Fake GPU"
    assert [img for img in fake.modules.values()] == [b"// scale\n\0\0", b"// copy\n\0\0"]
    x = np.linspace(0.5, 3, N, dtype=np.float32).reshape(2, 3)
    [y] = model.run({"x": x})
    np.testing.assert_array_equal(y, x * WEIGHTS.reshape(2, 3))
    assert [(name, grid, threads) for name, grid, threads, _ in fake.launches] == [
        ("scale", 2, 3), ("copy", 1, 6)]
    (_, _, _, scale_args), (_, _, _, copy_args) = fake.launches
    assert copy_args[0] == scale_args[2]  # the arena offset both calls name
    assert scale_args[3] == copy_args[2]  # one error word
    times = model.time_kernels({"x": x})
    assert [(t.index, t.kernel, t.source_ops, t.milliseconds) for t in times] == [
        (0, "scale", ("mul",), 0.25), (1, "copy", (), 0.25)]
    with pytest.raises(KilnRuntimeError, match="expected shape"):
        model.run({"x": x.reshape(3, 2)})
    with pytest.raises(KilnRuntimeError, match="expected dtype float32"):
        model.run({"x": x.astype(np.float64)})
    with pytest.raises(KilnRuntimeError, match="no profile counters"):
        model.profile()
    assert len(fake.memory) == 5  # weights, arena, error word, the input, the output
    model.close()
    assert fake.memory == {}
    with pytest.raises(KilnRuntimeError, match="is closed"):
        model.run({"x": x})


def test_reported_data_error_raises_its_message() -> None:
    fake = FakeCuda({"scale": _scale, "copy": _copy})
    with _model(fake, ["Gather node g: index 7 out of range"]) as model:
        x = -np.ones((2, 3), np.float32)
        with pytest.raises(KilnRuntimeError, match="Gather node g: index 7 out of range"):
            model.run({"x": x})
        model.run({"x": -x})  # the error word is cleared before each run


def test_driver_failures_name_the_call() -> None:
    with pytest.raises(CudaError, match="no CUDA device: the driver is installed"):
        _model(FakeCuda({}, devices=0))
    fake = FakeCuda({})
    fake.fail["cuMemAlloc_v2"] = CUDA_ERROR_OUT_OF_MEMORY
    with pytest.raises(CudaError, match=r"cuMemAlloc_v2 failed \(CUDA_ERROR_OUT_OF_MEMORY: "
                                        r"out of memory\)"):
        _model(fake)
    fake = FakeCuda({})
    fake.log = b"ptxas application ptx input, line 9; error: Unknown symbol"
    with pytest.raises(CudaError, match=r"(?s)cuModuleLoadDataEx failed for kernel scale "
                                        r"\(CUDA_ERROR_INVALID_PTX.*Unknown symbol"):
        _model(fake)
