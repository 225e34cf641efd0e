"""The CUDA artifact (``model.kiln``): manifest, weights and PTX per kernel in one file.

The format (header, JSON manifest, payload; CRC-32 checked) is defined with its reader in
``kiln.runtime.cuda``; this is the writer: a plan whose kernels were compiled to PTX
(codegen/nvptx) becomes the manifest's ``calls`` (kernel index and buffer places), ``kernels``
(launch configuration, parameter count, source ops) and ``messages`` (data error texts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kiln.runtime.abi import WEIGHTS_ALIGNMENT
from kiln.runtime.cuda import encode_artifact

from ..codegen.nvptx.ptx import KernelPTX
from ..codegen.target import Target
from ..plan.plan import Plan
from .header import TensorSpec


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    name, dtype, shape = spec
    return {"name": name, "dtype": dtype.value, "shape": [int(d) for d in shape]}


def cuda_artifact(plan: Plan, kernels: Sequence[KernelPTX], messages: Sequence[str],
                  inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                  target: Target) -> bytes:
    """The artifact bytes of ``plan`` with its kernels' PTX (one per distinct kernel name)."""
    index = {kernel.name: i for i, kernel in enumerate(kernels)}
    payload = bytearray(plan.weights)
    entries = []
    sources = {call.kernel.name: call.kernel.source for call in plan.calls}
    for kernel in kernels:
        payload.extend(b"\0" * (-len(payload) % WEIGHTS_ALIGNMENT))
        text = kernel.ptx.encode("utf-8")
        entries.append({
            "name": kernel.name, "grid": kernel.launch.grid, "threads": kernel.launch.threads,
            "params": kernel.params, "source": list(sources.get(kernel.name, ())),
            "ptx": {"offset": len(payload), "bytes": len(text)},
        })
        payload.extend(text)
    calls = [{"kernel": index[call.kernel.name],
              "args": [[location.place.value, location.at] for location in call.args]}
             for call in plan.calls]
    manifest = {
        "arch": target.cpu, "features": target.features,
        "inputs": [_tensor(t) for t in inputs], "outputs": [_tensor(t) for t in outputs],
        "arena_bytes": plan.arena_bytes,
        "weights": {"offset": 0, "bytes": len(plan.weights)},
        "kernels": entries, "calls": calls, "messages": list(messages),
    }
    return encode_artifact(manifest, bytes(payload))
