"""Lowerings of the misc ops (filled in by its owner)."""

from __future__ import annotations
