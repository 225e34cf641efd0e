"""Session fixtures of the runtime tests: the fixture model built with embedded and with
external weights (see runtime_fixture.py)."""

from __future__ import annotations

import pytest
from runtime_fixture import Fixture, build_fixture


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return build_fixture(tmp_path_factory.mktemp("embedded"), external=False)


@pytest.fixture(scope="session")
def external(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return build_fixture(tmp_path_factory.mktemp("external"), external=True)
