"""Trace-time errors: a DSLError at the user's file:line naming the expression and the shapes.

Each traced function below makes its mistake on the first line of its body, so the expected
line is ``fn.__code__.co_firstlineno + 1`` (the ``def`` line is the first). ``located`` checks
the file and line; the rest of the message is compared in full where the DSL words it, and by
its key parts where the IR's type rule words it.
"""

from __future__ import annotations

import numpy as np
import pytest
from dslcheck import located

from kiln.compiler.errors import KilnError
from kiln.frontends import dsl
from kiln.frontends.dsl import DSLError


def _error(fn, **specs: dsl.TensorSpec) -> str:  # type: ignore[no-untyped-def]
    """Trace ``fn``; the message of the DSLError it raises, after its location (checked to be
    the first line of ``fn``'s body)."""
    with pytest.raises(DSLError) as info:
        dsl.trace(fn, **specs)
    return located(info.value, __file__, fn.__code__.co_firstlineno + 1)


def test_matmul_contraction() -> None:
    w = np.zeros((100, 10), np.float32)

    def f(x):  # type: ignore[no-untyped-def]
        return x @ w

    assert _error(f, x=dsl.f32[8, 784]) == (
        "x @ w: f32[8,784] @ f32[100,10]: contraction dims 784 and 100 differ")


def test_matmul_batch_dims() -> None:
    def f(a, b):  # type: ignore[no-untyped-def]
        return dsl.matmul(a, b)

    assert _error(f, a=dsl.f32[2, 3, 4], b=dsl.f32[5, 4, 6]) == (
        "dsl.matmul(a, b): f32[2,3,4] @ f32[5,4,6]: dims 2 and 5 at axis -3 do not broadcast")


def test_broadcast_and_dtype_mismatch() -> None:
    def add(x, y):  # type: ignore[no-untyped-def]
        return x + y

    assert _error(add, x=dsl.f32["batch", 3], y=dsl.f32[4]) == (
        "x + y: f32[batch,3] + f32[4]: dims 3 and 4 at axis -1 do not broadcast")
    assert _error(add, x=dsl.f32[3], y=dsl.f64[3]) == (
        "x + y: f32[3] + f64[3]: element types f32 and f64 differ (convert with .astype)")


def test_numpy_operand_keeps_its_dtype() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return np.ones(3) * x

    assert _error(f, x=dsl.f32[3]) == (
        "np.ones(3) * x: f64[3] * f32[3]: element types f32 and f64 differ (convert with .astype)")


def test_scalar_that_does_not_fit() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return x + 0.5

    def boolean(x):  # type: ignore[no-untyped-def]
        return x * True

    assert _error(f, x=dsl.i32[3]) == "x + 0.5: i32[3] + float: 0.5 cannot be represented as i32"
    assert _error(boolean, x=dsl.f32[3]).endswith("True is boolean where f32 values are expected")


def test_integer_true_division() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return x / 2

    assert _error(f, x=dsl.i64[3]) == (
        "x / 2: i64[3] / int: true division of integer tensors; cast them with .astype first")


def test_reshape_element_count() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return x.reshape(8, 100)

    assert _error(f, x=dsl.f32[8, 784]) == (
        "x.reshape(8, 100): reshape(f32[8,784], [8, 100]): 6272 elements cannot take the shape "
        "[8, 100]")


def test_reshape_symbol_elsewhere() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return x.reshape(4, "batch")

    assert "symbolic dim 'batch' can stand only at its own axis" in _error(
        f, x=dsl.f32["batch", 4])


def test_concat_mismatch() -> None:
    def f(x, y):  # type: ignore[no-untyped-def]
        return dsl.concat([x, y], axis=1)

    assert _error(f, x=dsl.f32[2, 3], y=dsl.f32[4, 5]) == (
        "dsl.concat([x, y], axis=1): concat([f32[2,3], f32[4,5]], axis=1): dims 2 and 4 at "
        "axis 0 differ")


def test_conv2d_channels() -> None:
    weight = np.zeros((8, 2, 3, 3), np.float32)

    def f(x):  # type: ignore[no-untyped-def]
        return dsl.nn.conv2d(x, weight)

    assert _error(f, x=dsl.f32["batch", 3, 28, 28]) == (
        "dsl.nn.conv2d(x, weight): conv2d(f32[batch,3,28,28], f32[8,2,3,3]): the input has 3 "
        "channels; the weight expects 2 x groups 1 = 2")


def test_linear_features() -> None:
    weight = np.zeros((10, 5), np.float32)

    def f(x):  # type: ignore[no-untyped-def]
        return dsl.nn.linear(x, weight)

    assert _error(f, x=dsl.f32["batch", 4]) == (
        "dsl.nn.linear(x, weight): linear(f32[batch,4], f32[10,5]): the input has 4 features, "
        "the weight [10,5] expects 5")


def test_type_rule_failure_is_located() -> None:
    """An error raised by the IR's type rule comes back as a DSLError naming the op."""
    def f(x):  # type: ignore[no-untyped-def]
        return dsl.nn.softmax(x)

    message = _error(f, x=dsl.i32[2, 3])
    assert message.startswith("dsl.nn.softmax(x): softmax(i32[2,3], axis=-1): softmax: ")
    assert "element type i32" in message


