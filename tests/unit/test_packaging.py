"""Packaging: the pyproject's package list, entry point and extras, the built wheel, and the
README's commands (``.ci/run`` must run exactly the README's test command)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"compiler": "kiln.compiler", "runtime": "kiln.runtime",
                "frontends": "kiln.frontends"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _source_packages() -> dict[str, Path]:
    """Dotted name -> folder for every folder with an ``__init__.py`` in the source trees."""
    found = {}
    for top, name in PACKAGE_DIRS.items():
        for init in (ROOT / top).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / top)
            found[".".join([name, *relative.parts])] = init.parent
    return found


def test_every_source_package_is_listed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    missing = sorted(set(_source_packages()) - listed)
    assert missing == [], f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists() -> None:
    stale = sorted(set(PYPROJECT["tool"]["setuptools"]["packages"]) - set(_source_packages()))
    assert stale == [], f"pyproject.toml lists packages with no __init__.py: {stale}"


def test_package_dir_mapping() -> None:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert mapping == {name: top for top, name in PACKAGE_DIRS.items()}


def test_console_script_and_dev_extra() -> None:
    assert PYPROJECT["project"]["scripts"] == {"kiln": "kiln.compiler.cli:main"}
    dev = {re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0]: req
           for req in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    for needed in ("pytest", "pytest-xdist", "hypothesis", "onnxruntime", "ruff", "mypy",
                   "scikit-learn", "onnxscript", "torch"):
        assert needed in dev, f"dev extra lacks {needed}"
    assert dev["torch"] == "torch==2.13.0"


def _readme_command(marker: str) -> str:
    """The one-line command in the fenced block that follows ``<!-- marker -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```(?:bash|sh)?\n(.+?)\n```", text)
    assert match, f"README.md has no fenced command after <!-- {marker} -->"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = _readme_command("test-command")
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', command]


def test_readme_main_command_runs_the_bundled_example() -> None:
    command = _readme_command("main-command")
    script = re.search(r"\.venv/bin/python (\S+\.py)", command)
    assert script and (ROOT / script.group(1)).is_file()


def test_wheel_holds_every_module_under_kiln(tmp_path: Path) -> None:
    """A regular (non-editable) install: build the wheel from a copy of the sources (so no
    build/ or egg-info lands in the work tree) and check every module and header is inside."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for top in PACKAGE_DIRS:
        shutil.copytree(ROOT / top, source / top, ignore=ignore)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(tmp_path / "dist"),
         "--no-deps", "--no-build-isolation", "-q"],
        capture_output=True, text=True,
    )
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build wheels here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("kiln-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"kiln/{top}/{path.relative_to(ROOT / top).as_posix()}"
        for top in PACKAGE_DIRS
        for path in (ROOT / top).rglob("*")
        if path.suffix in (".py", ".h") and "__pycache__" not in path.parts
    }
    assert sorted(expected - names) == []
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "kiln = kiln.compiler.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
