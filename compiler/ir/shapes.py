"""Shape arithmetic shared by the type rules: broadcasting, axes, products over symbolic dims."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import TypeInferenceError
from . import symbolic
from .types import UNKNOWN, Dim


def broadcast(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """Numpy-style multidirectional broadcast. Equal dims unify, 1 gives way to anything, a
    static extent other than 1 wins over symbols (they must be 1 or equal to it at run time),
    and two different symbolic dims give UNKNOWN (which one wins is decided at run time)."""
    rank = max((len(s) for s in shapes), default=0)
    result: list[Dim] = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        result.append(_broadcast_dims(dims, shapes))
    return tuple(result)


def _broadcast_dims(dims: list[Dim], shapes: Sequence[Sequence[Dim]]) -> Dim:
    static = {d for d in dims if isinstance(d, int) and d != 1}
    if len(static) > 1:
        described = " and ".join(f"[{','.join(map(str, s))}]" for s in shapes)
        raise TypeInferenceError(f"shapes {described} do not broadcast")
    if static:
        return static.pop()
    symbols = {d for d in dims if not isinstance(d, int)}
    if not symbols:
        return 1
    if len(symbols) == 1:
        return symbols.pop()
    return UNKNOWN


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Map a possibly negative axis into ``[0, rank)``; raises for one out of range."""
    if not -rank <= axis < rank:
        raise TypeInferenceError(f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def normalize_axes(axes: Iterable[int], rank: int, what: str = "axis") -> tuple[int, ...]:
    found = tuple(normalize_axis(int(a), rank, what) for a in axes)
    if len(set(found)) != len(found):
        raise TypeInferenceError(f"repeated {what} in {list(axes)}")
    return found


def product(dims: Iterable[Dim]) -> Dim:
    """Product of dims: an int when all are static, the symbolic polynomial when they are
    polynomials, UNKNOWN when any is (a static 0 makes it 0 regardless)."""
    dims = list(dims)
    if any(d == 0 for d in dims):
        return 0
    return symbolic.product(dims)


def same_dim(a: Dim, b: Dim) -> bool:
    """True when two dims may be equal at run time (symbols are assumed to fit)."""
    return not (isinstance(a, int) and isinstance(b, int) and a != b)
