"""The CUDA target over the PyTorch-exported zoo (tests/models/zoo.py): every kernel of every
model compiles to PTX that ptxas accepts for sm_90 without spills, with a launch that uses more
than one thread except for inherently serial recurrences; on a GPU, outputs match the reference
executor."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="pip install torch==2.13.0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from zoo import UNSUPPORTED, ZOO  # noqa: E402

from kiln.compiler import reference  # noqa: E402
from kiln.compiler.codegen.nvptx.ptx import ptxas_path, run_ptxas  # noqa: E402
from kiln.compiler.driver import CudaExecutable, build  # noqa: E402
from kiln.frontends.onnx import load_onnx  # noqa: E402
from kiln.runtime.cuda import unavailable  # noqa: E402

# Kernels whose loop carries a dependence from step to step (an RNN's time loop) run on one
# thread by design.
SERIAL_OPS = ("lstm", "gru", "rnn")
NO_GPU = unavailable()


def _exporter(name: str) -> str:
    return "dynamo" if (name, "torchscript") in UNSUPPORTED else "torchscript"


def _cuda_build(name: str, folder: Path) -> tuple[CudaExecutable, object, dict[str, np.ndarray]]:
    exported = ZOO[name](_exporter(name), folder)
    graph = load_onnx(exported.path)
    shapes = {key: value.shape for key, value in exported.inputs.items()}
    exe = build(graph, target="cuda", input_shapes=shapes)
    assert isinstance(exe, CudaExecutable)
    return exe, graph, exported.inputs


@pytest.mark.slow
@pytest.mark.skipif(ptxas_path() is None, reason="ptxas (CUDA toolkit) not installed")
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_ptx_assembles_without_spills(name: str, tmp_path: Path) -> None:
    exe, _, _ = _cuda_build(name, tmp_path)
    for kernel in exe.kernels:
        [info] = run_ptxas(kernel.ptx, "sm_90")
        assert (info.spill_stores, info.spill_loads) == (0, 0), kernel.name
        assert info.registers <= 255 and info.shared_bytes <= 48 * 1024, info
        if not any(op in kernel.name for op in SERIAL_OPS):
            assert kernel.launch.grid * kernel.launch.threads > 1, kernel.name


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(NO_GPU is not None, reason=f"no GPU: {NO_GPU}")
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_on_gpu_matches_the_reference(name: str, tmp_path: Path) -> None:
    exe, graph, inputs = _cuda_build(name, tmp_path)
    expected = reference.run(graph, inputs)
    for got, want in zip(exe.run(inputs), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
