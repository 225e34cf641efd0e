"""Lowerings of the nn ops, one module per sub-family (registered on import): convolutions,
pools, normalizations, matrix products, attention, rotary embedding, quantization and the
remaining nn ops."""

from __future__ import annotations

from . import (  # noqa: F401 - importing registers the lowerings
    nn_attention,
    nn_conv,
    nn_grid,
    nn_linear_attention,
    nn_matmul,
    nn_misc,
    nn_norm,
    nn_pool,
    nn_quant,
    nn_rotary,
)
