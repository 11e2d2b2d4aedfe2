"""Model adapters (where the parts of a causal LM live) and loading."""

from circuitcut.models.adapter import (
    ComponentSlice,
    LayerInfo,
    LinearInfo,
    ModelAdapter,
    get_adapter,
)
from circuitcut.models.loading import as_loaded, load_config, load_model, resolve_dtype, resolve_model_path
from circuitcut.models.specs import SPECS, ArchSpec, supported_model_types

__all__ = [
    "SPECS",
    "ArchSpec",
    "ComponentSlice",
    "LayerInfo",
    "LinearInfo",
    "ModelAdapter",
    "as_loaded",
    "get_adapter",
    "load_config",
    "load_model",
    "resolve_dtype",
    "resolve_model_path",
    "supported_model_types",
]
