"""The dense perplexity of a (model, evaluation text, protocol), cached by content hash.

A compression run measures the unpruned model's perplexity before it prunes, and every run of the
same model on the same text measured the same number again. The key hashes

- the model: its config (without the fields naming where it came from) and the bytes, names, dtypes
  and shapes of every tensor of its state dict, and the device type it runs on;
- the evaluation token ids (the encoded corpus, so the tokenizer and its encoding are in it);
- the protocol: window length, window limit, the prefix starting every window, and
  :data:`PROTOCOL`, the version of the computation.

The record is JSON under ``$CIRCUITCUT_CACHE/perplexity/`` (default ``~/.cache/circuitcut``, as
``scripts/real_models.py`` names it), written atomically; ``CIRCUITCUT_PERPLEXITY_CACHE=0`` turns
the cache off. A record that cannot be read, or whose key does not match, is measured again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from circuitcut.errors import OutputError
from circuitcut.evaluation.perplexity import PerplexityResult, perplexity_of_ids
from circuitcut.io import write_json
from circuitcut.models.adapter import input_device

#: the version of the perplexity computation; changing it invalidates every cached record
PROTOCOL = "perplexity-v1"

#: config fields that say where a model came from, not what it computes
_PROVENANCE_FIELDS = ("_name_or_path", "transformers_version", "_commit_hash")

#: the environment variable naming the cache folder
CACHE_ENV = "CIRCUITCUT_CACHE"

#: the environment variable that turns the cache off ("0", "off", "false", "no")
DISABLE_ENV = "CIRCUITCUT_PERPLEXITY_CACHE"


def cache_dir() -> Path:
    """``$CIRCUITCUT_CACHE``, else ``~/.cache/circuitcut``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "circuitcut")


def cache_enabled() -> bool:
    """False when ``CIRCUITCUT_PERPLEXITY_CACHE`` is 0 / off / false / no."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's config and of every tensor of its state dict (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    fields = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    fields = {k: v for k, v in fields.items() if k not in _PROVENANCE_FIELDS}
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    h.update(type(model).__name__.encode())
    h.update(input_device(model).type.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.device.type == "meta":  # offloaded: no bytes here, the name and shape stand in
            continue
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def perplexity_key(
    fingerprint: str,
    ids: torch.Tensor | Sequence[int],
    seqlen: int,
    max_windows: int | None,
    prefix: Sequence[int] = (),
) -> str:
    """The cache key of a model fingerprint, a token stream and the protocol."""
    stream = torch.as_tensor(ids, dtype=torch.long).flatten()
    h = hashlib.sha256()
    h.update(json.dumps([PROTOCOL, fingerprint, seqlen, max_windows, [int(t) for t in prefix]]).encode())
    h.update(stream.numpy().tobytes())
    return h.hexdigest()


def _read(path: Path, key: str) -> PerplexityResult | None:
    """The cached result at ``path`` if it is there, readable and made for ``key``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") != key:
            return None
        return PerplexityResult(**record["result"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def cached_perplexity(
    model: torch.nn.Module,
    ids: torch.Tensor | Sequence[int],
    seqlen: int,
    batch_size: int = 8,
    max_windows: int | None = None,
    progress: bool = True,
    prefix: Sequence[int] = (),
    cache: str | os.PathLike[str] | None = None,
) -> tuple[PerplexityResult, Path | None]:
    """:func:`~circuitcut.evaluation.perplexity_of_ids`, read from the cache when this model, stream
    and protocol were measured before, else measured and stored.

    Returns the result and the cache file it was read from (``None`` when it was measured). The
    batch size is not in the key: it changes the value only by float rounding. ``cache``: the cache
    folder (default :func:`cache_dir`); with the cache off (``CIRCUITCUT_PERPLEXITY_CACHE=0``) this is
    a plain measurement.
    """
    if not cache_enabled():
        return perplexity_of_ids(model, ids, seqlen, batch_size, max_windows, progress, prefix), None
    fingerprint = model_fingerprint(model)
    key = perplexity_key(fingerprint, ids, seqlen, max_windows, prefix)
    path = Path(cache or cache_dir()) / "perplexity" / f"{key}.json"
    hit = _read(path, key)
    if hit is not None:
        return hit, path
    result = perplexity_of_ids(model, ids, seqlen, batch_size, max_windows, progress, prefix)
    record: dict[str, Any] = {
        "key": key,
        "protocol": PROTOCOL,
        "model": fingerprint,
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "seqlen": seqlen,
        "max_windows": max_windows,
        "prefix": [int(t) for t in prefix],
        "result": result.as_dict(),
    }
    try:
        write_json(path, record)
    except OutputError as exc:  # a read-only home: the run goes on, measured
        warnings.warn(f"{exc} (the perplexity cache: set {CACHE_ENV} to a writable folder, or "
                      f"{DISABLE_ENV}=0)", stacklevel=2)  # fmt: skip
    return result, None
