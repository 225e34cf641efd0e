"""Type rules of the nn ops; one module per family, importing each registers its ops."""

from __future__ import annotations

from . import nn_conv, nn_matmul, nn_misc, nn_norm, nn_pool, nn_quant  # noqa: F401
