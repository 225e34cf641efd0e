"""Kiln's thin runtime: loads compiled artifacts; imports only the standard library and numpy.

``load("model.so", threads=None) -> Model``; ``Model.inputs`` / ``Model.outputs`` describe the
tensors (``TensorInfo``: name, numpy dtype, shape) and ``Model.run({name: array})`` returns one
fresh array per output. Failures raise ``KilnRuntimeError`` (a ``ValueError``).
"""

from .loader import load
from .model import KilnRuntimeError, Model, TensorInfo

__all__ = ["KilnRuntimeError", "Model", "TensorInfo", "load"]
