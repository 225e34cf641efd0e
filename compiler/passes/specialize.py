"""Bind symbolic input dimensions to sizes and re-infer the graph (a pass, Graph -> Graph).

Pre: any graph. Post: the inputs have the given extents (a symbol bound on one input is bound
on every input using it), unbound symbols stay symbolic (a dynamic build), every UNKNOWN input
dim has a fresh symbol of its own (named after the input and axis, ``X_0``), every node (and
every node of the control-flow bodies) is re-typed by its type rule, and nodes whose inputs
became constant (a Shape of a now-static tensor and the arithmetic behind it) are folded into
constants.

    before: func @main(%x: f32[batch,4]) { %s = shape(%x) : i64[2] ... reshape(%x, %s) }
    after (batch=2): func @main(%x: f32[2,4]) { %s = constant() {value=dense<i64[2]: [2, 4]>} ... }
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import KilnError
from ..ir import symbolic
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.types import UNKNOWN, Dim, TensorType

InputShape = Sequence[int | None]


def specialize(graph: Graph, input_shapes: Mapping[str, InputShape] | None = None) -> Graph:
    """``graph`` with input shapes bound (by input name; a None extent keeps its axis
    symbolic) and the graph re-typed."""
    shapes = dict(input_shapes or {})
    unknown = sorted(set(shapes) - {v.name for v in graph.inputs})
    if unknown:
        raise KilnError(
            f"input_shapes names {unknown}, which are not inputs; the inputs are "
            f"{[v.name for v in graph.inputs]}"
        )
    given = {v.name: _checked(v, shapes[v.name]) for v in graph.inputs if v.name in shapes}
    bindings = _bindings(graph.inputs, given)
    used = {a for v in graph.inputs for d in v.type.shape for a in symbolic.atoms(d)}
    builder = GraphBuilder(graph.name)
    mapping: dict[str, Value] = {}
    for value in graph.inputs:
        type_ = _bind(value, given.get(value.name), bindings, used)
        mapping[value.name] = builder.add_input(value.name, type_)
    copy_nodes(graph.nodes, builder, mapping)
    return builder.finish([mapping[v.name] for v in graph.outputs])


def _declared_text(value: Value) -> str:
    return f"[{','.join(map(str, value.type.shape))}]"


def _checked(value: Value, shape: InputShape) -> tuple[int | None, ...]:
    extents = tuple(None if d is None else int(d) for d in shape)
    declared = value.type.shape
    if len(extents) != len(declared) or any(
        isinstance(d, int) and s is not None and d != s
        for d, s in zip(declared, extents, strict=True)
    ):
        raise KilnError(
            f"input {value.name!r}: shape {list(shape)} does not fit the declared "
            f"{_declared_text(value)}"
        )
    if any(s is not None and s < 0 for s in extents):
        raise KilnError(f"input {value.name!r}: negative extent in {list(shape)}")
    return extents


def _bindings(
    inputs: Sequence[Value], given: Mapping[str, tuple[int | None, ...]]
) -> dict[str, int]:
    """Symbol -> extent from the given extents of axes whose declared dim is linear in one
    symbol (``seq``, or ``2*s0+1`` as torch's dynamo exporter writes)."""
    found: dict[str, int] = {}
    for value in inputs:
        for dim, extent in zip(value.type.shape, given.get(value.name, ()), strict=False):
            solved = None if extent is None else _solve(dim, extent)
            if solved is None:
                continue
            atom, size = solved
            if found.setdefault(atom, size) != size:
                raise KilnError(
                    f"input {value.name!r}: symbol {atom!r} is given as both {found[atom]} "
                    f"and {size}"
                )
    return found


def _solve(dim: Dim, extent: int) -> tuple[str, int] | None:
    """(symbol, size) making ``dim`` = ``extent`` when dim is ``c*symbol+k`` and the size is a
    whole number; None otherwise (the extent is then only checked against the dim)."""
    terms = symbolic.poly(dim) if symbolic.is_symbolic(dim) else None
    linear = [m for m in terms or {} if m]
    if terms is None or len(linear) != 1 or len(linear[0]) != 1:
        return None
    scale, offset = terms[linear[0]], terms.get((), 0)
    if (extent - offset) % scale:
        return None
    return linear[0][0], (extent - offset) // scale


def _bind(
    value: Value, extents: tuple[int | None, ...] | None, bindings: Mapping[str, int],
    used: set[str],
) -> TensorType:
    shape: list[Dim] = []
    for axis, dim in enumerate(value.type.shape):
        extent = None if extents is None else extents[axis]
        bound = symbolic.substitute(dim, bindings)
        if dim == UNKNOWN and extent is None:
            bound = _fresh_symbol(f"{value.name}_{axis}", used)
        elif extent is not None and isinstance(bound, int) and bound != extent:
            raise KilnError(
                f"input {value.name!r}: extent {extent} of axis {axis} does not fit the "
                f"declared {dim!r} = {bound} ({_declared_text(value)})"
            )
        shape.append(bound if extent is None else extent)
    return value.type.with_shape(tuple(shape))


def _fresh_symbol(hint: str, used: set[str]) -> str:
    """A symbol named after ``hint`` that no input dim uses yet (claimed in ``used``)."""
    base = symbolic.atom_name(hint)
    name, count = base, 1
    while name in used:
        count += 1
        name = f"{base}_{count}"
    used.add(name)
    return name


def copy_nodes(nodes: Sequence[Node], builder: GraphBuilder, mapping: dict[str, Value]) -> None:
    """Re-add ``nodes`` through ``builder`` (re-inferring types, folding constants), reading
    operands through ``mapping`` (old name -> new value) and recording their results there.
    Nested bodies are rebuilt too, so the enclosing values they read carry the new types."""
    for node in nodes:
        if node.op is Op.CONSTANT:
            out = node.outputs[0]
            assert out is not None
            mapping[out.name] = builder.constant(node.attrs["value"], out.name, node.name)
            continue
        attrs = {
            key: _rebuild_nested(value, builder, mapping) if isinstance(value, Graph) else value
            for key, value in node.attrs.items()
        }
        outputs = builder.add(
            node.op, [None if v is None else mapping[v.name] for v in node.inputs], attrs,
            outputs=[None if v is None else v.name for v in node.outputs], name=node.name,
        )
        for old, new in zip(node.outputs, outputs, strict=True):
            if old is not None and new is not None:
                mapping[old.name] = new


def _rebuild_nested(graph: Graph, outer: GraphBuilder, mapping: dict[str, Value]) -> Graph:
    sub = outer.sub(graph.name)
    inner = dict(mapping)
    for value in graph.inputs:
        inner[value.name] = sub.add_input(value.name, value.type)
    copy_nodes(graph.nodes, sub, inner)
    return sub.finish([inner[v.name] for v in graph.outputs])
