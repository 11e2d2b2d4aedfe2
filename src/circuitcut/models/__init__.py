"""Model adapters (where the parts of a causal LM live), loading options, loading and conversion.

The names below are imported on first use (PEP 562): :class:`ModelOptions` is torch-free, so the
command line builds and checks it without importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circuitcut.models.adapter import ComponentSlice, LayerInfo, LinearInfo, ModelAdapter, get_adapter
    from circuitcut.models.conversion import convert
    from circuitcut.models.loading import (
        as_loaded,
        load_config,
        load_model,
        resolve_dtype,
        resolve_model_path,
    )
    from circuitcut.models.options import DTYPES, ModelOptions
    from circuitcut.models.specs import SPECS, ArchSpec, supported_model_types

#: exported name -> the submodule that defines it
_HOMES = {
    "ComponentSlice": "adapter",
    "LayerInfo": "adapter",
    "LinearInfo": "adapter",
    "ModelAdapter": "adapter",
    "get_adapter": "adapter",
    "convert": "conversion",
    "as_loaded": "loading",
    "load_config": "loading",
    "load_model": "loading",
    "resolve_dtype": "loading",
    "resolve_model_path": "loading",
    "DTYPES": "options",
    "ModelOptions": "options",
    "SPECS": "specs",
    "ArchSpec": "specs",
    "supported_model_types": "specs",
}

__all__ = [
    "DTYPES",
    "SPECS",
    "ArchSpec",
    "ComponentSlice",
    "LayerInfo",
    "LinearInfo",
    "ModelAdapter",
    "ModelOptions",
    "as_loaded",
    "convert",
    "get_adapter",
    "load_config",
    "load_model",
    "resolve_dtype",
    "resolve_model_path",
    "supported_model_types",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(f"circuitcut.models.{_HOMES[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'circuitcut.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
