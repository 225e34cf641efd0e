"""Symbolic dimensions: integer polynomials over named symbols, in one canonical text form.

A symbolic dim of a ``TensorType`` is a string such as ``"batch"``, ``"batch*seq"`` or
``"2*seq+1"``: a sum of terms, each an integer coefficient times a product of symbols (atoms,
identifiers). Rules combine dims only through this module, so equal polynomials are equal
strings and type rules can compare dims with ``==``. ``UNKNOWN`` (``"?"``) is not a polynomial:
an extent known only at run time from tensor values (a NonZero count, a Reshape fed a computed
shape); arithmetic with it gives ``UNKNOWN``.

    >>> mul("batch", 4), add("seq", 1), mul("seq", "batch"), floordiv(mul("b", 6), 3)
    ('4*batch', 'seq+1', 'batch*seq', '2*b')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .types import UNKNOWN, Dim

Monomial = tuple[str, ...]  # sorted atoms, repeated for powers; () is the constant term
Poly = dict[Monomial, int]

_ATOM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TERM = re.compile(r"([+-]?)([^+-]+)")


def is_symbolic(dim: Dim) -> bool:
    """True for a polynomial dim (a str other than UNKNOWN)."""
    return isinstance(dim, str) and dim != UNKNOWN


def atom_name(text: str) -> str:
    """A valid atom for an arbitrary symbol name (an ONNX ``dim_param`` such as ``"batch size"``
    or ``"N/A"``): the name with every other character made ``_``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if _ATOM.fullmatch(name) else f"_{name}"


def poly(dim: Dim) -> Poly | None:
    """The polynomial of ``dim`` (an int is a constant); None for UNKNOWN or text that is not
    a polynomial."""
    if isinstance(dim, int):
        return {(): dim} if dim else {}
    if dim == UNKNOWN or not dim:
        return None
    text = dim.replace(" ", "")
    result: Poly = {}
    position = 0
    for match in _TERM.finditer(text):
        if match.start() != position:
            return None
        position = match.end()
        sign = -1 if match.group(1) == "-" else 1
        coefficient, atoms = sign, []
        for factor in match.group(2).split("*"):
            if factor.isdigit():
                coefficient *= int(factor)
            elif _ATOM.fullmatch(factor):
                atoms.append(factor)
            else:
                return None
        _accumulate(result, tuple(sorted(atoms)), coefficient)
    return result if position == len(text) else None


def dim_of(terms: Poly) -> Dim:
    """The canonical dim of a polynomial: an int when it is constant."""
    terms = {m: c for m, c in terms.items() if c}
    if not terms:
        return 0
    if set(terms) == {()}:
        return terms[()]
    parts: list[str] = []
    for monomial in sorted(terms, key=lambda m: (m == (), -len(m), m)):
        coefficient = terms[monomial]
        body = "*".join(monomial)
        if not monomial:
            text = str(abs(coefficient))
        elif abs(coefficient) == 1:
            text = body
        else:
            text = f"{abs(coefficient)}*{body}"
        sign = "-" if coefficient < 0 else "+"
        parts.append(text if not parts and sign == "+" else sign + text)
    return "".join(parts)


def canonical(dim: Dim) -> Dim:
    """``dim`` in canonical form (a polynomial's text re-printed; an unparsable name made an
    atom)."""
    if isinstance(dim, int) or dim == UNKNOWN:
        return dim
    terms = poly(dim)
    return dim_of(terms) if terms is not None else atom_name(dim)


def add(a: Dim, b: Dim) -> Dim:
    pa, pb = poly(a), poly(b)
    if pa is None or pb is None:
        return UNKNOWN
    result = dict(pa)
    for monomial, coefficient in pb.items():
        _accumulate(result, monomial, coefficient)
    return dim_of(result)


def sub(a: Dim, b: Dim) -> Dim:
    return add(a, mul(b, -1))


def mul(a: Dim, b: Dim) -> Dim:
    pa, pb = poly(a), poly(b)
    if pa is None or pb is None:
        return UNKNOWN
    result: Poly = {}
    for ma, ca in pa.items():
        for mb, cb in pb.items():
            _accumulate(result, tuple(sorted(ma + mb)), ca * cb)
    return dim_of(result)


def product(dims: Iterable[Dim]) -> Dim:
    total: Dim = 1
    for dim in dims:
        total = mul(total, dim)
    return total


def floordiv(a: Dim, b: Dim) -> Dim:
    """``a // b`` where it is a polynomial: b an int dividing every coefficient, or b a
    monomial dividing every term; else UNKNOWN (0 divides nothing)."""
    pa, pb = poly(a), poly(b)
    if pa is None or pb is None or len(pb) != 1:
        return UNKNOWN
    (divisor_atoms, divisor), = pb.items()
    result: Poly = {}
    for monomial, coefficient in pa.items():
        rest = list(monomial)
        for atom in divisor_atoms:
            if atom not in rest:
                return UNKNOWN
            rest.remove(atom)
        if coefficient % divisor:
            return UNKNOWN
        _accumulate(result, tuple(rest), coefficient // divisor)
    return dim_of(result)


def atoms(dim: Dim) -> frozenset[str]:
    """The symbols ``dim`` is a polynomial of (none for ints and UNKNOWN)."""
    terms = poly(dim) if is_symbolic(dim) else None
    return frozenset(a for monomial in terms or {} for a in monomial)


def evaluate(dim: Dim, values: Mapping[str, int]) -> int:
    """The value of ``dim`` with every symbol bound; KeyError names a missing one."""
    terms = poly(dim)
    if terms is None:
        raise ValueError(f"dim {dim!r} has no value: it is known only at run time")
    total = 0
    for monomial, coefficient in terms.items():
        term = coefficient
        for atom in monomial:
            term *= values[atom]
        total += term
    return total


def _accumulate(terms: Poly, monomial: Monomial, coefficient: int) -> None:
    terms[monomial] = terms.get(monomial, 0) + coefficient
    if not terms[monomial]:
        del terms[monomial]


def total(dims: Iterable[Dim]) -> Dim:
    """The sum of dims (UNKNOWN when any is)."""
    result: Dim = 0
    for dim in dims:
        result = add(result, dim)
    return result


def provably_nonnegative(dim: Dim) -> bool:
    """True when ``dim`` is >= 0 for every binding of its symbols to extents >= 1 (the
    convention for input symbols): an int >= 0, or a polynomial whose non-constant terms all
    have positive coefficients (so it grows with every symbol) and whose value with every
    symbol 1 is >= 0. False when unsure (UNKNOWN, ``seq-2``, ``a-b``)."""
    terms = poly(dim)
    if terms is None:
        return False
    if any(c < 0 for monomial, c in terms.items() if monomial):
        return False
    return sum(terms.values()) >= 0


def substitute(dim: Dim, values: Mapping[str, int]) -> Dim:
    """``dim`` with the symbols in ``values`` replaced by their extents (an int once every
    symbol is bound; UNKNOWN stays UNKNOWN)."""
    terms = poly(dim) if is_symbolic(dim) else None
    if terms is None:
        return dim
    result: Dim = 0
    for monomial, coefficient in terms.items():
        term: Dim = coefficient
        for atom in monomial:
            term = mul(term, values.get(atom, atom))
        result = add(result, term)
    return result
