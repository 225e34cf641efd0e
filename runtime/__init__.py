"""Kiln's thin runtime: loads compiled artifacts; imports only the standard library and numpy."""
