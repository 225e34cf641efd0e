"""The ONNX exporter (``to_onnx`` / ``save_onnx``), checked against onnxruntime and the importer.

* Node conformance round trip: each ONNX backend node case goes ``load_onnx`` -> ``to_onnx`` ->
  onnxruntime, whose outputs must match the case's expected ones with the conformance harness's
  rules and tolerances (harness.py). Skipped, with the reason: cases the harness excludes, cases
  ``load_onnx`` refuses, cases that need an opset newer than onnxruntime loads (their export at
  that opset is still checked), and cases onnxruntime cannot run in their original form either
  (or, for ``ORT_LIMITS``, only in their original opset).
* Models: the PyTorch zoo (tests/models/zoo.py) and the nine light models exported from their
  imported graphs give onnxruntime the outputs the original files give it.
* Text round trip: ``load_onnx(to_onnx(g))`` prints as ``g`` does, once ``g``'s main-graph
  constants are moved to the front without their node names (initializers have neither a
  position among the nodes nor a node name); where ``g`` repeats a node name (which ONNX
  forbids) the exporter renames the repeats, so locations are left out of that comparison.
* Every exported model passes ``onnx.checker.check_model(full_check=True)``, except where
  onnx's own full check fails on the case's original model too (then the plain check).
* Errors: ops the optimizer makes, opsets out of range, what an older opset lacks, elided data.

The full sweeps are ``slow``; a sample of each (control flow, every attribute kind, the skip
paths) runs in the fast tier.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "conformance"), str(ROOT / "tests" / "models")]
from harness import as_array, classify, collect_cases, compare  # noqa: E402
from light import LIGHT, MODELS, dummy_inputs  # noqa: E402

try:
    from torch_export import EXPORTERS
    from zoo import UNSUPPORTED, ZOO
except ImportError:  # without PyTorch there are no zoo models to parametrize over
    EXPORTERS, UNSUPPORTED, ZOO = (), set(), {}

from kiln.compiler import reference  # noqa: E402
from kiln.compiler.errors import KilnError, UnsupportedOpError  # noqa: E402
from kiln.compiler.ir.builder import GraphBuilder  # noqa: E402
from kiln.compiler.ir.graph import Graph  # noqa: E402
from kiln.compiler.ir.op import Op  # noqa: E402
from kiln.compiler.ir.parser import parse_graph  # noqa: E402
from kiln.compiler.ir.printer import print_graph  # noqa: E402
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType  # noqa: E402
from kiln.compiler.passes.pipeline import optimize  # noqa: E402
from kiln.frontends.onnx import load_onnx, save_onnx, to_onnx  # noqa: E402
from kiln.frontends.onnx.export import DEFAULT_OPSET, MIN_OPSET  # noqa: E402
from kiln.frontends.onnx.functions import LATEST  # noqa: E402
from kiln.frontends.onnx.mapping import KILN_DOMAIN  # noqa: E402

CASES = collect_cases()
# Cases whose original runs in onnxruntime only because of the original's opset.
ORT_LIMITS = {
    "test_swish": "onnxruntime 1.31 has no Swish kernel; it inlines Swish's function body, "
                  "defined for opset 24, in opset-24 models only",
}
FAST_CASES = [
    "test_if", "test_loop11", "test_scan9_sum", "test_scan9_multi_state",
    "test_range_float_type_positive_delta_expanded", "test_conv_with_strides_padding",
    "test_leakyrelu", "test_gelu_tanh_1", "test_resize_upsample_scales_linear",
    "test_constantofshape_float_ones", "test_cast_FLOAT_to_DOUBLE", "test_softmax_example",
    "test_softmax_example_expanded", "test_lstm_defaults", "test_gru_defaults",
    "test_nonzero_example", "test_einsum_batch_matmul", "test_layer_normalization_2d_axis0",
    "test_training_dropout_mask", "test_argmax_keepdims_random", "test_reshape_reordered_all_dims",
    "test_slice_neg_steps", "test_reflect_pad",
    "test_spacetodepth_crd_mode_example", "test_swiglu", "test_swish", "test_cast_FLOAT_to_INT4",
    "test_scan_sum", "test_bernoulli", "test_mvn",
]
CHECK_ERRORS = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)
VS_ONNXRUNTIME = {"rtol": 1e-4, "atol": 1e-5}  # the same graph in the same runtime
_OPTIONS = ort.SessionOptions()
_OPTIONS.log_severity_level = 3  # onnxruntime's warnings (unused initializers...) are noise


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, _OPTIONS, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = _session(model)
    return list(session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()}))


def _check(model: onnx.ModelProto, original: onnx.ModelProto | None = None) -> None:
    """The full check, or the plain one where onnx's full check fails on ``original`` too."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except CHECK_ERRORS:
        if original is None:
            raise
        with pytest.raises(CHECK_ERRORS):
            onnx.checker.check_model(original, full_check=True)
        onnx.checker.check_model(model)


