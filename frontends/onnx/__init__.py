"""The ONNX frontend: ``load_onnx(path_or_model) -> Graph``, and back: ``save_onnx`` /
``to_onnx``."""

from .export import save_onnx, to_onnx
from .importer import load_onnx
from .mapping import UnsupportedTypeError

__all__ = ["UnsupportedTypeError", "load_onnx", "save_onnx", "to_onnx"]
