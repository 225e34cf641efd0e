"""Plans with run-time extents, compiled and run natively: one library for every batch size.

Hand-built kernel IR (independent of any op's lowering) exercises each mechanism: an input
symbol read from the input shape, a kernel that defines a value-dependent extent, an arena
whose offsets and size are computed at run time, a dynamic output read after the run, bounds,
``infer_shapes``, the checks of input extents, and the C ABI (kiln_run_shaped, kiln_output,
kiln_infer_shapes) from a C program.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kiln.compiler.artifact import build_library
from kiln.compiler.codegen.llvm import optimize_and_emit
from kiln.compiler.codegen.plan_module import build_module
from kiln.compiler.codegen.target import Target
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.from_graph import (
    DimTable,
    InputDim,
    LoweredGraph,
    LoweredNode,
    interpret_lowered,
    with_dims_param,
)
from kiln.compiler.lower.kernel_ir import (
    DIMS,
    Buffer,
    Const,
    Kernel,
    Loop,
    LoopKind,
    Store,
    Var,
    define_dim,
)
from kiln.compiler.plan.plan import Place, make_plan
from kiln.runtime import KilnRuntimeError, load
from kiln.runtime.abi import Status


def _graph(define_count: bool = True) -> LoweredGraph:
    """x: f32[batch, 4] -> mid = 2 * x (arena, run-time size) -> y: f32[count] = mid.flat[1:]
    with count = 4 * batch - 1 set by a kernel (a value-dependent extent)."""
    table = DimTable()
    batch = table.new_slot("batch")
    table.symbols["batch"] = 0
    table.input_dims.append(InputDim(0, 0, 0))
    count = table.new_slot("%y axis 0")
    x = Buffer("x", DType.F32, (batch, 4))
    mid = Buffer("mid", DType.F32, (batch, 4))
    y = Buffer("y", DType.F32, (count,))
    i, j = Var("i"), Var("j")
    double = Kernel("double", (x,), (mid,), Loop(
        i, batch, Loop(j, Const(4, DType.I64), mid.store([i, j], x.load(i, j) * 2.0)),
        LoopKind.PARALLEL))
    shape = Kernel("count", (), (), define_dim(count, batch * 4 - 1))
    tail = Kernel("tail", (mid,), (y,), Loop(
        i, count, y.store([i], mid.load((i + 1) // 4, (i + 1) % 4))))
    kernels = [double, shape, tail] if define_count else [double, tail]
    steps = tuple(LoweredNode(None, (with_dims_param(k),), ()) for k in kernels)  # type: ignore[arg-type]
    return LoweredGraph((x,), (y,), {}, {}, steps, table)


def _library(lowered: LoweredGraph, folder: Path,
             bounds: dict[str, tuple[int, int]] | None = None) -> Path:
    plan = make_plan(lowered, bounds)
    target = Target.parse("host")
    module = build_module(plan, target, (["x"], ["y"]), False, 0)

    def spec(name: str, buffer: Buffer) -> tuple[str, DType, tuple[int, ...]]:
        return name, buffer.dtype, tuple(d if isinstance(d, int) else -1 for d in buffer.shape)

    library = folder / "model.so"
    build_library(optimize_and_emit(module, target, 2), library,
                  inputs=[spec("x", lowered.inputs[0])], outputs=[spec("y", lowered.outputs[0])],
                  weights=b"", external_weights=False, target=target)
    return library


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _library(_graph(), tmp_path_factory.mktemp("dynamic"))


def _expected(x: np.ndarray) -> np.ndarray:
    return (2 * x).reshape(-1)[1:]


def test_the_interpreter_runs_one_lowering_at_every_size() -> None:
    lowered = _graph()
    for batch in (1, 3):
        x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
        (got,) = interpret_lowered(lowered, {"x": x})
        np.testing.assert_array_equal(got, _expected(x))


def test_the_plan_places_run_time_sizes() -> None:
    plan = make_plan(_graph())
    assert not plan.is_static and plan.arena_extent is not None
    assert plan.output_dynamic == (0,)
    (dynamic,) = plan.dynamic
    assert dynamic.name == "y" and dynamic.first_call == 2
    places = {loc.place for call in plan.calls for loc in call.args}
    assert places == {Place.INPUT, Place.ARENA, Place.DIMS, Place.DYNAMIC}
    # Without bounds the arena starts at the size for batch 1 and grows at run time.
    assert plan.arena_bytes == 64
    assert make_plan(_graph(), {"batch": (1, 64)}).arena_bytes == 64 * 4 * 4


def test_a_kernel_using_an_extent_nobody_sets_is_a_compile_error() -> None:
    with pytest.raises(KilnError, match=r"kernel tail uses the run-time extent of %y axis 0"):
        make_plan(_graph(define_count=False))


def test_one_library_runs_every_batch_size(library: Path) -> None:
    model = load(str(library))
    assert str(model.inputs[0]) == "x: float32[?,4]" and model.outputs[0].shape == (None,)
    for batch in (1, 1000, 3, 1):  # grows the arena, then reuses it
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        (got,) = model.run({"x": x})
        np.testing.assert_array_equal(got, _expected(x))


def test_a_free_axis_needs_an_extent_of_at_least_one(library: Path) -> None:
    # the type rules take every symbol as >= 1 (x[:, 1:] has seq-1 rows)
    with pytest.raises(KilnRuntimeError, match="axis 0 has extent 0; the model was compiled "
                                               "with this axis free") as error:
        load(str(library)).run({"x": np.zeros((0, 4), np.float32)})
    assert error.value.status is Status.SHAPE


def test_a_negative_extent_set_by_a_kernel_stops_the_run(tmp_path: Path) -> None:
    lowered = _graph()
    shape_kernel = lowered.steps[1].kernels[0]
    count = shape_kernel.body.indices[0]  # type: ignore[attr-defined]
    negative = replace(shape_kernel, body=Store(DIMS, (count,), Const(-2, DType.I64)))
    steps = (lowered.steps[0], replace(lowered.steps[1], kernels=(negative,)), lowered.steps[2])
    model = load(str(_library(replace(lowered, steps=steps), tmp_path)))
    with pytest.raises(KilnRuntimeError, match="negative extent for %y axis 0"):
        model.run({"x": np.ones((2, 4), np.float32)})


def test_shapes_are_inferred_before_running(library: Path) -> None:
    model = load(str(library))
    assert model.infer_shapes({"x": (7, 4)}) == [(None,)]  # depends on a kernel's value
    with pytest.raises(KilnRuntimeError, match=r"expected shape \(\?, 4\), got \(7, 5\)"):
        model.infer_shapes({"x": (7, 5)})


def test_bounds_are_checked_at_run_time(tmp_path: Path) -> None:
    model = load(str(_library(_graph(), tmp_path, {"batch": (2, 8)})))
    np.testing.assert_array_equal(model.run({"x": np.ones((8, 4), np.float32)})[0],
                                  np.full(31, 2, np.float32))
    with pytest.raises(KilnRuntimeError, match="axis 0 has extent 9, outside the bounds 2..8") as e:
        model.run({"x": np.ones((9, 4), np.float32)})
    assert e.value.status is Status.SHAPE


_C_PROGRAM = r"""
#include <stdio.h>
#include "model.h"

