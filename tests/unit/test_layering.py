"""The import layering holds one way: runtime <- compiler <- frontends.

* ``kiln.runtime`` imports only the standard library, numpy and itself (checked on the modules a
  fresh interpreter actually loads, and statically on every runtime file);
* ``kiln.compiler`` never imports onnx, onnxruntime, torch or ``kiln.frontends``. The one
  exemption: ``compiler/cli.py`` is the composition root and may import ``kiln.frontends``
  inside a function (a lazy import, executed only when a command runs), never at module level;
* importing every ``kiln.compiler`` module loads no onnx and no frontend.

The static scan resolves relative imports to absolute module names, so ``from ...frontends``
is caught as surely as ``import kiln.frontends``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"compiler": "kiln.compiler", "runtime": "kiln.runtime", "frontends": "kiln.frontends"}

FORBIDDEN = {
    "compiler": ("onnx", "onnxruntime", "torch", "kiln.frontends"),
    "runtime": ("llvmlite", "numba", "onnx", "onnxruntime", "torch", "kiln.compiler",
                "kiln.frontends", "ml_dtypes"),
}
# (file, module prefix) pairs allowed when the import sits inside a function body.
LAZY_EXEMPTIONS = {("compiler/cli.py", "kiln.frontends")}


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    top, *rest = relative.parts
    parts = [PACKAGES[top], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(absolute module, line, inside a function) for every import statement of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                yield base, child.lineno, in_function
                # `from kiln import frontends` imports the subpackage itself.
                for alias in child.names:
                    yield f"{base}.{alias.name}", child.lineno, in_function
            yield from visit(child, nested)

    yield from visit(tree, False)


def _violations(top: str) -> list[str]:
    found = []
    for path in sorted((ROOT / top).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        for module, line, lazy in _imports(path):
            for banned in FORBIDDEN[top]:
                if module != banned and not module.startswith(banned + "."):
                    continue
                if lazy and (relative, banned) in LAZY_EXEMPTIONS:
                    continue
                found.append(f"{relative}:{line} imports {module}")
    return found


@pytest.mark.parametrize("top", ["compiler", "runtime"])
def test_no_forbidden_imports_in_source(top: str) -> None:
    assert _violations(top) == []


def test_scan_resolves_relative_and_lazy_imports() -> None:
    """The scanner itself: relative imports climb packages; function-level imports are lazy."""
    source = ROOT / "compiler" / "ir" / "graph.py"
    found = {(m, lazy) for m, _, lazy in _imports(source)}
    assert ("kiln.compiler.ir.op", False) in found
    cli = {(m, lazy) for m, _, lazy in _imports(ROOT / "compiler" / "cli.py")}
    frontend = {lazy for m, lazy in cli if m.startswith("kiln.frontends")}
    assert frontend == {True}, "the CLI must import the frontend lazily, inside a function"


def _modules_loaded_by(code: str) -> list[str]:
    """Modules newly present in sys.modules after running ``code`` in a fresh interpreter."""
    script = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, f"importing failed:\n{done.stderr}"
    return json.loads(done.stdout.splitlines()[-1])


def _walk_code(package: str) -> str:
    return (
        "import importlib, pkgutil\n"
        f"root = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(root.__path__, root.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
    )


def test_runtime_loads_only_stdlib_and_numpy() -> None:
    loaded = _modules_loaded_by(_walk_code("kiln.runtime"))
    stdlib = sys.stdlib_module_names
    foreign = [
        m for m in loaded
        if m.split(".")[0] not in stdlib
        and m.split(".")[0] != "numpy"
        and m not in ("kiln", "kiln.runtime")
        and not m.startswith("kiln.runtime.")
    ]
    assert foreign == [], f"kiln.runtime pulled in non-stdlib modules: {foreign}"
    assert "kiln.runtime" in loaded


def test_compiler_loads_no_onnx_and_no_frontend() -> None:
    loaded = _modules_loaded_by(_walk_code("kiln.compiler"))
    bad = [m for m in loaded for banned in FORBIDDEN["compiler"]
           if m == banned or m.startswith(banned + ".")]
    assert bad == [], f"importing kiln.compiler loaded {bad}"
    assert "kiln.compiler.cli" in loaded


def test_ir_and_reference_executor_load_no_llvm() -> None:
    """Building, verifying and running a graph on the reference executor needs no LLVM (only a
    graph holding a custom op, whose definition is LLVM IR, loads it)."""
    loaded = _modules_loaded_by(
        "import numpy as np\n"
        "from kiln.compiler import reference\n"
        "from kiln.compiler.ir.builder import GraphBuilder\n"
        "from kiln.compiler.ir.op import Op\n"
        "from kiln.compiler.ir.types import DType, TensorType\n"
        "from kiln.compiler.lower import interpret\n"
        "b = GraphBuilder('g')\n"
        "x = b.add_input('x', TensorType(DType.F32, (2,)))\n"
        "g = b.finish([b.add1(Op.RELU, [x])])\n"
        "reference.run(g, {'x': np.ones(2, np.float32)})\n"
    )
    llvm = [m for m in loaded if m.startswith("llvmlite") or ".codegen" in m]
    assert llvm == [], f"the IR and reference executor loaded {llvm}"
    assert "kiln.compiler.reference.executor" in loaded
