"""onnxruntime beside Kiln (frontends/onnx/ort_profile.py): intermediates, per-op times, the join.

onnxruntime's intermediate tensors of a small ONNX model equal the reference executor's values
of the same names and serve as the numerics mode's reference; its profiler's per-op times cover
every node, counting only the measured runs; ``side_by_side`` lines a fused Kiln kernel up with
the onnxruntime ops of its source nodes.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.profile.numerics import first_divergence
from kiln.frontends.onnx import load_onnx
from kiln.frontends.onnx.ort_profile import (
    OrtOpTime,
    format_side_by_side,
    ort_intermediates,
    ort_op_times,
    side_by_side,
)
from kiln.runtime.profile import KernelCounters

pytest.importorskip("onnxruntime")

NODES = ("Conv_0", "Relu_1", "Mul_2", "Add_3", "Softmax_4")
# float32, as elsewhere for compiled or foreign results vs the reference (summation order)
RTOL, ATOL = 1e-4, 1e-5


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((1, 16, 1, 1)).astype(np.float32), "s"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="Conv_0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="Relu_1"),
        helper.make_node("Mul", ["r", "s"], ["m"], name="Mul_2"),
        helper.make_node("Add", ["m", "c"], ["a"], name="Add_3"),
        helper.make_node("Softmax", ["a"], ["y"], name="Softmax_4", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])], weights)
    # IR 10: the newest onnxruntime reads (onnx writes a newer one by default)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _inputs() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(4).standard_normal((1, 8, 32, 32)).astype(np.float32)}


def test_intermediates_match_the_reference_executor(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(_model(), str(path))
    found = ort_intermediates(path, _inputs())
    assert set(found) == {"c", "r", "m", "a", "y"}
    graph = load_onnx(path)
    values = [v for n in graph.nodes for v in n.outputs if v is not None]
    expected = dict(zip((v.name for v in values),
                        reference.run(replace(graph, outputs=tuple(values)), _inputs()),
                        strict=True))
    for name, data in found.items():
        np.testing.assert_allclose(data, expected[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("opt_level", [0, 2, 3])
def test_onnxruntime_intermediates_as_the_numerics_reference(opt_level: int) -> None:
    model, inputs = _model(), _inputs()
    report = first_divergence(load_onnx(model), inputs, opt_level=opt_level,
                              reference_values=ort_intermediates(model, inputs))
    assert report.divergence is None
    assert report.unreferenced == ()
    assert set(report.compared) | set(report.hidden) == {"c", "r", "m", "a", "y"}
    assert "y" in report.compared and (opt_level > 0 or not report.hidden)
    # from -O2 on, Conv_0 ... Add_3 are one kernel (in a blocked layout at -O3)
    assert all("Conv_0, Relu_1, Mul_2, Add_3" in why for why in report.hidden.values())


def test_divergence_after_a_layout_change_names_the_kernel_before_it() -> None:
    model, inputs = _model(), _inputs()
    values = ort_intermediates(model, inputs)
    values["a"][0, 3, 2, 1] += 1.0
    found = first_divergence(load_onnx(model), inputs, opt_level=3,
                             reference_values=values).divergence
    assert found is not None
    assert (found.node_name, found.value_name, found.index) == ("Add_3", "a", (0, 3, 2, 1))
    assert found.kernel_ops == ("Conv_0", "Relu_1", "Mul_2", "Add_3")


def test_op_times_cover_every_node_and_only_measured_runs() -> None:
    times = ort_op_times(_model(), _inputs(), threads=1, runs=3, warmup=2)
    assert [t.node_name for t in times] == list(NODES)
    assert [t.op_type for t in times] == [n.split("_")[0] for n in NODES]
    assert all(t.calls == 3 and t.total_us > 0 for t in times)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(KilnError, match="optimization must be one of"):
        ort_op_times(_model(), _inputs(), optimization="max")
    with pytest.raises(KilnError, match="need runs >= 1"):
        ort_op_times(_model(), _inputs(), runs=0)
    with pytest.raises(KilnError, match="at least one run on each side"):
        side_by_side([], [], kiln_runs=0)


def test_missing_onnxruntime_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(KilnError, match="pip install onnxruntime"):
        ort_intermediates(_model(), _inputs())


def _kernel(name: str, source_ops: tuple[str, ...], total_ns: int) -> KernelCounters:
    return KernelCounters(0, name, source_ops, flops=0, bytes=0, calls=1, total_ns=total_ns)


def test_side_by_side_lines_fused_kernels_up_with_their_source_ops() -> None:
    kernels = [
        _kernel("k0_fused", ("Conv_0", "Relu_1"), 240_000),
        _kernel("k1_layout", (), 2_000),
        _kernel("k2_softmax", ("Softmax_4",), 30_000),
        _kernel("k2_softmax_2", ("Softmax_4",), 10_000),
    ]
    ort = [OrtOpTime("Conv_0", "Conv", 4, 400), OrtOpTime("Relu_1", "Relu", 4, 20),
           OrtOpTime("Add_3", "Add", 4, 8), OrtOpTime("Softmax_4", "Softmax", 4, 100)]
    rows = side_by_side(kernels, ort, kiln_runs=2, ort_runs=4)
    assert [(r.kernels, r.source_ops) for r in rows] == [
        (("k0_fused",), ("Conv_0", "Relu_1")),
        (("k1_layout",), ()),
        (("k2_softmax", "k2_softmax_2"), ("Softmax_4",)),  # one node, two kernels: one row
        ((), ("Add_3",)),  # onnxruntime ran it; no Kiln kernel names it
    ]
    fused = rows[0]
    assert fused.kiln_us == 120.0  # 240 us over 2 runs
    assert fused.ort_ops == (("Conv_0", 100.0), ("Relu_1", 5.0)) and fused.ort_us == 105.0
    assert rows[1].ort_ops == () and rows[2].kiln_us == 20.0 and rows[2].ort_us == 25.0
    assert rows[3].kiln_us == 0.0 and rows[3].ort_us == 2.0
    table = format_side_by_side(rows)
    fused_line = next(line for line in table.splitlines() if line.startswith("k0_fused"))
    assert "Conv_0, Relu_1" in fused_line and "Conv_0 100.0 + Relu_1 5.0" in fused_line
    assert fused_line.split()[-1] == f"{120 / 105:.2f}x"
    total = table.splitlines()[-1].split()
    assert total[0] == "total" and total[1:3] == ["141.0", "132.0"]


def test_side_by_side_merges_kernels_bridging_two_rows() -> None:
    kernels = [_kernel("k0", ("A",), 1_000), _kernel("k1", ("B",), 2_000),
               _kernel("k2", ("C",), 4_000), _kernel("k3", ("B", "A"), 8_000)]
    rows = side_by_side(kernels, [OrtOpTime("A", "Relu", 1, 3), OrtOpTime("B", "Relu", 1, 5)])
    assert [(r.kernels, r.source_ops, r.kiln_us, r.ort_us) for r in rows] == [
        (("k0", "k1", "k3"), ("A", "B"), 11.0, 8.0), (("k2",), ("C",), 4.0, 0.0)]
