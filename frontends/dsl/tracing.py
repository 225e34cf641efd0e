"""Tracing: running a Python function on symbolic tensors records a Kiln graph.

One ``Trace`` (one ``GraphBuilder``) exists per traced function; every ``Tensor`` made while it
runs belongs to it, and every op applied to such tensors adds nodes to it. Nodes are named
after the user's ``file:line`` that made them (the IR text prints it as ``loc(...)``), so later
compiler messages that name a node point at the source. Any ``KilnError`` the builder raises
(a type rule that failed) comes back as a ``DSLError`` at that line with the operand types.

``trace(fn, **specs)`` / ``@model`` return a ``Model``: the graph plus conveniences that run it
through the reference executor, compile it, or export it to ONNX.
"""

from __future__ import annotations

import contextvars
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op

from .errors import dsl_error, location
from .spec import TensorSpec
from .tensor import Tensor

_CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("kiln_dsl_trace",
                                                                       default=None)


class Trace:
    """The graph being recorded while one function runs."""

    def __init__(self, name: str) -> None:
        self.builder = GraphBuilder(name)
        self.name = name
        self.finished = False
        self._ints: dict[tuple[int, ...], Tensor] = {}

    def emit(self, op: Op, inputs: Sequence[Tensor | None], attrs: Mapping[str, Any] | None = None,
             *, what: str, outputs: int = 1) -> list[Tensor]:
        """Add ``op`` applied to ``inputs``; ``what`` describes it in error messages."""
        self.check_open(what)
        if any(t is not None and t.trace is not self for t in inputs):
            raise dsl_error(what, "the operands belong to different traces")
        here = location()
        try:
            values = self.builder.add(op, [None if t is None else t.value for t in inputs], attrs,
                                      outputs=outputs, name=here)
        except KilnError as error:
            # The builder names the node, which is the location the message starts with.
            raise dsl_error(what, str(error).replace(f" (node {here!r})", "")) from None
        return [Tensor(self, v) for v in values if v is not None]

    def emit1(self, op: Op, inputs: Sequence[Tensor | None],
              attrs: Mapping[str, Any] | None = None, *, what: str) -> Tensor:
        return self.emit(op, inputs, attrs, what=what)[0]

    def constant(self, data: np.ndarray) -> Tensor:
        self.check_open("constant")
        return Tensor(self, self.builder.constant(np.asarray(data), node_name=location()))

    def ints(self, values: Sequence[int]) -> Tensor:
        """An i64 vector constant (the axes, shape, starts... operands of IR ops), made once
        per trace for each value."""
        key = tuple(int(v) for v in values)
        if key not in self._ints:
            self._ints[key] = self.constant(np.asarray(key, dtype=np.int64))
        return self._ints[key]

    def check_open(self, what: str) -> None:
        if self.finished:
            raise dsl_error(what, f"a tensor of the finished trace of {self.name!r} is used; "
                                  "tensors live only while their function is traced")


def current_trace(what: str) -> Trace:
    """The trace now running; ``what`` (the op asking) names the error raised when none is."""
    found = _CURRENT.get()
    if found is None:
        raise dsl_error(what, "called outside a traced function (use @dsl.model or dsl.trace)")
    return found


