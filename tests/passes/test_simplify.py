"""Golden and soundness tests of ``simplify``: one case per rule (the rule fires, the ops left
are the hand-written ones, the reference executor gives identical results before and after),
cases where a rule must not fire, and the output-name contract of the driver."""

from __future__ import annotations

from collections import Counter

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from passcheck import assert_sound, ops, parse

from kiln.compiler.ir.types import DType
from kiln.compiler.passes.simplify import RULES, holds_exactly, simplify


def _func(inputs: str, outputs: str, body: str, ret: str = "%y") -> str:
    return f"func @main({inputs}) -> ({outputs}) {{\n{body}\n  return {ret}\n}}\n"


X23 = "%x: f32[2,3]"
ONES3 = "  %one = constant() {value=dense<f32[3]: [1.0, 1.0, 1.0]>} : f32[3]"
ZERO = "  %zero = constant() {value=dense<f32[]: [0.0]>} : f32[]"

# case name (rule name before any '/') -> (IR text, ops left after simplify)
CASES: dict[str, tuple[str, list[str]]] = {
    "noop_by_type/reshape": (_func(X23, "f32[2,3]", """\
  %s = constant() {value=dense<i64[2]: [2, 3]>} : i64[2]
  %r = reshape(%x, %s) : f32[2,3]
  %y = relu(%r) : f32[2,3]"""), ["relu"]),
    "noop_by_type/cast_and_identity": (_func(X23, "f32[2,3]", """\
  %c = cast(%x) {to=f32} : f32[2,3]
  %i = identity(%c) : f32[2,3]
  %y = relu(%i) : f32[2,3]"""), ["relu"]),
    "noop_by_type/single_max": (_func(X23, "f32[2,3]", """\
  %m = max(%x) : f32[2,3]
  %y = relu(%m) : f32[2,3]"""), ["relu"]),
    "dropout_inference": (_func(X23, "f32[2,3]", """\
  %r = constant() {value=dense<f32[]: [0.5]>} : f32[]
  %d = dropout(%x, %r) : f32[2,3]
  %y = relu(%d) : f32[2,3]"""), ["relu"]),
    "reshape_chain": (_func("%x: f32[2,3,4]", "f32[1,2,12]", """\
  %f = flatten(%x) : f32[2,12]
  %a = constant() {value=dense<i64[1]: [0]>} : i64[1]
  %u = unsqueeze(%f, %a) : f32[1,2,12]
  %y = relu(%u) : f32[1,2,12]"""), ["reshape", "relu"]),
    "reshape_chain/cancel": (_func("%x: f32[2,3,1]", "f32[2,3,1]", """\
  %a = constant() {value=dense<i64[1]: [2]>} : i64[1]
  %s = squeeze(%x, %a) : f32[2,3]
  %u = unsqueeze(%s, %a) : f32[2,3,1]
  %y = relu(%u) : f32[2,3,1]"""), ["relu"]),
    "transpose_identity": (_func(X23, "f32[2,3]", """\
  %t = transpose(%x) {perm=[0, 1]} : f32[2,3]
  %y = relu(%t) : f32[2,3]"""), ["relu"]),
    "transpose_pair/cancel": (_func("%x: f32[2,3,4]", "f32[2,3,4]", """\
  %t = transpose(%x) {perm=[1, 2, 0]} : f32[3,4,2]
  %u = transpose(%t) {perm=[2, 0, 1]} : f32[2,3,4]
  %y = relu(%u) : f32[2,3,4]"""), ["relu"]),
    "transpose_pair/compose": (_func("%x: f32[2,3,4]", "f32[4,3,2]", """\
  %t = transpose(%x) {perm=[1, 2, 0]} : f32[3,4,2]
  %u = transpose(%t) {perm=[1, 0, 2]} : f32[4,3,2]
  %y = relu(%u) : f32[4,3,2]"""), ["transpose", "relu"]),
    "transpose_as_reshape": (_func("%x: f32[2,5,4,1]", "f32[2,1,5,4]", """\
  %t = transpose(%x) {perm=[0, 3, 1, 2]} : f32[2,1,5,4]
  %y = relu(%t) : f32[2,1,5,4]"""), ["reshape", "relu"]),
    "cast_chain/round_trip": (_func(X23, "f32[2,3]", """\
  %w = cast(%x) {to=f64} : f64[2,3]
  %n = cast(%w) {to=f32} : f32[2,3]
  %y = relu(%n) : f32[2,3]"""), ["relu"]),
    "cast_chain/compose": (_func("%x: i8[2,3]", "f32[2,3]", """\
  %w = cast(%x) {to=i32} : i32[2,3]
  %n = cast(%w) {to=f32} : f32[2,3]
  %y = relu(%n) : f32[2,3]"""), ["cast", "relu"]),
    "neutral_operand/mul_one": (_func(X23, "f32[2,3]", ONES3 + """
  %m = mul(%x, %one) : f32[2,3]
  %y = relu(%m) : f32[2,3]"""), ["relu"]),
    "neutral_operand/one_mul": (_func(X23, "f32[2,3]", ONES3 + """
  %m = mul(%one, %x) : f32[2,3]
  %y = relu(%m) : f32[2,3]"""), ["relu"]),
    "neutral_operand/add_sub_zero": (_func(X23, "f32[2,3]", ZERO + """
  %a = add(%zero, %x) : f32[2,3]
  %s = sub(%a, %zero) : f32[2,3]
  %y = relu(%s) : f32[2,3]"""), ["relu"]),
    "neutral_operand/div_pow_one": (_func(X23, "f32[2,3]", ONES3 + """
  %d = div(%x, %one) : f32[2,3]
  %p = pow(%d, %one) : f32[2,3]
  %y = relu(%p) : f32[2,3]"""), ["relu"]),
    "neutral_operand/int": (_func("%x: i32[2,3]", "i32[2,3]", """\
  %z = constant() {value=dense<i32[]: [0]>} : i32[]
  %a = add(%x, %z) : i32[2,3]
  %y = abs(%a) : i32[2,3]"""), ["abs"]),
    "involution/neg": (_func("%x: i64[2,3]", "i64[2,3]", """\
  %n = neg(%x) : i64[2,3]
  %m = neg(%n) : i64[2,3]
  %y = abs(%m) : i64[2,3]"""), ["abs"]),
    "involution/not": (_func("%x: bool[4]", "bool[4]", """\
  %n = not(%x) : bool[4]
  %m = not(%n) : bool[4]
  %y = xor(%m, %x) : bool[4]"""), ["xor"]),
    "idempotent": (_func(X23, "f32[2,3]", """\
  %r = relu(%x) : f32[2,3]
  %y = relu(%r) : f32[2,3]"""), ["relu"]),
    "expand_into_broadcast": (_func("%x: f32[1,3], %z: f32[2,3]", "f32[2,3]", """\
  %s = constant() {value=dense<i64[2]: [2, 3]>} : i64[2]
  %e = expand(%x, %s) : f32[2,3]
  %y = add(%e, %z) : f32[2,3]"""), ["add"]),
    "pad_zero": (_func(X23, "f32[2,3]", """\
  %p = constant() {value=dense<i64[4]: [0, 0, 0, 0]>} : i64[4]
  %d = pad(%x, %p) {mode="reflect"} : f32[2,3]
  %y = relu(%d) : f32[2,3]"""), ["relu"]),
    "where_constant_condition": (_func("%x: f32[2,3], %z: f32[2,3]", "f32[2,3]", """\
  %c = constant() {value=dense<bool[]: [false]>} : bool[]
  %w = where(%c, %x, %z) : f32[2,3]
  %y = relu(%w) : f32[2,3]"""), ["relu"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_golden_and_sound(case: str) -> None:
    text, expected = CASES[case]
    before = parse(text)
    fired: Counter[str] = Counter()
    after = simplify(before, fired)
    assert fired[case.split("/")[0]] >= 1, fired
    assert ops(after) == expected
    assert_sound(before, after)


def test_every_rule_has_a_case() -> None:
    assert {r.name for r in RULES} == {c.split("/")[0] for c in CASES}
    assert len({r.name for r in RULES}) == len(RULES)


# Rewrites that would change a value or a type, which no rule may make.
UNSOUND: dict[str, str] = {
    "square_transpose": _func("%x: f32[3,3]", "f32[3,3]", """\
  %y = transpose(%x) : f32[3,3]"""),
    "nhwc_three_channels": _func("%x: f32[2,5,4,3]", "f32[2,3,5,4]", """\
  %y = transpose(%x) {perm=[0, 3, 1, 2]} : f32[2,3,5,4]"""),
    "narrowing_cast_chain": _func(X23, "f32[2,3]", """\
  %h = cast(%x) {to=f16} : f16[2,3]
  %y = cast(%h) {to=f32} : f32[2,3]"""),
    "signed_to_unsigned_chain": _func("%x: i8[4]", "i32[4]", """\
  %u = cast(%x) {to=u16} : u16[4]
  %y = cast(%u) {to=i32} : i32[4]"""),
    "broadcasting_mul_one": _func("%x: f32[3]", "f32[2,3]", """\
  %one = constant() {value=dense<f32[2,1]: [1.0, 1.0]>} : f32[2,1]
  %y = mul(%x, %one) : f32[2,3]"""),
    "mul_almost_one": _func(X23, "f32[2,3]", """\
  %one = constant() {value=dense<f32[3]: [1.0, 1.0, 2.0]>} : f32[3]
  %y = mul(%x, %one) : f32[2,3]"""),
    "zero_minus_x": _func(X23, "f32[2,3]", ZERO + """
  %y = sub(%zero, %x) : f32[2,3]"""),
    "needed_expand": _func("%x: f32[1,3], %z: f32[1,3]", "f32[2,3]", """\
  %s = constant() {value=dense<i64[2]: [2, 3]>} : i64[2]
  %e = expand(%x, %s) : f32[2,3]
  %y = add(%e, %z) : f32[2,3]"""),
    "nonzero_pad": _func(X23, "f32[2,3]", """\
  %p = constant() {value=dense<i64[4]: [0, 1, 0, -1]>} : i64[4]
  %y = pad(%x, %p) : f32[2,3]"""),
    "reversing_slice": _func("%x: f32[4]", "f32[4]", """\
  %s = constant() {value=dense<i64[1]: [-1]>} : i64[1]
  %e = constant() {value=dense<i64[1]: [-5]>} : i64[1]
  %a = constant() {value=dense<i64[1]: [0]>} : i64[1]
  %st = constant() {value=dense<i64[1]: [-1]>} : i64[1]
  %y = slice(%x, %s, %e, %a, %st) : f32[4]"""),
    "training_dropout": _func(X23, "f32[2,3]", """\
  %r = constant() {value=dense<f32[]: [0.0]>} : f32[]
  %t = constant() {value=dense<bool[]: [true]>} : bool[]
  %y = dropout(%x, %r, %t) : f32[2,3]"""),
    "used_dropout_mask": _func(X23, "bool[2,3]", """\
  %y0, %y = dropout(%x) : f32[2,3], bool[2,3]"""),
}


@pytest.mark.parametrize("case", sorted(UNSOUND))
def test_rule_does_not_fire(case: str) -> None:
    before = parse(UNSOUND[case])
    assert simplify(before) is before


def test_output_keeps_its_name() -> None:
    before = parse(_func(X23, "f32[2,3]", """\
  %r = relu(%x) : f32[2,3]
  %y = identity(%r) : f32[2,3]"""))
    after = simplify(before)
    assert ops(after) == ["relu"] and after.nodes[0].outputs[0].name == "y"
    assert_sound(before, after)


def test_output_that_would_become_an_input_or_another_output_stays() -> None:
    before = parse(_func(X23, "f32[2,3], f32[2,3], f32[2,3]", """\
  %a = identity(%x) : f32[2,3]
  %r = relu(%x) : f32[2,3]
  %b = identity(%r) : f32[2,3]""", "%a, %r, %b"))
    after = simplify(before)
    assert after is before


def test_rules_inside_control_flow_bodies() -> None:
    before = parse(_func("%x: f32[2,3], %c: bool[]", "f32[2,3]", """\
  %y = if(%c) {else_branch=func @e() -> (f32[2,3]) {
    %n = neg(%x) : f32[2,3]
    %m = neg(%n) : f32[2,3]
    %o = relu(%m) : f32[2,3]
    return %o
  }, then_branch=func @t() -> (f32[2,3]) {
    %t = identity(%x) : f32[2,3]
    %p = abs(%t) : f32[2,3]
    return %p
  }} : f32[2,3]"""))
    after = simplify(before)
    bodies = list(after.nodes[0].subgraphs())
    assert sorted(ops(b) for b in bodies) == [["abs"], ["relu"]]
    assert_sound(before, after)


@given(st.permutations(range(4)), st.permutations(range(4)))
def test_transpose_pairs_compose(first: list[int], second: list[int]) -> None:
    shape = (2, 3, 4, 5)
    mid = [shape[p] for p in first]
    end = [mid[p] for p in second]
    before = parse(_func("%x: f32[2,3,4,5]", f"f32[{','.join(map(str, end))}]", f"""\
  %t = transpose(%x) {{perm=[{', '.join(map(str, first))}]}} : f32[{','.join(map(str, mid))}]
  %u = transpose(%t) {{perm=[{', '.join(map(str, second))}]}} : f32[{','.join(map(str, end))}]
  %y = relu(%u) : f32[{','.join(map(str, end))}]"""))
    after = simplify(before)
    assert len(ops(after)) <= 2
    assert_sound(before, after, seeds=1)


_EXTREMES = [0, 1, -1, 2**7 - 1, -(2**7), 2**8 - 1, 2**15 - 1, -(2**15), 2**16 - 1, 2**24 + 1,
             2**31 - 1, -(2**31), 2**32 - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]


@pytest.mark.parametrize("source", list(DType), ids=lambda d: d.value)
def test_holds_exactly_is_right_on_extreme_values(source: DType) -> None:
    info = np.iinfo(source.numpy) if source.is_int else None
    if source.is_float:
        limits = ml_dtypes.finfo(source.numpy)
        values = np.array([0.0, -0.0, 1.5, limits.max, limits.tiny, limits.eps, np.inf, np.nan],
                          dtype=np.float64).astype(source.numpy)
    elif source is DType.BOOL:
        values = np.array([True, False])
    else:
        assert info is not None
        values = np.array([v for v in _EXTREMES if info.min <= v <= info.max], dtype=source.numpy)
    for target in DType:
        with np.errstate(all="ignore"):
            back = values.astype(target.numpy).astype(source.numpy)
        lossless = bool(np.array_equal(back, values, equal_nan=source.is_float))
        if holds_exactly(source, target):
            assert lossless, (source, target)
