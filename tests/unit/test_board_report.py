"""benchmarks/board_report.py: its objdump and readelf parsers and instruction classes on lines
taken from real GNU binutils 2.40 output (Kiln libraries and gcc -O2 objects for AArch64, ARMv7
and RV64), the table, and one measured row end to end where the AArch64 tools are installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import board_report  # noqa: E402
from board_report import Instruction, InstructionMix  # noqa: E402

AARCH64 = """\

Disassembly of section .text:

0000000000001410 <frame_dummy>:
    1410:\tb\t1380 <register_tm_clones>

0000000000001414 <k8_fused.parallel0>:
    1414:\tcmp\tx1, x2
    1418:\tb.ge\t1de0 <k8_fused.parallel0+0x9cc>  // b.tcont
    1424:\tmovi\tv31.2d, #0x0
    1520:\tfmla\tv17.4s, v0.4s, v27.s[0]
    152c:\tfmla\tv2.4s, v0.4s, v23.4s
    1530:\tfadd\tv1.4s, v1.4s, v2.4s
    1534:\tfmadd\ts3, s0, s1, s2
    1538:\tfcmpe\ts0, s3
    153c:\tfmov\ts0, wzr

000000000000e030 <kiln__plan_run>:
    e030:\tfminnm\ts0, s2, s3
    e034:\tfmul\ts0, s1, s3

000000000000f230 <worker_main>:
    f230:\tfmla\tv0.4s, v1.4s, v2.4s
"""

ARMV7 = """\
00000dd4 <k8_fused.parallel0>:
     de0:\tsub\tsp, sp, #312\t@ 0x138
     f10:\tvmla.f32\tq2, q9, q0
     f14:\tvmla.f32\tq8, q9, d0[0]
     f18:\tvadd.f32\td16, d17, d18
     f1c:\tvfma.f32\ts1, s14, s15
     f20:\tvadd.f64\td16, d17, d18
     f24:\tvcmpe.f32\ts14, s1
     f28:\tvmovgt.f32\ts0, s3
     f2c:\tvmov.f32\ts14, s0
     f30:\tvcvt.f64.f32\td16, s0
     f34:\tvld1.32\t{d16-d17}, [r0]
     d28:\t.word\t0x0000b22c
"""

RV64 = """\
000000000000130a <k8_fused.parallel0>:
    130a:\tbge\ta1,a2,1d2e <k8_fused.parallel0+0xa24>
    1342:\tfmv.w.x\tfa5,zero
    1434:\tflw\tft10,-1152(s0)
    144c:\tfmadd.s\tfa2,ft10,fs0,fa2
    1450:\tfadd.s\tfa3,fa3,fa5
    1454:\tfence.i
    145a:\tvsetivli\tzero,4,e32,m1,ta,ma
    145e:\tvle32.v\tv8,(a0)
    14d8:\tvfmacc.vf\tv20,fa4,v8
    14dc:\tvfadd.vv\tv8,v8,v9
    14e0:\tvmflt.vv\tv0,v8,v9
    14e4:\tvfmv.v.f\tv8,fa5
    14e8:\t.4byte\t0xcd027057
"""


def _code(text: str) -> list[Instruction]:
    return board_report.generated_code(board_report.parse_objdump(text))


def test_parse_objdump_splits_functions_and_drops_comments() -> None:
    functions = board_report.parse_objdump(AARCH64)
    assert list(functions) == ["frame_dummy", "k8_fused.parallel0", "kiln__plan_run",
                               "worker_main"]
    assert functions["k8_fused.parallel0"][1] == Instruction(
        "b.ge", "1de0 <k8_fused.parallel0+0x9cc>  // b.tcont")
    assert board_report.parse_objdump(ARMV7)["k8_fused.parallel0"][0] == Instruction(
        "sub", "sp, sp, #312")
    assert board_report.parse_objdump(RV64)["k8_fused.parallel0"][5] == Instruction(
        "fence.i", "")


def test_generated_code_is_the_plan_and_the_kernels() -> None:
    code = _code(AARCH64)
    assert len(code) == 11  # 9 in k8_fused.parallel0, 2 in kiln__plan_run; not the runtime's
    assert Instruction("fmla", "v0.4s, v1.4s, v2.4s") not in code


def test_aarch64_mix() -> None:
    # vector: 2 fmla (FMA) + fadd; scalar: fmadd (FMA), fcmpe, fminnm, fmul; fmov is a move
    assert board_report.instruction_mix("aarch64", _code(AARCH64)) == InstructionMix(
        instructions=11, simd_fp=3, simd_fma=2, scalar_fp=4, scalar_fma=1, vector_config=0,
        undecoded=0)


def test_armv7_mix() -> None:
    # NEON: vmla q (by vector and by scalar), vadd.f32 on d registers (2 x f32);
    # VFP: vfma.f32 s (FMA), vadd.f64 d, vcmpe.f32 s, vcvt.f64.f32; moves and loads not counted
    assert board_report.instruction_mix("arm", _code(ARMV7)) == InstructionMix(
        instructions=12, simd_fp=3, simd_fma=2, scalar_fp=4, scalar_fma=1, vector_config=0,
        undecoded=1)


def test_riscv_mix() -> None:
    # RVV: vfmacc (FMA), vfadd, vmflt; scalar: fmadd.s (FMA), fadd.s; vfmv/fmv/flw/fence.i are
    # not FP arithmetic; the .4byte word is counted as undecoded
    assert board_report.instruction_mix("riscv64", _code(RV64)) == InstructionMix(
        instructions=13, simd_fp=3, simd_fma=1, scalar_fp=2, scalar_fma=1, vector_config=1,
        undecoded=1)


def test_simd_share() -> None:
    assert InstructionMix(10, 3, 1, 1, 0, 0, 0).simd_share == 0.75
    assert InstructionMix(10, 0, 0, 0, 0, 0, 0).simd_share == 0.0


def test_classify_rejects_unknown_architectures() -> None:
    with pytest.raises(ValueError, match="mips"):
        board_report.classify("mips", Instruction("add.s", "$f0, $f1, $f2"))


SECTIONS = """\
There are 26 section headers, starting at offset 0xd4a8:

