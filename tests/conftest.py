"""Suite-wide checks: every graph a test builds is verified and round-trips through text.

``GraphBuilder.finish`` is wrapped for the whole session, so each top-level graph built by any
test (by hand, by the ONNX frontend, by the DSL) passes the verifier and satisfies
``print(parse(t)) == t`` for its text, elided and (when small enough) with constants in full.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.parser import parse_graph
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.verify import verify

# Property tests are deterministic (the same examples every run, in CI and locally); explore with
# new examples by passing --hypothesis-profile=default.
settings.register_profile("kiln", derandomize=True, deadline=None)
settings.load_profile("kiln")

# Printing every weight as decimal text is slow; above this many constant elements the full
# form is skipped and only the elided form is round-tripped.
FULL_TEXT_LIMIT = 200_000


def check_graph(graph: Graph) -> None:
    """Verifier plus text round trip, in both constant forms."""
    verify(graph)
    forms = [False]
    if sum(n.attrs["value"].size for n in graph.walk() if n.op.value == "constant"
           and hasattr(n.attrs["value"], "size")) <= FULL_TEXT_LIMIT:
        forms.append(True)
    for full in forms:
        text = print_graph(graph, full_constants=full)
        reparsed = parse_graph(text)
        assert print_graph(reparsed, full_constants=full) == text
        if full:
            verify(reparsed)


@pytest.fixture(autouse=True, scope="session")
def _check_every_built_graph() -> Iterator[None]:
    original = GraphBuilder.finish

    def finish_and_check(self: GraphBuilder, outputs):  # type: ignore[no-untyped-def]
        graph = original(self, outputs)
        if self.outer is None:
            check_graph(graph)
        return graph

    GraphBuilder.finish = finish_and_check  # type: ignore[method-assign]
    yield
    GraphBuilder.finish = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def _private_tune_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the user's ``kiln tune`` cache (``kiln compile`` reads it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("KILN_TUNE_CACHE", str(tmp_path_factory.mktemp("tune") / "tune.json"))
    yield
    patch.undo()


@pytest.fixture(autouse=True, scope="session")
def _private_calibration_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the user's machine-peak calibration (``kiln profile``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("KILN_CALIBRATION_CACHE",
                 str(tmp_path_factory.mktemp("calibration") / "calibration.json"))
    yield
    patch.undo()
