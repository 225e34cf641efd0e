"""The reference executor: runs a graph op by op with numpy kernels.

It is the oracle for every pass and every backend, so it checks what it is given (input names,
element types and shapes against the graph's declared types) and what its kernels return
(shapes against the inferred types), and frees each intermediate after its last use.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np

from ..errors import ExecutionError, KilnError
from ..ir.graph import ElidedTensor, Graph, Node
from ..ir.op import Op
from ..ir.schema import op_def
from ..ir.types import shape_matches
from .kernels.registry import KernelContext, kernel_for


def run(graph: Graph, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``graph`` on ``inputs`` (by input name); returns the outputs in graph order."""
    check_inputs(graph, inputs)
    return _run_graph(graph, {v.name: np.asarray(inputs[v.name]) for v in graph.inputs})


def check_inputs(graph: Graph, inputs: Mapping[str, np.ndarray]) -> None:
    """Raise a KilnError naming expected and actual for any missing, extra or ill-typed input."""
    expected = {v.name for v in graph.inputs}
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        raise ExecutionError(
            f"inputs do not match the graph: missing {sorted(missing)}, unexpected "
            f"{sorted(extra)}; expected {sorted(expected)}"
        )
    for value in graph.inputs:
        array = np.asarray(inputs[value.name])
        if array.dtype != value.type.dtype.numpy:
            raise ExecutionError(
                f"input {value.name!r}: expected element type {value.type.dtype.value} "
                f"({value.type.dtype.numpy}), got {array.dtype}"
            )
        if not shape_matches(array.shape, value.type.shape):
            raise ExecutionError(
                f"input {value.name!r}: expected shape {list(value.type.shape)}, "
                f"got {list(array.shape)}"
            )


def evaluate_node(
    node: Node, env: Mapping[str, np.ndarray], shape_only: bool = False
) -> list[np.ndarray | None]:
    """Run one node given the values it reads; ``shape_only`` for Shape/Size of a static input,
    whose kernel then sees a placeholder and answers from the declared type."""
    if shape_only:
        source = node.inputs[0]
        assert source is not None
        env = {source.name: np.broadcast_to(np.zeros((), source.type.dtype.numpy),
                                              tuple(int(d) for d in source.type.shape))}
    return _evaluate(node, env, ChainMap(dict(env)))


def _run_graph(graph: Graph, env: MutableMapping[str, np.ndarray]) -> list[np.ndarray]:
    last_use = _last_uses(graph)
    outputs = {v.name for v in graph.outputs}
    local: set[str] = set()
    for index, node in enumerate(graph.nodes):
        results = _evaluate(node, env, env)
        for value, result in zip(node.outputs, results, strict=False):
            if value is not None:
                env[value.name] = result
                local.add(value.name)
        for value in node.inputs:
            if (
                value is not None
                and value.name in local
                and last_use.get(value.name) == index
                and value.name not in outputs
            ):
                del env[value.name]
                local.discard(value.name)
    try:
        return [env[v.name] for v in graph.outputs]
    except KeyError as missing:
        raise ExecutionError(f"graph {graph.name!r} output {missing} was never computed") from None


def _last_uses(graph: Graph) -> dict[str, int]:
    """Index of the last node reading each value, counting reads from inside subgraphs."""
    last: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value is not None:
                last[value.name] = index
        for body in node.subgraphs():
            for inner in body.walk():
                for value in inner.inputs:
                    if value is not None:
                        last[value.name] = index
            for value in body.outputs:
                last[value.name] = index
    return last


def _evaluate(
    node: Node, env: Mapping[str, np.ndarray], scope: MutableMapping[str, np.ndarray]
) -> list[np.ndarray | None]:
    if node.op is Op.CONSTANT:
        data = node.attrs["value"]
        if isinstance(data, ElidedTensor):
            raise ExecutionError(
                f"{node.describe()}: constant data was elided from the IR text ({data.digest}); "
                "print with full_constants=True to keep it"
            )
        return [data]
    fn = kernel_for(node.op)
    if fn is None:
        raise ExecutionError(f"{node.describe()}: the reference executor has no kernel")
    args = [None if v is None else env[v.name] for v in node.inputs]

    def run_subgraph(body: Graph, body_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        inner = ChainMap({}, scope) if isinstance(scope, ChainMap) else ChainMap({}, dict(scope))
        for value, data in zip(body.inputs, body_inputs, strict=True):
            inner[value.name] = np.asarray(data)
        return _run_graph(body, inner)

    ctx = KernelContext(
        node,
        op_def(node.op).with_defaults(node.attrs),
        [None if v is None else v.type for v in node.outputs],
        run_subgraph,
    )
    try:
        with np.errstate(all="ignore"):
            produced = fn(ctx, *args)
    except KilnError:
        raise
    except Exception as error:  # a kernel failing on its data is reported against the node
        raise ExecutionError(f"{node.describe()}: {type(error).__name__}: {error}") from error
    results = list(produced) if isinstance(produced, (tuple, list)) else [produced]
    return [_conform(node, i, r) for i, r in enumerate(results[: len(node.outputs)])]


def _conform(node: Node, index: int, result: np.ndarray | None) -> np.ndarray | None:
    value = node.outputs[index]
    if value is None:
        return None
    if result is None:
        raise ExecutionError(f"{node.describe()}: kernel gave no value for output {index}")
    array = np.asarray(result)
    if array.dtype != value.type.dtype.numpy:
        array = array.astype(value.type.dtype.numpy)
    if not shape_matches(array.shape, value.type.shape):
        raise ExecutionError(
            f"{node.describe()}: output {value.name!r} has shape {list(array.shape)}, "
            f"but its type says {list(value.type.shape)}"
        )
    return array