Section Headers:
  [Nr] Name              Type            Address          Off    Size   ES Flg Lk Inf Al
  [ 0]                   NULL            0000000000000000 000000 000000 00      0   0  0
  [ 9] .plt              PROGBITS        0000000000001050 001050 000230 10  AX  0   0 16
  [10] .text             PROGBITS        0000000000001280 001280 003556 00  AX  0   0  2
  [11] .rodata           PROGBITS        0000000000004800 004800 006c40 00   A  0   0 64
  [13] .tbss             NOBITS          000000000000cd90 00bd90 000204 00 WAT  0   0  8
  [22] .riscv.attributes RISCV_ATTRIBUTES 0000000000000000 00c177 0000ca 00      0   0  1
Key to Flags:
"""

SYMBOLS = """\
Symbol table '.symtab' contains 115 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
    51: 0000000000005100 25408 OBJECT  LOCAL  DEFAULT   11 kiln__weights
    56: 0000000000001d30  5734 FUNC    LOCAL  DEFAULT   10 kiln__plan_run
    60: 00000000000038d2   302 FUNC    LOCAL  DEFAULT   10 kiln__parallel_for
    61: 0000000000001414 0x186a0 FUNC    LOCAL  DEFAULT   10 k20_fused.parallel0
    62: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND memcpy@GLIBC_2.27 (2)
"""


def test_parse_sections() -> None:
    assert board_report.parse_sections(SECTIONS) == [
        board_report.Section(".plt", "PROGBITS", 0x230, "AX"),
        board_report.Section(".text", "PROGBITS", 0x3556, "AX"),
        board_report.Section(".rodata", "PROGBITS", 0x6c40, "A"),
        board_report.Section(".tbss", "NOBITS", 0x204, "WAT"),
        board_report.Section(".riscv.attributes", "RISCV_ATTRIBUTES", 0xca, ""),
    ]


def test_parse_symbols() -> None:
    assert board_report.parse_symbols(SYMBOLS) == {
        "kiln__weights": ("OBJECT", 25408), "kiln__plan_run": ("FUNC", 5734),
        "kiln__parallel_for": ("FUNC", 302), "k20_fused.parallel0": ("FUNC", 100000),
        "memcpy@GLIBC_2.27": ("FUNC", 0)}


def _row(board: str, error: float) -> board_report.Row:
    size = board_report.ArtifactSize(73_560, 17_306, 9_626, 25_408, 30_000)
    return board_report.Row(board, "digits", size, 10_240, 18_125, 16_077, error,
                            InstructionMix(2000, 732, 585, 244, 0, 0, 0))


def test_table() -> None:
    lines = board_report.format_table([_row("aarch64-linux-gnu", 1.9e-6),
                                       _row("riscv64-rvv-linux-gnu", 0.0)]).splitlines()
    assert lines[0].split()[:4] == ["board", "model", "file", "KiB"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split() == ["aarch64-linux-gnu", "digits", "71.8", "16.9", "9.4", "24.8",
                                "10.0", "17.7", "15.7", "1.90e-06", "732", "585", "244", "0",
                                "0", "75"]
    assert lines[3].split()[9] == "0.00e+00"


def test_measured_row(tmp_path: Path) -> None:
    """One board and model measured as the report does: sizes add up, the weights are the
    size kiln compile reported, the error is float32-small, the kernels use NEON."""
    board = board_report.BOARDS["aarch64-linux-gnu"]
    reason = board_report.missing(board)
    if reason:
        pytest.skip(reason)
    model = board_report.digits_model()
    expected = board_report.reference_outputs(model)
    row = board_report.measure(board, model, expected, tmp_path, [1, 2],
                               board_report.baseline_rss(board, tmp_path))
    printed = board_report.kiln_compile(model.path, tmp_path / "again.so", board.name,
                                        *board_report.input_shape_options(model.inputs))
    assert f"weights {row.size.weights_bytes:,} bytes" in printed
    assert f"arena {row.arena_bytes:,} bytes" in printed
    size = row.size
    assert 0 < size.kernel_bytes < size.code_bytes
    assert size.code_bytes + size.weights_bytes + size.data_bytes <= size.file_bytes
    assert 0 < row.baseline_rss_kib <= row.max_rss_kib
    assert row.max_abs_error < 1e-4
    assert row.mix.simd_fma > 0
