"""The static execution plan: kernel order and memory placement (arena, weights, I/O)."""
