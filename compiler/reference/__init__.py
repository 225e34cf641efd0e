"""The numpy reference executor: ``reference.run(graph, {name: array}) -> [array, ...]``."""

from .executor import check_inputs, run

__all__ = ["check_inputs", "run"]
