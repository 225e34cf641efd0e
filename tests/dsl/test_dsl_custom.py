"""Custom elementwise ops: Python scalar functions compiled by numba, carried as LLVM IR by
``custom_elementwise`` nodes, run by the reference executor, the kernel-IR interpreter and
compiled code, fused with neighbouring elementwise ops and vectorized after inlining.

Every result is compared with the same function written with numpy.
"""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kiln.compiler import build, reference
from kiln.compiler.codegen import Target, assembly, create_module, emit_kernel, optimized_ir
from kiln.compiler.codegen.target import CodegenError
from kiln.compiler.errors import KilnError, TypeInferenceError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.parser import parse_graph
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.rules.custom import LIBM
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.lower.inline import walk
from kiln.compiler.lower.kernel_ir import (
    Buffer,
    Call,
    ExternalFunction,
    Kernel,
    Loop,
    LoopKind,
    Var,
    loop_nest,
)
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.specialize import specialize
from kiln.frontends import dsl
from kiln.frontends.dsl.custom import CustomFunction, custom_node

RNG = np.random.default_rng(7)


@dsl.elementwise
def swish(x, beta):
    return x / (1.0 + math.exp(-beta * x))


@dsl.elementwise
def piecewise(x, a):
    if x > 1.0:
        return a * x
    elif x < -1.0:
        return -x
    return x * x


@dsl.elementwise
def log_bump(x):
    return math.log(1.0 + x * x) * math.exp(-0.5 * x * x)


@dsl.elementwise
def int_mix(a, b):
    return (a * 3 + b) % 7 - a // b


@dsl.elementwise
def both_positive(x, y):
    return x > 0.0 and y > 0.0


@dsl.elementwise
def choose(c, x, y):
    return x if c else y


