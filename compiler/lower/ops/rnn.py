"""Lowerings of the rnn ops (filled in by its owner)."""

from __future__ import annotations
