"""Lowerings of the nn ops (filled in by its owner)."""

from __future__ import annotations
