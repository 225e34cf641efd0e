"""The table from op to lowering, and what a lowering sees of its node.

A lowering is ``fn(ctx: LowerContext) -> list[Kernel]``: the kernels that together compute the
node's outputs from its inputs, run in order. An extent known only at run time is an expression
over the run's ``DIMS``; ``ctx.undefined_dims`` are the output extents that depend on values,
which the lowering must store (``define_dim``) in a kernel that runs before any kernel taking
that output as a parameter. Scratch buffers shared by the node's kernels come from
``ctx.scratch``; the plan places them in the arena for the node's lifetime.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import KilnError
from ..ir.graph import Node
from ..ir.op import Op
from ..ir.types import DType
from ..machine import DEFAULT_MACHINE, Machine
from .inline import accesses
from .kernel_ir import Buffer, Expr, Kernel, Stmt

if TYPE_CHECKING:
    from .from_graph import DimTable

Lowering = Callable[["LowerContext"], list[Kernel]]

_LOWERINGS: dict[Op, Lowering] = {}


class LoweringError(KilnError):
    """A node cannot be lowered (unsupported attribute combination, dynamic shape...)."""


def lowering(*ops: Op) -> Callable[[Lowering], Lowering]:
    """Decorator registering ``fn`` as the lowering of each op in ``ops``."""

    def register(fn: Lowering) -> Lowering:
        for op in ops:
            if op in _LOWERINGS:
                raise RuntimeError(f"lowering for {op.value} registered twice")
            _LOWERINGS[op] = fn
        return fn

    return register


@functools.cache
def _load_lowerings() -> None:
    from .ops import load_all

    load_all()


def lowering_for(op: Op) -> Lowering | None:
    _load_lowerings()
    return _LOWERINGS.get(op)


def lowerings() -> dict[Op, Lowering]:
    _load_lowerings()
    return dict(_LOWERINGS)


class LowerContext:
    """One node to lower: attributes (defaults filled), buffers, values of constant inputs."""

    def __init__(
        self,
        node: Node,
        attrs: dict[str, Any],
        inputs: Sequence[Buffer | None],
        outputs: Sequence[Buffer | None],
        consts: Sequence[np.ndarray | None],
        name: str,
        machine: Machine = DEFAULT_MACHINE,
        undefined_dims: tuple[Expr, ...] = (),
        dims: DimTable | None = None,
    ) -> None:
        self.node = node
        self.op = node.op
        self.attrs = attrs
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.consts = list(consts)
        self.name = name
        self.machine = machine
        self.undefined_dims = undefined_dims
        self.dims = dims
        self.scratch_buffers: list[Buffer] = []
        # compile-time constants this node's lowering made (packed weights), by buffer name
        self.derived: dict[str, np.ndarray] = {}
        self._kernel_count = 0

    def attr(self, name: str) -> Any:
        return self.attrs.get(name)

    def input(self, index: int) -> Buffer:
        found = self.inputs[index] if index < len(self.inputs) else None
        if found is None:
            raise self.fail(f"input {index} is missing")
        return found

    def has_input(self, index: int) -> bool:
        return index < len(self.inputs) and self.inputs[index] is not None

    def output(self, index: int = 0) -> Buffer:
        found = self.outputs[index] if index < len(self.outputs) else None
        if found is None:
            raise self.fail(f"output {index} is absent")
        return found

    def const(self, index: int) -> np.ndarray | None:
        return self.consts[index] if index < len(self.consts) else None

    def fail(self, message: str) -> LoweringError:
        return LoweringError(f"{self.node.describe()}: {message}")

    def require_static(self, *buffers: Buffer | None) -> None:
        """Raise unless every extent of ``buffers`` is known at compile time."""
        for buffer in buffers:
            if buffer is not None and not buffer.is_static:
                raise self.fail(
                    f"the shape of %{buffer.name} is known only at run time, and this lowering "
                    f"of {self.op.value} needs it at compile time"
                )

    def scratch(self, hint: str, dtype: DType, shape: Sequence[int | Expr]) -> Buffer:
        """A temporary buffer visible to every kernel of this node."""
        buffer = Buffer(f"{self.name}.{hint}.{len(self.scratch_buffers)}", dtype,
                        tuple(d if isinstance(d, Expr) else int(d) for d in shape))
        self.scratch_buffers.append(buffer)
        return buffer

    def derived_constant(self, name: str, data: np.ndarray) -> Buffer:
        """A constant buffer computed at compile time (e.g. weights re-laid for a kernel);
        ``name`` must identify the content (two nodes deriving the same data may share it)."""
        data = np.ascontiguousarray(data)
        self.derived[name] = data
        return Buffer(name, DType.from_numpy(data.dtype), tuple(data.shape))

    def kernel(
        self,
        body: Stmt,
        inputs: Sequence[Buffer] | None = None,
        outputs: Sequence[Buffer] | None = None,
        scratch: Sequence[Buffer] | None = None,
    ) -> Kernel:
        """A kernel of this node; by default it binds the inputs and derived constants that
        ``body`` reads (an unread weight then drops out of the plan), all outputs and scratch."""
        self._kernel_count += 1
        suffix = "" if self._kernel_count == 1 else f"_{self._kernel_count}"
        if inputs is None:
            derived = [Buffer(name, DType.from_numpy(data.dtype), tuple(data.shape))
                       for name, data in self.derived.items()]
            inputs = [b for b in [*self.inputs, *derived]
                      if b is not None and accesses(body, b.name)[1]]
        return Kernel(
            name=_symbol(f"{self.name}{suffix}"),
            inputs=_distinct(inputs),
            outputs=_distinct(self.outputs if outputs is None else outputs),
            body=body,
            scratch=tuple(self.scratch_buffers if scratch is None else scratch),
            source=(self.node.name,) if self.node.name else (),
        )


def _distinct(buffers: Sequence[Buffer | None]) -> tuple[Buffer, ...]:
    """Present buffers, each once (a node may read one value through two operands)."""
    seen: dict[str, Buffer] = {}
    for buffer in buffers:
        if buffer is not None:
            seen.setdefault(buffer.name, buffer)
    return tuple(seen.values())


def _symbol(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)