def _canonical(graph: Graph) -> Graph:
    """``graph`` with its constants first and unnamed: what initializers read back as."""
    constants = [dataclasses.replace(n, name="") for n in graph.nodes if n.op is Op.CONSTANT]
    others = [n for n in graph.nodes if n.op is not Op.CONSTANT]
    return Graph(graph.name, graph.inputs, (*constants, *others), graph.outputs)


def _repeats_names(graph: Graph, top: bool = True) -> bool:
    """Whether a graph repeats the name of a node it exports as a node (main-graph constants
    become initializers)."""
    names = [n.name for n in graph.nodes if n.name and not (top and n.op is Op.CONSTANT)]
    return len(names) != len(set(names)) or any(
        _repeats_names(body, top=False) for n in graph.nodes for body in n.subgraphs())


def _assert_text_round_trip(graph: Graph, model: onnx.ModelProto) -> None:
    expected = print_graph(_canonical(graph))
    got = print_graph(load_onnx(model))
    if _repeats_names(graph):
        names = [n.name for n in model.graph.node if n.name]
        assert len(names) == len(set(names)), "exported node names repeat"
        expected, got = (re.sub(r' loc\(".*"\)$', "", t, flags=re.M) for t in (expected, got))
    assert got == expected


def _exported(graph: Graph) -> tuple[onnx.ModelProto, int]:
    """The model at the default opset, else at the first newer one that expresses ``graph``."""
    try:
        return to_onnx(graph), DEFAULT_OPSET
    except UnsupportedOpError as error:
        for opset in range(DEFAULT_OPSET + 1, LATEST + 1):
            try:
                return to_onnx(graph, opset), opset
            except UnsupportedOpError:
                continue
        raise error


def _ort_problem(model: onnx.ModelProto, case: Any, names: list[str], values: bool) -> str | None:
    """Why onnxruntime running ``model`` on the case's data misses its outputs (None: it
    matches)."""
    try:
        session = _session(model)
        for inputs, outputs in case.data_sets:
            feeds = {n: as_array(x) for n, x in zip(names, inputs, strict=True)}
            got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
            if len(got) != len(outputs):
                return f"{len(got)} outputs, expected {len(outputs)}"
            for index, (actual, expected) in enumerate(zip(got, outputs, strict=True)):
                problem = compare(np.asarray(actual), as_array(expected), case.rtol, case.atol,
                                  values)
                if problem:
                    return f"output {index}: {problem}"
    except Exception as error:  # onnxruntime's refusals come as several exception types
        return f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return None


def _assert_reference_gives_outputs(graph: Graph, case: Any, values: bool) -> None:
    names = [v.name for v in graph.inputs]
    for inputs, outputs in case.data_sets:
        feeds = {n: as_array(x) for n, x in zip(names, inputs, strict=True)}
        got = reference.run(graph, feeds)
        assert len(got) == len(outputs)
        for index, (actual, expected) in enumerate(zip(got, outputs, strict=True)):
            problem = compare(np.asarray(actual), as_array(expected), case.rtol, case.atol,
                              values)
            assert problem is None, f"output {index}: {problem}"


