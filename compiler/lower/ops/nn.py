"""Lowerings of the nn ops, one module per sub-family (registered on import): convolutions,
pools, normalizations, matrix products, quantization and the remaining nn ops."""

from __future__ import annotations

from . import nn_conv, nn_matmul, nn_misc, nn_norm, nn_pool, nn_quant

__all__ = ["nn_conv", "nn_matmul", "nn_misc", "nn_norm", "nn_pool", "nn_quant"]
