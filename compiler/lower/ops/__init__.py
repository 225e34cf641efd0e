"""Lowerings of every op to kernel IR, one module per op family (registered on import)."""

from __future__ import annotations

import importlib

FAMILIES = ("elementwise", "reduce", "nn", "movement", "index", "rnn", "control", "misc",
            "layout", "layout_ops", "conv_tiled", "fused", "trees")


def load_all() -> None:
    for family in FAMILIES:
        importlib.import_module(f"{__name__}.{family}")
