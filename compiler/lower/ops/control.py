"""Lowerings of the control ops (filled in by its owner)."""

from __future__ import annotations
