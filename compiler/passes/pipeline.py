"""The optimizer: the ordered pass list per opt level, and ``optimize`` which runs it.

Read ``PASSES`` top to bottom: each row is a pass name, the function (``Graph -> Graph``,
returning the same object when it changes nothing) and the lowest -O level that runs it.

    -O0  fold_constants, dead_code                  the debuggable baseline: no fusion, no
                                                    layout change
    -O1  + quant_fusion (QDQ layers to integer ops), simplify, cse, fold_batchnorm,
           absorb_moves (transposes/reshapes before a MatMul folded into its weight rows)
    -O2  + fuse (operator fusion)                   (the default)
    -O3  + select_layout (blocked layouts; it runs before fuse, which must see the Convs)

``optimize`` can print the IR after chosen passes, stop after one, verify the IR after each
(tests do), and records a ``PassStats`` row per pass run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from ..errors import KilnError, VerificationError
from ..ir.graph import Graph
from ..ir.op import Op
from ..ir.printer import print_graph
from ..ir.verify import verify
from ..machine import DEFAULT_MACHINE, Machine
from .cse import cse
from .dead_code import dead_code
from .fold_batchnorm import fold_batchnorm
from .fold_constants import fold_constants
from .fuse import fuse_operators
from .quant_fusion import quant_fusion
from .select_layout import select_layout
from .simplify import absorb_moves, simplify

Pass = Callable[[Graph, Machine], Graph]


def _plain(fn: Callable[[Graph], Graph]) -> Pass:
    """A pass that does not depend on the machine."""
    return lambda graph, _machine: fn(graph)


@dataclass(frozen=True)
class PassEntry:
    name: str
    run: Pass
    min_level: int


PASSES: tuple[PassEntry, ...] = (
    # first: folding would dequantize the QDQ weights this pass keeps as integers
    PassEntry("quant_fusion", _plain(quant_fusion), 1),
    PassEntry("fold_constants", _plain(fold_constants), 0),
    PassEntry("simplify", _plain(simplify), 1),
    PassEntry("cse", _plain(cse), 1),
    PassEntry("fold_batchnorm", _plain(fold_batchnorm), 1),
    PassEntry("dead_code", _plain(dead_code), 0),
    # ---- global passes, after the local ones (their owners add one line each) ----
    # before fusion: it must see the Convs
    PassEntry("select_layout", lambda graph, machine: select_layout(graph, machine=machine), 3),
    # after select_layout: absorbs Transposes, and its transforms before a Flatten + MatMul
    PassEntry("absorb_moves", _plain(absorb_moves), 1),
    PassEntry("fuse", _plain(fuse_operators), 2),
)


@dataclass(frozen=True)
class PassStats:
    """One pass run: time, ops (constants not counted) before and after, whether it changed
    the graph, fused groups it made, layout transforms it inserted and removed."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    fused_groups: int = 0
    layout_inserted: int = 0
    layout_removed: int = 0


def passes_for(opt_level: int) -> list[PassEntry]:
    """The passes run at ``opt_level``, in order."""
    if opt_level not in (0, 1, 2, 3):
        raise KilnError(f"opt_level must be 0, 1, 2 or 3, got {opt_level}")
    return [entry for entry in PASSES if entry.min_level <= opt_level]


def optimize(
    graph: Graph,
    opt_level: int,
    *,
    print_after: Sequence[str] = (),
    print_after_all: bool = False,
    stop_after: str | None = None,
    verify_each: bool = False,
    stats: list[PassStats] | None = None,
    out: TextIO | None = None,
    machine: Machine = DEFAULT_MACHINE,
) -> Graph:
    """Run the passes of ``opt_level`` on ``graph``. ``print_after`` names passes whose result
    is printed to ``out`` (default stderr; ``print_after_all``: every pass); ``stop_after``
    ends the pipeline after that pass; ``verify_each`` runs the IR verifier after each pass;
    ``stats`` receives one ``PassStats`` per pass run; ``machine`` is the CPU that machine-aware
    passes (layout selection) choose for."""
    entries = passes_for(opt_level)
    _check_names([*print_after, *([stop_after] if stop_after else [])], entries, opt_level)
    stream = out if out is not None else sys.stderr
    for entry in entries:
        before = graph
        start = time.perf_counter()
        graph = entry.run(graph, machine)
        seconds = time.perf_counter() - start
        if verify_each:
            try:
                verify(graph)
            except VerificationError as error:
                raise VerificationError(f"after pass {entry.name}: {error}") from None
        if stats is not None:
            stats.append(_row(entry.name, seconds, before, graph))
        if print_after_all or entry.name in print_after:
            state = "" if graph is not before else " (unchanged)"
            stream.write(f"// IR after {entry.name}{state}\n{print_graph(graph)}")
        if entry.name == stop_after:
            break
    return graph


def _check_names(names: Sequence[str], entries: list[PassEntry], opt_level: int) -> None:
    known = [e.name for e in PASSES]
    running = [e.name for e in entries]
    for name in names:
        if name not in known:
            raise KilnError(f"unknown pass {name!r}; the passes are: {', '.join(known)}")
        if name not in running:
            raise KilnError(f"pass {name!r} does not run at -O{opt_level}; the passes at "
                            f"-O{opt_level} are: {', '.join(running)}")


def _ops(graph: Graph, op: Op | None = None) -> list[str]:
    """Output names of the top-level nodes applying ``op`` (None: every op but constants)."""
    return [n.outputs[0].name if n.outputs and n.outputs[0] is not None else n.name
            for n in graph.nodes if (n.op is op if op is not None else n.op is not Op.CONSTANT)]


def _row(name: str, seconds: float, before: Graph, after: Graph) -> PassStats:
    layouts_before = set(_ops(before, Op.LAYOUT_TRANSFORM))
    layouts_after = set(_ops(after, Op.LAYOUT_TRANSFORM))
    return PassStats(
        name, seconds, len(_ops(before)), len(_ops(after)), after is not before,
        fused_groups=max(0, len(_ops(after, Op.FUSED)) - len(_ops(before, Op.FUSED))),
        layout_inserted=len(layouts_after - layouts_before),
        layout_removed=len(layouts_before - layouts_after),
    )


def format_stats(rows: Sequence[PassStats]) -> str:
    """The per-pass table printed by ``kiln compile --pass-stats``."""
    header = ("pass", "time (ms)", "ops before", "ops after", "changed", "fused groups",
              "layout +", "layout -")
    lines = [(r.name, f"{r.seconds * 1000:.1f}", str(r.nodes_before), str(r.nodes_after),
              "yes" if r.changed else "no", str(r.fused_groups), str(r.layout_inserted),
              str(r.layout_removed)) for r in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in [header, *lines]
    ) + "\n"
