"""``kiln compile --dump``: the kernel IR printer (every statement and expression kind, minimal
parentheses) and ``write_dump`` (four files per kernel plus plan.txt; the LLVM IR parses and
verifies; the assembly assembles, for the host and the cross targets), called directly, through
``build(dump_dir=...)`` and through the command line."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import onnx
import pytest

from kiln.compiler import build
from kiln.compiler.cli import main
from kiln.compiler.codegen.dump import file_stems, write_dump
from kiln.compiler.codegen.target import Target, initialize_llvm
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower import kernel_ir
from kiln.compiler.lower.from_graph import lower_graph
from kiln.compiler.lower.inline import walk
from kiln.compiler.lower.kernel_ir import (
    Assign,
    Binary,
    Block,
    BlockReduce,
    Buffer,
    Call,
    Cast,
    Compare,
    ContractAxis,
    Declare,
    Expr,
    ExternalFunction,
    If,
    Kernel,
    Loop,
    LoopKind,
    MatmulTile,
    Report,
    Select,
    Stmt,
    Unary,
    Var,
)
from kiln.compiler.lower.kernel_printer import print_kernel
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.specialize import specialize
from kiln.compiler.plan.plan import Call as PlanCall
from kiln.compiler.plan.plan import Location, Place, Plan, copy_kernel, make_plan

F32, F16, I32, I64 = DType.F32, DType.F16, DType.I32, DType.I64
SUFFIXES = (".kir", ".ll", ".opt.ll", ".s")
TARGETS = ["host", "x86_64-avx2", "aarch64-linux-gnu", "armv7-linux-gnueabihf",
           "riscv64-linux-gnu"]
ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "armv7": 40, "riscv64": 243}


def c(value: int | float | bool, dtype: DType = I64) -> kernel_ir.Const:
    return kernel_ir.Const(value, dtype)


# -- the printer ---------------------------------------------------------------------------

def _sample_kernel() -> Kernel:
    """A kernel with every statement kind, expression kind and loop kind."""
    i, j, k, acc = Var("i"), Var("j"), Var("k"), Var("acc", F32)
    x, y = Buffer("x", F32, (4, 8)), Buffer("y", F32, (4, 8))
    w = Buffer("w", F32, (8, 8), strides=(1, 8))
    idx, t = Buffer("idx", I32, (4,)), Buffer("t", F16, (8,))
    flat_y = Buffer("y", F32, (32,))
    part = Buffer("part", F32, (1,))
    twice = ExternalFunction("twice", "kiln_twice", "", (F32,), F32)
    tile = MatmulTile(y, i * 8, 8, x, c(0), 8, w, c(0), 2, 8, (ContractAxis(8, 1, 8),),
                      accumulate=True, c_group=4, c_group_stride=16)
    body = Loop(i, c(4), Block((
        Declare(acc, c(0.0, F32)),
        Loop(k, c(8), Assign(acc, acc + x.load(i, k) * w.load(k, i)), LoopKind.UNROLL),
        Loop(j, c(8), t.store([j], Cast(Unary("exp", -(acc - x.load(i, j))), F16)),
             LoopKind.VECTORIZE, 8),
        Loop(j, c(8), flat_y.store([i * 8 + j], Select(
            Unary("isnan", acc), c(0.0, F32),
            Call(twice, (Binary("min", Cast(t.load(j), F32), c(1.5, F32)),)))),
            LoopKind.VECTORIZE),
        If(Binary("or", idx.load(i) < c(0, I32), idx.load(i) >= c(4, I32)),
           Report("index out of range"),
           Loop(k, c(8), y.store([i, k], y.load(i, k) / (acc - 1.0)))),
        If(acc > 0.0, tile),
        Loop(Var("b"), c(1), Block((
            Loop(Var("th"), c(1), Block((t.store([c(0)], c(1.0, F16)),
                                         part.store([Var("th")], acc))), LoopKind.GPU_THREAD),
            BlockReduce(part, "add", acc))), LoopKind.GPU_BLOCK),
    )), LoopKind.PARALLEL)
    return Kernel("sample", (x, w, idx), (y,), body, (t,), ("node_a", "node_b"),
                  thread_local=(part,))


SAMPLE_TEXT = """\
kernel sample
  source: node_a, node_b
  in %x: f32[4,8]
  in %w: f32[8,8] strides [1, 8]
  in %idx: i32[4]
  out %y: f32[4,8]
  scratch %t: f16[8]
  thread_local %part: f32[1]
  view %y: f32[32]
{
  parallel for i in 0..4 {
    let acc: f32 = 0.0
    unroll for k in 0..8 {
      acc = acc + %x[i, k] * %w[k, i]
    }
    vectorize<8> for j in 0..8 {
      %t[j] = f16(exp(-(acc - %x[i, j])))
    }
    vectorize for j in 0..8 {
      %y[i * 8 + j] = select(isnan(acc), 0.0, @twice(min(f32(%t[j]), 1.5)))
    }
    if %idx[i] < 0:i32 | %idx[i] >= 4:i32 {
      report "index out of range"
    } else {
      for k in 0..8 {
        %y[i, k] = %y[i, k] / (acc - 1.0)
      }
    }
    if acc > 0.0 {
      matmul_tile 2x8 c += a @ b {
        c: %y at i * 8, row stride 8, columns in groups of 4 every 16
        a: %x at 0, row stride 8
        b: %w at 0
        k: 8 (a stride 1, b stride 8)
      }
    }
    gpu_block for b in 0..1 {
      gpu_thread for th in 0..1 {
        %t[0] = 1.0:f16
        %part[th] = acc
      }
      acc = block_reduce<add>(%part)
    }
  }
}
"""


def test_the_printer_prints_every_statement_and_expression_kind() -> None:
    kernel = _sample_kernel()
    kinds = {type(node) for node in walk(kernel.body)}
    every = {*Expr.__subclasses__(), *Stmt.__subclasses__()}
    assert every <= kinds, f"the sample lacks {sorted(k.__name__ for k in every - kinds)}"
    loop_kinds = {n.kind for n in walk(kernel.body) if isinstance(n, Loop)}
    assert loop_kinds == set(LoopKind)
    assert print_kernel(kernel) == SAMPLE_TEXT


a, b, d = Var("a", F32), Var("b", F32), Var("d", F32)
n = Var("n")


@pytest.mark.parametrize(("expr", "text"), [
    (a - (b - d), "a - (b - d)"),
    ((a - b) - d, "a - b - d"),
    (a + (b + d), "a + (b + d)"),  # float addition does not reassociate: the tree shows
    ((a + b) * d, "(a + b) * d"),
    (a * b + d, "a * b + d"),
    (a + b * d, "a + b * d"),
    (a / (b * d), "a / (b * d)"),
    (a * b / d, "a * b / d"),
    (-(a + b), "-(a + b)"),
    (Unary("neg", -a), "-(-a)"),
    (-a * b, "-a * b"),
    (a - c(-1.0, F32), "a - -1.0"),
    (c(-1.0, F32) * a, "-1.0 * a"),
    (Binary("shl", n + 1, c(2)), "(n + 1) << 2"),
    (Binary("add", n, Binary("shl", n, c(2))), "n + (n << 2)"),
    (Binary("shr", n, n * 2), "n >> (n * 2)"),
    (Binary("shr", -n, c(1)), "-n >> 1"),
    (Binary("and", a < b, d >= 0.0), "a < b & d >= 0.0"),
    (Binary("or", Binary("and", a < b, a > d), a.eq(b)), "a < b & a > d | a == b"),
    (Binary("and", Binary("or", a < b, a > d), a.ne(b)), "(a < b | a > d) & a != b"),
    (Compare("eq", a < b, d < a), "(a < b) == (d < a)"),
    (Binary("xor", Binary("or", n.eq(0), n.eq(1)), n.eq(2)), "(n == 0 | n == 1) ^ n == 2"),
    (Binary("pow", a + b, d), "pow(a + b, d)"),
    (Unary("sqrt", a * a + b), "sqrt(a * a + b)"),
    (Cast(n * 2, F32) * a, "f32(n * 2) * a"),
    (c(3, I32), "3:i32"),
    (c(True, DType.BOOL), "true"),
    (c(float("inf"), F32), "inf"),
])
def test_expressions_print_with_minimal_parentheses(expr: Expr, text: str) -> None:
    out = Buffer("out", expr.dtype, (1,))
    kernel = Kernel("k", (), (out,), out.store([c(0)], expr))
    assert print_kernel(kernel).splitlines()[3] == f"  %out[0] = {text}"


def test_buffer_names_that_need_it_are_quoted() -> None:
    x, y = Buffer("conv1/out:0", F32, (2,)), Buffer("y", F32, (2,))
    i = Var("i")
    text = print_kernel(Kernel("k", (x,), (y,), Loop(i, c(2), y.store([i], x.load(i)))))
    assert 'in %"conv1/out:0": f32[2]' in text
    assert '%y[i] = %"conv1/out:0"[i]' in text


def test_file_stems_are_safe_and_unique() -> None:
    names = ["conv/1:a", "Gemm", "gemm", "gemm_2", "x" * 300, "..hidden", "ok.name-1"]
    stems = file_stems(names)
    assert stems["conv/1:a"] == "conv_1_a"
    assert stems["Gemm"] == "Gemm" and stems["ok.name-1"] == "ok.name-1"
    assert stems["..hidden"] == "hidden"
    assert len(stems["x" * 300]) <= 100
    lowered = [s.lower() for s in stems.values()]
    assert len(set(lowered)) == len(names), "two kernels would share files"
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", s) for s in stems.values())


def test_kernels_whose_names_differ_in_case_get_their_own_files(tmp_path: Path) -> None:
    x, y, z = (Buffer(name, F32, (16,)) for name in "xyz")
    calls = (PlanCall(copy_kernel("Copy", x, y), (Location(Place.INPUT, 0),
                                                   Location(Place.ARENA, 0)), False),
             PlanCall(copy_kernel("copy", y, z), (Location(Place.ARENA, 0),
                                                  Location(Place.OUTPUT, 0)), False))
    plan = Plan((x,), (z,), ("z",), calls, b"", 64, 64)
    write_dump(plan, Target.parse("x86_64"), tmp_path, 2)
    assert {p.name for p in tmp_path.iterdir()} == {
        f"{stem}{suffix}" for stem in ("Copy", "copy_2") for suffix in SUFFIXES} | {"plan.txt"}
    assert "define void @copy(" in (tmp_path / "copy_2.ll").read_text()
    assert "  copy  calls 1  files copy_2.*  source: -" in (tmp_path / "plan.txt").read_text()


# -- dumps of planned models ---------------------------------------------------------------

def _conv_gemm() -> Graph:
    """Conv + ReLU (fused, a parallel loop of matmul tiles), a reshape, Gemm (a matmul tile)."""
    rng = np.random.default_rng(0)
    g = GraphBuilder()
    x = g.add_input("x", TensorType(F32, (1, 3, 16, 16)))
    w = g.constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), name="w")
    y = g.add1(Op.CONV, [x, w], {"pads": [1, 1, 1, 1]}, name="conv1")
    y = g.add1(Op.RELU, [y], name="relu1")
    y = g.add1(Op.RESHAPE, [y, g.constant(np.array([1, -1], np.int64))], name="flat")
    fc_w = g.constant(rng.standard_normal((2048, 10)).astype(np.float32), name="fc_w")
    fc_b = g.constant(rng.standard_normal(10).astype(np.float32), name="fc_b")
    return g.finish([g.add1(Op.GEMM, [y, fc_w, fc_b], name="fc")])


def _gather_matmul() -> Graph:
    """A Gather of run-time indices (reports bad ones), MatMul + Tanh, three outputs."""
    rng = np.random.default_rng(1)
    g = GraphBuilder()
    ids = g.add_input("ids", TensorType(I64, (32,)))
    table = g.constant(rng.standard_normal((100, 64)).astype(np.float32), name="table")
    e = g.add1(Op.GATHER, [table, ids], name="embed")
    proj = g.constant(rng.standard_normal((64, 128)).astype(np.float32), name="proj_w")
    y = g.add1(Op.TANH, [g.add1(Op.MATMUL, [e, proj], name="proj")], name="act")
    return g.finish([y, e, ids])  # ids: an output the plan copies (a kernel of no graph op)


MODELS = {"conv_gemm": (_conv_gemm, {"conv1", "relu1", "fc"}),
          "gather_matmul": (_gather_matmul, {"embed", "proj", "act"})}


@cache
def _plan(model: str, spec: str, opt_level: int = 2) -> Plan:
    target = Target.parse(spec)
    machine = target.machine()
    graph = optimize(specialize(MODELS[model][0](), None), opt_level, machine=machine)
    return make_plan(lower_graph(graph, machine))


def _kernels(plan: Plan) -> dict[str, Kernel]:
    return {call.kernel.name: call.kernel for call in plan.calls}


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(model, target) -> its dump folder, written on first use."""
    root = tmp_path_factory.mktemp("dumps")

    class Folders(dict):
        def __missing__(self, key: tuple[str, str]) -> Path:
            folder = root / f"{key[0]}-{key[1]}"
            paths = write_dump(_plan(*key), Target.parse(key[1]), folder, 2)
            assert sorted(paths) == sorted(folder.iterdir()), "the paths returned are the files"
            self[key] = folder
            return folder

    return Folders()


