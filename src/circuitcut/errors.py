"""Exceptions raised by circuitcut.

Every error a user can trigger with bad input is a :class:`CircuitcutError` whose message names the
problem and the fix; the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations


class CircuitcutError(Exception):
    """Base class for user-facing errors (bad input, unsupported model, missing files)."""


class UnsupportedModelError(CircuitcutError):
    """The model's architecture has no adapter entry."""


class ModelLoadError(CircuitcutError):
    """A model or tokenizer could not be loaded from the given name or path."""
