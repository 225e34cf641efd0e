"""Golden and soundness tests of ``cse``."""

from __future__ import annotations

from passcheck import assert_sound, count, ops, parse

from kiln.compiler.ir.op import Op
from kiln.compiler.passes.cse import cse


def test_merges_duplicate_nodes_and_constants() -> None:
    before = parse("""func @main(%x: f32[2,3]) -> (f32[2,3]) {
  %c1 = constant() {value=dense<f32[3]: [1.0, 2.0, 3.0]>} : f32[3]
  %c2 = constant() {value=dense<f32[3]: [1.0, 2.0, 3.0]>} : f32[3]
  %a = add(%x, %c1) : f32[2,3]
  %b = add(%x, %c2) : f32[2,3]
  %s1 = softmax(%a) {axis=1} : f32[2,3]
  %s2 = softmax(%b) {axis=1} : f32[2,3]
  %y = mul(%s1, %s2) : f32[2,3]
  return %y
}
""")
    after = cse(before)
    assert ops(after) == ["add", "softmax", "mul"]
    assert count(after, Op.CONSTANT) == 1
    mul = after.nodes[-1]
    assert mul.inputs[0] is mul.inputs[1]
    assert_sound(before, after)


def test_keeps_what_differs() -> None:
    before = parse("""func @main(%x: f32[2,3]) -> (f32[2,3], f32[2,3], f32[2,3], f32[2,3]) {
  %c1 = constant() {value=dense<f32[]: [0.0]>} : f32[]
  %c2 = constant() {value=dense<f32[]: [-0.0]>} : f32[]
  %c3 = constant() {value=dense<f64[]: [0.0]>} : f64[]
  %a = softmax(%x) {axis=0} : f32[2,3]
  %b = softmax(%x) {axis=1} : f32[2,3]
  %r1 = random_normal_like(%x) : f32[2,3]
  %r2 = random_normal_like(%x) : f32[2,3]
  return %a, %b, %r1, %r2
}
""")
    after = cse(before)
    assert after is before


def test_duplicate_outputs_keep_their_names() -> None:
    before = parse("""func @main(%x: f32[2]) -> (f32[2], f32[2], f32[2]) {
  %a = relu(%x) : f32[2]
  %b = relu(%x) : f32[2]
  %c = exp(%x) : f32[2]
  %d = exp(%x) : f32[2]
  %e = add(%c, %d) : f32[2]
  return %a, %b, %e
}
""")
    after = cse(before)
    assert ops(after) == ["relu", "relu", "exp", "add"]
    assert_sound(before, after)