@pytest.mark.parametrize("model", list(MODELS))
def test_every_kernel_has_its_four_files_and_the_plan(model: str, dumps: dict) -> None:
    folder = dumps[model, "host"]
    names = set(_kernels(_plan(model, "host")))
    expected = {f"{name}{suffix}" for name in names for suffix in SUFFIXES} | {"plan.txt"}
    assert {p.name for p in folder.iterdir()} == expected
    assert all((folder / name).stat().st_size > 0 for name in expected)


@pytest.mark.parametrize("model", list(MODELS))
def test_llvm_ir_parses_verifies_and_holds_the_kernel(model: str, dumps: dict) -> None:
    initialize_llvm()
    folder = dumps[model, "host"]
    for name, kernel in _kernels(_plan(model, "host")).items():
        parallel = any(isinstance(s, Loop) and s.kind is LoopKind.PARALLEL
                       for s in walk(kernel.body))
        for suffix in (".ll", ".opt.ll"):
            module = llvm.parse_assembly((folder / f"{name}{suffix}").read_text())
            module.verify()
            defined = {f.name for f in module.functions if not f.is_declaration}
            assert name in defined
            # the outlined parallel bodies are part of the kernel's dump
            outlined = {f for f in defined if f.startswith(f"{name}.parallel")}
            if suffix == ".ll":
                assert bool(outlined) == parallel
            assert defined <= {name} | outlined
        assert (folder / f"{name}.ll").read_text() != (folder / f"{name}.opt.ll").read_text()


