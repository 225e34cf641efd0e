"""The one-node graph both lowering test families build: inputs as graph inputs or constants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import TensorType


def node_graph(op: Op, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any] | None,
               consts: Sequence[int] = (), outputs: int = 1) -> tuple[Graph, dict[str, Any]]:
    """A graph of one ``op`` node; inputs listed in ``consts`` become constants."""
    builder = GraphBuilder(fold=False)
    values, feeds = [], {}
    for index, array in enumerate(inputs):
        if array is None:
            values.append(None)
        elif index in consts:
            values.append(builder.constant(array))
        else:
            values.append(builder.add_input(f"in{index}", TensorType.of(array)))
            feeds[f"in{index}"] = array
    results = builder.add(op, values, attrs, outputs=outputs)
    return builder.finish([v for v in results if v is not None]), feeds
