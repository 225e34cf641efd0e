"""The reference kernel of the custom elementwise op: its carried LLVM function, JIT-compiled
for this process and mapped over the broadcast operands (``run_external`` in
compiler/codegen/llvm/external_jit.py, which the kernel-IR interpreter uses too).

The carried function is the op's definition, so the oracle runs it as given. LLVM is loaded only
when a graph holding the op runs: the reference executor of every other graph does without it.
"""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from ...ir.types import DType
from ...lower.kernel_ir import ExternalFunction
from .registry import KernelContext, kernel


@kernel(Op.CUSTOM_ELEMENTWISE)
def _custom_elementwise(ctx: KernelContext, *operands: np.ndarray) -> np.ndarray:
    from ...codegen.llvm.external_jit import run_external

    function = ExternalFunction.of_op(ctx.attrs, [DType.from_numpy(x.dtype) for x in operands])
    return run_external(function, operands)
