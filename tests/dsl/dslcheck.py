"""Shared helpers of the DSL tests: run a traced model both ways and compare with an oracle.

``check`` runs a ``dsl.Model`` through the reference executor and through the compiled library
(``build`` with the inputs' shapes, which binds the symbolic dims) and compares every output
with the expected arrays (computed by numpy or torch in the test). Tolerances by element type:
float32 ``rtol=1e-4, atol=1e-5`` (the expected values are computed in another summation order
or in float64 and rounded; vectorized math functions differ by a few ulp), float16 ``rtol=4e-3``
(4 ulp: each op rounds to float16), float64 ``1e-10``, integers and bools exactly.
``located`` checks that a DSLError starts with a test's file:line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from kiln.frontends import dsl

TOLERANCE = {np.dtype(np.float16): (4e-3, 1e-3), np.dtype(np.float32): (1e-4, 1e-5),
             np.dtype(np.float64): (1e-10, 1e-10)}


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Same dtype and shape; floats within the dtype's tolerance (NaN equal to NaN)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind == "f":
        rtol, atol = TOLERANCE[expected.dtype]
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def check(model: dsl.Model, inputs: Mapping[str, np.ndarray], expected: Sequence[np.ndarray],
          opt_level: int = 2) -> None:
    """Reference executor and compiled library against ``expected``, output by output."""
    assert len(model.graph.outputs) == len(expected)
    for i, (got, want) in enumerate(zip(model.reference(**inputs), expected, strict=True)):
        assert_close(got, want, f"reference, output {i}")
    executable = model.build(input_shapes={k: v.shape for k, v in inputs.items()},
                             opt_level=opt_level)
    for i, (got, want) in enumerate(zip(executable.run(dict(inputs)), expected, strict=True)):
        assert_close(got, want, f"compiled, output {i}")


def located(error: Exception, path: str, line: int) -> str:
    """Assert the message starts with ``path:line: `` (path in any spelling of that file);
    returns the rest of the message."""
    message = str(error)
    where, _, rest = message.partition(": ")
    file, _, number = where.rpartition(":")
    assert os.path.samefile(file, path), message
    assert int(number) == line, message
    return rest
