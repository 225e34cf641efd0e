"""Loading DSL models from a Python file: what ``kiln compile model.py[:name]`` reads.

The file runs as a module named ``__kiln_model__`` (so its ``if __name__ == "__main__":`` block
does not), and the ``Model`` it defines at top level -- by ``@dsl.model`` or ``dsl.trace`` --
is the model. A file defining several names one with ``path.py:name``.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from kiln.compiler.ir.graph import Graph

from .errors import DSLError
from .tracing import Model

MODULE_NAME = "__kiln_model__"


def split_model_path(text: str) -> tuple[Path, str | None]:
    """``"net.py:mlp"`` -> (net.py, "mlp"); ``"net.py"`` -> (net.py, None)."""
    head, colon, tail = text.rpartition(":")
    if colon and head.endswith(".py") and tail.isidentifier():
        return Path(head), tail
    return Path(text), None


def load_python(path: str | Path, name: str | None = None) -> Graph:
    """The graph of the DSL ``Model`` that the Python file ``path`` defines (``name``: the
    top-level name it is bound to, needed when the file defines several)."""
    path = Path(path)
    if not path.is_file():
        raise DSLError(f"model file '{path}' does not exist")
    namespace = runpy.run_path(str(path), run_name=MODULE_NAME)
    if name is not None:
        if name not in namespace:
            raise DSLError(f"{path} defines no {name!r}")
        found = namespace[name]
        if not isinstance(found, Model):
            raise DSLError(f"{path}:{name} is a {type(found).__name__}, not a DSL model "
                           "(make one with @dsl.model or dsl.trace)")
        return found.graph
    models = {key: value for key, value in namespace.items()
              if isinstance(value, Model) and not key.startswith("_")}
    if not models:
        raise DSLError(f"{path} defines no DSL model at top level "
                       "(make one with @dsl.model or dsl.trace)")
    if len(models) > 1:
        raise DSLError(f"{path} defines several DSL models ({', '.join(sorted(models))}): "
                       f"name one as {path}:<name>")
    return next(iter(models.values())).graph
