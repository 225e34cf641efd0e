"""The tuning cache file: schedules ``kiln tune`` measured, per machine, per kernel signature.

Where: ``$KILN_TUNE_CACHE`` if set, else ``$XDG_CACHE_HOME/kiln/tune.json`` (``XDG_CACHE_HOME``
defaulting to ``~/.cache``); ``kiln tune --cache`` / ``kiln compile --tune-cache`` name another.

Format (JSON, ``version`` = ``FORMAT_VERSION``; another version is ignored with a warning)::

    {"format": "kiln-tune", "version": 1,
     "machines": {
       "<machine key>": {
         "triple": "x86_64-unknown-linux-gnu", "cpu": "znver4", "features": "+avx,...",
         "threads": 2,
         "entries": {
           "<signature>": {"params": {...}, "seconds": 0.0012, "default_seconds": 0.0015,
                           "measured": 7, "candidates": 7,
                           "measured_at": "2025-01-31T12:00:00Z", "kiln": "0.1.0"}}}}}

The machine key (``machine_key``) names the target triple, CPU, a digest of the feature string
(sorted, so equal feature sets give equal keys) and the thread count the measurement ran with: a
schedule that wins on one thread need not win on sixteen, and code for other features is other
code. ``params`` are the fields of the family's schedule dataclass (compiler/lower/schedules),
``seconds`` the best median time, ``default_seconds`` the cost model's; ``measured`` of
``candidates`` tells whether the search finished (an interrupted or budget-limited tune stores
its best so far, and a later tune measures that signature again). Entries written by another
Kiln version are kept in the file but not used: signatures and candidates may have changed.

Robustness: a missing file is an empty cache; a file that is not valid JSON of this format is
ignored with one warning (never an error; the next write replaces it). Writes re-read the file
and merge under an exclusive lock on ``<file>.lock``, then replace the file atomically (temporary
file in the same folder, fsync, rename), so concurrent tunes and interrupted writes never leave
a torn file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only its attributes are read: importing this module must not load LLVM
    from ..codegen.target import Target

FORMAT = "kiln-tune"
FORMAT_VERSION = 1

Warn = Callable[[str], None]


class TuneCacheWarning(UserWarning):
    """The tuning cache file could not be used (it is ignored)."""


def kiln_version() -> str:
    try:
        return importlib.metadata.version("kiln")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_cache_path() -> Path:
    """``$KILN_TUNE_CACHE``, else ``$XDG_CACHE_HOME/kiln/tune.json`` (default ``~/.cache``)."""
    explicit = os.environ.get("KILN_TUNE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "kiln" / "tune.json"


def run_threads(threads: int | None) -> int:
    """The thread count a library runs with: the runtime's default (None, 0) is one thread
    per online CPU."""
    return threads if threads else (os.cpu_count() or 1)


def machine_key(target: Target | str, threads: int | None) -> str:
    """The cache's key for code compiled for ``target`` and run with ``threads`` threads."""
    target = _target(target)
    features = ",".join(sorted(f for f in target.features.split(",") if f))
    digest = hashlib.sha256(features.encode()).hexdigest()[:12]
    return f"{target.triple}/{target.cpu}/threads={run_threads(threads)}/features={digest}"


def _target(target: Target | str) -> Target:
    if isinstance(target, str):
        from ..codegen.target import Target  # loads LLVM: only when given a name

        return Target.parse(target)
    return target


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tuned schedule: its parameters and what measuring it found."""

    params: dict[str, Any]
    seconds: float
    default_seconds: float
    measured: int
    candidates: int
    measured_at: str
    kiln: str

    @property
    def complete(self) -> bool:
        """Every candidate was measured."""
        return self.measured >= self.candidates


def _default_warn(message: str) -> None:
    warnings.warn(message, TuneCacheWarning, stacklevel=3)


class TuneCache:
    """The cache file at ``path`` (default ``default_cache_path()``); read on each query, so
    entries written by another process are seen. ``warn`` receives the one-line reason when
    the file is unusable (default: a ``TuneCacheWarning``)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, warn: Warn | None = None
                 ) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._warn = warn or _default_warn

    def entries(self, target: Target | str, threads: int | None) -> dict[str, Entry]:
        """Usable entries (this Kiln version) for ``target`` run with ``threads``, by
        signature."""
        machine = self._read().get("machines", {}).get(machine_key(target, threads), {})
        found = {}
        for signature, raw in machine.get("entries", {}).items():
            entry = _entry(raw)
            if entry is not None and entry.kiln == kiln_version():
                found[signature] = entry
        return found

    def tuned(self, target: Target | str, threads: int | None) -> dict[str, dict[str, Any]]:
        """``{signature: params}`` for ``Machine.with_tuned`` / ``build(..., tuned=...)``."""
        return {signature: entry.params
                for signature, entry in self.entries(target, threads).items()}

    def record(self, target: Target | str, threads: int | None, signature: str,
               params: Mapping[str, Any], *, seconds: float, default_seconds: float,
               measured: int, candidates: int) -> Entry:
        """Store (replace) the entry of ``signature``; returns it."""
        entry = Entry(dict(params), float(seconds), float(default_seconds), measured, candidates,
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), kiln_version())
        target = _target(target)
        with self._locked():
            data = self._read()
            machines = data.setdefault("machines", {})
            machine = machines.setdefault(machine_key(target, threads), {})
            machine.update(triple=target.triple, cpu=target.cpu, features=target.features,
                           threads=run_threads(threads))
            machine.setdefault("entries", {})[signature] = dataclasses.asdict(entry)
            self._write(data)
        return entry

    def _read(self) -> dict[str, Any]:
        """The file's content, or a fresh empty cache when it is missing or unusable."""
        empty: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "machines": {}}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return empty
        except (OSError, UnicodeDecodeError) as error:
            self._warn(f"cannot read the tuning cache {self.path} ({error}); ignoring it")
            return empty
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            self._warn(f"the tuning cache {self.path} is not valid JSON ({error}); ignoring it")
            return empty
        problem = _format_problem(data)
        if problem:
            self._warn(f"the tuning cache {self.path} {problem}; ignoring it")
            return empty
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, data: Mapping[str, Any]) -> None:
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _format_problem(data: Any) -> str:
    """Why ``data`` is not a tuning cache of this format ('' when it is one)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return "is not a Kiln tuning cache"
    if data.get("version") != FORMAT_VERSION:
        return (f"has format version {data.get('version')!r}, this Kiln reads version "
                f"{FORMAT_VERSION}")
    machines = data.get("machines")
    if not isinstance(machines, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("entries", {}), dict)
            for m in machines.values()):
        return "has a malformed 'machines' table"
    return ""


def _entry(raw: Any) -> Entry | None:
    """The entry stored as ``raw``, or None when it is malformed (then it is skipped)."""
    try:
        params = raw["params"]
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            return None
        return Entry(params, float(raw["seconds"]), float(raw["default_seconds"]),
                     int(raw["measured"]), int(raw["candidates"]), str(raw["measured_at"]),
                     str(raw["kiln"]))
    except (KeyError, TypeError, ValueError):
        return None
