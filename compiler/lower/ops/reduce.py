"""Lowerings of the reduce ops (filled in by its owner)."""

from __future__ import annotations
