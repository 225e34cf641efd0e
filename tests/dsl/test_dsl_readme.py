"""The README's Python DSL example runs as printed, and its compiled result matches the
reference executor's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from dslcheck import assert_close

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_dsl_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("## Python DSL", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the Python DSL section has no python example"
    monkeypatch.chdir(tmp_path)  # it writes net.onnx
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), str(README), "exec"), namespace)
    logits, expected = np.asarray(namespace["logits"]), np.asarray(namespace["expected"])
    assert logits.shape == (8, 10)
    assert_close(logits, expected, "README example: compiled vs reference")
    assert (tmp_path / "net.onnx").stat().st_size > 0