def test_optimized_ir_follows_the_opt_level(tmp_path: Path) -> None:
    plan, target = _plan("conv_gemm", "host"), Target.parse("host")
    write_dump(plan, target, tmp_path / "o0", 0)
    write_dump(plan, target, tmp_path / "o3", 3)
    for name in _kernels(plan):
        emitted = (tmp_path / "o0" / f"{name}.ll").read_text()
        assert (tmp_path / "o0" / f"{name}.opt.ll").read_text() == emitted
        assert (tmp_path / "o3" / f"{name}.ll").read_text() == emitted
        assert (tmp_path / "o3" / f"{name}.opt.ll").read_text() != emitted


def test_dumped_models_have_parallel_loops_matmul_tiles_and_reports() -> None:
    """The models exercise what the dump must carry (a guard on the other tests' coverage)."""
    kernels = [k for m in MODELS for k in _kernels(_plan(m, "host")).values()]
    nodes = [n for k in kernels for n in walk(k.body)]
    assert any(isinstance(n, Loop) and n.kind is LoopKind.PARALLEL for n in nodes)
    assert any(isinstance(n, MatmulTile) for n in nodes)
    assert any(isinstance(n, Report) for n in nodes)


@pytest.mark.parametrize("model", list(MODELS))
def test_kernel_ir_text_names_every_buffer(model: str, dumps: dict) -> None:
    folder = dumps[model, "host"]
    for name, kernel in _kernels(_plan(model, "host")).items():
        text = (folder / f"{name}.kir").read_text()
        assert text.startswith(f"kernel {name}\n")
        for role, buffers in (("in", kernel.inputs), ("out", kernel.outputs),
                              ("scratch", kernel.scratch)):
            for buffer in buffers:
                shape = ",".join(str(e) for e in buffer.shape)
                assert f"  {role} %{buffer.name}: {buffer.dtype.value}[{shape}]\n" in text
        if any(isinstance(n, MatmulTile) for n in walk(kernel.body)):
            assert "matmul_tile" in text
        if any(isinstance(n, Loop) and n.kind is LoopKind.PARALLEL for n in walk(kernel.body)):
            assert "parallel for" in text


