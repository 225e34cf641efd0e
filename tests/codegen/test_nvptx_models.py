"""Whole models compiled for CUDA (``build(graph, target="cuda")``: GPU schedules -> PTX per
kernel -> one artifact): every kernel's PTX passes ptxas for sm_80 and sm_90, the artifact
holds what the plan needs, ``kiln compile --target cuda`` writes it quietly, ``--dump`` gives
PTX per kernel, ``kiln profile`` reports ptxas' registers / shared memory / spills without a
GPU; on a machine with a GPU (``@pytest.mark.gpu``) the outputs match the reference executor.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.cli import main
from kiln.compiler.codegen.nvptx.ptx import ptxas_path, run_ptxas
from kiln.compiler.driver import CudaExecutable, build
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.runtime import KilnRuntimeError, load
from kiln.runtime.cuda import CudaError, parse_artifact, read_artifact, unavailable

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"
DIGITS_SHAPE = {"image": (1, 1, 8, 8)}
needs_ptxas = pytest.mark.skipif(ptxas_path() is None, reason="ptxas (CUDA toolkit) not installed")
NO_GPU = unavailable()
needs_gpu = pytest.mark.skipif(NO_GPU is not None, reason=f"no GPU: {NO_GPU}")


def _mlp() -> Graph:
    rng = np.random.default_rng(0)
    g = GraphBuilder()
    x = g.add_input("x", TensorType(DType.F32, (4, 64)))
    w1 = g.constant(rng.standard_normal((64, 128)).astype(np.float32) * 0.1)
    b1 = g.constant(rng.standard_normal(128).astype(np.float32))
    h = g.add1(Op.RELU, [g.add1(Op.GEMM, [x, w1, b1], name="fc1")], name="relu")
    w2 = g.constant(rng.standard_normal((128, 10)).astype(np.float32) * 0.1)
    logits = g.add1(Op.MATMUL, [h, w2], name="fc2")
    return g.finish([g.add1(Op.SOFTMAX, [logits], {"axis": -1}, name="softmax")])


def _cnn() -> Graph:
    rng = np.random.default_rng(1)
    g = GraphBuilder()
    x = g.add_input("x", TensorType(DType.F32, (2, 3, 12, 12)))
    w = g.constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2)
    y = g.add1(Op.RELU, [g.add1(Op.CONV, [x, w], {"pads": [1, 1, 1, 1]}, name="conv")])
    y = g.add1(Op.MAX_POOL, [y], {"kernel_shape": [2, 2], "strides": [2, 2]}, name="pool")
    y = g.add1(Op.REDUCE_MEAN, [y, g.constant(np.array([2, 3], np.int64))], {"keepdims": 0},
               name="gap")
    scale = g.constant(np.ones(8, np.float32))
    bias = g.constant(np.zeros(8, np.float32))
    y = g.add1(Op.LAYER_NORMALIZATION, [y, scale, bias], {"axis": -1}, name="ln")
    return g.finish([y, g.add1(Op.ARGMAX, [y], {"axis": 1}, name="argmax")])


def _digits() -> Graph:
    from kiln.frontends.onnx import load_onnx

    return load_onnx(DIGITS)


MODELS: dict[str, tuple[Callable[[], Graph], dict[str, tuple[int, ...]] | None]] = {
    "mlp": (_mlp, None), "cnn": (_cnn, None), "digits": (_digits, DIGITS_SHAPE)}


@cache
def _built(model: str) -> CudaExecutable:
    make, shapes = MODELS[model]
    exe = build(make(), target="cuda", input_shapes=shapes)
    assert isinstance(exe, CudaExecutable)
    return exe


def _inputs(graph: Graph, shapes: dict[str, tuple[int, ...]] | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    inputs = {}
    for value in graph.inputs:
        shape = (shapes or {}).get(value.name) or tuple(value.type.shape)
        inputs[value.name] = rng.standard_normal(shape).astype(np.float32)
    return inputs


@needs_ptxas
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_kernel_passes_ptxas(model: str, arch: str) -> None:
    exe = _built(model)
    assert exe.kernels
    for kernel in exe.kernels:
        [info] = run_ptxas(kernel.ptx, arch)
        assert info.kernel == kernel.name
        assert 1 <= kernel.launch.threads <= 1024 and kernel.launch.grid >= 1


@pytest.mark.parametrize("model", sorted(MODELS))
def test_artifact_round_trip(model: str, tmp_path: Path) -> None:
    exe = _built(model)
    path = exe.export(tmp_path / "model.kiln")
    artifact = read_artifact(path)
    manifest = artifact.manifest
    assert manifest["arch"] == "sm_80"
    names = [k["name"] for k in manifest["kernels"]]
    assert names == [k.name for k in exe.kernels]
    assert all(artifact.ptx(i) == k.ptx for i, k in enumerate(exe.kernels))
    assert len(manifest["calls"]) == exe.stats.kernels
    for call in manifest["calls"]:
        kernel = manifest["kernels"][call["kernel"]]
        assert len(call["args"]) == kernel["params"]
        for place, at in call["args"]:
            if place in ("input", "output"):
                assert 0 <= at < len(manifest[place + "s"])
            elif place == "arena":
                assert 0 <= at < max(manifest["arena_bytes"], 1)
            else:
                assert place == "weight" and 0 <= at < len(artifact.weights)
    graph = MODELS[model][0]()
    assert [t.name for t in artifact.tensors(output=False)] == [v.name for v in graph.inputs]


def test_cli_compile_cuda_is_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits.kiln"
    dump = tmp_path / "dump"
    assert main(["compile", str(DIGITS), "--input-shape", "image=1,1,8,8", "--target", "cuda",
                 "-o", str(out), "--dump", str(dump)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    [line] = captured.out.splitlines()
    assert line.startswith(f"wrote {out} (") and "nvptx64-nvidia-cuda" in line
    manifest = read_artifact(out).manifest
    for kernel in manifest["kernels"]:
        assert (dump / f"{kernel['name']}.ptx").read_text().startswith("//")
        assert (dump / f"{kernel['name']}.kir").is_file()
    assert "GPU launches" in (dump / "plan.txt").read_text()


@needs_ptxas
def test_cli_profile_without_gpu_reports_ptxas(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    if NO_GPU is None:
        pytest.skip("a GPU is present: the profile measures instead")
    out = _built("digits").export(tmp_path / "digits.kiln")
    assert main(["profile", str(out)]) == 0
    text = capsys.readouterr().out
    assert "static report" in text and "regs" in text and "spill st/ld B" in text
    for kernel in _built("digits").kernels:
        assert kernel.name in text


def test_run_without_gpu_is_a_clear_error(tmp_path: Path) -> None:
    if NO_GPU is None:
        pytest.skip("a GPU is present")
    exe = _built("mlp")
    with pytest.raises(CudaError, match="no CUDA"):
        exe.run(_inputs(_mlp(), None))
    with pytest.raises(CudaError, match="no CUDA"):
        load(exe.export(tmp_path / "m.kiln"))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("model", sorted(MODELS))
def test_gpu_outputs_match_the_reference(model: str, tmp_path: Path) -> None:
    make, shapes = MODELS[model]
    graph = make()
    inputs = _inputs(graph, shapes)
    expected = reference.run(graph, inputs)
    with load(_built(model).export(tmp_path / "m.kiln")) as gpu_model:
        got = gpu_model.run(inputs)
        times = gpu_model.time_kernels(inputs)
    assert len(times) == _built(model).stats.kernels
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


@needs_ptxas
def test_dump_has_sass_where_cuobjdump_is_installed(tmp_path: Path) -> None:
    from kiln.compiler.codegen.nvptx.ptx import cuobjdump_path

    if cuobjdump_path() is None:
        pytest.skip("cuobjdump (CUDA toolkit) not installed: the dump has no .sass files")
    build(_mlp(), target="cuda", dump_dir=tmp_path)
    sass = sorted(tmp_path.glob("*.sass"))
    assert sass and all("Function" in path.read_text() for path in sass)


def _gather() -> Graph:
    rng = np.random.default_rng(2)
    g = GraphBuilder()
    ids = g.add_input("ids", TensorType(DType.I64, (16,)))
    table = g.constant(rng.standard_normal((10, 8)).astype(np.float32))
    return g.finish([g.add1(Op.GATHER, [table, ids], name="embed")])


def test_data_errors_become_artifact_messages() -> None:
    exe = build(_gather(), target="cuda")
    assert isinstance(exe, CudaExecutable)
    messages = parse_artifact(exe.artifact).manifest["messages"]
    assert messages and all("embed" in m for m in messages)
    assert any("atom" in k.ptx for k in exe.kernels)  # the kernel sets the error word


@pytest.mark.gpu
@needs_gpu
def test_gpu_data_error_raises_its_message() -> None:
    exe = build(_gather(), target="cuda")
    ids = np.arange(16, dtype=np.int64) % 10
    np.testing.assert_array_equal(exe.run({"ids": ids})[0],
                                  reference.run(_gather(), {"ids": ids})[0])
    ids[3] = 12
    with pytest.raises(KilnRuntimeError, match="embed"):
        exe.run({"ids": ids})


def test_opt_level_3_keeps_convs_spread_over_threads() -> None:
    """-O3's blocked CPU layouts are not chosen for a GPU: the CNN's conv runs on the tiled
    GPU schedule (many threads), not on one thread as a bound NCHWc loop nest would."""
    exe = build(_cnn(), target="cuda", opt_level=3)
    assert isinstance(exe, CudaExecutable)
    assert not any("nchwc" in k.name for k in exe.kernels)
    assert all(k.launch.grid * k.launch.threads > 1 for k in exe.kernels), [
        (k.name, k.launch) for k in exe.kernels]


@needs_ptxas
def test_custom_elementwise_op_compiles_for_the_gpu() -> None:
    """A DSL custom op's numba-compiled LLVM function links into the NVPTX module too."""
    import math

    from kiln.frontends import dsl

    @dsl.elementwise
    def swish(x, beta):  # type: ignore[no-untyped-def]
        return x / (1.0 + math.exp(-beta * x))

    model = dsl.trace(lambda x: swish(x, 1.5), name="swish", x=dsl.f32[8, 64])
    exe = build(model.graph, target="cuda")
    assert isinstance(exe, CudaExecutable)
    [kernel] = exe.kernels
    [info] = run_ptxas(kernel.ptx, "sm_90")
    assert (info.spill_stores, info.spill_loads) == (0, 0)
    assert kernel.launch.grid * kernel.launch.threads >= 8 * 64
