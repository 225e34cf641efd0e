"""GPU schedules: kernel IR bound to CUDA blocks and threads.

``lower_graph_gpu`` lowers a graph with every kernel in GPU form (kernel_ir.py's docstring),
``gpu_machine`` is the ``Machine`` the CUDA target optimizes and lowers for, and
``check_gpu_form`` checks a kernel against the GPU form's contract.
"""

from .form import GpuFormError, check_gpu_form
from .lower import gpu_machine, lower_graph_gpu

__all__ = ["GpuFormError", "check_gpu_form", "gpu_machine", "lower_graph_gpu"]
