"""circuitcut: find the parameters of a language model behind a behaviour, and act on them.

The names below are imported on first use (PEP 562), so that ``import circuitcut`` and the command
line's ``--help`` do not pay for torch and transformers.
"""

from __future__ import annotations

from typing import Any

from circuitcut.errors import CircuitcutError, ModelLoadError, UnsupportedModelError

__version__ = "0.1.0"

_FROM_MODELS = ("ModelAdapter", "get_adapter", "load_model", "supported_model_types")

__all__ = [
    "CircuitcutError",
    "ModelAdapter",
    "ModelLoadError",
    "UnsupportedModelError",
    "__version__",
    "get_adapter",
    "load_model",
    "supported_model_types",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_MODELS:
        # deferred heavy import: circuitcut.models imports torch and transformers
        from circuitcut import models

        return getattr(models, name)
    raise AttributeError(f"module 'circuitcut' has no attribute {name!r}")
