"""Golden tests of ``dead_code``."""

from __future__ import annotations

from passcheck import assert_sound, ops, parse

from kiln.compiler.passes.dead_code import dead_code


def test_removes_unused_nodes_and_constants_keeps_inputs() -> None:
    before = parse("""func @main(%x: f32[4], %unused: f32[4]) -> (f32[4]) {
  %c = constant() {value=dense<f32[]: [2.0]>} : f32[]
  %a = mul(%x, %c) : f32[4]
  %b = exp(%a) : f32[4]
  %y = relu(%x) : f32[4]
  return %y
}
""")
    after = dead_code(before)
    assert ops(after) == ["relu"] and len(after.nodes) == 1
    assert [v.name for v in after.inputs] == ["x", "unused"]
    assert_sound(before, after)


def test_values_read_by_bodies_stay_and_bodies_are_cleaned() -> None:
    before = parse("""func @main(%x: f32[4], %c: bool[]) -> (f32[4]) {
  %w = constant() {value=dense<f32[]: [2.0]>} : f32[]
  %y = if(%c) {else_branch=func @e() -> (f32[4]) {
    %dead = exp(%x) : f32[4]
    %a = mul(%x, %w) : f32[4]
    return %a
  }, then_branch=func @t() -> (f32[4]) {
    %b = neg(%x) : f32[4]
    return %b
  }} : f32[4]
  return %y
}
""")
    after = dead_code(before)
    assert ops(after) == ["if"] and len(after.nodes) == 2
    assert sorted(ops(b) for b in after.nodes[1].subgraphs()) == [["mul"], ["neg"]]
    assert_sound(before, after)


def test_unchanged_graph_is_the_same_object() -> None:
    before = parse("""func @main(%x: f32[4]) -> (f32[4], f32[4]) {
  %a, %b = split(%x) {num_outputs=2} : f32[2], f32[2]
  %y = relu(%x) : f32[4]
  return %y, %y
}
""")
    after = dead_code(before)
    assert ops(after) == ["relu"]
    assert dead_code(after) is after
