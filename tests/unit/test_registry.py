"""One row per op: every IR op has a schema with a type rule and a reference kernel."""

from __future__ import annotations

from kiln.compiler.ir.op import Op
from kiln.compiler.ir.schema import defined_ops
from kiln.compiler.reference.kernels.registry import kernels


def test_every_op_has_a_schema_and_type_rule() -> None:
    missing = sorted(op.value for op in Op if op not in defined_ops())
    assert not missing, f"ops without a schema: {missing}"


def test_every_op_has_a_reference_kernel() -> None:
    # The executor evaluates constants itself; every other op needs a kernel.
    missing = sorted(op.value for op in Op if op is not Op.CONSTANT and op not in kernels())
    assert not missing, f"ops without a reference kernel: {missing}"


def test_schemas_are_consistent() -> None:
    for op, definition in defined_ops().items():
        assert definition.op is op
        assert definition.outputs, f"{op.value} declares no outputs"
        names = [o.name for o in definition.inputs]
        assert len(set(names)) == len(names), f"{op.value} repeats an input name"
        variadic = [i for i, o in enumerate(definition.inputs) if o.variadic]
        assert not variadic or variadic == [len(definition.inputs) - 1], (
            f"{op.value}: only the last input may be variadic"
        )
