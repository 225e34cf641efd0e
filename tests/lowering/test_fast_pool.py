"""Windowed pools with a vectorized interior (compiler/lower/ops/nn_pool_interior.py):
average and max pools over geometries whose interior and borders both matter (padding,
strides, dilations, ceil mode, pads counted or not, 1-D to 3-D), compiled and interpreted
against the reference executor, with NaN and -inf in the data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from nodegraph import node_graph
from test_fast_rows import compiled, data

from kiln.compiler.ir.op import Op
from kiln.compiler.lower.from_graph import lower_graph
from kiln.compiler.lower.inline import walk
from kiln.compiler.lower.kernel_ir import Loop, LoopKind

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

GEOMETRIES: list[tuple[tuple[int, ...], dict[str, Any]]] = [
    ((1, 3, 23, 23), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 2, 16, 21), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 2, 17, 19), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ((1, 2, 20, 25), {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [0, 1, 2, 0],
                      "dilations": [2, 1]}),
    ((1, 2, 19, 30), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 3, 40), {"kernel_shape": [5], "strides": [3], "pads": [2, 2]}),
    ((1, 2, 5, 9, 24), {"kernel_shape": [2, 3, 3], "strides": [1, 1, 2], "pads": [1] * 6}),
]


@pytest.mark.parametrize(("shape", "attrs"), GEOMETRIES, ids=[str(g[1]) for g in GEOMETRIES])
def test_max_pool(shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    x = data(shape)
    x.reshape(-1)[7] = np.nan
    x.reshape(-1)[11] = -np.inf
    compiled(Op.MAX_POOL, [x], attrs, interpret=True)


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize(("shape", "attrs"), GEOMETRIES, ids=[str(g[1]) for g in GEOMETRIES])
def test_average_pool(shape: tuple[int, ...], attrs: dict[str, Any], include_pad: int) -> None:
    compiled(Op.AVERAGE_POOL, [data(shape)], {**attrs, "count_include_pad": include_pad},
             interpret=True)


def test_max_pool_with_indices_keeps_the_scalar_loops() -> None:
    x = data((1, 2, 12, 12))
    compiled(Op.MAX_POOL, [x], {"kernel_shape": [2, 2], "strides": [2, 2]}, outputs=2)


def test_interior_is_one_vectorized_loop() -> None:
    graph, _ = node_graph(Op.MAX_POOL, [data((1, 2, 30, 30))],
                          {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    (step,) = lower_graph(graph).steps
    loops = [n for k in step.kernels for n in walk(k.body) if isinstance(n, Loop)]
    vectorized = [n for n in loops if n.kind is LoopKind.VECTORIZE]
    assert len(vectorized) == 1 and vectorized[0].extent.value == 14  # type: ignore[attr-defined]
