"""Lowerings of the movement ops (filled in by its owner)."""

from __future__ import annotations
