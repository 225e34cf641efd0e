"""DSL models through the command line: ``kiln compile net.py[:name]`` compiles the model a
Python file defines, like an ONNX file; the library matches numpy; bad files say why."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from dslcheck import assert_close

from kiln.compiler import reference
from kiln.compiler.cli import main
from kiln.frontends.dsl import DSLError
from kiln.frontends.dsl.loading import load_python, split_model_path
from kiln.runtime import load

NET = """
import numpy as np
from kiln.frontends import dsl

rng = np.random.default_rng(7)
W = rng.standard_normal((16, 4)).astype(np.float32)
B = rng.standard_normal(4).astype(np.float32)

@dsl.model(x=dsl.f32["batch", 16])
def net(x):
    return dsl.nn.relu(x @ W + B)

if __name__ == "__main__":
    raise SystemExit("the __main__ block must not run when kiln loads the file")
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_compile_a_python_model_file(tmp_path: Path) -> None:
    source = _write(tmp_path, "net.py", NET)
    library = tmp_path / "net.so"
    assert main(["compile", str(source), "-o", str(library), "--input-shape", "x=3,16"]) == 0
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((16, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    with load(str(library), threads=1) as model:
        (y,) = model.run({"x": x})
    assert_close(y, np.maximum(x @ weights + bias, 0), "kiln compile net.py")


def test_a_named_model_among_several(tmp_path: Path) -> None:
    source = _write(tmp_path, "two.py", NET + """
@dsl.model(x=dsl.f32[2, 16])
def negated(x):
    return -x
""")
    with pytest.raises(DSLError, match="several DSL models .*negated, net.*two.py:<name>"):
        load_python(source)
    graph = load_python(source, "negated")
    assert [v.name for v in graph.inputs] == ["x"] and graph.outputs[0].type.shape == (2, 16)
    library = tmp_path / "negated.so"
    assert main(["compile", f"{source}:negated", "-o", str(library)]) == 0
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    with load(str(library), threads=1) as model:
        np.testing.assert_array_equal(model.run({"x": x})[0], -x)


@pytest.mark.parametrize(("text", "name", "message"), [
    ("x = 1\n", None, "defines no DSL model at top level"),
    (NET, "W", "net.py:W is a ndarray, not a DSL model"),
    (NET, "missing", "defines no 'missing'"),
])
def test_files_without_the_model_say_why(tmp_path: Path, text: str, name: str | None,
                                         message: str) -> None:
    source = _write(tmp_path, "net.py", text)
    with pytest.raises(DSLError, match=message):
        load_python(source, name)


def test_cli_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "absent.py:net")]) != 0
    assert "absent.py' does not exist" in capsys.readouterr().err


def test_split_model_path() -> None:
    assert split_model_path("a/net.py:mlp") == (Path("a/net.py"), "mlp")
    assert split_model_path("a/net.py") == (Path("a/net.py"), None)
    # a colon that does not follow a .py file is part of the path
    assert split_model_path("c:/models/net.onnx") == (Path("c:/models/net.onnx"), None)


def test_compile_the_dsl_example_file(tmp_path: Path) -> None:
    """The README's DSL example file compiles straight from the command line."""
    example = Path(__file__).resolve().parents[2] / "examples" / "dsl" / "lenet.py"
    library = tmp_path / "lenet.so"
    assert main(["compile", str(example), "-o", str(library),
                 "--input-shape", "x=2,1,28,28"]) == 0
    graph = load_python(example)
    x = np.random.default_rng(3).standard_normal((2, 1, 28, 28)).astype(np.float32)
    with load(str(library), threads=1) as model:
        (logits,) = model.run({"x": x})
    assert_close(logits, reference.run(graph, {"x": x})[0], "kiln compile lenet.py")