def _swish(x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for large -beta * x: x / inf = 0
        return x / (1 + np.exp(-beta * x))


def _piecewise(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.where(x > 1, a * x, np.where(x < -1, -x, x * x))


def _log_bump(x: np.ndarray) -> np.ndarray:
    return np.log(1 + x * x) * np.exp(-0.5 * x * x)


def _int_mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * 3 + b) % 7 - a // b  # Python's (floored) % and //, as numba computes them


def _both_positive(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x > 0) & (y > 0)


def _data(dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    if dtype is DType.BOOL:
        return RNG.random(shape) < 0.5
    if dtype.is_int:  # divisors in [-9, -1] and [1, 9]: no division by zero
        return (RNG.integers(1, 10, shape) * RNG.choice([-1, 1], shape)).astype(dtype.numpy)
    return (RNG.standard_normal(shape) * 3).astype(dtype.numpy)


# (custom function, numpy version, operand types, operand shapes: broadcasting ones)
Case = tuple[CustomFunction, Callable[..., np.ndarray], tuple[DType, ...],
             tuple[tuple[int, ...], ...]]
CASES: dict[str, Case] = {
    "swish": (swish, _swish, (DType.F32, DType.F32), ((3, 1, 5), (4, 1))),
    "piecewise": (piecewise, _piecewise, (DType.F64, DType.F64), ((6, 7), (7,))),
    "log_bump": (log_bump, _log_bump, (DType.F32,), ((2, 3, 33),)),
    "int_mix": (int_mix, _int_mix, (DType.I32, DType.I32), ((5, 1), (1, 9))),
    "both_positive": (both_positive, _both_positive, (DType.F32, DType.F32), ((4, 6), (6,))),
    "choose": (choose, np.where, (DType.BOOL, DType.F64, DType.F64), ((3, 4), (4,), (3, 1))),
}


def _graph(fn: CustomFunction, dtypes: tuple[DType, ...],
           shapes: tuple[tuple[int, ...], ...]) -> Graph:
    builder = GraphBuilder("custom")
    inputs = [builder.add_input(f"x{i}", TensorType(d, s))
              for i, (d, s) in enumerate(zip(dtypes, shapes, strict=True))]
    return builder.finish([custom_node(builder, fn, inputs)])


def _feeds(dtypes: tuple[DType, ...], shapes: tuple[tuple[int, ...], ...]) -> dict[str, np.ndarray]:
    return {f"x{i}": _data(d, s) for i, (d, s) in enumerate(zip(dtypes, shapes, strict=True))}


def _check(found: np.ndarray, expected: np.ndarray) -> None:
    assert found.shape == expected.shape and found.dtype == expected.dtype
    if found.dtype.kind == "f":
        tolerance = 1e-6 if found.dtype == np.float32 else 1e-13
        np.testing.assert_allclose(found, expected, rtol=tolerance, atol=tolerance)
    else:
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_and_interpreter_match_numpy(case: str) -> None:
    fn, numpy_fn, dtypes, shapes = CASES[case]
    graph = _graph(fn, dtypes, shapes)
    feeds = _feeds(dtypes, shapes)
    expected = numpy_fn(*feeds.values())
    (found,) = reference.run(graph, feeds)
    _check(found, expected)  # of numpy's type: the result type follows the operands
    (interpreted,) = interpret_lowered(lower_graph(specialize(graph)), feeds)
    _check(interpreted, expected)


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_matches_numpy(case: str, opt_level: int) -> None:
    fn, numpy_fn, dtypes, shapes = CASES[case]
    feeds = _feeds(dtypes, shapes)
    (found,) = build(_graph(fn, dtypes, shapes), opt_level=opt_level).run(feeds)
    _check(found, numpy_fn(*feeds.values()))


def test_parallel_loops_call_the_function() -> None:
    # enough work for the loop to be split across threads (an outlined parallel body)
    dtypes, shapes = (DType.F32, DType.F32), ((48, 1024), (1024,))
    graph = _graph(swish, dtypes, shapes)
    (kernel,) = [k for step in lower_graph(graph).steps for k in step.kernels]
    assert any(isinstance(s, Loop) and s.kind is LoopKind.PARALLEL for s in walk(kernel.body))
    feeds = _feeds(dtypes, shapes)
    (found,) = build(graph, opt_level=2, threads=2).run(feeds)
    _check(found, _swish(*feeds.values()))


@pytest.mark.parametrize("opt_level", [0, 2])
def test_traced_scalar_parameter_broadcasts(opt_level: int) -> None:
    def model(x, w):
        return swish(x, 1.5) * piecewise(w, 0.25)

    traced = dsl.trace(model, x=dsl.f32["batch", 1, 8], w=dsl.f32[5, 1])
    (node,) = [n for n in traced.graph.nodes if n.op is Op.CUSTOM_ELEMENTWISE
               and n.attrs["name"] == "swish"]
    beta = traced.graph.constants()[node.inputs[1].name]
    assert beta.dtype == np.float32 and float(beta) == 1.5
    x, w = _data(DType.F32, (3, 1, 8)), _data(DType.F32, (5, 1))
    expected = _swish(x, np.float32(1.5)) * _piecewise(w, np.float32(0.25))
    (found,) = traced.reference(x=x, w=w)
    _check(found, expected)
    executable = traced.build(input_shapes={"x": (3, 1, 8)}, opt_level=opt_level)
    (compiled,) = executable.run({"x": x, "w": w})
    _check(compiled, expected)


def test_result_types_follow_tensors_not_literals() -> None:
    @dsl.elementwise
    def scaled(x):
        return x * 2.5 + 1

    @dsl.elementwise(dtype=dsl.f64)
    def widened(x):
        return x * 2.5

    def model(x, n):
        return scaled(x), scaled(n), both_positive(x, 1.0), widened(x)

    traced = dsl.trace(model, x=dsl.f32[4], n=dsl.i32[4])
    assert [v.type.dtype for v in traced.graph.outputs] == [
        DType.F32, DType.F64, DType.BOOL, DType.F64]
    x = _data(DType.F32, (4,))
    n = _data(DType.I32, (4,))
    found = traced.reference(x=x, n=n)
    _check(found[0], (x.astype(np.float64) * 2.5 + 1).astype(np.float32))
    _check(found[1], n * 2.5 + 1)
    _check(found[2], x > 0)
    _check(found[3], x.astype(np.float64) * 2.5)
    assert scaled(2.0) == 6.0  # without tensors, the plain Python function


def _epilogue_graph() -> tuple[Graph, dict[str, np.ndarray], np.ndarray]:
    """matmul -> add -> custom -> relu, and its value by numpy."""
    builder = GraphBuilder("mlp")
    x = builder.add_input("x", TensorType(DType.F32, (8, 32)))
    weight = RNG.standard_normal((32, 64)).astype(np.float32) / 4
    bias = RNG.standard_normal(64).astype(np.float32)
    product = builder.add1(Op.MATMUL, [x, builder.constant(weight, "w")])
    shifted = builder.add1(Op.ADD, [product, builder.constant(bias, "b")])
    custom = custom_node(builder, piecewise, [shifted, builder.constant(np.float32(-0.5))])
    graph = builder.finish([builder.add1(Op.RELU, [custom])])
    data = _data(DType.F32, (8, 32))
    expected = np.maximum(_piecewise(data @ weight + bias, np.float32(-0.5)), 0)
    return graph, {"x": data}, expected


def test_fused_with_neighbouring_ops() -> None:
    graph, feeds, expected = _epilogue_graph()
    optimized = optimize(specialize(graph), 2)
    (fused,) = [n for n in optimized.nodes if n.op is not Op.CONSTANT]
    assert fused.op is Op.FUSED and fused.attrs["kind"] == "epilogue"
    text = print_graph(optimized)
    body = text[text.index("body=func"):text.index('kind="epilogue"')]
    ops = re.findall(r"= (\w+)\(", body)
    assert [op for op in ops if op != "constant"] == [
        "matmul", "add", "custom_elementwise", "relu"]
    executable = build(graph, opt_level=2)
    assert executable.stats.kernels == 1
    _check(executable.run(feeds)[0], expected)


def _fused_kernel_ir(fn: CustomFunction, target: Target) -> str:
    """The optimized LLVM IR of add -> fn -> relu fused into one elementwise kernel."""
    builder = GraphBuilder("chain")
    x = builder.add_input("x", TensorType(DType.F32, (16, 1000)))
    total = builder.add1(Op.ADD, [x, x])
    arity = len(inspect.signature(fn.fn).parameters)
    custom = custom_node(builder, fn, [total, *[builder.constant(np.float32(0.5))] * (arity - 1)])
    graph = builder.finish([builder.add1(Op.RELU, [custom])])
    lowered = lower_graph(optimize(specialize(graph), 2))
    kernels = [k for step in lowered.steps for k in step.kernels]
    assert len(kernels) == 1
    module = create_module("chain", target)
    emit_kernel(module, kernels[0], target, export=True)
    return optimized_ir(module, target, 2)


@pytest.mark.parametrize("fn", [piecewise, swish, log_bump], ids=lambda f: f.name)
def test_fused_loop_is_vectorized_after_inlining(fn: CustomFunction) -> None:
    text = _fused_kernel_ir(fn, Target.parse("x86_64-avx2"))
    assert "kiln_custom" not in text  # inlined, and the definition dropped
    # numba computes in double what mixes with a Python float literal: 4 lanes of AVX2 then
    assert "<8 x float>" in text or "<4 x double>" in text
    # exp and log are Kiln's inline versions: no per-element libm call keeps the loop scalar
    assert not re.search(r"call \w+ @(exp|log|tanh)f?\(", text)


def test_library_links_only_the_math_library() -> None:
    def undefined(library: Path) -> set[str]:
        listing = subprocess.run(["nm", "-D", "--undefined-only", str(library)], check=True,
                                 capture_output=True, text=True).stdout
        return {line.split()[-1].split("@")[0] for line in listing.splitlines() if line.strip()}

    builder = GraphBuilder("plain")
    x = builder.add_input("x", TensorType(DType.F32, (64,)))
    plain = build(builder.finish([builder.add1(Op.RELU, [x])]))
    graph = _graph(log_bump, (DType.F32,), ((64,),))
    for opt_level in (0, 2):
        executable = build(graph, opt_level=opt_level)
        added = undefined(executable.library) - undefined(plain.library)
        assert added <= LIBM, added  # at most libm (log and exp are even Kiln's own)
        exported = subprocess.run(["nm", "-D", "--defined-only", str(executable.library)],
                                  check=True, capture_output=True, text=True).stdout
        assert "kiln_custom" not in exported


def test_one_function_in_two_kernels_is_linked_once() -> None:
    # swish before a matmul is its own kernel; after it, part of the matmul's epilogue
    builder = GraphBuilder("twice")
    x = builder.add_input("x", TensorType(DType.F32, (4, 16)))
    beta = builder.constant(np.float32(0.75))
    weight = RNG.standard_normal((16, 8)).astype(np.float32)
    first = custom_node(builder, swish, [x, beta])
    product = builder.add1(Op.MATMUL, [first, builder.constant(weight)])
    graph = builder.finish([custom_node(builder, swish, [product, beta])])
    executable = build(graph, opt_level=2)
    assert executable.stats.kernels == 2
    data = _data(DType.F32, (4, 16))
    expected = _swish(_swish(data, np.float32(0.75)) @ weight, np.float32(0.75))
    np.testing.assert_allclose(executable.run({"x": data})[0], expected, rtol=1e-5, atol=1e-5)


def _external(fn: CustomFunction, dtypes: tuple[DType, ...]) -> ExternalFunction:
    compiled = fn.compile(dtypes)
    return ExternalFunction(compiled.name, compiled.symbol, compiled.llvm_ir, compiled.args,
                            compiled.result)


def test_a_symbol_names_one_function() -> None:
    target = Target.parse("host")
    good = _external(swish, (DType.F32, DType.F32))
    other = _external(piecewise, (DType.F32, DType.F32))
    forged = ExternalFunction("forged", good.symbol, other.llvm_ir, good.args, good.result)
    a, b, out = (Buffer(n, DType.F32, (4,)) for n in ("a", "b", "out"))
    module = create_module("clash", target)
    for name, function in (("k1", good), ("k2", forged)):
        body = loop_nest(["i"], [4], lambda i, f=function: out.store(
            i, Call(f, (a.load(*i), b.load(*i)))))
        if name == "k2":
            with pytest.raises(CodegenError, match="two different functions"):
                emit_kernel(module, Kernel(name, (a, b), (out,), body), target)
        else:
            emit_kernel(module, Kernel(name, (a, b), (out,), body), target)
    with pytest.raises(ValueError, match="arguments of types"):
        Call(good, (Var("i"), Var("j")))


@pytest.mark.parametrize("triple", ["aarch64-linux-gnu", "riscv64-linux-gnu"])
def test_carried_ir_compiles_for_other_targets(triple: str) -> None:
    target = Target.parse(triple)
    assert _fused_kernel_ir(swish, target)
    module = create_module("cross", target)
    function = _external(int_mix, (DType.I32, DType.I32))
    a, b, out = (Buffer(n, DType.I32, (16,)) for n in ("a", "b", "out"))
    body = loop_nest(["i"], [16], lambda i: out.store(i, Call(function, (a.load(*i),
                                                                         b.load(*i)))))
    emit_kernel(module, Kernel("k", (a, b), (out,), body), target)
    assert assembly(module, target, 2)


def test_text_round_trip_keeps_the_function() -> None:
    graph = _graph(swish, (DType.F32, DType.F32), ((2, 3), (3,)))
    text = print_graph(graph, full_constants=True)
    assert "\n" not in text.split("llvm_ir=")[1].split(", symbol=")[0]  # one escaped line
    parsed = parse_graph(text)
    assert print_graph(parsed, full_constants=True) == text
    (original,) = [n for n in graph.nodes if n.op is Op.CUSTOM_ELEMENTWISE]
    (read,) = [n for n in parsed.nodes if n.op is Op.CUSTOM_ELEMENTWISE]
    assert read.attrs == original.attrs
    feeds = _feeds((DType.F32, DType.F32), ((2, 3), (3,)))
    _check(reference.run(parsed, feeds)[0], _swish(*feeds.values()))


def test_constant_operands_fold_while_building() -> None:
    builder = GraphBuilder("folded")
    data = _data(DType.F64, (5,))
    value = custom_node(builder, piecewise, [builder.constant(data), builder.constant(2.0)])
    graph = builder.finish([value])
    assert {n.op for n in graph.nodes} == {Op.CONSTANT}
    _check(graph.constants()[value.name], _piecewise(data, 2.0))


def test_the_type_rule_checks_the_carried_function() -> None:
    compiled = swish.compile((DType.F32, DType.F32))
    builder = GraphBuilder("bad")
    x = builder.add_input("x", TensorType(DType.F64, (3,)))
    with pytest.raises(TypeInferenceError, match=r"has type float \(float, float\), but the "
                                                 r"operands and result need float \(double, "
                                                 r"double\)"):
        builder.add1(Op.CUSTOM_ELEMENTWISE, [x, x], compiled.attrs)
    needs_python = compiled.llvm_ir.replace("@llvm.exp.f32", "@PyFloat_AsDouble")
    y = builder.add_input("y", TensorType(DType.F32, (3,)))
    with pytest.raises(TypeInferenceError, match="needs PyFloat_AsDouble, which compiled "
                                                 "kernels cannot link"):
        builder.add1(Op.CUSTOM_ELEMENTWISE, [y, y], {**compiled.attrs, "llvm_ir": needs_python})
    with pytest.raises(TypeInferenceError, match="does not define 'nothing'"):
        builder.add1(Op.CUSTOM_ELEMENTWISE, [y, y], {**compiled.attrs, "symbol": "nothing"})


def _undefined_attribute(x):
    return x.imag_part


def _raises(x):
    if x > 10.0:
        raise ValueError("too big")
    return x


def _gamma(x):
    return math.gamma(x)


def _pair(x):
    return x, x


@pytest.mark.parametrize(("fn", "message"), [
    (_undefined_attribute, r"numba cannot compile custom function '_undefined_attribute' for "
                           r"\(f32\): (.|\n)*Unknown attribute 'imag_part'"),
    (_raises, "custom function '_raises' may raise a Python exception"),
    (_gamma, "custom function '_gamma' compiles to calls of numba_gammaf, which compiled models "
             "cannot link"),
    (_pair, r"custom function '_pair' returns UniTuple\(float32 x 2\); it must return a number"),
])
def test_functions_kiln_cannot_use_are_refused(fn: Callable[..., object], message: str) -> None:
    with pytest.raises(dsl.DSLError, match=message):
        dsl.trace(lambda x: dsl.elementwise(fn)(x), x=dsl.f32[3])


def test_operands_need_supported_types() -> None:
    with pytest.raises(dsl.DSLError, match="take no f16 operands"):
        dsl.elementwise(_pair).compile((DType.F16,))
    with pytest.raises(KilnError, match="takes tensors and Python numbers"):
        dsl.trace(lambda x: swish(x, "1.5"), x=dsl.f32[3])


def test_ir_text_is_the_same_in_another_process() -> None:
    # numba numbers its functions per process; the carried IR must not depend on that
    script = (
        "import math\n"
        "from kiln.compiler.ir.types import DType\n"
        "from kiln.frontends import dsl\n"
        "dsl.elementwise(lambda x: x + 1).compile((DType.F64,))\n"
        "def swish(x, beta):\n"
        "    return x / (1.0 + math.exp(-beta * x))\n"
        "print(dsl.elementwise(swish).compile((DType.F32, DType.F32)).llvm_ir, end='')\n"
    )
    other = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                           text=True).stdout
    assert other == swish.compile((DType.F32, DType.F32)).llvm_ir
