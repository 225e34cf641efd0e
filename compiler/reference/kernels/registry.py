"""The table from op to numpy kernel, and what a kernel sees of its node.

A kernel is ``fn(ctx, *inputs) -> ndarray | tuple[ndarray | None, ...]``: absent optional inputs
arrive as ``None``; a tuple gives one array per output slot. Kernels favour clarity over speed,
but must keep real models (ResNet-50) in seconds: no Python loops over tensor elements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import ExecutionError
from ...ir.graph import Graph, Node
from ...ir.op import Op
from ...ir.types import TensorType

Kernel = Callable[..., Any]
SubgraphRunner = Callable[[Graph, Sequence[np.ndarray]], list[np.ndarray]]

_KERNELS: dict[Op, Kernel] = {}


def kernel(*ops: Op) -> Callable[[Kernel], Kernel]:
    """Decorator registering ``fn`` as the numpy kernel of each op in ``ops``."""

    def register(fn: Kernel) -> Kernel:
        for op in ops:
            if op in _KERNELS:
                raise RuntimeError(f"kernel for {op.value} registered twice")
            _KERNELS[op] = fn
        return fn

    return register


class KernelContext:
    """The node being run: its op, attributes (defaults filled), output types, subgraph runner."""

    def __init__(
        self,
        node: Node,
        attrs: Mapping[str, Any],
        out_types: Sequence[TensorType | None],
        run_subgraph: SubgraphRunner,
    ) -> None:
        self.node = node
        self.op = node.op
        self.attrs = attrs
        self.out_types = list(out_types)
        self.run_subgraph = run_subgraph

    def attr(self, name: str) -> Any:
        return self.attrs.get(name)

    def out_dtype(self, index: int = 0) -> np.dtype:
        found = self.out_types[index]
        if found is None:
            raise self.fail(f"output {index} is absent")
        return found.dtype.numpy

    def fail(self, message: str) -> ExecutionError:
        return ExecutionError(f"{self.node.describe()}: {message}")


@functools.cache
def _load_kernels() -> None:
    from . import (  # noqa: F401 - importing registers the kernels
        control,
        custom,
        elementwise,
        fused,
        index,
        layout,
        misc,
        ml,
        movement,
        nn,
        reduce,
        rnn,
    )


def kernel_for(op: Op) -> Kernel | None:
    _load_kernels()
    return _KERNELS.get(op)


def kernels() -> dict[Op, Kernel]:
    _load_kernels()
    return dict(_KERNELS)
