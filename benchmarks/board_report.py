"""Per-board report: artifact size, peak memory, correctness and SIMD use, run under qemu-user.

    python benchmarks/board_report.py [--targets NAME ...] [--models digits resnet]
                                      [--threads 1 2] [--json PATH]

For each board (AArch64, ARMv7 hard-float, RV64GC, RV64GC+V) and model (the bundled digits CNN
at batch 1, the ResNet-style CNN of tests/models/zoo.py at batch 2) it compiles the model with
``kiln compile --target T`` as a user would, links examples/c/kiln_run.c with the board's cross
gcc, runs it under qemu-user once per thread count and reports:

* size: the library's file bytes, its code (executable sections: .text, .plt, ...) and of that
  the generated kernels (``kiln__plan_run`` and the outlined ``k<N>_*`` loop bodies), and the
  embedded weights (the ``kiln__weights`` symbol); sizes come from the board's ``readelf``.
* peak memory: the maximum resident set of the qemu process over the runs (``ru_maxrss`` of
  wait4, taken by a small forked wrapper, see ``run_on_board``), which holds qemu's own
  footprint (translator, translated-code cache) as well as the program's: the baseline column is
  the same figure for an empty C program under the same qemu, so the difference approximates
  what the model adds (library, weights, arena, thread stacks, more translated code). The
  activation arena is what ``kiln compile`` reported.
* error: the largest absolute difference from Kiln's reference executor over every output and
  thread count (float32 throughout).
* instruction mix of the generated kernels, from the board's ``objdump -d``: floating-point
  instructions on vector registers (NEON ``v*.4s`` / ``q*``, RVV ``vf*``) vs scalar FP
  registers, fused multiply-adds among each, and on RISC-V the ``vsetvli``/``vsetivli`` count.
  Register moves, loads and stores are not counted.

Missing cross tools skip a board with the reason (the program and its Debian package).
The board table, tool discovery and the qemu runner are shared with tests/boards/boardcheck.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "runtime" / "include"
KILN_RUN_C = ROOT / "examples" / "c" / "kiln_run.c"
DIGITS = ROOT / "examples" / "digits"
QEMU_PACKAGE = "qemu-user"


class BoardError(RuntimeError):
    """A compile, link or tool step for a board failed; the message holds its output."""


@dataclass(frozen=True)
class Board:
    """One emulated board: Kiln's target name, the GNU cross tools and qemu-user's command."""

    name: str  # the value of `kiln compile --target`
    gnu: str  # GNU triple prefixing the cross gcc/binutils and naming the sysroot /usr/<gnu>
    qemu: str  # qemu-user binary
    qemu_cpu: tuple[str, ...]  # extra qemu flags selecting a CPU with the target's features
    elf_machine: int  # e_machine of the target's ELF files
    simd: str  # the SIMD the compiled kernels should use ("" for none)

    @property
    def arch(self) -> str:
        return self.gnu.split("-", 1)[0]

    @property
    def gcc(self) -> str:
        return f"{self.gnu}-gcc"

    @property
    def gcc_package(self) -> str:
        return f"gcc-{self.gnu}"

    @property
    def libc_package(self) -> str:
        return f"libc6-dev-{ {'aarch64': 'arm64', 'arm': 'armhf'}.get(self.arch, self.arch)}-cross"

    def tool(self, name: str) -> str:
        """A binutils program for this board (``objdump``, ``readelf``, ``nm``, ...)."""
        return f"{self.gnu}-{name}"

    @property
    def sysroot(self) -> Path:
        return Path("/usr") / self.gnu


BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board("aarch64-linux-gnu", "aarch64-linux-gnu", "qemu-aarch64", (), 183, "NEON"),
        Board("armv7-linux-gnueabihf", "arm-linux-gnueabihf", "qemu-arm", (), 40, "NEON"),
        Board("riscv64-linux-gnu", "riscv64-linux-gnu", "qemu-riscv64", (), 243, ""),
        # qemu 7.2 spells the V extension and its register width as CPU properties (without
        # vext_spec it warns that it picked v1.0). Kiln's preset assumes VLEN >= 128 (+v
        # implies zvl128b); 128 is the narrowest core the code must run on.
        Board("riscv64-rvv-linux-gnu", "riscv64-linux-gnu", "qemu-riscv64",
              ("-cpu", "rv64,v=true,vlen=128,vext_spec=v1.0"), 243, "RVV"),
    )
}


def missing_compiler(board: Board) -> str | None:
    """Why C programs cannot be built for ``board`` (None when they can)."""
    if shutil.which(board.gcc) is None:
        return (f"{board.gcc} not found on PATH "
                f"(apt-get install {board.gcc_package} {board.libc_package})")
    if not (board.sysroot / "include" / "stdio.h").exists():
        return f"no C library headers in {board.sysroot} (apt-get install {board.libc_package})"
    return None


def missing_tool(board: Board, name: str) -> str | None:
    """Why the binutils program ``name`` for ``board`` cannot run (None when it can)."""
    if shutil.which(board.tool(name)) is None:
        return f"{board.tool(name)} not found on PATH (apt-get install binutils-{board.gnu})"
    return None


def missing_qemu(board: Board) -> str | None:
    """Why ``board``'s programs cannot run under qemu-user (None when they can)."""
    if shutil.which(board.qemu) is None:
        return f"{board.qemu} not found on PATH (apt-get install {QEMU_PACKAGE})"
    if not (board.sysroot / "lib").is_dir():
        return f"no target libraries in {board.sysroot} (apt-get install {board.libc_package})"
    return None