def _check_case(name: str) -> None:
    case = CASES[name]
    group, reason = classify(case.model)
    if group == "excluded":
        pytest.skip(f"excluded: {reason}")
    try:
        graph = load_onnx(case.model)
    except KilnError as error:
        pytest.skip(f"load_onnx: {type(error).__name__}: {error}"[:300])
    model, opset = _exported(graph)
    _check(model, case.model)
    _assert_text_round_trip(graph, model)
    if any(entry.domain == KILN_DOMAIN for entry in model.opset_import):
        # onnxruntime cannot run Kiln's own domain: the export reads back to the same graph
        # (checked above), whose results must still be the case's
        _assert_reference_gives_outputs(load_onnx(model), case, group == "numeric")
        return
    if opset != DEFAULT_OPSET:
        pytest.skip(f"needs opset {opset}; onnxruntime {ort.__version__} loads up to "
                    f"{DEFAULT_OPSET} (the opset-{opset} export passed the checks)")
    names = [v.name for v in graph.inputs]
    problem = _ort_problem(model, case, names, group == "numeric")
    if problem is None:
        return
    if name in ORT_LIMITS:
        pytest.skip(f"onnxruntime: {ORT_LIMITS[name]}")
    original = _ort_problem(case.model, case, names, group == "numeric")
    if original is not None:
        pytest.skip(f"onnxruntime cannot run the original either: {original}")
    pytest.fail(f"the export fails where the original passes: {problem}")


def test_fast_cases_exist() -> None:
    assert sorted(set(FAST_CASES) - set(CASES)) == []


@pytest.mark.parametrize("name", FAST_CASES)
def test_node_case_sample(name: str) -> None:
    _check_case(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_node_case(name: str) -> None:
    _check_case(name)


# -- models -----------------------------------------------------------------------------------

ZOO_FAST = {("mlp", "torchscript"), ("lenet", "torchscript")}
LIGHT_FAST = {"squeezenet"}  # it repeats a node name: the renaming path


def _dims(info: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or None
            for d in info.type.tensor_type.shape.dim]


def _assert_same_outputs(path: Path, model: onnx.ModelProto,
                         feeds: dict[str, np.ndarray]) -> None:
    """``model`` (exported from ``path``'s graph) computes in onnxruntime what ``path`` does,
    and declares the same graph inputs."""
    original = onnx.load(str(path))
    initialized = {t.name for t in original.graph.initializer}
    declared = [(i.name, i.type.tensor_type.elem_type, _dims(i)) for i in original.graph.input
                if i.name not in initialized]
    assert [(i.name, i.type.tensor_type.elem_type, _dims(i)) for i in model.graph.input] == declared
    expected = _run(str(path), feeds)
    got = _run(model, feeds)
    assert len(got) == len(expected)
    for index, (actual, wanted) in enumerate(zip(got, expected, strict=True)):
        problem = compare(actual, wanted, **VS_ONNXRUNTIME)
        assert problem is None, f"output {index}: {problem}"


@pytest.mark.parametrize(("name", "exporter"), [
    pytest.param(n, e, marks=() if (n, e) in ZOO_FAST else pytest.mark.slow)
    for n in ZOO for e in EXPORTERS if (n, e) not in UNSUPPORTED
])
def test_zoo_model(name: str, exporter: str, tmp_path: Path) -> None:
    exported = ZOO[name](exporter, tmp_path)
    graph = load_onnx(exported.path)
    model = to_onnx(graph)
    _check(model)
    _assert_text_round_trip(graph, model)
    _assert_same_outputs(exported.path, model, exported.inputs)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in LIGHT_FAST else pytest.mark.slow) for n in sorted(MODELS)
])
def test_light_model(name: str) -> None:
    path = LIGHT / f"light_{name}.onnx"
    graph = load_onnx(path)
    model = to_onnx(graph)
    _check(model)
    _assert_text_round_trip(graph, model)
    _assert_same_outputs(path, model, dummy_inputs(onnx.load(str(path))))


# -- graphs built by hand ---------------------------------------------------------------------

RNG = np.random.default_rng(0)
F32 = DType.F32
# A custom elementwise function, |x * y|, as the DSL would carry it.
ABS_PRODUCT = """define float @abs_product(float %x, float %y) {
  %p = fmul float %x, %y
  %r = call float @llvm.fabs.f32(float %p)
  ret float %r
}
declare float @llvm.fabs.f32(float)
"""


def _assert_matches_reference(graph: Graph, model: onnx.ModelProto,
                              feeds: dict[str, np.ndarray]) -> None:
    expected = reference.run(graph, feeds)
    got = _run(model, feeds)
    assert len(got) == len(expected)
    for index, (actual, wanted) in enumerate(zip(got, expected, strict=True)):
        problem = compare(np.asarray(actual), wanted, **VS_ONNXRUNTIME)
        assert problem is None, f"output {index}: {problem}"


