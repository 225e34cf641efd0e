"""Shared checks of the optimizer tests: parse IR text, list ops, compare results.

Soundness means both graphs run through the reference executor on the same random inputs
and agree: exactly (``assert_array_equal``: NaN equals NaN, -0.0 equals 0.0) for exact
rewrites, within float tolerance for the ones that round differently (weights folding).
"""

from __future__ import annotations

import numpy as np

from kiln.compiler import reference
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.parser import parse_graph
from kiln.compiler.ir.types import DType
from kiln.compiler.ir.verify import verify


def parse(text: str) -> Graph:
    """A verified graph from its IR text."""
    graph = parse_graph(text)
    verify(graph)
    return graph


def ops(graph: Graph) -> list[str]:
    """The graph's non-constant ops, in order."""
    return [n.op.value for n in graph.nodes if n.op is not Op.CONSTANT]


def count(graph: Graph, op: Op) -> int:
    return sum(n.op is op for n in graph.nodes)


def dense(array: np.ndarray) -> str:
    """The IR text of a constant's value, e.g. ``dense<f32[2]: [1.0, 2.0]>``."""
    dtype = DType.from_numpy(array.dtype).value
    def scalar(v: np.generic) -> str:
        if array.dtype == np.bool_:
            return "true" if v else "false"
        return repr(float(v)) if array.dtype.kind == "f" else str(int(v))

    values = ", ".join(scalar(v) for v in array.reshape(-1))
    return f"dense<{dtype}[{','.join(map(str, array.shape))}]: [{values}]>"


def random_inputs(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for value in graph.inputs:
        shape = tuple(int(d) for d in value.type.shape)
        dtype = value.type.dtype
        if dtype.is_float:
            data = rng.standard_normal(shape) * 3
        elif dtype is DType.BOOL:
            data = rng.random(shape) < 0.5
        else:
            data = rng.integers(-5 if dtype.is_signed else 0, 6, size=shape)
        inputs[value.name] = np.asarray(data).astype(dtype.numpy)
    return inputs


def assert_sound(before: Graph, after: Graph, exact: bool = True, seeds: int = 3) -> None:
    """``after`` verifies and computes what ``before`` does on random inputs."""
    verify(after)
    assert [v.type for v in after.outputs] == [v.type for v in before.outputs]
    assert [v.name for v in after.outputs] == [v.name for v in before.outputs]
    for seed in range(seeds):
        inputs = random_inputs(before, seed)
        for want, got in zip(reference.run(before, inputs), reference.run(after, inputs),
                             strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            if exact:
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                           rtol=1e-5, atol=1e-5)