def qemu_command(board: Board) -> list[str]:
    """The qemu-user prefix running ``board`` programs against the cross sysroot's libraries."""
    return [board.qemu, "-L", str(board.sysroot), *board.qemu_cpu]


def _checked(command: Sequence[str | Path], what: str) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if done.returncode != 0:
        joined = " ".join(map(str, command))
        raise BoardError(f"{what} failed ({joined}):\n{done.stderr}{done.stdout}")
    return done.stdout


def cross_compile(board: Board, sources: Sequence[str | Path], output: Path,
                  flags: Sequence[str] = ()) -> Path:
    """Compile and link C sources (and objects or libraries) with ``board``'s gcc, the runtime
    headers on the include path."""
    _checked([board.gcc, "-O2", f"-I{INCLUDE}", *sources, "-o", output, *flags],
             f"building {output.name} for {board.name}")
    return output


def link_kiln_run(board: Board, library: Path, output: Path) -> Path:
    """examples/c/kiln_run.c linked against a model library, found next to the program."""
    return cross_compile(board, [KILN_RUN_C, library], output, ["-Wl,-rpath,$ORIGIN"])


def kiln_compile(model: Path, output: Path, target: str, *options: str) -> str:
    """``kiln compile MODEL --target TARGET -o OUTPUT OPTIONS...`` as a user runs it (the entry
    point of the ``kiln`` console script); returns what it printed."""
    return _checked([sys.executable, "-m", "kiln.compiler.cli", "compile", model,
                     "--target", target, "-o", output, *options], f"kiln compile {model.name}")


@dataclass(frozen=True)
class BoardRun:
    """A finished program run under qemu, with the peak resident memory of that process."""

    returncode: int
    stdout: str
    stderr: str
    max_rss_kib: int  # of the qemu process: the guest program plus qemu's own footprint


