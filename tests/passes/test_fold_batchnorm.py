"""Golden and soundness tests of ``fold_batchnorm``: BatchNorm, Mul, Add and Sub by per-channel
constants folded into Conv, ConvTranspose, Gemm and MatMul weights (results equal to float
rounding, as the weights are rescaled)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from passcheck import assert_sound, dense, ops, parse

from kiln.compiler.passes.fold_batchnorm import RULES, fold_batchnorm

RNG = np.random.default_rng(7)


def _c(name: str, shape: tuple[int, ...], positive: bool = False) -> str:
    data = RNG.standard_normal(shape).astype(np.float32)
    if positive:
        data = np.abs(data) + 0.5
    return f"  %{name} = constant() {{value={dense(data)}}} : f32[{','.join(map(str, shape))}]\n"


def _bn(source: str, channels: int, type_: str) -> str:
    return (_c("g", (channels,)) + _c("b", (channels,)) + _c("m", (channels,))
            + _c("v", (channels,), positive=True)
            + f"  %y = batch_normalization(%{source}, %g, %b, %m, %v) {{epsilon=0.001}}"
              f" : {type_}\n")


CASES: dict[str, tuple[str, list[str], str]] = {
    "conv_bias_bn": ("%x: f32[1,3,6,6]", _c("w", (4, 3, 3, 3)) + _c("cb", (4,))
                     + "  %l = conv(%x, %w, %cb) {kernel_shape=[3, 3]} : f32[1,4,4,4]\n"
                     + _bn("l", 4, "f32[1,4,4,4]"), ["conv"], "batchnorm_into_layer"),
    "conv_bn": ("%x: f32[2,4,5,5]", _c("w", (4, 2, 1, 1))
                + "  %l = conv(%x, %w) {group=2, kernel_shape=[1, 1]} : f32[2,4,5,5]\n"
                + _bn("l", 4, "f32[2,4,5,5]"), ["conv"], "batchnorm_into_layer"),
    "conv_transpose_bn": ("%x: f32[1,4,3,3]", _c("w", (4, 3, 2, 2))
                          + "  %l = conv_transpose(%x, %w) {group=2, kernel_shape=[2, 2]} "
                            ": f32[1,6,4,4]\n"
                          + _bn("l", 6, "f32[1,6,4,4]"), ["conv_transpose"],
                          "batchnorm_into_layer"),
    "gemm_bn": ("%x: f32[3,5]", _c("w", (4, 5)) + _c("cb", (1, 4))
                + "  %l = gemm(%x, %w, %cb) {alpha=0.5, beta=2.0, transB=1} : f32[3,4]\n"
                + _bn("l", 4, "f32[3,4]"), ["gemm"], "batchnorm_into_layer"),
    "matmul_bn": ("%x: f32[3,5]", _c("w", (5, 4))
                  + "  %l = matmul(%x, %w) : f32[3,4]\n" + _bn("l", 4, "f32[3,4]"),
                  ["matmul", "add"], "batchnorm_into_layer"),
    "conv_mul_add_sub": ("%x: f32[1,3,6,6]", _c("w", (4, 3, 3, 3)) + _c("k", (4, 1, 1))
                         + _c("a", (1, 4, 1, 1)) + _c("s", (4, 1, 1))
                         + "  %l = conv(%x, %w) {kernel_shape=[3, 3]} : f32[1,4,4,4]\n"
                         + "  %p = mul(%k, %l) : f32[1,4,4,4]\n"
                         + "  %q = add(%p, %a) : f32[1,4,4,4]\n"
                         + "  %y = sub(%q, %s) : f32[1,4,4,4]\n", ["conv"], "affine_into_layer"),
    "gemm_mul": ("%x: f32[3,5]", _c("w", (5, 4)) + _c("k", (4,))
                 + "  %l = gemm(%x, %w) : f32[3,4]\n  %y = mul(%l, %k) : f32[3,4]\n",
                 ["gemm"], "affine_into_layer"),
    "matmul_mul": ("%x: f32[2,3,5]", _c("w", (5, 4)) + _c("k", (1, 1, 4))
                   + "  %l = matmul(%x, %w) : f32[2,3,4]\n  %y = mul(%l, %k) : f32[2,3,4]\n",
                   ["matmul"], "affine_into_layer"),
}


def _graph(inputs: str, body: str, out_type: str | None = None) -> str:
    out_type = out_type or body.rsplit(" : ", 1)[1].strip()
    return f"func @main({inputs}) -> ({out_type}) {{\n{body}  %z = relu(%y) : {out_type}\n" \
           f"  return %z\n}}\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_folds_into_layer(case: str) -> None:
    inputs, body, expected, rule_name = CASES[case]
    before = parse(_graph(inputs, body))
    fired: Counter[str] = Counter()
    after = fold_batchnorm(before, fired)
    assert fired[rule_name] >= 1
    assert ops(after) == [*expected, "relu"]
    assert_sound(before, after, exact=False)


def test_every_rule_has_a_case() -> None:
    assert {r.name for r in RULES} == {c[3] for c in CASES.values()}


NOT_FOLDED: dict[str, tuple[str, str]] = {
    "second_user": ("%x: f32[1,3,6,6]", _c("w", (4, 3, 3, 3))
                    + "  %l = conv(%x, %w) {kernel_shape=[3, 3]} : f32[1,4,4,4]\n"
                    + _bn("t", 4, "f32[1,4,4,4]").replace("%y =", "%yy =").replace("%t,", "%l,")
                    + "  %y = add(%yy, %l) : f32[1,4,4,4]\n"),
    "runtime_weights": ("%x: f32[1,3,6,6], %w: f32[4,3,3,3]",
                        "  %l = conv(%x, %w) {kernel_shape=[3, 3]} : f32[1,4,4,4]\n"
                        + _bn("l", 4, "f32[1,4,4,4]")),
    "not_per_channel": ("%x: f32[1,3,6,6]", _c("w", (4, 3, 3, 3)) + _c("k", (1, 1, 4, 1))
                        + "  %l = conv(%x, %w) {kernel_shape=[3, 3]} : f32[1,4,4,4]\n"
                        + "  %y = mul(%l, %k) : f32[1,4,4,4]\n"),
    "bn_axis_is_not_the_channel": ("%x: f32[2,3,5]", _c("w", (5, 3))
                                   + "  %l = matmul(%x, %w) : f32[2,3,3]\n"
                                   + _bn("l", 3, "f32[2,3,3]")),
    "constant_minus_layer": ("%x: f32[3,5]", _c("w", (5, 4)) + _c("k", (4,))
                             + "  %l = gemm(%x, %w) : f32[3,4]\n  %y = sub(%k, %l) : f32[3,4]\n"),
}


@pytest.mark.parametrize("case", sorted(NOT_FOLDED))
def test_does_not_fold(case: str) -> None:
    inputs, body = NOT_FOLDED[case]
    before = parse(_graph(inputs, body))
    assert fold_batchnorm(before) is before