class Model:
    """A traced function: its graph and ways to run, compile and export it."""

    def __init__(self, fn: Callable[..., Any], graph: Graph,
                 input_specs: dict[str, TensorSpec]) -> None:
        self.fn = fn
        self.graph = graph
        self.input_specs = input_specs

    @property
    def name(self) -> str:
        return self.graph.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the traced function itself (inside another trace, a model composes)."""
        return self.fn(*args, **kwargs)

    def reference(self, **arrays: np.ndarray) -> list[np.ndarray]:
        """Run the graph through the reference executor; outputs in order."""
        return reference.run(self.graph, arrays)

    def build(self, input_shapes: Mapping[str, Sequence[int]] | None = None,
              **build_kwargs: Any) -> Any:
        """Compile with ``kiln.compiler.build`` (``input_shapes`` binds symbolic dims);
        returns its ``Executable``."""
        from kiln.compiler import build

        return build(self.graph, input_shapes=input_shapes, **build_kwargs)

    def save_onnx(self, path: str | None = None) -> Any:
        """Export the graph with ``kiln.frontends.onnx.save_onnx``; returns the ModelProto."""
        from kiln.frontends.onnx import save_onnx

        return save_onnx(self.graph, path)

    def __repr__(self) -> str:
        inputs = ", ".join(f"{k}: {v}" for k, v in self.input_specs.items())
        outputs = ", ".join(str(v.type) for v in self.graph.outputs)
        return f"<dsl.Model {self.name}({inputs}) -> ({outputs})>"


def trace(fn: Callable[..., Any], name: str | None = None, **specs: TensorSpec) -> Model:
    """Trace ``fn`` (a function or a layer) on inputs of the given specs (by parameter name;
    without any, from the parameters' annotations) into a Model."""
    if not callable(fn):
        raise dsl_error(f"dsl.trace({type(fn).__name__})", "expects a function or a layer")
    ordered = _input_specs(fn, specs)
    graph_name = re.sub(r"[^A-Za-z0-9_.]", "_", name or _callable_name(fn)) or "main"
    recording = Trace(graph_name)
    token = _CURRENT.set(recording)
    try:
        inputs = [Tensor(recording, recording.builder.add_input(key, spec.type))
                  for key, spec in ordered.items()]
        result = fn(*inputs)
        outputs = _outputs(recording, result)
    finally:
        _CURRENT.reset(token)
        recording.finished = True
    return Model(fn, recording.builder.finish(outputs), dict(ordered))


def model(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
          **specs: TensorSpec) -> Any:
    """Decorator tracing a function into a Model: ``@dsl.model`` reads the specs from the
    parameter annotations, ``@dsl.model(x=dsl.f32["batch", 784])`` takes them as keywords."""
    if fn is not None:
        return trace(fn, name, **specs)
    return lambda f: trace(f, name, **specs)


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _input_specs(fn: Callable[..., Any], specs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
    """The specs in the order the inputs are passed: that of the function's parameters, or as
    given for a layer whose ``forward`` names them otherwise (they become the input names)."""
    what = f"dsl.trace({_callable_name(fn)})"
    is_layer = hasattr(fn, "forward")
    try:
        signature = inspect.signature(getattr(fn, "forward", fn), eval_str=not specs)
    except (NameError, SyntaxError, AttributeError, TypeError) as error:
        raise dsl_error(what, f"cannot evaluate a parameter annotation: {error}") from None
    params = [p for p in signature.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in params]
    if not specs:
        specs = {p.name: p.annotation for p in params
                 if p.default is p.empty and p.annotation is not p.empty}
    if set(specs) <= set(names):
        missing = [p.name for p in params if p.default is p.empty and p.name not in specs]
        if missing:
            raise dsl_error(what, f"parameters {missing} have no TensorSpec (annotate them, "
                                  "e.g. x: dsl.f32['batch', 784], or pass them as keywords)")
    elif is_layer:
        names = list(specs)
    else:
        raise dsl_error(what, f"{sorted(set(specs) - set(names))} are not parameters of "
                              f"{_callable_name(fn)}; it takes {names}")
    for key, spec in specs.items():
        if not isinstance(spec, TensorSpec):
            raise dsl_error(what, f"the spec of {key!r} is {spec!r}, not a TensorSpec such as "
                                  "dsl.f32['batch', 784]")
    return {n: specs[n] for n in names if n in specs}


def _outputs(recording: Trace, result: Any) -> list[Value]:
    """The graph outputs for a returned Tensor or sequence of Tensors, named output[_i]."""
    many = isinstance(result, (tuple, list))
    returned = list(result) if many else [result]
    if not returned:
        raise dsl_error("return", "the traced function returned no tensors")
    outputs = []
    for i, found in enumerate(returned):
        if not isinstance(found, Tensor):
            raise dsl_error("return", f"the traced function returned {type(found).__name__} "
                                      f"{'at position ' + str(i) + ' ' if many else ''}"
                                      "where a dsl.Tensor is expected")
        if found.trace is not recording:
            raise dsl_error("return", "the traced function returned a tensor of another trace")
        out_name = f"output_{i}" if many else "output"
        try:
            outputs.append(recording.builder.add1(Op.IDENTITY, [found.value], output=out_name,
                                                  name=location()))
        except KilnError as error:
            raise dsl_error("return", f"{error} (rename the input called {out_name!r})"
                            ) from None
    return outputs