def test_indexing_errors() -> None:
    def out_of_range(x):  # type: ignore[no-untyped-def]
        return x[:, 5]

    def too_many(x):  # type: ignore[no-untyped-def]
        return x[0, 0, 0]

    def mask(x):  # type: ignore[no-untyped-def]
        return x[x > 0]

    assert _error(out_of_range, x=dsl.f32[2, 3]) == (
        "x[:, 5]: f32[2,3][:, 5]: index 5 is out of range for axis 1 of extent 3")
    assert _error(too_many, x=dsl.f32[2, 3]).endswith("3 indices for 2 axes")
    def bool_list(x):  # type: ignore[no-untyped-def]
        return x[[True, False]]

    assert "boolean masks are not supported" in _error(mask, x=dsl.f32[2, 3])
    assert _error(bool_list, x=dsl.f32[2, 3]).endswith(
        "[True, False] is boolean where i64 values are expected")


def test_argument_errors() -> None:
    def string_operand(x):  # type: ignore[no-untyped-def]
        return x + "a"

    def bad_axis(x):  # type: ignore[no-untyped-def]
        return x.sum(axis=2)

    def uneven_split(x):  # type: ignore[no-untyped-def]
        return dsl.split(x, 3, axis=1)

    def gather_range(x):  # type: ignore[no-untyped-def]
        return dsl.gather(x, [0, 4])

    def not_bool(x):  # type: ignore[no-untyped-def]
        return dsl.where(x, x, 0.0)

    assert _error(string_operand, x=dsl.f32[2]) == (
        'x + "a": f32[2] + str: cannot use a str as a tensor')
    assert _error(bad_axis, x=dsl.f32[2, 3]).endswith("axis 2 is out of range for 2 axes")
    assert _error(uneven_split, x=dsl.f32[2, 4]).endswith(
        "extent 4 cannot be split into 3 equal parts")
    assert _error(gather_range, x=dsl.f32[3, 2]).endswith(
        "indices [0, 4] are out of range for extent 3")
    assert _error(not_bool, x=dsl.f32[3]).endswith("the condition must be bool, not f32")


def test_python_control_flow_on_a_tensor() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        if x.sum() > 0:
            return x
        return -x

    assert "has no truth value while tracing" in _error(f, x=dsl.f32[3])


def test_error_in_a_helper_points_at_the_helper() -> None:
    """The innermost frame outside the DSL package is reported: the helper's line."""
    def helper(a):  # type: ignore[no-untyped-def]
        return a @ a

    def f(x):  # type: ignore[no-untyped-def]
        return helper(x)

    with pytest.raises(DSLError) as info:
        dsl.trace(f, x=dsl.f32[2, 3])
    assert located(info.value, __file__, helper.__code__.co_firstlineno + 1) == (
        "a @ a: f32[2,3] @ f32[2,3]: contraction dims 3 and 2 differ")


def test_spec_errors() -> None:
    with pytest.raises(DSLError) as info:
        dsl.f32[-1, 3]
    line = test_spec_errors.__code__.co_firstlineno + 2
    assert located(info.value, __file__, line) == (
        "dsl.f32[-1, 3]: shape [-1, 3]: dim -1 is neither a non-negative int nor a symbol name "
        "such as 'batch'")
    for bad in (1.5, "two words", True):
        with pytest.raises(DSLError, match="is neither a non-negative int"):
            dsl.f32[bad]
    with pytest.raises(DSLError, match="not an element type"):
        dsl.TensorSpec("float128x", (3,))


def test_trace_errors() -> None:
    def two(x, y):  # type: ignore[no-untyped-def]
        return x + y

    with pytest.raises(DSLError, match=r"parameters \['y'\] have no TensorSpec"):
        dsl.trace(two, x=dsl.f32[3])
    with pytest.raises(DSLError, match=r"\['z'\] are not parameters of two"):
        dsl.trace(two, x=dsl.f32[3], y=dsl.f32[3], z=dsl.f32[3])
    with pytest.raises(DSLError, match="the spec of 'y' is 3, not a TensorSpec"):
        dsl.trace(two, x=dsl.f32[3], y=3)
    with pytest.raises(DSLError, match="returned ndarray where a dsl.Tensor is expected"):
        dsl.trace(lambda x: np.zeros(3), x=dsl.f32[3])
    with pytest.raises(DSLError, match="rename the input called 'output'"):
        dsl.trace(lambda output: output, output=dsl.f32[3])


def test_tensors_of_other_traces() -> None:
    kept = []
    dsl.trace(lambda x: kept.append(x) or x, x=dsl.f32[3])

    def reuse(y):  # type: ignore[no-untyped-def]
        return y + kept[0]

    assert _error(reuse, y=dsl.f32[3]) == (
        "y + kept[0]: f32[3] + f32[3]: the operands belong to different traces")
    with pytest.raises(DSLError, match="the finished trace of '_lambda_' is used"):
        kept[0] * 2
    with pytest.raises(DSLError, match="called outside a traced function"):
        dsl.zeros((2, 3))


def test_dsl_error_is_a_kiln_error() -> None:
    assert issubclass(DSLError, KilnError)
