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


class InputError(CircuitcutError):
    """An argument, data file or output path that cannot be used as given (its value, kind,
    encoding or place); the message names the argument, the value and the fix."""


class OutputError(CircuitcutError):
    """An output that cannot be written (no space, no permission); nothing was replaced."""


class MismatchError(CircuitcutError):
    """Files or results that do not belong together: a tensors file and a sidecar from different
    saves, or scores and masks made for another model."""
