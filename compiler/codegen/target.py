"""Code generation targets: triple, CPU, features and the SIMD width derived from them.

``Target.parse`` accepts ``host`` (the CPU this process runs on, as LLVM sees it), the named
presets ``x86_64`` / ``x86_64-avx2`` / ``x86_64-avx512``, the short cross names
``aarch64-linux-gnu`` / ``armv7-linux-gnueabihf`` / ``riscv64-linux-gnu``, the RISC-V vector
preset ``riscv64-rvv-linux-gnu`` (RV64GC plus the V extension at its minimum 128-bit VLEN), and
any full LLVM triple (with the architecture's baseline CPU and features), and ``cuda`` /
``cuda:sm_NN`` (NVPTX: PTX for an NVIDIA GPU architecture, sm_80 by default). Features given by the
caller are added after the baseline's, and the last mention of a feature wins as in LLVM:
``riscv64-linux-gnu`` with ``+v`` is the vector preset, ``-neon`` turns NEON off.

On RISC-V the vectorizer emits fixed-length vectors, which LLVM maps onto RVV registers sized
by the guaranteed minimum VLEN: ``+v`` implies ``zvl128b``, and ``+zvl256b`` (or wider) lets
kernels use wider vectors on cores that have them. Such code needs a core with at least that
VLEN (under qemu-user: ``-cpu rv64,v=true,vlen=128``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm

from ..errors import KilnError
from ..machine import Machine


class CodegenError(KilnError):
    """The kernel IR cannot be compiled for the chosen target (or LLVM rejected the module)."""


@cache
def initialize_llvm() -> None:
    """Register every LLVM target once (host and cross code generation both need it)."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


# preset name -> (triple, cpu, features, LLVM ABI name)
_PRESETS: dict[str, tuple[str, str, str, str]] = {
    "x86_64": ("x86_64-unknown-linux-gnu", "x86-64", "", ""),
    "x86_64-avx2": ("x86_64-unknown-linux-gnu", "x86-64-v3", "", ""),
    "x86_64-avx512": ("x86_64-unknown-linux-gnu", "x86-64-v4", "", ""),
    "aarch64-linux-gnu": ("aarch64-unknown-linux-gnu", "generic", "+neon", ""),
    "armv7-linux-gnueabihf": ("armv7-unknown-linux-gnueabihf", "generic",
                              "+armv7-a,+vfp3,+neon,+d32", ""),
    "riscv64-linux-gnu": ("riscv64-unknown-linux-gnu", "generic-rv64", "+m,+a,+f,+d,+c",
                          "lp64d"),
    "riscv64-rvv-linux-gnu": ("riscv64-unknown-linux-gnu", "generic-rv64",
                              "+m,+a,+f,+d,+c,+v", "lp64d"),
}

# CUDA: LLVM's NVPTX backend; PTX ISA 7.8 is the oldest that covers sm_90 (CUDA 11.8 drivers)
CUDA_TRIPLE = "nvptx64-nvidia-cuda"
CUDA_DEFAULT_ARCH = "sm_80"
CUDA_PTX_FEATURE = "+ptx78"

# Features implied by an x86 CPU preset, for deriving the vector width.
_CPU_FEATURES = {"x86-64-v3": {"avx", "avx2", "fma"}, "x86-64-v4": {"avx", "avx2", "avx512f"}}

# architecture (first triple component) -> (cpu, features, ABI name) when only a triple is given
_ARCH_DEFAULTS: dict[str, tuple[str, str, str]] = {
    "x86_64": ("x86-64", "", ""),
    "aarch64": ("generic", "+neon", ""),
    "arm64": ("generic", "+neon", ""),
    "armv7": ("generic", "+armv7-a,+vfp3,+neon,+d32", ""),
    "armv7a": ("generic", "+armv7-a,+vfp3,+neon,+d32", ""),
    "riscv64": ("generic-rv64", "+m,+a,+f,+d,+c", "lp64d"),
}


def _enabled(features: str) -> set[str]:
    """The features a comma-separated LLVM feature string leaves on (the last mention wins)."""
    enabled: set[str] = set()
    for feature in filter(None, (f.strip() for f in features.split(","))):
        if feature[0] == "+":
            enabled.add(feature[1:])
        elif feature[0] == "-":
            enabled.discard(feature[1:])
    return enabled


def _combined(base: str, extra: str | None) -> str:
    return ",".join(filter(None, (base, extra)))


def _vector_bits(arch: str, cpu: str, features: str) -> int:
    """The widest SIMD register the features give (scalar-only targets: the GPR width)."""
    enabled = _enabled(features) | _CPU_FEATURES.get(cpu, set())
    if arch == "x86_64":
        if "avx512f" in enabled:
            return 512
        return 256 if enabled & {"avx", "avx2"} else 128  # SSE2 is baseline on x86-64
    if arch.startswith(("aarch64", "arm64")):
        return 128  # Advanced SIMD is mandatory on AArch64
    if arch.startswith(("arm", "thumb")):
        return 128 if "neon" in enabled else 32
    if arch.startswith("riscv"):
        if "v" in enabled:  # the guaranteed VLEN: 128 unless a wider zvl<N>b is given
            widths = [int(f[3:-1]) for f in enabled
                      if f.startswith("zvl") and f.endswith("b") and f[3:-1].isdigit()]
            return max([128, *widths])
        return 64 if arch == "riscv64" else 32
    return 64 if _pointer_bits(arch) == 64 else 32


