"""Op schemas: operand signature, attribute schema with defaults, and the type rule of each op.

Rules are registered with :func:`define` from the modules of ``kiln.compiler.ir.rules``; the
registry is filled on first use of :func:`op_def`. A type rule receives an :class:`InferContext`
(input types, attributes with defaults applied, values of constant inputs) and returns one
``TensorType`` per output.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TypeInferenceError
from .op import Group, Op
from .symbolic_values import dims_of_array
from .types import Dim, DType, TensorType


class AttrKind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    INTS = "ints"
    FLOATS = "floats"
    STRINGS = "strings"
    TENSOR = "tensor"
    GRAPH = "graph"
    DTYPE = "dtype"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class AttrSpec:
    """An attribute's kind and default; ``REQUIRED`` has none, ``None`` means absent allowed."""

    kind: AttrKind
    default: Any = None


def _sequence_default(default: Any) -> Any:
    return default if default is None or default is REQUIRED else tuple(default)


def INT(default: Any = None) -> AttrSpec:  # noqa: N802 - reads as a type in schema tables
    return AttrSpec(AttrKind.INT, default)


def FLOAT(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.FLOAT, default)


def STRING(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.STRING, default)


def INTS(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.INTS, _sequence_default(default))


def FLOATS(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.FLOATS, _sequence_default(default))


def STRINGS(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.STRINGS, _sequence_default(default))


def TENSOR(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.TENSOR, default)


def GRAPH(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.GRAPH, default)


def DTYPE_ATTR(default: Any = None) -> AttrSpec:  # noqa: N802
    return AttrSpec(AttrKind.DTYPE, default)


@dataclass(frozen=True)
class Operand:
    """One input or output slot: ``"X"`` required, ``"B?"`` optional, ``"inputs*"`` variadic."""

    name: str
    optional: bool = False
    variadic: bool = False

    @staticmethod
    def parse(spec: str) -> Operand:
        if spec.endswith("?"):
            return Operand(spec[:-1], optional=True)
        if spec.endswith("*"):
            return Operand(spec[:-1], variadic=True)
        return Operand(spec)


class InferContext:
    """What a type rule sees of one node."""

    def __init__(
        self,
        op: Op,
        node_name: str,
        inputs: Sequence[TensorType | None],
        attrs: Mapping[str, Any],
        consts: Sequence[np.ndarray | None],
        num_outputs: int,
        dims_values: Sequence[tuple[Dim, ...] | None] = (),
    ) -> None:
        self.op = op
        self.node_name = node_name
        self.inputs = list(inputs)
        self.attrs = attrs
        self.consts = list(consts)
        self.num_outputs = num_outputs
        self.dims_values = list(dims_values)

    def fail(self, message: str) -> TypeInferenceError:
        where = f" (node {self.node_name!r})" if self.node_name else ""
        return TypeInferenceError(f"{self.op.value}{where}: {message}")

    def input(self, index: int) -> TensorType:
        """The type of a required (or present optional) input."""
        if index >= len(self.inputs) or self.inputs[index] is None:
            raise self.fail(f"input {index} is missing")
        found = self.inputs[index]
        assert found is not None
        return found

    def has_input(self, index: int) -> bool:
        return index < len(self.inputs) and self.inputs[index] is not None

    def const(self, index: int) -> np.ndarray | None:
        """The value of input ``index`` when it is a compile-time constant, else None."""
        if index >= len(self.consts):
            return None
        return self.consts[index]

    def dims_value(self, index: int) -> tuple[Dim, ...] | None:
        """The elements of an integer input of rank <= 1 as dims (a scalar as a 1-tuple) when
        known: a constant's ints, or the symbolic shape value of a computed shape such as
        ``Concat(Shape(x)[0:1], [-1])`` -> ``(batch, -1)`` (``kiln.compiler.ir.symbolic_values``);
        elements may be ``UNKNOWN``. None when nothing is known."""
        if not self.has_input(index):
            return None
        if index < len(self.dims_values) and self.dims_values[index] is not None:
            return self.dims_values[index]
        data = self.const(index)
        if data is None:
            return None
        return dims_of_array(data)

    def attr(self, name: str) -> Any:
        return self.attrs.get(name)

    def require_dtype(self, index: int, allowed: frozenset[DType] | set[DType]) -> DType:
        dtype = self.input(index).dtype
        if dtype not in allowed:
            names = ", ".join(sorted(t.value for t in allowed))
            raise self.fail(
                f"input {index} has element type {dtype.value}; expected one of {names}"
            )
        return dtype


TypeRule = Callable[[InferContext], list[TensorType]]


@dataclass(frozen=True)
class OpDef:
    """Everything the IR knows of one op, independent of any frontend or backend."""

    op: Op
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    attrs: Mapping[str, AttrSpec]
    infer: TypeRule
    group: Group
    doc: str = field(default="")

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """The node's attributes with every schema default filled in."""
        filled = {k: spec.default for k, spec in self.attrs.items() if spec.default is not None}
        filled.update(attrs)
        return filled

    @property
    def max_inputs(self) -> int | None:
        return None if any(o.variadic for o in self.inputs) else len(self.inputs)

    @property
    def min_inputs(self) -> int:
        required = [i for i, o in enumerate(self.inputs) if not o.optional]
        return required[-1] + 1 if required else 0

    @property
    def max_outputs(self) -> int | None:
        return None if any(o.variadic for o in self.outputs) else len(self.outputs)


_REGISTRY: dict[Op, OpDef] = {}


def define(
    op: Op,
    inputs: Sequence[str],
    outputs: Sequence[str],
    attrs: Mapping[str, AttrSpec] | None = None,
    group: Group = Group.MISC,
) -> Callable[[TypeRule], TypeRule]:
    """Decorator registering ``rule`` as the type rule of ``op`` with the given signature."""

    def register(rule: TypeRule) -> TypeRule:
        if op in _REGISTRY:
            raise RuntimeError(f"op {op.value} defined twice")
        _REGISTRY[op] = OpDef(
            op=op,
            inputs=tuple(Operand.parse(s) for s in inputs),
            outputs=tuple(Operand.parse(s) for s in outputs),
            attrs=dict(attrs or {}),
            infer=rule,
            group=group,
            doc=(rule.__doc__ or "").strip(),
        )
        return rule

    return register


@functools.cache
def _load_rules() -> None:
    from . import rules  # noqa: F401 - importing registers every op


def op_def(op: Op) -> OpDef:
    """The schema of ``op``; raises KeyError for an op with no rule (a Kiln bug)."""
    _load_rules()
    return _REGISTRY[op]


def defined_ops() -> dict[Op, OpDef]:
    _load_rules()
    return dict(_REGISTRY)


def ops_in(group: Group) -> frozenset[Op]:
    return frozenset(op for op, d in defined_ops().items() if d.group == group)
