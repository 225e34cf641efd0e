"""CUDA code generation: GPU-scheduled kernel IR -> LLVM NVPTX -> PTX.

- ``kernel.py``: ``emit_gpu_kernel`` (a kernel in GPU form -> an NVPTX ``.entry``: blocks,
  threads, barriers, shared / thread-local arrays, block reductions by warp shuffles, the
  error word), ``bind_to_gpu`` for kernels not in GPU form, ``launch_config``;
- ``libdevice.py``: the libm operations through CUDA's libdevice;
- ``ptx.py``: one PTX module per kernel (``compile_kernels``), ``ptxas -v`` (registers,
  shared memory, spills) and SASS via ``cuobjdump``;
- ``dump.py``: ``kiln compile --target cuda --dump``.

Expressions are the CPU backend's (codegen/llvm/expr.py and math.py, reused as they are).
"""

from .kernel import LaunchConfig, bind_to_gpu, emit_gpu_kernel, launch_config
from .ptx import KernelPTX, PtxasInfo, compile_kernel, compile_kernels, run_ptxas

__all__ = ["KernelPTX", "LaunchConfig", "PtxasInfo", "bind_to_gpu", "compile_kernel",
           "compile_kernels", "emit_gpu_kernel", "launch_config", "run_ptxas"]
