"""Lowering: graph IR nodes to kernel IR loop nests, and schedules over them."""
