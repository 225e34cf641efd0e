"""Native toolchain steps of the artifact: compile the C runtime, assemble, link ``model.so``.

Every step runs the target's C compiler driver (``cc`` for the host architecture,
``aarch64-linux-gnu-gcc`` and friends for cross targets), so the library links against the
target's own libc, libm and libpthread; ``binutil`` finds the binutils program (``ld``,
``objcopy``) that driver uses. The compiled C runtime is cached by content, compiler
and target under ``$KILN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/kiln`` or ``~/.cache/kiln``).

Libraries are written to a temporary name and renamed into place: a process that already
mapped the old library keeps its (unlinked) copy instead of crashing, and the dynamic loader
sees a new file rather than its cached handle of the old one.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from kiln.runtime import abi

from ..errors import KilnError


class ArtifactError(KilnError):
    """The model library could not be built (missing toolchain, compiler or linker failure)."""


class HasTriple(Protocol):
    @property
    def triple(self) -> str: ...


TargetSpec = str | HasTriple


@dataclass(frozen=True)
class Toolchain:
    """The C compiler driver for one target architecture."""

    arch: str
    compiler: str
    apt_package: str | None

    def resolve(self) -> str:
        """Absolute path of the driver, or a clear error naming what to install."""
        found = shutil.which(self.compiler)
        if found is None:
            hint = (f" (on Debian/Ubuntu: apt-get install {self.apt_package})"
                    if self.apt_package else "")
            raise ArtifactError(
                f"the C compiler '{self.compiler}' for target architecture {self.arch} was not "
                f"found on PATH{hint}")
        return found


# architecture -> (cross compiler driver, Debian package); the host architecture uses `cc`.
_CROSS: dict[str, tuple[str, str]] = {
    "x86_64": ("x86_64-linux-gnu-gcc", "gcc-x86-64-linux-gnu"),
    "aarch64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    "arm": ("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
    "riscv64": ("riscv64-linux-gnu-gcc", "gcc-riscv64-linux-gnu"),
}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "armv7": "arm", "armv7a": "arm",
            "armv7l": "arm", "armv7hl": "arm", "thumbv7": "arm"}

RUNTIME_CFLAGS = ("-O2", "-fPIC", "-pthread", "-fvisibility=hidden", "-Wall", "-Wextra")
LINK_LIBS = ("-lm", "-lpthread", "-ldl")


def _arch(target: TargetSpec) -> str:
    if isinstance(target, str) and target == "host":
        name = platform.machine()
    else:
        name = (target if isinstance(target, str) else target.triple).split("-", 1)[0]
    return _ALIASES.get(name, name)


def toolchain_for(target: TargetSpec) -> Toolchain:
    """The C compiler for ``target``: "host", a triple or short target name, or a Target."""
    arch = _arch(target)
    if arch == _arch("host"):
        return Toolchain(arch, os.environ.get("KILN_CC", "cc"), None)
    if arch not in _CROSS:
        raise ArtifactError(
            f"no C toolchain known for target architecture {arch!r}; "
            f"supported: {sorted({_arch('host'), *_CROSS})}")
    compiler, package = _CROSS[arch]
    return Toolchain(arch, compiler, package)


def binutil(target: TargetSpec, name: str) -> str:
    """The binutils program ``name`` of ``target``'s toolchain: the one its C compiler driver
    runs (``aarch64-linux-gnu-gcc -print-prog-name=ld``), else ``name`` on PATH."""
    toolchain = toolchain_for(target)
    try:
        done = subprocess.run([toolchain.resolve(), f"-print-prog-name={name}"],
                              capture_output=True, text=True)
    except OSError as error:
        raise ArtifactError(f"cannot run {toolchain.compiler}: {error}") from None
    found = shutil.which(done.stdout.strip() or name) if done.returncode == 0 else None
    if found is None:
        package = ("binutils-" + toolchain.apt_package.removeprefix("gcc-")
                   if toolchain.apt_package else "binutils")
        raise ArtifactError(f"the binutils program '{name}' for target architecture "
                            f"{toolchain.arch} was not found (on Debian/Ubuntu: apt-get install "
                            f"{package})")
    return found


def cache_dir() -> Path:
    """Kiln's cache folder (created on demand)."""
    configured = os.environ.get("KILN_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kiln"


def runtime_source_dir() -> Path:
    """The folder of the runtime's C sources and headers (``kiln.runtime`` package data)."""
    return Path(str(resources.files("kiln.runtime")))


def include_dir() -> Path:
    return runtime_source_dir() / "include"


def run_tool(command: Sequence[str], what: str, cwd: Path | None = None) -> None:
    """Run one toolchain command; its failure (or absence) becomes an ArtifactError."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, cwd=cwd)
    except OSError as error:
        raise ArtifactError(f"{what}: cannot run {command[0]}: {error}") from None
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()
        raise ArtifactError(f"{what} failed ({' '.join(command)}):\n{output}")


def compile_c(source: Path, output: Path, target: TargetSpec = "host",
              flags: Sequence[str] = RUNTIME_CFLAGS) -> Path:
    """Compile one C (or assembler) file to an object file for ``target``."""
    compiler = toolchain_for(target).resolve()
    run_tool([compiler, *flags, f"-I{include_dir()}", "-c", str(source), "-o", str(output)],
             f"compiling {source.name}", cwd=source.parent)
    return output


def _runtime_key(source: str, compiler: str, arch: str, flags: Sequence[str]) -> str:
    digest = hashlib.sha256()
    root = runtime_source_dir()
    for part in (f"c/{source}", *sorted(f"include/{h.name}" for h in include_dir().glob("*.h"))):
        digest.update(part.encode() + b"\0" + (root / part).read_bytes() + b"\0")
    info = os.stat(compiler)
    digest.update(f"{compiler}\0{info.st_size}\0{info.st_mtime_ns}\0{arch}\0".encode())
    digest.update("\0".join(flags).encode())
    return digest.hexdigest()[:32]


def runtime_object(target: TargetSpec = "host", source: str = "kiln_runtime.c",
                   flags: Sequence[str] = RUNTIME_CFLAGS) -> Path:
    """The C runtime ``source`` (a file of runtime/c) compiled for ``target`` with ``flags``
    (cached; recompiled when the source, a runtime header, the flags or the compiler change)."""
    toolchain = toolchain_for(target)
    compiler = toolchain.resolve()
    key = _runtime_key(source, compiler, toolchain.arch, flags)
    folder = cache_dir() / "runtime"
    cached = folder / f"{Path(source).stem}-{toolchain.arch}-{key}.o"
    if cached.exists():
        return cached
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
    except OSError:
        # An unwritable cache (read-only home, sandbox) only costs a recompile each time.
        staging = Path(tempfile.mkdtemp(prefix="kiln-runtime-"))
        cached = staging / cached.name
    built = compile_c(runtime_source_dir() / "c" / source, staging / "runtime.o", target, flags)
    os.replace(built, cached)  # atomic: concurrent builds race harmlessly
    if staging.parent == folder:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def version_script() -> str:
    """Linker version script exporting only the kiln_* ABI functions."""
    names = "".join(f"    {name};\n" for name in abi.EXPORTED_SYMBOLS)
    return f"{{\n  global:\n{names}  local:\n    *;\n}};\n"


def link_shared_library(objects: Sequence[Path], output: Path,
                        target: TargetSpec = "host") -> Path:
    """Link object files into a shared library at ``output`` (replaced atomically)."""
    compiler = toolchain_for(target).resolve()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-link-") as work:
        script = Path(work) / "exports.map"
        script.write_text(version_script())
        staged = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        command = [
            compiler, "-shared", "-pthread", "-o", str(staged), *map(str, objects),
            f"-Wl,--version-script={script}", "-Wl,-z,noexecstack", "-Wl,-z,defs",
            "-Wl,-z,relro", "-Wl,-z,now", *LINK_LIBS,
        ]
        try:
            run_tool(command, f"linking {output.name}")
            os.replace(staged, output)
        finally:
            staged.unlink(missing_ok=True)
    return output
