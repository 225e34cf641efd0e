"""The numerics mode (compiler/profile/numerics.py) finds the first wrong intermediate value.

A planted wrong kernel: the Softmax lowering is replaced, for one test, by one that adds 0.5 to
every value it stores into its output, so exactly one node of the model computes a wrong value;
``first_divergence`` must name that node (and no value before it) at -O0, where every value is
its own kernel's output, and at -O2, where the Softmax is fused with its epilogue and the
values inside the fused kernel are reported as not observable. A correct model shows no
divergence; reference values off by more (or less) than the tolerance rule allows are (or are
not) reported, at the element with the largest error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower import registry
from kiln.compiler.lower.inline import substitute_stores
from kiln.compiler.lower.kernel_ir import Kernel, Store
from kiln.compiler.lower.registry import LowerContext
from kiln.compiler.profile.numerics import DEFAULT_TOLERANCE, first_divergence

# Value names in topological order. At -O2 the Softmax, Mul and Relu fuse into one kernel whose
# outputs are s (read by the Transpose outside it) and o; m stays inside it.
ORDER = ("a", "t", "s", "m", "o", "p")
FUSED_AWAY = ("m",)


def _model() -> Graph:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (4, 8)))
    y = b.add_input("y", TensorType(DType.F32, (4, 8)))
    a = b.add1(Op.ADD, [x, y], name="add_0", output="a")
    t = b.add1(Op.TRANSPOSE, [a], {"perm": [1, 0]}, name="transpose_1", output="t")
    s = b.add1(Op.SOFTMAX, [t], name="softmax_2", output="s")
    m = b.add1(Op.MUL, [s, t], name="mul_3", output="m")
    o = b.add1(Op.RELU, [m], name="relu_4", output="o")
    p = b.add1(Op.TRANSPOSE, [s], {"perm": [1, 0]}, name="transpose_5", output="p")
    return b.finish([o, p])


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {n: rng.standard_normal((4, 8)).astype(np.float32) for n in ("x", "y")}


def _reference_values(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every value of ``graph`` by the reference executor (all node outputs made outputs)."""
    values = [v for n in graph.nodes for v in n.outputs if v is not None]
    return dict(zip((v.name for v in values),
                    reference.run(replace(graph, outputs=tuple(values)), inputs), strict=True))


@pytest.fixture
def broken_softmax(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    right = registry.lowering_for(Op.SOFTMAX)
    assert right is not None

    def wrong(ctx: LowerContext) -> list[Kernel]:
        out = ctx.output(0).name

        def plus_half(store: Store) -> Store | None:
            return (Store(store.buffer, store.indices, store.value + 0.5)
                    if store.buffer.name == out else None)

        return [replace(k, body=substitute_stores(k.body, plus_half)) for k in right(ctx)]

    monkeypatch.setitem(registry._LOWERINGS, Op.SOFTMAX, wrong)
    yield


@pytest.mark.parametrize("opt_level", [0, 2])
def test_correct_model_has_no_divergence(opt_level: int) -> None:
    report = first_divergence(_model(), _inputs(), opt_level=opt_level)
    assert report.divergence is None
    hidden = FUSED_AWAY if opt_level == 2 else ()
    assert report.compared == tuple(n for n in ORDER if n not in hidden)
    assert tuple(report.hidden) == hidden
    assert report.unreferenced == ()


def test_planted_wrong_kernel_at_o0(broken_softmax: None) -> None:
    report = first_divergence(_model(), _inputs(), opt_level=0)
    found = report.divergence
    assert found is not None
    assert (found.node_name, found.value_name, found.op) == ("softmax_2", "s", "softmax")
    assert found.kernel_ops == ("softmax_2",)
    assert report.compared == ("a", "t", "s")  # the values before it agree
    assert found.shape == found.reference_shape == (8, 4)
    # the planted error is 0.5 on every element of values in (0, 1]: at least 0.5 at the worst
    assert found.max_abs_err >= 0.5 and found.max_rel_err >= 0.5
    assert found.index is not None and found.got is not None and found.expected is not None
    assert found.got - found.expected == pytest.approx(found.max_abs_err)


def test_planted_wrong_kernel_at_o2_names_the_fused_kernel(broken_softmax: None) -> None:
    report = first_divergence(_model(), _inputs(), opt_level=2)
    found = report.divergence
    assert found is not None
    assert (found.node_name, found.value_name) == ("softmax_2", "s")
    assert found.kernel_ops == ("softmax_2", "mul_3", "relu_4")
    assert report.compared == ("a", "t", "s")
    assert "softmax_2, mul_3, relu_4" in report.hidden["m"]
    text = report.describe(details=True)
    assert "first divergence: softmax 'softmax_2'" in text
    assert f"not observable: m: {report.hidden['m']}" in text


def test_reference_values_beyond_tolerance_diverge_at_the_worst_element() -> None:
    graph, inputs = _model(), _inputs()
    values = _reference_values(graph, inputs)
    rtol, atol = DEFAULT_TOLERANCE[DType.F32]
    bound = atol + rtol * float(np.max(np.abs(values["t"])))
    # off by half the bound everywhere: within tolerance
    within = dict(values, t=values["t"] + np.float32(bound / 2))
    assert first_divergence(graph, inputs, opt_level=0, reference_values=within).divergence \
        is None
    # one element off by three times the bound: that element of t diverges
    beyond = dict(values, t=values["t"].copy())
    beyond["t"][5, 1] += np.float32(3 * bound)
    report = first_divergence(graph, inputs, opt_level=0, reference_values=beyond)
    found = report.divergence
    assert found is not None and (found.node_name, found.index) == ("transpose_1", (5, 1))
    assert found.max_abs_err == pytest.approx(3 * bound, rel=1e-3)
    assert found.max_rel_err == pytest.approx(
        found.max_abs_err / float(np.max(np.abs(beyond["t"]))))
    assert report.compared == ("a", "t")


def test_nan_agrees_only_with_nan_and_missing_references_are_listed() -> None:
    graph, inputs = _model(), _inputs()
    inputs["x"][0, 0] = np.nan
    values = _reference_values(graph, inputs)
    assert np.isnan(values["a"][0, 0])
    partial = {"a": values["a"], "t": values["t"]}
    report = first_divergence(graph, inputs, opt_level=0, reference_values=partial)
    assert report.divergence is None and report.compared == ("a", "t")
    assert report.unreferenced == ("s", "m", "o", "p")
    finite = dict(partial, a=np.nan_to_num(values["a"]))
    found = first_divergence(graph, inputs, opt_level=0, reference_values=finite).divergence
    assert found is not None and found.value_name == "a" and found.index == (0, 0)
    assert found.max_abs_err == float("inf")


def test_shape_mismatch_is_a_divergence() -> None:
    graph, inputs = _model(), _inputs()
    values = _reference_values(graph, inputs)
    found = first_divergence(graph, inputs, opt_level=0,
                             reference_values=dict(values, a=values["a"][:2])).divergence
    assert found is not None and found.value_name == "a" and found.index is None
    assert (found.shape, found.reference_shape) == ((4, 8), (2, 8))
