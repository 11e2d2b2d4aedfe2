"""Converting a model (a GGUF file, a hub id, a folder) into an ordinary safetensors folder."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from circuitcut import __version__
from circuitcut.errors import InputError, OutputError
from circuitcut.io import write_json
from circuitcut.models.loading import load_model
from circuitcut.models.options import ModelOptions

#: the file a converted folder records its source in
SOURCE_FILE = "circuitcut-source.json"

log = logging.getLogger(__name__)


def check_convert_output(output: str | os.PathLike[str], name: str = "output") -> Path:
    """The folder a conversion will create: absent or empty (a converted model is never written over
    or into another folder's files), with a parent that can be written."""
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{name} {str(output)!r} is a file; give a new folder for the converted model")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(
            f"{name} {str(output)!r} is a folder with files in it; give a new or empty folder for the "
            "converted model, or remove that one first (nothing was overwritten)"
        )
    parent = out.parent if out.parent != Path("") else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"{name} {str(output)!r}: cannot create a folder in {str(parent)!r} (permission denied)"
        )
    return out


def convert(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ModelOptions | None = None,
    progress: bool = True,
    source: dict[str, Any] | None = None,
) -> Path:
    """Load ``model`` and write it as a ``save_pretrained`` folder: ``model.safetensors``, config,
    generation config, the tokenizer, and ``circuitcut-source.json`` recording where it came from.

    A ``.gguf`` file is dequantized to ``options.dtype`` (float32 by default; needs the ``gguf``
    package), so the folder holds plain float weights that any transformers release reads, with no
    GGUF package or quantizer. The folder is written under a temporary name beside ``output`` and
    renamed when complete: an interrupted conversion leaves no half-written ``output``.

    Args:
        model: a ``.gguf`` file (or a folder holding one), a model folder, an alias or a hub id.
        output: the folder to create; it must be absent or empty.
        options: how the model is loaded (revision, dtype, device, allow_pickle, trust_remote_code).
        progress: show transformers' loading bars.
        source: extra facts to record in ``circuitcut-source.json`` (e.g. a download's checksum).

    Returns:
        The written folder.
    """
    opts = options or ModelOptions()
    out = check_convert_output(output)  # before loading: a refused output costs nothing
    loaded, tokenizer, _ = load_model(model, opts, progress=progress)
    if tokenizer is None:
        log.warning("%s has no tokenizer; %s gets the model only", model, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.converting-", dir=out.parent))
    try:
        loaded.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        loading = {k: v for k, v in opts.as_dict().items() if k != "special_tokens"}  # not a loading fact
        record = {"source": str(model), **loading, "circuitcut": __version__, **(source or {})}
        write_json(staging / SOURCE_FILE, record)
        if out.is_dir():  # checked empty above; a folder that filled meanwhile is not replaced
            out.rmdir()
        staging.rename(out)
    except OSError as exc:
        raise OutputError(
            f"cannot write the converted model to {str(out)!r} ({exc}); check the space and permissions "
            "there or pick another folder (nothing was left there)"
        ) from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
