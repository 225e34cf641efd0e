"""Lowerings of the index ops (filled in by its owner)."""

from __future__ import annotations