def test_default_opset_is_the_newest_onnxruntime_loads() -> None:
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, (2,)))
    graph = builder.finish([builder.add1(Op.RELU, [x])])
    model = to_onnx(graph)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", DEFAULT_OPSET)]
    assert (DEFAULT_OPSET, model.ir_version) == (26, 13)
    assert model.producer_name == "kiln"
    _assert_matches_reference(graph, model, {"x": np.array([-1, 2], np.float32)})
    with pytest.raises(Exception, match="opset"):  # onnxruntime 1.31 stops at opset 26
        _session(to_onnx(graph, DEFAULT_OPSET + 1))


def test_outputs_that_are_inputs_constants_or_repeated() -> None:
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, (2, 3)))
    c = builder.constant(np.arange(3, dtype=np.float32), "c")
    y = builder.add1(Op.ADD, [x, c], name="add")
    graph = builder.finish([x, c, y, y])
    model = to_onnx(graph)
    _check(model)
    assert [t.name for t in model.graph.initializer] == ["c"]
    _assert_text_round_trip(graph, model)
    _assert_matches_reference(graph, model, {"x": RNG.normal(size=(2, 3)).astype(np.float32)})


def test_symbolic_and_unknown_dims() -> None:
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, ("batch", 3)))
    indices = builder.add1(Op.NONZERO, [x], name="nz")
    assert indices.type.shape == (2, UNKNOWN)
    graph = builder.finish([indices])
    model = to_onnx(graph)
    _check(model)
    assert _dims(model.graph.input[0]) == ["batch", 3]
    assert _dims(model.graph.output[0]) == [2, None]
    _assert_text_round_trip(graph, model)
    feeds = {"x": np.array([[0, 1, 2], [3, 0, 0]], np.float32)}
    _assert_matches_reference(graph, model, feeds)


def test_if_body_returning_an_outer_value() -> None:
    """ONNX bodies must define their outputs: an outer value returned gets an Identity."""
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, ("n",)))
    flag = builder.add_input("flag", TensorType(DType.BOOL, ()))
    then_branch = builder.sub("then").finish([x])
    other = builder.sub("else")
    doubled = other.add1(Op.MUL, [x, other.constant(np.float32(2.0), "two")], name="double")
    else_branch = other.finish([doubled])
    y = builder.add1(Op.IF, [flag], {"then_branch": then_branch, "else_branch": else_branch},
                     name="choose")
    graph = builder.finish([y])
    model = to_onnx(graph)
    _check(model)
    body = model.graph.node[0].attribute[0].g
    assert [n.op_type for n in body.node] == ["Identity"]
    for value in (True, False):
        feeds = {"x": RNG.normal(size=5).astype(np.float32), "flag": np.array(value)}
        _assert_matches_reference(graph, model, feeds)
        _assert_matches_reference(load_onnx(model), model, feeds)


def test_custom_elementwise_round_trips_in_kiln_domain() -> None:
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, ("batch", 4)))
    c = builder.constant(np.array([-2, -1, 0, 1], np.float32), "c")
    attrs = {"name": "abs_product", "symbol": "abs_product", "llvm_ir": ABS_PRODUCT,
             "dtype": F32}
    y = builder.add1(Op.CUSTOM_ELEMENTWISE, [x, c], attrs, name="custom")
    graph = builder.finish([builder.add1(Op.NEG, [y], name="neg")])
    model = to_onnx(graph)
    _check(model)
    node = model.graph.node[0]
    assert (node.domain, node.op_type) == ("ai.kiln", "CustomElementwise")
    assert ("ai.kiln", 1) in [(o.domain, o.version) for o in model.opset_import]
    _assert_text_round_trip(graph, model)
    data = RNG.normal(size=(3, 4)).astype(np.float32)
    (got,) = reference.run(load_onnx(model), {"x": data})
    np.testing.assert_array_equal(got, -np.abs(data * np.array([-2, -1, 0, 1], np.float32)))


def test_unknown_op_of_the_kiln_domain_is_refused() -> None:
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Mystery", ["x"], ["y"], name="m", domain="ai.kiln")], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])]),
        opset_imports=[onnx.helper.make_opsetid("", DEFAULT_OPSET),
                       onnx.helper.make_opsetid("ai.kiln", 1)])
    with pytest.raises(UnsupportedOpError, match=r"Mystery \(domain 'ai.kiln', opset 1\)"):
        load_onnx(model)


