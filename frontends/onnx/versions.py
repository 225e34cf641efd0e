"""Normalizing older ONNX op versions to the newest form, which is what the IR defines.

Each adapter gets the node as a :class:`Form` (op type, input values, Python attributes) and
the ``since_version`` of the op's schema at the model's opset, and returns the newest-opset
form: attributes that later became inputs turn into constant inputs (Reshape-1 ``shape``,
Slice-1 ``starts/ends/axes``, Pad-2 ``pads/value``, Squeeze/Unsqueeze-1..11 ``axes``,
Reduce*-1..17 ``axes``, Split-1..12 ``split``, Clip-1..6 ``min/max``, TopK-1 ``k``, DFT-17
``axis``), renamed or retired ops become their successors (Upsample -> Resize, Scatter ->
ScatterElements, CastLike -> Cast), and changed semantics are rewritten (Softmax-1..11 on the
input coerced to 2-D, Resize-10 and Upsample using asymmetric coordinates, RoiAlign-10 output
half pixels, GridSample-16 mode names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kiln.compiler.errors import UnsupportedOpError
from kiln.compiler.ir.graph import Value

from .mapping import DTYPE_TO_ONNX

# Ops that no longer exist at the newest opset, and the op that took their place.
REPLACED_BY = {"Upsample": "Resize", "Scatter": "ScatterElements", "CastLike": "Cast"}
# (op type, since_version) pairs whose semantics Kiln cannot express.
UNSUPPORTED_VERSIONS = frozenset({("Scan", 8)})


@dataclass
class Form:
    """A node on its way to the IR: op type, operands (None: absent) and attributes."""

    op_type: str
    inputs: list[Value | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    n_outputs: int = 1

    def input(self, index: int) -> Value | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def set_input(self, index: int, value: Value | None) -> None:
        while len(self.inputs) <= index:
            self.inputs.append(None)
        self.inputs[index] = value


class Emitter(Protocol):
    """What adapters may do to the graph being built."""

    def constant(self, data: np.ndarray) -> Value: ...

    def emit(self, op_type: str, inputs: list[Value | None], attrs: dict[str, Any]) -> Value: ...


Adapter = Callable[[Form, int, Emitter], Form]
_ADAPTERS: dict[str, list[Adapter]] = {}


def adapts(*op_types: str) -> Callable[[Adapter], Adapter]:
    def register(fn: Adapter) -> Adapter:
        for op_type in op_types:
            _ADAPTERS.setdefault(op_type, []).append(fn)
        return fn

    return register


def normalize(form: Form, since: int, em: Emitter) -> Form:
    """``form`` (of an op whose schema has ``since`` as since_version) in the newest form."""
    if (form.op_type, since) in UNSUPPORTED_VERSIONS:
        raise UnsupportedOpError(f"{form.op_type}-{since} is not supported by Kiln")
    for adapter in _ADAPTERS.get(form.op_type, []):
        form = adapter(form, since, em)
    return form


def _attr_to_input(
    form: Form, em: Emitter, attr: str, index: int, dtype: Any = np.int64, scalar: bool = False
) -> None:
    """Move attribute ``attr`` (when present) to constant input ``index``."""
    if attr not in form.attrs:
        return
    value = form.attrs.pop(attr)
    data = np.array(value, dtype=dtype)
    form.set_input(index, em.constant(data.reshape(()) if scalar else data))


def _like(value: Value | None) -> Any:
    """The numpy dtype of ``value`` (constants for Clip/Pad must share the data's type)."""
    return np.float32 if value is None else value.type.dtype.numpy


@adapts("Reshape")
def _reshape(form: Form, since: int, em: Emitter) -> Form:
    if since < 5:
        _attr_to_input(form, em, "shape", 1)
    return form


@adapts("Slice")
def _slice(form: Form, since: int, em: Emitter) -> Form:
    if since < 10:
        for index, name in enumerate(("starts", "ends", "axes"), start=1):
            _attr_to_input(form, em, name, index)
    return form


@adapts("Pad")
def _pad(form: Form, since: int, em: Emitter) -> Form:
    if since < 11:
        if "paddings" in form.attrs:
            form.attrs["pads"] = form.attrs.pop("paddings")
        _attr_to_input(form, em, "pads", 1)
        _attr_to_input(form, em, "value", 2, _like(form.input(0)), scalar=True)
    return form


@adapts("Squeeze", "Unsqueeze")
def _squeeze(form: Form, since: int, em: Emitter) -> Form:
    if since < 13:
        _attr_to_input(form, em, "axes", 1)
    return form


@adapts(
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)
def _reduce(form: Form, since: int, em: Emitter) -> Form:
    last_attr_version = 11 if form.op_type == "ReduceSum" else 13
    if since <= last_attr_version:
        _attr_to_input(form, em, "axes", 1)
    return form


@adapts("Split")
def _split(form: Form, since: int, em: Emitter) -> Form:
    if since < 13:
        _attr_to_input(form, em, "split", 1)
    if since < 18 and form.input(1) is None:
        form.attrs["num_outputs"] = form.n_outputs
    return form


@adapts("Clip")
def _clip(form: Form, since: int, em: Emitter) -> Form:
    if since < 11:
        dtype = _like(form.input(0))
        _attr_to_input(form, em, "min", 1, dtype, scalar=True)
        _attr_to_input(form, em, "max", 2, dtype, scalar=True)
    return form


@adapts("TopK")
def _topk(form: Form, since: int, em: Emitter) -> Form:
    if since < 10:
        if "k" in form.attrs:  # TopK-10 takes k as a 1-D tensor of one element
            form.attrs["k"] = [form.attrs["k"]]
        _attr_to_input(form, em, "k", 1)
    return form


@adapts("Dropout")
def _dropout(form: Form, since: int, em: Emitter) -> Form:
    if since < 12:
        _attr_to_input(form, em, "ratio", 1, np.float32, scalar=True)
    return form


@adapts("BatchNormalization")
def _batch_norm(form: Form, since: int, em: Emitter) -> Form:
    if since < 9 and form.attrs.pop("spatial", 1) != 1:
        raise UnsupportedOpError(
            f"BatchNormalization-{since} with spatial=0 (per-element statistics) is not "
            "supported by Kiln"
        )
    return form


@adapts("Softmax", "LogSoftmax", "Hardmax")
def _softmax(form: Form, since: int, em: Emitter) -> Form:
    """Before opset 13 these ops flattened the input to 2-D at ``axis`` (default 1) and
    normalized over the whole second dimension."""
    if since >= 13:
        return form
    x = form.input(0)
    assert x is not None
    rank = x.type.rank
    axis = form.attrs.pop("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if axis >= rank - 1:
        form.attrs["axis"] = -1
        return form
    flat = em.emit("Flatten", [x], {"axis": axis})
    shape = em.emit("Shape", [x], {})
    result = em.emit(form.op_type, [flat], {"axis": -1})
    return Form("Reshape", [result, shape], {}, form.n_outputs)


@adapts("Upsample")
def _upsample(form: Form, since: int, em: Emitter) -> Form:
    """Upsample maps output index i to input i / scale, i.e. Resize's asymmetric mode."""
    if "scales" in form.attrs:  # Upsample-7 held the scales as an attribute
        scales: Value | None = em.constant(np.array(form.attrs.pop("scales"), np.float32))
    else:
        scales = form.input(1)
    mode = form.attrs.pop("mode", "nearest")
    return Form(
        "Resize", [form.inputs[0], None, scales],
        _resize_attrs("linear" if mode == "bilinear" else mode), form.n_outputs,
    )


def _resize_attrs(mode: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": "asymmetric"}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    return attrs


@adapts("Resize")
def _resize(form: Form, since: int, em: Emitter) -> Form:
    if since < 11:  # Resize-10: (X, scales), asymmetric coordinates
        form = Form(
            "Resize", [form.inputs[0], None, form.input(1)],
            _resize_attrs(form.attrs.get("mode", "nearest")), form.n_outputs,
        )
    # Opsets 11-12 required roi and scales even when unused, as empty tensors.
    for index in (1, 2):
        value = form.input(index)
        if value is not None and 0 in value.type.shape:
            form.inputs[index] = None
    return form


@adapts("Scatter")
def _scatter(form: Form, since: int, em: Emitter) -> Form:
    return Form("ScatterElements", form.inputs, form.attrs, form.n_outputs)


@adapts("CastLike")
def _cast_like(form: Form, since: int, em: Emitter) -> Form:
    target = form.input(1)
    assert target is not None
    attrs = dict(form.attrs)
    attrs["to"] = DTYPE_TO_ONNX[target.type.dtype]
    return Form("Cast", form.inputs[:1], attrs, form.n_outputs)


@adapts("GridSample")
def _grid_sample(form: Form, since: int, em: Emitter) -> Form:
    if since < 20:
        mode = form.attrs.get("mode", "bilinear")
        form.attrs["mode"] = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    return form


@adapts("RoiAlign")
def _roi_align(form: Form, since: int, em: Emitter) -> Form:
    if since < 16:
        form.attrs["coordinate_transformation_mode"] = "output_half_pixel"
    return form


@adapts("DFT")
def _dft(form: Form, since: int, em: Emitter) -> Form:
    if since < 20:
        form.attrs.setdefault("axis", 1)
        _attr_to_input(form, em, "axis", 2, np.int64, scalar=True)
    return form
