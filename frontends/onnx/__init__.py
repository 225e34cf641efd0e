"""The ONNX frontend: ``load_onnx(path_or_model) -> Graph``."""

from .importer import load_onnx
from .mapping import UnsupportedTypeError

__all__ = ["UnsupportedTypeError", "load_onnx"]
