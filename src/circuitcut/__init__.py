"""circuitcut: find the parameters of a language model behind a behaviour, and act on them."""

from circuitcut.errors import CircuitcutError, ModelLoadError, UnsupportedModelError
from circuitcut.models import ModelAdapter, get_adapter, load_model, supported_model_types

__version__ = "0.1.0"

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
