"""The ``ai.onnx.ml`` domain: converters from ONNX-ML nodes (what skl2onnx emits) to IR.

Each converter is registered under its op type with :func:`converter` and turns one node into IR
ops through the graph builder: TreeEnsemble* onto the IR's ``TREE_ENSEMBLE``, the others
(linear models, scalers, encoders, SVMs...) into the standard ops they are made of.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.compiler.errors import KilnError, UnsupportedOpError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Value

ML_DOMAIN = "ai.onnx.ml"
# Modules holding converters; importing one registers its converters.
_MODULES = ("trees", "linear", "preprocess", "svm")


@dataclass(frozen=True)
class MlNode:
    """One ONNX-ML node to convert: its inputs (None for an absent optional one), attributes
    (ONNX attribute values as Python/numpy values), the names its outputs take (None for an
    output the model does not use), and ``where`` ("node 'x' (TreeEnsembleClassifier-3,
    opset 3)") for messages."""

    op_type: str
    name: str
    opset: int
    inputs: list[Value | None]
    attrs: dict[str, Any]
    out_names: list[str | None]
    where: str

    def fail(self, message: str) -> KilnError:
        return KilnError(f"{self.where}: {message}")


Converter = Callable[[GraphBuilder, MlNode], list[Value | None]]
_CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            _CONVERTERS[op_type] = fn
        return fn

    return register


def converters() -> dict[str, Converter]:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return _CONVERTERS


def convert(builder: GraphBuilder, node: MlNode) -> list[Value | None]:
    """The IR values of ``node``'s outputs (one per ONNX output)."""
    found = converters().get(node.op_type)
    if found is None:
        raise UnsupportedOpError(
            f"{node.where}: Kiln does not support {node.op_type} of domain {ML_DOMAIN!r}"
        )
    return found(builder, node)
