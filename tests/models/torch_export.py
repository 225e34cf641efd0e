"""Helpers for the PyTorch model tests: export a module to ONNX and run it three ways.

``export`` writes an ``nn.Module`` in eval mode to an .onnx file with either exporter of
torch.onnx: ``"torchscript"`` (``dynamo=False``, the tracing exporter, plain opset 17) or
``"dynamo"`` (the torch.export-based default, newer opsets). ``run_three_ways`` runs the file
through Kiln (``load_onnx`` + ``reference.run``), onnxruntime (when installed) and the module
itself on the same inputs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kiln.compiler import reference
from kiln.frontends.onnx import load_onnx

EXPORTERS = ("torchscript", "dynamo")


def export(
    model: torch.nn.Module,
    args: Sequence[torch.Tensor],
    path: Path,
    exporter: str,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> Path:
    """Export ``model`` (switched to eval mode) to ``path``; returns the path."""
    model.eval()
    # Both exporters warn and log at length (deprecation, missing torchvision); none of it
    # bears on the test.
    with warnings.catch_warnings(), _quiet_torch_logs(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, tuple(args), str(path), dynamo=False, opset_version=17,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dynamic_axes)
        elif exporter == "dynamo":
            program = torch.onnx.export(model, tuple(args), dynamo=True, verbose=False,
                                        input_names=list(input_names),
                                        output_names=list(output_names),
                                        dynamic_shapes=_dynamic_shapes(input_names,
                                                                       dynamic_axes))
            assert program is not None
            program.save(str(path))
        else:
            raise ValueError(f"unknown exporter {exporter!r}")
    return path


def _dynamic_shapes(input_names: Sequence[str],
                    dynamic_axes: Mapping[str, Mapping[int, str]] | None
                    ) -> tuple[object, ...] | None:
    """torch.export's form of ``dynamic_axes`` (one ``Dim`` per symbol name, shared by every
    input using it), positional over the inputs; None without dynamic axes."""
    if not dynamic_axes:
        return None
    dims: dict[str, object] = {}
    return tuple(
        {axis: dims.setdefault(symbol, torch.export.Dim(symbol))
         for axis, symbol in dynamic_axes.get(name, {}).items()} or None
        for name in input_names
    )


@contextlib.contextmanager
def _quiet_torch_logs():  # type: ignore[no-untyped-def]
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class Results:
    """Outputs of one model on one set of inputs, per engine (``onnxruntime`` None if absent)."""

    kiln: list[np.ndarray]
    onnxruntime: list[np.ndarray] | None
    torch: list[np.ndarray]


def run_three_ways(
    model: torch.nn.Module, path: Path, inputs: Mapping[str, np.ndarray]
) -> Results:
    """Run the exported ``path`` with Kiln and onnxruntime, and ``model`` with torch."""
    graph = load_onnx(path)
    kiln_outputs = reference.run(graph, dict(inputs))
    with torch.no_grad():
        produced = model(*(torch.from_numpy(a) for a in inputs.values()))
    flat = _flatten(produced)
    return Results(kiln_outputs, _onnxruntime(path, inputs), [t.numpy() for t in flat])


def _flatten(produced: object) -> list[torch.Tensor]:
    if isinstance(produced, torch.Tensor):
        return [produced]
    assert isinstance(produced, (tuple, list))
    return [t for item in produced for t in _flatten(item)]


def _onnxruntime(path: Path, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
    return list(session.run(None, feeds))


def assert_all_close(
    actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], rtol: float, atol: float,
    what: str,
) -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs vs {len(expected)}"
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, f"{what}: output {index} shape {a.shape} vs {e.shape}"
        assert a.dtype == e.dtype, f"{what}: output {index} dtype {a.dtype} vs {e.dtype}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol,
                                   err_msg=f"{what}: output {index}")
