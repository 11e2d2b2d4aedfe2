"""Circuit discovery: sweeps over sparsity and extracted circuits.

The configuration (:mod:`circuitcut.circuits.config`) is plain data; the sweep and the circuit are
imported on first use (PEP 562), so reading the settings does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from circuitcut.circuits.config import DEFAULT_KEEP, SweepConfig

# the sweep function keeps the name of its module: import it as ``circuitcut.circuits.sweep.sweep``
_WHERE = {"Circuit": "circuit", "extract_circuit": "circuit", "SweepResult": "sweep"}

__all__ = ["DEFAULT_KEEP", "SweepConfig", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"circuitcut.circuits.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'circuitcut.circuits' has no attribute {name!r}")
