"""Kiln's compiler: the graph IR, the numpy reference executor, passes, lowering and codegen.

Nothing here imports ONNX or any frontend; frontends produce ``kiln.compiler.ir.graph.Graph``.
"""
