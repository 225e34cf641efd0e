"""The MatmulTile microkernel: vector code vs the interpreter vs its scalar meaning.

Tiles of several shapes (full and partial vectors, column groups, several contraction axes,
accumulate or not, inside a parallel loop) are compiled for the host (and for an AVX2 target,
whose vectors are half as wide) and compared with numpy on the same operands."""

from __future__ import annotations

import numpy as np
import pytest
from codegen_harness import compile_kernels, host

from kiln.compiler.codegen.target import Target
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.interpret import run_kernel
from kiln.compiler.lower.kernel_ir import (
    Block,
    Buffer,
    Const,
    ContractAxis,
    Kernel,
    Loop,
    LoopKind,
    MatmulTile,
    Var,
)

F32 = DType.F32


def _gemm_kernel(m: int, n: int, k: int, rows: int, cols: int, accumulate: bool,
                 dtype: DType = F32) -> Kernel:
    """C[m, n] = A[m, k] @ B[k, n] by tiles, row blocks in a parallel loop; ``accumulate``
    splits the contraction in two tiles, the second adding to the first's C (cache blocking)."""
    a, b = Buffer("a", dtype, (m, k)), Buffer("b", dtype, (k, n))
    c = Buffer("c", dtype, (m, n))
    assert m % rows == 0 and n % cols == 0
    i, j = Var("i"), Var("j")
    c_at, a_at = i * (rows * n) + j * cols, i * (rows * k)
    first = k // 2 if accumulate else k
    tiles = [MatmulTile(c, c_at, n, a, a_at, k, b, j * cols, rows, cols,
                        (ContractAxis(first, 1, n),))]
    if accumulate:
        tiles.append(MatmulTile(c, c_at, n, a, a_at + first, k, b, j * cols + first * n, rows,
                                cols, (ContractAxis(k - first, 1, n),), accumulate=True))
    inner = Loop(j, Const(n // cols, DType.I64), Block(tuple(tiles)))
    body = Loop(i, Const(m // rows, DType.I64), inner, LoopKind.PARALLEL)
    return Kernel(f"gemm_{m}_{n}_{k}_{rows}_{cols}_{int(accumulate)}_{dtype.value}",
                  (a, b), (c,), body)


def _conv_like_kernel() -> Kernel:
    """Two contraction axes with unrelated strides and a grouped C (two 8-lane blocks)."""
    x = Buffer("x", F32, (2, 10, 8))         # [icb, w, lane]
    w = Buffer("w", F32, (2, 3, 8, 16))       # [icb, kw, lane, oc]
    out = Buffer("out", F32, (2, 8, 8))       # [ocb, ow, lane]
    tile = MatmulTile(out, Const(0, DType.I64), 8, x, Const(0, DType.I64), 8, w,
                      Const(0, DType.I64), 8, 16,
                      (ContractAxis(2, 80, 3 * 8 * 16), ContractAxis(3, 8, 8 * 16),
                       ContractAxis(8, 1, 16)),
                      c_group=8, c_group_stride=64)
    return Kernel("conv_like", (x, w), (out,), tile)


KERNELS = [
    _gemm_kernel(12, 64, 33, 6, 32, False),
    _gemm_kernel(12, 48, 7, 4, 48, True),
    _gemm_kernel(10, 20, 5, 5, 20, False),      # partial last vector
    _gemm_kernel(6, 3, 4, 3, 3, True),          # narrower than one vector
    _gemm_kernel(8, 16, 9, 4, 8, False, DType.F64),
    _conv_like_kernel(),
]


def _numpy(kernel: Kernel, arrays: dict[str, np.ndarray]) -> np.ndarray:
    if kernel.name == "conv_like":
        x, w = arrays["x"], arrays["w"]
        windows = np.stack([x[:, kw:kw + 8] for kw in range(3)], 1)  # [icb, kw, ow, lane]
        out = np.einsum("ckrl,cklo->ro", windows, w)                  # [ow, oc]
        return out.reshape(8, 2, 8).transpose(1, 0, 2)
    return arrays["a"] @ arrays["b"]


@pytest.mark.parametrize("target", ["host", "x86_64-avx2"])
def test_tiles_match_numpy_and_interpreter(target: str) -> None:
    chosen = host() if target == "host" else Target.parse(target)
    if not chosen.is_host:
        pytest.skip(f"{target} does not run here")
    library = compile_kernels(KERNELS, opt_level=2, target=chosen)
    rng = np.random.default_rng(0)
    for kernel in KERNELS:
        arrays = {b.name: rng.standard_normal(b.shape).astype(b.dtype.numpy)
                  for b in kernel.inputs}
        want = _numpy(kernel, arrays)
        interpreted = run_kernel(kernel, arrays)[kernel.outputs[0].name]
        for chunks in (1, 3):
            copies = {name: value.copy() for name, value in arrays.items()}
            got = library.run(kernel, copies, chunks=chunks)[kernel.outputs[0].name]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=kernel.name)
        np.testing.assert_allclose(interpreted, want, rtol=1e-5, atol=1e-5, err_msg=kernel.name)


def test_expanded_meaning_matches_the_tile() -> None:
    kernel = _conv_like_kernel()
    rng = np.random.default_rng(1)
    arrays = {b.name: rng.standard_normal(b.shape).astype(np.float32) for b in kernel.params}
    tile = kernel.body
    assert isinstance(tile, MatmulTile)
    scalar = Kernel("expanded", kernel.inputs, kernel.outputs, tile.expanded())
    np.testing.assert_allclose(run_kernel(scalar, arrays)["out"],
                               run_kernel(kernel, arrays)["out"], rtol=1e-5, atol=1e-5)


def test_tile_code_uses_vector_fmas_and_masks() -> None:
    library = compile_kernels([KERNELS[0], KERNELS[2]], opt_level=2)
    ir_text = library.ir_text
    assert "fmuladd" in ir_text or "fma" in ir_text
    assert "llvm.masked.store" in ir_text  # the partial vector of the 20-column tile


def test_out_of_bounds_tile_is_caught_by_the_interpreter() -> None:
    a, b, c = (Buffer(n, F32, (4, 4)) for n in "abc")
    tile = MatmulTile(c, Const(4, DType.I64), 4, a, Const(0, DType.I64), 4, b,
                      Const(0, DType.I64), 4, 4, (ContractAxis(4, 1, 4),))
    with pytest.raises(Exception, match="out of bounds"):
        run_kernel(Kernel("oob", (a, b), (c,), tile), {"a": np.zeros((4, 4), np.float32),
                                                      "b": np.zeros((4, 4), np.float32)})


def test_a_tile_multiplies_floats_only() -> None:
    a = Buffer("a", DType.I32, (2, 2))
    with pytest.raises(ValueError, match="floats"):
        MatmulTile(a, Const(0, DType.I64), 2, a, Const(0, DType.I64), 2, a, Const(0, DType.I64),
                   2, 2, (ContractAxis(2, 1, 2),))
