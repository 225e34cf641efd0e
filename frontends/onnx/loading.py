"""Reading an ONNX model from a file or proto, with its external-data weights.

External data is resolved relative to the model's folder and must stay inside it: a location
that escapes the folder (``../secret``, an absolute path, a symlink pointing out) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from google.protobuf.message import DecodeError
from onnx import GraphProto, ModelProto, TensorProto

from kiln.compiler.errors import ModelFormatError


def read_model(
    source: str | os.PathLike[str] | ModelProto, base_dir: str | os.PathLike[str] | None
) -> ModelProto:
    """The model with every external tensor loaded; a proto given by the caller is not changed."""
    if isinstance(source, ModelProto):
        model = source
        where = "the model proto"
    else:
        path = os.fspath(source)
        where = path
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as error:
            raise ModelFormatError(f"cannot read ONNX model {path!r}: {error}") from None
        model = ModelProto()
        try:
            model.ParseFromString(data)
        except DecodeError as error:
            raise ModelFormatError(
                f"{path!r} is not a valid ONNX model (the file is corrupt or truncated): {error}"
            ) from None
        if base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(path))
    if not model.HasField("graph"):
        raise ModelFormatError(
            f"{where} has no graph: the file is corrupt, truncated or not an ONNX model"
        )
    external = [t for t in _all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return model
    if base_dir is None:
        raise ModelFormatError(
            f"tensor {external[0].name!r} keeps its data in an external file, but the model was "
            "given as a proto: load it from its path or pass base_dir"
        )
    copy = ModelProto()
    copy.CopyFrom(model)
    for tensor in _all_tensors(copy.graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            _load_external(tensor, os.fspath(base_dir))
    return copy


def _all_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Initializers and tensor attributes of ``graph`` and of all its subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for body in attr.graphs:
                yield from _all_tensors(body)


def _load_external(tensor: TensorProto, base_dir: str) -> None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location")
    if not location:
        raise ModelFormatError(f"external tensor {tensor.name!r} names no data file (location)")
    folder = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(folder, location))
    if os.path.isabs(location) or os.path.commonpath([folder, path]) != folder:
        raise ModelFormatError(
            f"external data of tensor {tensor.name!r} is at {location!r}, outside the model's "
            f"folder {folder!r}; Kiln refuses to read it"
        )
    offset = int(info.get("offset", "0"))
    length = int(info["length"]) if "length" in info else -1
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            data = file.read(length)
    except OSError as error:
        raise ModelFormatError(
            f"cannot read external data of tensor {tensor.name!r} from {location!r}: {error}"
        ) from None
    if length >= 0 and len(data) != length:
        raise ModelFormatError(
            f"external data of tensor {tensor.name!r} in {location!r} is truncated: expected "
            f"{length} bytes at offset {offset}, found {len(data)}"
        )
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