int main(void) {
    static float x[5 * 4];
    for (int i = 0; i < 20; i++) x[i] = (float)i;
    int64_t shape[2] = {5, 4}, out_shape[1] = {0};
    const int64_t *shapes[1] = {shape};
    int64_t *out_shapes[1] = {out_shape};
    kiln_status s = kiln_infer_shapes(shapes, out_shapes);
    printf("infer %d %lld\n", (int)s, (long long)out_shape[0]);
    kiln_instance *inst = NULL;
    if (kiln_create(1, NULL, &inst) != KILN_OK) return 1;
    const void *in[1] = {x};
    void *out[1] = {NULL};
    printf("run %d\n", (int)kiln_run(inst, in, out));
    const void *data = NULL;
    const int64_t *got = NULL;
    printf("early %d\n", (int)kiln_output(inst, 0, &data, &got));
    s = kiln_run_shaped(inst, in, shapes, out);
    printf("shaped %d\n", (int)s);
    s = kiln_output(inst, 0, &data, &got);
    printf("output %d %lld %g %g\n", (int)s, (long long)got[0], ((const float *)data)[0],
           ((const float *)data)[18]);
    shape[1] = 3;
    printf("bad %d %s\n", (int)kiln_run_shaped(inst, in, shapes, out), kiln_last_error());
    kiln_destroy(inst);
    return 0;
}
"""


def test_the_c_abi_runs_a_dynamic_model(library: Path, tmp_path: Path) -> None:
    source = tmp_path / "main.c"
    source.write_text(_C_PROGRAM)
    program = tmp_path / "main"
    folder = library.parent
    subprocess.run(["cc", "-Wall", "-Werror", f"-I{folder}", str(source), str(library),
                    f"-Wl,-rpath,{folder}", "-o", str(program)], check=True)
    lines = dict(line.split(" ", 1) for line in
                 subprocess.run([str(program)], capture_output=True, text=True, check=True,
                                timeout=60).stdout.splitlines())
    assert lines["infer"] == f"{Status.OK} -1"
    assert lines["run"] == str(Status.INVALID_ARGUMENT)
    assert lines["early"] == str(Status.INVALID_ARGUMENT)
    assert lines["shaped"] == str(Status.OK)
    assert lines["output"] == f"{Status.OK} 19 2 38"
    assert lines["bad"] == (f"{Status.SHAPE} kiln_run_shaped: input 'x' axis 1 has extent 3, "
                            "expected 4")


def _free_batch_graph() -> object:
    from kiln.compiler.ir.builder import GraphBuilder
    from kiln.compiler.ir.op import Op
    from kiln.compiler.ir.types import TensorType

    builder = GraphBuilder("free")
    x = builder.add_input("x", TensorType(DType.F32, ("batch", 4)))
    return builder.finish([builder.add1(Op.RELU, [x])])


@pytest.mark.parametrize("what", ["a CUDA artifact", "a static bundle"])
def test_static_only_artifacts_refuse_free_extents(what: str, tmp_path: Path) -> None:
    from kiln.compiler.driver import build, build_bundle

    graph = _free_batch_graph()
    with pytest.raises(KilnError, match=fr"{what} needs shapes known at compile time; x\[\?,4\]"):
        if what == "a CUDA artifact":
            build(graph, target="cuda")  # type: ignore[arg-type]
        else:
            build_bundle(graph, tmp_path / "model.o")  # type: ignore[arg-type]
    # bound, both build
    assert build(graph, target="cuda", input_shapes={"x": (2, 4)})  # type: ignore[arg-type]


def _plan_functions(library: Path) -> list[str]:
    symbols = subprocess.run(["nm", str(library)], capture_output=True, text=True, check=True)
    return sorted(line.split()[-1] for line in symbols.stdout.splitlines()
                  if "kiln__plan_run" in line)


def _two_input_graph() -> object:
    from kiln.compiler.ir.builder import GraphBuilder
    from kiln.compiler.ir.op import Op
    from kiln.compiler.ir.types import TensorType

    builder = GraphBuilder("two")
    x = builder.add_input("x", TensorType(DType.F32, ("batch", "seq", 8)))
    w = builder.constant(np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32))
    scores = builder.add1(Op.SOFTMAX, [builder.add1(Op.MATMUL, [x, w])], {"axis": 1})
    return builder.finish([scores])


def test_specialized_plans_run_when_the_shapes_match() -> None:
    from kiln.compiler import reference
    from kiln.compiler.driver import build

    graph = _two_input_graph()
    exe = build(graph, specialize=[{"x": (1, 16, 8)}, {"x": (4, 3, 8)}])  # type: ignore[arg-type]
    assert _plan_functions(exe.library) == ["kiln__plan_run", "kiln__plan_run_s0_",
                                            "kiln__plan_run_s1_"]
    general = build(graph, specialize=[])  # type: ignore[arg-type]
    assert _plan_functions(general.library) == ["kiln__plan_run"]
    for shape in ((1, 16, 8), (4, 3, 8), (2, 16, 8), (1, 3, 8)):  # specialized, then general
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        (expected,) = reference.run(graph, {"x": x})  # type: ignore[arg-type]
        for library in (exe, general):
            np.testing.assert_allclose(library.run({"x": x})[0], expected, rtol=1e-5,
                                       atol=1e-6)


def test_batch_one_is_specialized_by_default_for_a_free_batch_only(tmp_path: Path) -> None:
    from kiln.compiler.driver import build

    free_batch = build(_free_batch_graph())  # type: ignore[arg-type]
    assert _plan_functions(free_batch.library) == ["kiln__plan_run", "kiln__plan_run_s0_"]
    free_sequence = build(_two_input_graph())  # type: ignore[arg-type]
    assert _plan_functions(free_sequence.library) == ["kiln__plan_run"]
    for batch in (1, 2):
        x = np.linspace(-1, 1, batch * 4, dtype=np.float32).reshape(batch, 4)
        np.testing.assert_array_equal(free_batch.run({"x": x})[0], np.maximum(x, 0))