def test_dsl_model_runs_in_onnxruntime() -> None:
    from kiln.frontends import dsl

    w1 = RNG.normal(size=(8, 16)).astype(np.float32)
    w2 = RNG.normal(size=(16, 3)).astype(np.float32)

    def forward(x: dsl.Tensor) -> tuple[dsl.Tensor, dsl.Tensor]:
        hidden = dsl.nn.relu(x @ w1 + 0.5)
        return dsl.nn.softmax(hidden @ w2, axis=-1), hidden.sum(axis=1)

    net = dsl.trace(forward, x=dsl.f32["batch", 8])
    model = to_onnx(net.graph)
    _check(model)
    _assert_text_round_trip(net.graph, model)
    _assert_matches_reference(net.graph, model, {"x": RNG.normal(size=(5, 8)).astype(np.float32)})


def test_save_onnx_writes_the_model(tmp_path: Path) -> None:
    graph = load_onnx(CASES["test_if"].model)
    path = tmp_path / "model.onnx"
    model = save_onnx(graph, path, opset=MIN_OPSET)
    assert onnx.load(str(path)).SerializeToString() == model.SerializeToString()
    assert save_onnx(graph).SerializeToString() == to_onnx(graph).SerializeToString()
    _assert_text_round_trip(graph, onnx.load(str(path)))


def test_oldest_supported_opset_runs() -> None:
    case = CASES["test_conv_with_strides_padding"]
    graph = load_onnx(case.model)
    model = to_onnx(graph, MIN_OPSET)
    _check(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", MIN_OPSET)]
    names = [v.name for v in graph.inputs]
    assert _ort_problem(model, case, names, values=True) is None


# -- errors -----------------------------------------------------------------------------------


def test_optimized_graph_is_refused_naming_the_op() -> None:
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, (4, 8)))
    y = builder.add1(Op.MATMUL, [x, builder.constant(np.ones((8, 3), np.float32))], name="mm")
    graph = builder.finish([builder.add1(Op.RELU, [y], name="act")])
    fused = optimize(graph, opt_level=2)
    assert any(n.op is Op.FUSED for n in fused.nodes)
    with pytest.raises(UnsupportedOpError, match=r"node 'fused_\d+' \(fused\): Kiln's fused op "
                       r"has no ONNX counterpart"):
        to_onnx(fused)


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, LATEST + 1])
def test_opset_out_of_range(opset: int) -> None:
    graph = load_onnx(CASES["test_if"].model)
    with pytest.raises(KilnError, match=f"supports opsets {MIN_OPSET} to {LATEST}, not {opset}"):
        to_onnx(graph, opset)


@pytest.mark.parametrize(("name", "lack", "needed"), [
    ("test_swiglu", "has no SwiGLU op", 28),
    ("test_spacetodepth_crd_mode_example", "has no attribute 'mode' of SpaceToDepth", 28),
    ("test_celu_float16", "does not allow element type f16 for Celu operand 'X'", 28),
    ("test_range_float16_type_positive_delta", "does not allow element type f16 for Range", 27),
])
def test_what_an_opset_lacks_names_the_opset_that_has_it(name: str, lack: str,
                                                         needed: int) -> None:
    graph = load_onnx(CASES[name].model)
    pattern = re.escape(f"ONNX opset {DEFAULT_OPSET} {lack}")
    with pytest.raises(UnsupportedOpError,
                       match=f"{pattern}.*opset {needed} has it: pass opset={needed}"):
        to_onnx(graph)
    _check(to_onnx(graph, needed))


def test_defaults_the_opset_lacks_are_left_out() -> None:
    """SpaceToDepth's mode exists from opset 28; its default, DCR, is opset 26's behavior."""
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, (1, 2, 4, 4)))
    graph = builder.finish([builder.add1(Op.SPACE_TO_DEPTH, [x], {"blocksize": 2})])
    model = to_onnx(graph)
    assert [a.name for a in model.graph.node[0].attribute] == ["blocksize"]
    _assert_matches_reference(graph, model,
                              {"x": RNG.normal(size=(1, 2, 4, 4)).astype(np.float32)})


def test_elided_constant_is_refused() -> None:
    builder = GraphBuilder("main")
    x = builder.add_input("x", TensorType(F32, (64,)))
    graph = builder.finish([builder.add1(Op.ADD, [x, builder.constant(
        np.ones(64, np.float32), "w")])])
    with pytest.raises(KilnError, match="elided"):
        to_onnx(parse_graph(print_graph(graph)))
