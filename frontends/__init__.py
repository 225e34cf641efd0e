"""Frontends: formats and APIs that produce Kiln graph IR."""
