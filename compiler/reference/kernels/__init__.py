"""Numpy kernels of every op, one module per op family (registered in ``registry``)."""
