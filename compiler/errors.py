"""The exceptions Kiln raises: one base class, one subclass per kind of failure.

Every message names what failed (the op, the node, the value) so that a user can find the
offending part of their model without a debugger.
"""

from __future__ import annotations


class KilnError(Exception):
    """Base class of every error Kiln raises on purpose."""


class ModelFormatError(KilnError):
    """The input file or proto is corrupt, truncated or structurally invalid."""


class UnsupportedOpError(KilnError):
    """One or more ops of the model have no Kiln definition."""


class TypeInferenceError(KilnError):
    """An op's inputs or attributes do not fit its type rule."""


class VerificationError(KilnError):
    """A graph breaks an IR invariant (SSA, ordering, types, attributes)."""


class ParseError(KilnError):
    """The IR text form could not be parsed."""


class ExecutionError(KilnError):
    """Running a graph failed (wrong inputs, or an op failed on its data)."""
