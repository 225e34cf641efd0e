"""``Machine``: what lowerings and layout choices need to know of the CPU they compile for.

The numbers are the cost model's inputs: the f32 lanes of the widest vector register, how many
vector registers there are (the register-blocked GEMM tile must fit in them with room for the
operands), the per-core data cache sizes (cache blocking), whether channel-blocked layouts pay
off (they fill CPU vector registers; a GPU's threads gain nothing from them), and tuned schedule
overrides measured by ``kiln tune`` on this machine (keyed by the kernel's shape signature).
Code generation derives a ``Machine`` from its ``Target``; this module knows nothing of LLVM so
that passes and lowerings can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Machine:
    vector_bits: int = 256
    vector_registers: int = 16
    l1_bytes: int = 32 * 1024
    l2_bytes: int = 512 * 1024
    blocked_layouts: bool = True
    # kernel signature (see compiler/lower/schedule.py) -> tuned schedule parameters
    tuned: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False)

    @property
    def f32_lanes(self) -> int:
        """f32 elements per vector register; 1 on scalar-only targets."""
        return max(1, self.vector_bits // 32) if self.vector_bits >= 128 else 1

    def with_tuned(self, tuned: Mapping[str, Mapping[str, Any]]) -> Machine:
        return replace(self, tuned=MappingProxyType(dict(tuned)))


# What lowerings assume when nobody says: an AVX2-class core (tests lowering to the interpreter).
DEFAULT_MACHINE = Machine()
