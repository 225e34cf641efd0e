"""The ONNX backend node test cases through the CUDA target's lowering: frozen as the compiled
conformance run freezes them, optimized for ``gpu_machine()``, lowered by ``lower_graph_gpu``
(every kernel in GPU form) and run by the kernel-IR interpreter with sequential GPU semantics
(race rule checked), against the cases' expected outputs. Cases the compiled CPU path is known
to fail and cases too large for the interpreter are left out; a case the interpreter cannot run
for the CPU lowering either is no failure of the GPU schedules and is left out too, as is one
whose shapes depend on input values even frozen (NonZero, Unique...: the CUDA target compiles
static shapes only, and says so)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from harness import (  # noqa: E402
    KNOWN_FAILURES_COMPILED,
    as_array,
    classify,
    collect_cases,
    compare,
    freeze_constant_inputs,
    load_known_failures,
)

from kiln.compiler.errors import KilnError  # noqa: E402
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph  # noqa: E402
from kiln.compiler.lower.gpu import check_gpu_form, gpu_machine, lower_graph_gpu  # noqa: E402
from kiln.compiler.passes.pipeline import optimize  # noqa: E402
from kiln.compiler.passes.specialize import specialize  # noqa: E402
from kiln.frontends.onnx import load_onnx  # noqa: E402

# elements in a case's first data set (inputs and outputs) above which the interpreter is slow
MAX_ELEMENTS = 3000
# lower_graph_gpu's refusal of extents known only at run time
STATIC_ONLY = "a CUDA artifact needs shapes known at compile time"


def _run(case) -> str | None:  # type: ignore[no-untyped-def]
    """A failure description, or None when the case passes or is left out."""
    model, positions = freeze_constant_inputs(case)
    inputs, outputs = case.data_sets[0]
    if sum(as_array(x).size for x in [*inputs, *outputs]) > MAX_ELEMENTS:
        return None
    graph = load_onnx(model)
    names = [v.name for v in graph.inputs]
    feeds = {n: as_array(inputs[p]) for n, p in zip(names, positions, strict=True)}
    optimized = optimize(specialize(graph, {n: feeds[n].shape for n in names}), 2,
                         machine=gpu_machine())
    try:
        lowered = lower_graph_gpu(optimized)
    except KilnError as error:
        if STATIC_ONLY in str(error):
            return None
        raise
    for step in lowered.steps:
        for kernel in step.kernels:
            check_gpu_form(kernel)
    try:
        got = interpret_lowered(lowered, feeds)
    except Exception as error:
        try:
            interpret_lowered(lower_graph(optimized, gpu_machine()), feeds)
        except Exception:
            return None  # the interpreter cannot run this case's CPU lowering either
        return f"{type(error).__name__}: {error}"
    for index, (actual, expected) in enumerate(zip(got, outputs, strict=True)):
        problem = compare(np.asarray(actual), as_array(expected), case.rtol, case.atol,
                          values=True)
        if problem:
            return f"output {index}: {problem}"
    return None


@pytest.mark.slow
def test_node_cases_through_gpu_schedules() -> None:
    known = load_known_failures(KNOWN_FAILURES_COMPILED)
    failures, ran = [], 0
    for name, case in sorted(collect_cases().items()):
        if name in known or classify(case.model)[0] != "numeric":
            continue
        try:
            with np.errstate(all="ignore"):
                problem = _run(case)
        except Exception as error:  # a lowering error is a failure too; go on to the next
            problem = f"{type(error).__name__}: {error}"
        ran += 1
        if problem:
            failures.append(f"{name}: {problem}")
    assert ran > 1000
    assert not failures, "\n".join(failures)