# Run by a fresh ``python -S``: fork, exec the command, and write the child's exit code and
# peak RSS (KiB) to the file named first. Linux records the RSS high-water mark of the memory
# image a process replaces at exec, so a program spawned straight from this (large) Python
# process would report at least this process's RSS; a child forked from the small wrapper
# starts from its few MiB of private pages, below any qemu's footprint.
_PEAK_RSS_WRAPPER = """\
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_on_board(board: Board, argv: Sequence[str | Path], cwd: Path,
                 timeout: float = 600.0) -> BoardRun:
    """Run ``argv`` (a board executable and its arguments) under qemu in ``cwd``; a run past
    ``timeout`` seconds is killed (with its process group) and reported as such."""
    command = [*qemu_command(board), *map(str, argv)]
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rusage"
        # a session of its own, so that a timeout ends qemu as well as the wrapper
        process = subprocess.Popen([sys.executable, "-S", "-c", _PEAK_RSS_WRAPPER, report,
                                    *command], cwd=cwd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return BoardRun(-signal.SIGKILL, stdout,
                            f"{stderr}\n{' '.join(command)}: killed after {timeout:g} s", 0)
        if process.returncode != 0 or not report.exists():
            raise BoardError(f"the peak-RSS wrapper failed:\n{stderr}")
        returncode, max_rss = map(int, report.read_text().split())
        return BoardRun(returncode, stdout, stderr, max_rss)


# ---- disassembly -------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    mnemonic: str
    operands: str


_FUNCTION = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
_INSTRUCTION = re.compile(r"^\s*[0-9a-f]+:\t([^\t]+)(?:\t([^\t]*))?")
# Kiln's generated code: the plan (kernels inlined into it) and the outlined parallel loop
# bodies, named after their kernels (k<index>_<op>.parallel<N>); the rest of the library is the
# C runtime, the C start-up files and the PLT.
_GENERATED = re.compile(r"^(kiln__plan_run|k\d+_\w*(\.\w+)*)$")


def parse_objdump(text: str) -> dict[str, list[Instruction]]:
    """Function name -> its instructions, from ``objdump -d --no-show-raw-insn`` output.
    Comments after the operands (``// ...``, ``@ ...``) are dropped."""
    functions: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for line in text.splitlines():
        header = _FUNCTION.match(line)
        if header:
            current = functions.setdefault(header.group(1), [])
            continue
        found = _INSTRUCTION.match(line)
        if found and current is not None:
            current.append(Instruction(found.group(1).strip(), (found.group(2) or "").strip()))
    return functions


def generated_code(functions: Mapping[str, list[Instruction]]) -> list[Instruction]:
    """The instructions of Kiln's generated functions (plan and kernels)."""
    return [i for name, body in functions.items() if _GENERATED.match(name) for i in body]


@dataclass(frozen=True)
class InstructionMix:
    """Floating-point instruction counts of generated code (moves, loads, stores excluded)."""

    instructions: int  # every instruction (and undecoded word) in the generated code
    simd_fp: int  # FP arithmetic on vector registers
    simd_fma: int  # of which fused or chained multiply-adds
    scalar_fp: int  # FP arithmetic on scalar FP registers
    scalar_fma: int
    vector_config: int  # RVV vsetvli / vsetivli
    undecoded: int  # words objdump printed as data (.word/.4byte): literal pools, unknown ISA

    @property
    def simd_share(self) -> float:
        """The vector share of FP arithmetic instructions (0 when there are none)."""
        total = self.simd_fp + self.scalar_fp
        return self.simd_fp / total if total else 0.0


_FMA = {
    "aarch64": {"fmla", "fmls", "fmadd", "fmsub", "fnmadd", "fnmsub"},
    "arm": {"vmla", "vmls", "vfma", "vfms", "vfnma", "vfnms", "vnmla", "vnmls"},
    "riscv64": {"vfmacc", "vfnmacc", "vfmsac", "vfnmsac", "vfmadd", "vfnmadd", "vfmsub",
                "vfnmsub", "vfwmacc", "vfwnmacc", "vfwmsac", "vfwnmsac",
                "fmadd", "fmsub", "fnmadd", "fnmsub"},
}
_ARM_REGISTER = re.compile(r"\b([sdq])\d+\b")


def classify(arch: str, instruction: Instruction) -> str | None:
    """"simd" or "scalar" for an FP arithmetic instruction of ``arch`` (GNU objdump syntax),
    None for anything else (integer, moves, loads and stores, branches)."""
    mnemonic, operands = instruction.mnemonic, instruction.operands
    if arch == "aarch64":
        if not mnemonic.startswith("f") or mnemonic == "fmov":
            return None
        return "simd" if re.search(r"\bv\d+\.", operands) else "scalar"
    if arch == "arm":
        parts = mnemonic.split(".")
        types = [p for p in parts[1:] if p in ("f16", "f32", "f64")]
        # vmov<cond> (vmovgt.f32 ...) is a conditional register move
        if not parts[0].startswith("v") or not types or parts[0].startswith(("vmov", "vdup")):
            return None
        registers = set(_ARM_REGISTER.findall(operands))
        # NEON works on q (4 x f32) and d (2 x f32) registers; VFP scalars are s (f32) or d (f64)
        if "q" in registers or (registers == {"d"} and parts[1] == "f32"):
            return "simd"
        return "scalar"
    if arch == "riscv64":
        if mnemonic.startswith(("vf", "vmf")):
            return None if mnemonic.startswith("vfmv") else "simd"
        if mnemonic.startswith("f") and "." in mnemonic and not mnemonic.startswith(
                ("fmv", "fence")):
            return "scalar"
        return None
    raise ValueError(f"no instruction classes for architecture {arch!r}")


def instruction_mix(arch: str, code: Iterable[Instruction]) -> InstructionMix:
    """Counts of ``classify`` over ``code``."""
    counts = dict.fromkeys(("simd", "scalar", "simd_fma", "scalar_fma"), 0)
    total = vector_config = undecoded = 0
    for instruction in code:
        total += 1
        if instruction.mnemonic.startswith("."):
            undecoded += 1
        if instruction.mnemonic in ("vsetvli", "vsetivli", "vsetvl"):
            vector_config += 1
        kind = classify(arch, instruction)
        if kind is not None:
            counts[kind] += 1
            if instruction.mnemonic.split(".")[0] in _FMA[arch]:
                counts[f"{kind}_fma"] += 1
    return InstructionMix(total, counts["simd"], counts["simd_fma"], counts["scalar"],
                          counts["scalar_fma"], vector_config, undecoded)


def disassemble(board: Board, binary: Path) -> str:
    """``objdump -d --no-show-raw-insn`` of ``binary`` with ``board``'s binutils.

    On RISC-V it disassembles a copy without the ``$x<isa>`` mapping symbols: binutils 2.40
    takes the ISA of gcc's start-up code's symbol for the LLVM code after it (LLVM marks it only
    with a bare ``$x``) and prints every vector instruction as ``.4byte``; without the symbols it
    uses the library's merged ISA attribute, which names V when the kernels use it.
    """
    objdump = [board.tool("objdump"), "-d", "--no-show-raw-insn"]
    if board.arch != "riscv64":
        return _checked([*objdump, binary], f"disassembling {binary.name}")
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / binary.name
        _checked([board.tool("objcopy"), "--wildcard", "--strip-symbol=$x*", binary, copy],
                 f"copying {binary.name}")
        return _checked([*objdump, copy], f"disassembling {binary.name}")


# ---- sizes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    name: str
    kind: str  # PROGBITS, NOBITS, ...
    size: int
    flags: str  # readelf's letters: A alloc, X execute, W write


_SECTION = re.compile(r"^\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)"
                      r"\s+[0-9a-f]+\s+([A-Za-z]*)\s+\d+\s+\d+\s+\d+$")
_SYMBOL = re.compile(r"^\s*\d+:\s+[0-9a-f]+\s+(\d+|0x[0-9a-f]+)\s+(\w+)\s+\w+\s+\w+\s+\S+\s+(\S+)")


def parse_sections(text: str) -> list[Section]:
    """The section table from ``readelf -SW`` (the null section 0 is left out)."""
    return [Section(m.group(1), m.group(2), int(m.group(3), 16), m.group(4))
            for m in map(_SECTION.match, text.splitlines()) if m and m.group(2) != "NULL"]


def parse_symbols(text: str) -> dict[str, tuple[str, int]]:
    """Symbol name -> (type, size) from ``readelf -sW`` (versioned dynamic names keep their
    ``@`` suffix; a name in both tables appears once)."""
    return {m.group(3): (m.group(2), int(m.group(1), 0))
            for m in map(_SYMBOL.match, text.splitlines()) if m}


@dataclass(frozen=True)
class ArtifactSize:
    file_bytes: int
    code_bytes: int  # executable sections
    kernel_bytes: int  # generated functions, part of code_bytes
    weights_bytes: int  # the embedded weights blob (kiln__weights)
    data_bytes: int  # other loaded sections: read-only data, relocations, symbols, .data


def artifact_size(board: Board, library: Path) -> ArtifactSize:
    """The size split of a model library, from ``board``'s readelf."""
    readelf = board.tool("readelf")
    sections = parse_sections(_checked([readelf, "-SW", library], "reading sections"))
    symbols = parse_symbols(_checked([readelf, "-sW", library], "reading symbols"))
    code = sum(s.size for s in sections if "X" in s.flags)
    loaded = sum(s.size for s in sections if "A" in s.flags and s.kind != "NOBITS")
    kernels = sum(size for name, (kind, size) in symbols.items()
                  if kind == "FUNC" and _GENERATED.match(name))
    weights = symbols.get("kiln__weights", ("OBJECT", 0))[1]
    return ArtifactSize(library.stat().st_size, code, kernels, weights, loaded - code - weights)


# ---- models and the report -----------------------------------------------------------------

@dataclass
class Model:
    name: str
    path: Path
    inputs: dict[str, np.ndarray]


def digits_model(count: int = 1) -> Model:
    """The bundled digits CNN on the first ``count`` held-out images (one: as deployed)."""
    images = np.load(DIGITS / "digits_test.npz")["images"][:count].astype(np.float32)
    return Model("digits", DIGITS / "digits_cnn.onnx", {"image": images})


def resnet_model(folder: Path) -> Model:
    """The ResNet-style CNN of tests/models/zoo.py (TorchScript export, batch 2)."""
    models = str(ROOT / "tests" / "models")
    if models not in sys.path:
        sys.path.insert(0, models)
    from zoo import resnet_style_cnn

    exported = resnet_style_cnn("torchscript", folder)
    return Model("resnet", exported.path, exported.inputs)


def reference_outputs(model: Model) -> list[np.ndarray]:
    from kiln.compiler import reference
    from kiln.frontends.onnx import load_onnx

    return reference.run(load_onnx(model.path), dict(model.inputs))


def input_shape_options(inputs: Mapping[str, np.ndarray]) -> list[str]:
    return [f"--input-shape={name}={','.join(map(str, a.shape))}" for name, a in inputs.items()]


@dataclass
class Row:
    board: str
    model: str
    size: ArtifactSize
    arena_bytes: int | None
    max_rss_kib: int
    baseline_rss_kib: int
    max_abs_error: float
    mix: InstructionMix


def run_model(board: Board, model: Model, expected: Sequence[np.ndarray], folder: Path,
              threads: int) -> tuple[float, int]:
    """Run ``folder``/kiln_run (linked to the model's library) on ``model``'s inputs under
    qemu; returns the largest absolute error against ``expected`` and the peak RSS in KiB."""
    inputs = [folder / f"in{i}.raw" for i in range(len(model.inputs))]
    outputs = [folder / f"out{j}.raw" for j in range(len(expected))]
    for path, array in zip(inputs, model.inputs.values(), strict=True):
        np.ascontiguousarray(array).tofile(path)
    done = run_on_board(board, ["./kiln_run", "--threads", str(threads), *inputs, *outputs],
                        folder)
    if done.returncode != 0:
        raise BoardError(f"kiln_run on {board.name} exited {done.returncode}:\n{done.stderr}")
    error = 0.0
    for path, want in zip(outputs, expected, strict=True):
        got = np.fromfile(path, dtype=want.dtype)
        if got.size != want.size:
            raise BoardError(f"{path.name}: {got.size} elements, expected {want.size}")
        error = max(error, float(np.max(np.abs(got.reshape(want.shape) - want), initial=0.0)))
    return error, done.max_rss_kib


def baseline_rss(board: Board, folder: Path) -> int:
    """Peak RSS (KiB) of an empty C program under ``board``'s qemu: qemu's own footprint."""
    source = folder / "empty.c"
    source.write_text("int main(void) { return 0; }\n")
    program = cross_compile(board, [source], folder / "empty")
    done = run_on_board(board, [program], folder)
    if done.returncode != 0:
        raise BoardError(f"an empty program failed under {board.qemu}:\n{done.stderr}")
    return done.max_rss_kib


_ARENA = re.compile(r"arena ([\d,]+) bytes")


def measure(board: Board, model: Model, expected: Sequence[np.ndarray], folder: Path,
            threads: Sequence[int], baseline_kib: int) -> Row:
    """Compile ``model`` for ``board`` in ``folder``, run it with each thread count, and
    measure the library: one row of the report."""
    library = folder / f"{model.name}.so"
    printed = kiln_compile(model.path, library, board.name, *input_shape_options(model.inputs))
    link_kiln_run(board, library, folder / "kiln_run")
    error, rss = 0.0, 0
    for count in threads:
        run_error, run_rss = run_model(board, model, expected, folder, count)
        error, rss = max(error, run_error), max(rss, run_rss)
    arena = _ARENA.search(printed)
    mix = instruction_mix(board.arch, generated_code(parse_objdump(disassemble(board, library))))
    return Row(board.name, model.name, artifact_size(board, library),
               int(arena.group(1).replace(",", "")) if arena else None, rss, baseline_kib,
               error, mix)


def missing(board: Board) -> str | None:
    """Why ``board`` cannot be measured here (None when everything it needs is installed)."""
    return (missing_compiler(board) or missing_qemu(board)
            or next(filter(None, (missing_tool(board, t)
                                  for t in ("objdump", "objcopy", "readelf"))), None))


_COLUMNS = ("board", "model", "file KiB", "code KiB", "kernels KiB", "weights KiB",
            "arena KiB", "peak RSS MiB", "qemu base MiB", "max abs err", "SIMD FP", "SIMD FMA",
            "scalar FP", "scalar FMA", "vset", "SIMD %")


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    def kib(n: int | None) -> str:
        return "-" if n is None else f"{n / 1024:.1f}"

    return [[r.board, r.model, kib(r.size.file_bytes), kib(r.size.code_bytes),
             kib(r.size.kernel_bytes), kib(r.size.weights_bytes), kib(r.arena_bytes),
             f"{r.max_rss_kib / 1024:.1f}", f"{r.baseline_rss_kib / 1024:.1f}",
             f"{r.max_abs_error:.2e}", str(r.mix.simd_fp), str(r.mix.simd_fma),
             str(r.mix.scalar_fp), str(r.mix.scalar_fma), str(r.mix.vector_config),
             f"{100 * r.mix.simd_share:.0f}"] for r in rows]


def format_table(rows: Sequence[Row]) -> str:
    cells = [list(_COLUMNS), *table_rows(rows)]
    widths = [max(len(row[c]) for row in cells) for c in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if c < 2 else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", choices=list(BOARDS), default=list(BOARDS))
    parser.add_argument("--models", nargs="+", choices=("digits", "resnet"),
                        default=["digits", "resnet"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        models = [digits_model() if name == "digits" else resnet_model(root)
                  for name in args.models]
        expected = {m.name: reference_outputs(m) for m in models}
        for board in map(BOARDS.__getitem__, args.targets):
            reason = missing(board)
            if reason:
                print(f"skipping {board.name}: {reason}", file=sys.stderr)
                continue
            folder = root / board.name
            folder.mkdir()
            baseline = baseline_rss(board, folder)
            for model in models:
                work = folder / model.name
                work.mkdir()
                rows.append(measure(board, model, expected[model.name], work, args.threads,
                                    baseline))
                print(f"measured {model.name} on {board.name}", file=sys.stderr)
    print(format_table(rows), end="")
    if args.json:
        args.json.write_text(json.dumps(
            [asdict(r) | {"simd_share": r.mix.simd_share, "threads": args.threads}
             for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