@pytest.mark.parametrize("model", list(MODELS))
def test_plan_text_lists_calls_places_and_source_ops(model: str, dumps: dict) -> None:
    plan = _plan(model, "host")
    text = (dumps[model, "host"] / "plan.txt").read_text()
    sections = re.split(r"^  \d+: ", text.split("\ncalls:\n", 1)[1], flags=re.M)[1:]
    assert len(sections) == len(plan.calls)
    for call, section in zip(plan.calls, sections, strict=True):
        assert section.startswith(call.kernel.name)
        assert ("reported data error" in section.splitlines()[0]) == call.may_report
        for buffer, location in zip(call.kernel.params, call.args, strict=True):
            where = {Place.INPUT: f"input[{location.at}]", Place.OUTPUT: f"output[{location.at}]",
                     Place.WEIGHT: f"weights+{location.at}..{location.at + buffer.nbytes}",
                     Place.ARENA: f"arena+{location.at}..{location.at + buffer.nbytes}",
                     }[location.place]
            assert re.search(rf"^    \w+ +{re.escape(where)} +%{re.escape(buffer.name)}:",
                             section, re.M), (where, buffer.name)
    sources: set[str] = set()
    for name, kernel in _kernels(plan).items():
        line = next(x for x in text.splitlines() if x.startswith(f"  {name} "))
        assert line.endswith(f"source: {', '.join(kernel.source) or '-'}")
        sources.update(kernel.source)
    assert MODELS[model][1] <= sources


