"""Golden and soundness tests of ``fold_constants``."""

from __future__ import annotations

import numpy as np
from passcheck import assert_sound, count, dense, ops, parse

from kiln.compiler.ir.op import Op
from kiln.compiler.passes.fold_constants import fold_constants


def test_folds_chains_and_shape_computations() -> None:
    before = parse("""func @main(%x: f32[2,3]) -> (f32[3,2]) {
  %s = shape(%x) : i64[2]
  %r = constant() {value=dense<i64[1]: [0]>} : i64[1]
  %rev = gather(%s, %r) : i64[1]
  %three = constant() {value=dense<i64[1]: [3]>} : i64[1]
  %both = concat(%three, %rev) {axis=0} : i64[2]
  %w = constant() {value=dense<f32[2,3]: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>} : f32[2,3]
  %wt = transpose(%w) : f32[3,2]
  %xt = reshape(%x, %both) : f32[3,2]
  %y = add(%xt, %wt) : f32[3,2]
  return %y
}
""")
    after = fold_constants(before)
    assert ops(after) == ["reshape", "add"]
    folded = after.constants()
    np.testing.assert_array_equal(folded["wt"], [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(folded["both"], [3, 2])
    assert_sound(before, after)


def test_large_constants_fold_too() -> None:
    weights = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    before = parse(f"""func @main(%x: f32[2,40]) -> (f32[2,50]) {{
  %w = constant() {{value={dense(weights.T.copy())}}} : f32[50,40]
  %wt = transpose(%w) : f32[40,50]
  %y = matmul(%x, %wt) : f32[2,50]
  return %y
}}
""")
    after = fold_constants(before)
    assert ops(after) == ["matmul"]
    np.testing.assert_array_equal(after.constants()["wt"], weights)


def test_blowup_is_left_to_the_kernel() -> None:
    before = parse("""func @main(%x: f32[64,64]) -> (f32[64,64], f32[2,4]) {
  %v = constant() {value=dense<f32[]: [3.0]>} : f32[]
  %s = constant() {value=dense<i64[2]: [64, 64]>} : i64[2]
  %big = expand(%v, %s) : f32[64,64]
  %y = add(%x, %big) : f32[64,64]
  %small = constant() {value=dense<i64[2]: [2, 4]>} : i64[2]
  %z = expand(%v, %small) : f32[2,4]
  return %y, %z
}
""")
    after = fold_constants(before)
    assert ops(after) == ["expand", "add"]  # 4096 elements from 1 stays; 8 from 1 folds
    assert_sound(before, after)


def test_blowup_read_only_as_weights_folds() -> None:
    # the light ONNX models hold their weights as ConstantOfShape: a Gemm must get them as
    # constants (packed once at compile time), not refill them on every run
    before = parse("""func @main(%x: f32[2,64], %u: f32[64,64]) -> (f32[2,64], f32[64,64]) {
  %s = constant() {value=dense<i64[2]: [64, 64]>} : i64[2]
  %w = constant_of_shape(%s) {value=dense<f32[1]: [0.5]>} : f32[64,64]
  %wc = cast(%w) {to=f32} : f32[64,64]
  %y = gemm(%x, %wc) {transB=1} : f32[2,64]
  %s2 = constant() {value=dense<i64[2]: [64, 64]>} : i64[2]
  %v = constant_of_shape(%s2) {value=dense<f32[1]: [2.0]>} : f32[64,64]
  %z = matmul(%u, %v) : f32[64,64]
  %t = add(%z, %v) : f32[64,64]
  return %y, %t
}
""")
    after = fold_constants(before)
    # %w reaches the Gemm only as a weight and folds; %v is also read by an Add and stays
    assert ops(after) == ["gemm", "constant_of_shape", "matmul", "add"]
    np.testing.assert_array_equal(after.constants()["wc"], np.full((64, 64), 0.5, np.float32))
    assert_sound(before, after)


def test_random_and_control_flow_are_not_folded() -> None:
    before = parse("""func @main() -> (f32[2,3], f32[]) {
  %r = random_normal() {dtype=f32, shape=[2, 3]} : f32[2,3]
  %c = constant() {value=dense<bool[]: [true]>} : bool[]
  %y = if(%c) {else_branch=func @e() -> (f32[]) {
    %a = constant() {value=dense<f32[]: [1.0]>} : f32[]
    return %a
  }, then_branch=func @t() -> (f32[]) {
    %b = constant() {value=dense<f32[]: [2.0]>} : f32[]
    return %b
  }} : f32[]
  return %r, %y
}
""")
    assert fold_constants(before) is before


def test_unchanged_graph_is_the_same_object() -> None:
    before = parse("""func @main(%x: f32[2]) -> (f32[2]) {
  %y = relu(%x) : f32[2]
  return %y
}
""")
    assert fold_constants(before) is before
    assert count(before, Op.RELU) == 1