def _cache_sizes() -> tuple[int, int]:
    """Per-core L1 data and L2 cache bytes of this machine, as Linux reports them in sysfs
    (defaults where it does not)."""
    sizes = {1: 32 * 1024, 2: 512 * 1024}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:], 1)
        digits = text.rstrip("KM")
        if level in sizes and kind in ("Data", "Unified") and digits.isdigit():
            sizes[level] = int(digits) * scale
    return sizes[1], sizes[2]


def _pointer_bits(arch: str) -> int:
    return 64 if arch.endswith("64") or arch in ("aarch64", "arm64", "x86_64") else 32


@dataclass(frozen=True)
class Target:
    """Where code runs: LLVM triple, CPU name, feature string, SIMD width, pointer width."""

    name: str
    triple: str
    cpu: str
    features: str
    vector_bits: int
    pointer_bits: int
    abi: str = ""

    @staticmethod
    def parse(spec: str, cpu: str | None = None, features: str | None = None) -> Target:
        """A target from ``host``, a preset name or a full triple; ``cpu`` replaces the
        preset's CPU, ``features`` (as LLVM spells them: ``+avx2,-avx512f``) are added after
        the preset's."""
        initialize_llvm()
        if spec == "cuda" or spec.startswith("cuda:"):
            return _cuda_target(spec, cpu, features)
        if spec == "host":
            triple = llvm.get_process_triple()
            base_cpu = llvm.get_host_cpu_name()
            base_features = llvm.get_host_cpu_features().flatten()
            abi = ""
        elif spec in _PRESETS:
            triple, base_cpu, base_features, abi = _PRESETS[spec]
        else:
            arch = spec.split("-", 1)[0]
            if arch not in _ARCH_DEFAULTS or spec.count("-") < 2:
                known = ", ".join(["host", *_PRESETS])
                raise CodegenError(
                    f"unknown target {spec!r}: use one of {known} or a full LLVM triple of "
                    f"a supported architecture ({', '.join(_ARCH_DEFAULTS)})"
                )
            triple = spec
            base_cpu, base_features, abi = _ARCH_DEFAULTS[arch]
        chosen_cpu = base_cpu if cpu is None else cpu
        chosen_features = _combined(base_features, features)
        try:
            llvm.Target.from_triple(triple)
        except RuntimeError as error:
            raise CodegenError(f"LLVM has no backend for target {spec!r}: {error}") from None
        arch = triple.split("-", 1)[0]
        return Target(
            name=spec,
            triple=triple,
            cpu=chosen_cpu,
            features=chosen_features,
            vector_bits=_vector_bits(arch, chosen_cpu, chosen_features),
            pointer_bits=_pointer_bits(arch),
            abi=abi,
        )

    @property
    def arch(self) -> str:
        return self.triple.split("-", 1)[0]

    @property
    def is_host(self) -> bool:
        """True when code for this target can run in this process."""
        initialize_llvm()
        host = llvm.get_process_triple().split("-", 1)[0]
        return self.arch == host and (self.name == "host" or self._features_on_host())

    def _features_on_host(self) -> bool:
        host = _enabled(llvm.get_host_cpu_features().flatten())
        wanted = _enabled(self.features) | _CPU_FEATURES.get(self.cpu, set())
        return wanted <= host

    def machine(self) -> Machine:
        """The cost model's view of this target (host: cache sizes as the OS reports them)."""
        # AArch64, AVX-512 and RVV have 32 vector registers; SSE/AVX and ARMv7 NEON 16
        wide = self.arch in ("aarch64", "arm64") or self.vector_bits >= 512 or self.scalable_vectors
        l1, l2 = _cache_sizes() if self.is_host else (32 * 1024, 512 * 1024)
        return Machine(self.vector_bits, 32 if wide else 16, l1, l2)

    @property
    def scalable_vectors(self) -> bool:
        """Vectors whose length is a run-time multiple (``vscale``) of 64 bits: RVV."""
        return self.arch.startswith("riscv") and "v" in _enabled(self.features)

    @property
    def is_gpu(self) -> bool:
        return self.arch.startswith(("nvptx", "amdgcn"))

    def target_machine(self, opt_level: int = 2) -> llvm.TargetMachine:
        """An LLVM target machine (position-independent code, for shared libraries); cached."""
        return _target_machine(self, max(0, min(3, opt_level)))

    @property
    def data_layout(self) -> str:
        return str(self.target_machine().target_data)


def _cuda_target(spec: str, cpu: str | None, features: str | None) -> Target:
    """``cuda`` (``CUDA_DEFAULT_ARCH``), ``cuda:sm_NN``, or ``cuda`` with ``cpu="sm_NN"``: PTX
    for that architecture (which the driver also JIT-compiles for every newer GPU)."""
    named = spec.partition(":")[2]
    if named and cpu is not None and named != cpu:
        raise CodegenError(f"target {spec!r} names {named} but the CPU option says {cpu}")
    arch = named or cpu or CUDA_DEFAULT_ARCH
    if not re.fullmatch(r"sm_\d{2,3}[a-z]?", arch):
        raise CodegenError(f"unknown CUDA architecture {arch!r}: use sm_NN, e.g. sm_80 or sm_90")
    return Target(name="cuda", triple=CUDA_TRIPLE, cpu=arch,
                  features=_combined(CUDA_PTX_FEATURE, features), vector_bits=64,
                  pointer_bits=64)


@cache
def _target_machine(target: Target, opt_level: int) -> llvm.TargetMachine:
    initialize_llvm()
    return llvm.Target.from_triple(target.triple).create_target_machine(
        cpu=target.cpu,
        features=target.features,
        opt=opt_level,
        reloc="pic",
        codemodel="default",
        abiname=target.abi,
    )
