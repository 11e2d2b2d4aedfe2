"""Short aliases for the reference models shipped inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: alias -> folder name under ``circuitcut/zoo/models``
ALIASES = {
    "circuitcut/ref-llama": "ref-llama",
    "circuitcut/ref-opt": "ref-opt",
}


def models_dir() -> Path:
    """The folder holding the packaged reference models."""
    return Path(str(resources.files("circuitcut.zoo") / "models"))


def alias_path(name: str) -> Path | None:
    """The packaged folder for a reference-model alias, or ``None`` if ``name`` is not an alias."""
    folder = ALIASES.get(name)
    return None if folder is None else models_dir() / folder
