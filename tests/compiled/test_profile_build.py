"""Profiling builds of real models (build(..., profile=True)): the plan function's timer calls
exist only in them; the kernel table names every plan call with its ONNX source nodes and its
static cost; after R runs every kernel has R calls, and the kernels' time adds up to most of
the run time; the trace holds every kernel and, with two threads, a pool worker's chunks; a C
program reads the same counters through the ABI.

The model is a small MLP (MatMul 64x512x1024 -> Relu -> MatMul 64x1024x256 -> Softmax), whose
two matmuls dominate its run time, so per-kernel times must sum to at least half the run time
(in practice ~99%: the plan does nothing between kernels but call the timer)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from llvmlite import binding as llvm
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler import Executable, build
from kiln.compiler.analysis.kernel_cost import kernel_cost
from kiln.compiler.artifact.link import include_dir
from kiln.compiler.codegen.plan_module import build_module
from kiln.compiler.codegen.target import Target
from kiln.compiler.ir.graph import Graph
from kiln.compiler.lower.from_graph import lower_graph
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.specialize import specialize
from kiln.compiler.plan.plan import Plan, make_plan
from kiln.frontends.onnx import load_onnx
from kiln.runtime import KilnRuntimeError
from kiln.runtime.abi import Status

ROOT = Path(__file__).resolve().parents[2]
M, K, H, N = 64, 512, 1024, 256
RUNS = 5


@pytest.fixture(scope="module")
def graph() -> Graph:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((K, H)) * 0.05).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((H, N)) * 0.05).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="act1"),
        helper.make_node("MatMul", ["a", "w2"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["y"], name="prob"),
    ]
    onnx_graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])], [w1, w2])
    return load_onnx(helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.fixture(scope="module")
def plan(graph: Graph) -> Plan:
    """The plan ``build`` makes of ``graph`` (same passes and machine model)."""
    machine = Target.parse("host").machine()
    return make_plan(lower_graph(optimize(specialize(graph, None), 2, machine=machine), machine))


@pytest.fixture(scope="module")
def profiled(graph: Graph) -> Executable:
    return build(graph, threads=2, profile=True)


def feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)}


def _plan_ir(plan: Plan, profile: bool) -> str:
    module = build_module(plan, Target.parse("host"), (["x"], ["y"]), False, 0, profile=profile)
    text = str(module)
    llvm.parse_assembly(text).verify()
    return text


def test_timers_exist_only_in_a_profiling_build(plan: Plan) -> None:
    assert "kiln__profile" not in _plan_ir(plan, profile=False)
    text = _plan_ir(plan, profile=True)
    for hook in ("begin", "end"):
        calls = [line for line in text.splitlines() if f'@"kiln__profile_{hook}"(' in line
                 and "call" in line]
        assert len(calls) == len(plan.calls)


def test_kernel_table_describes_every_plan_call(profiled: Executable, plan: Plan) -> None:
    table = profiled.model().kernel_info()
    assert [k.index for k in table] == list(range(len(plan.calls)))
    assert [k.name for k in table] == [call.kernel.name for call in plan.calls]
    assert [(k.flops, k.bytes) for k in table] == [
        (kernel_cost(c.kernel).flops, kernel_cost(c.kernel).bytes) for c in plan.calls]
    # the fused kernels name the ONNX nodes inside them; every node is covered
    assert {op for k in table for op in k.source_ops} == {"fc1", "act1", "fc2", "prob"}
    (fc1,) = [k for k in table if "fc1" in k.source_ops]
    assert fc1.source_ops == ("fc1", "act1")
    # the matmul's FLOPs plus one max per element for the fused Relu
    assert fc1.flops == 2 * M * K * H + M * H


def test_counters_after_runs(profiled: Executable) -> None:
    model = profiled.model()
    model.reset_profile()
    for _ in range(RUNS):
        profiled.run(feeds())
    counters = model.profile()
    assert counters.runs == RUNS
    assert [k.calls for k in counters.kernels] == [RUNS] * len(model.kernel_info())
    assert all(k.total_ns > 0 for k in counters.kernels)
    assert 0.5 * counters.run_ns <= counters.kernel_ns <= counters.run_ns

    events = model.trace_events()
    assert all(e.begin_ns <= e.end_ns and 0 <= e.thread < 2 for e in events)
    spans = [e for e in events if e.thread == 0]
    assert [e.kernel for e in spans] == list(range(len(counters.kernels))) * RUNS
    # the matmuls are parallel loops big enough that the pool's worker takes chunks
    assert any(e.thread == 1 for e in events)


def test_profiling_gives_the_same_results(graph: Graph, profiled: Executable) -> None:
    plain = build(graph, threads=2)
    np.testing.assert_array_equal(profiled.run(feeds())[0], plain.run(feeds())[0])
    model = plain.model()
    assert not model.profiling and model.kernel_info() == []
    with pytest.raises(KilnRuntimeError, match="compiled without profiling") as error:
        model.profile()
    assert error.value.status is Status.NOT_PROFILED


def test_c_program_reads_the_counters(profiled: Executable, plan: Plan, tmp_path: Path) -> None:
    library = profiled.export(tmp_path / "model.so")
    program = tmp_path / "profile_abi"
    subprocess.run(
        ["cc", "-O1", f"-I{include_dir()}", str(ROOT / "tests" / "runtime" / "profile_abi.c"),
         str(library), "-Wl,-rpath,$ORIGIN", "-o", str(program)],
        check=True, capture_output=True, text=True)
    done = subprocess.run([str(program), "2", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    kernels = [line.split("\t") for line in lines if line.startswith("kernel ")]
    assert [k[1] for k in kernels] == [call.kernel.name for call in plan.calls]
    assert [k[2] for k in kernels] == [",".join(call.kernel.source) for call in plan.calls]
    counters = [line.split()[1:] for line in lines if line.startswith("counters ")]
    assert [(int(c[0]), int(c[1])) for c in counters] == [(i, 3) for i in range(len(plan.calls))]
    (run_stats,) = [line.split()[1:] for line in lines if line.startswith("run_stats ")]
    assert int(run_stats[0]) == 3 and sum(int(c[2]) for c in counters) <= int(run_stats[1])