@pytest.mark.parametrize("spec", TARGETS)
def test_assembly_assembles_for_the_target(spec: str, dumps: dict, tmp_path: Path) -> None:
    folder = dumps["conv_gemm", spec]
    target = Target.parse(spec)
    for name in _kernels(_plan("conv_gemm", spec)):
        source = folder / f"{name}.s"
        assert re.search(rf"^{re.escape(name)}:", source.read_text(), re.M)
        obj = _assemble(source, target, tmp_path / f"{name}.o")
        assert struct.unpack_from("<H", obj, 18)[0] == ELF_MACHINE[target.arch]


def _assemble(source: Path, target: Target, out: Path) -> bytes:
    """The object code of assembly file ``source``: GNU as for x86-64, llvm-mc for the other
    targets. The RISC-V ISA attribute that llvmlite's LLVM writes names extension versions an
    older llvm-mc rejects, so it is dropped and the features passed instead. Without llvm-mc
    the optimized IR beside the assembly is compiled to an object instead."""
    if target.arch == "x86_64":
        if shutil.which("as") is None:
            pytest.skip("GNU as is not installed")
        command = ["as", "-o", str(out), str(source)]
    elif shutil.which("llvm-mc") is not None:
        text = source.read_text()
        if target.arch.startswith("riscv"):
            text = re.sub(r"^\s*\.attribute\s+5,.*$", "", text, flags=re.M)
        edited = out.with_suffix(".s")
        edited.write_text(text)
        command = ["llvm-mc", f"-triple={target.triple}", f"-mattr={target.features}",
                   "-filetype=obj", "-o", str(out), str(edited)]
    else:
        module = llvm.parse_assembly(source.with_suffix(".opt.ll").read_text())
        module.verify()
        return bytes(target.target_machine(2).emit_object(module))
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{source.name} does not assemble:\n{result.stderr[:2000]}"
    return out.read_bytes()


def test_build_writes_the_dump_of_the_model_it_compiles(tmp_path: Path) -> None:
    exe = build(_conv_gemm(), opt_level=2, dump_dir=tmp_path / "dump")
    names = set(_kernels(_plan("conv_gemm", "host")))
    assert {p.name for p in (tmp_path / "dump").iterdir()} == {
        f"{name}{suffix}" for name in names for suffix in SUFFIXES} | {"plan.txt"}
    assert exe.stats.kernels == len(_plan("conv_gemm", "host").calls)
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert exe.run({"x": x})[0].shape == (1, 10)


def test_the_command_line_dumps_an_onnx_model(tmp_path: Path) -> None:
    model = Path(__file__).resolve().parents[2] / "examples" / "digits" / "digits_cnn.onnx"
    folder, library = tmp_path / "dump", tmp_path / "m.so"
    assert main(["compile", str(model), "-o", str(library), "--input-shape", "image=1,1,8,8",
                 "--dump", str(folder)]) == 0
    assert library.exists()
    plan = (folder / "plan.txt").read_text()
    kernel_lines = plan.split("\nkernels ", 1)[1].split("\n\ncalls:", 1)[0].splitlines()[1:]
    names = [line.split()[0] for line in kernel_lines]
    assert names and {p.name for p in folder.iterdir()} == {
        f"{name}{suffix}" for name in names for suffix in SUFFIXES} | {"plan.txt"}
    nodes = {node.name for node in onnx.load(str(model)).graph.node}
    sources = {op for line in kernel_lines for op in line.split("source: ")[1].split(", ")}
    assert sources - {"-"} and sources - {"-"} <= nodes, "sources are the ONNX node names"
