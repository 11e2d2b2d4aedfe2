"""Safe file output: atomic writes of safetensors, JSON and text (temporary file, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from circuitcut.errors import CircuitcutError, MismatchError, OutputError
from circuitcut.validation import output_pair


def _atomic(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; choose another place") from exc
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (OSError, SafetensorError)):  # a full disk, a folder in the way: one line
            reason = getattr(exc, "strerror", None) or str(exc)
            raise OutputError(f"cannot write {path}: {reason}; nothing was replaced") from exc
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=_json_default)
            fh.write("\n")

    return _atomic(path, write)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return _atomic(path, write)


def write_tensors(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write tensors as safetensors atomically (contiguous CPU copies)."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _atomic(path, lambda tmp: save_file(data, tmp, metadata=metadata))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, from one read of its bytes.

    One read, not ``safe_open``: safetensors' torch backend maps the tensor data by reopening the
    file by name, so a save that replaces the file between the header and the data would mix two
    saves. Holding the bytes once makes header and data one version.
    """
    if not path.is_file():
        raise CircuitcutError(f"no such file: {path}")
    data = path.read_bytes()
    try:
        # safetensors layout: 8-byte little-endian header length, then the JSON header
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CircuitcutError(f"{path} is not a valid safetensors file ({exc}); write it again") from exc
    meta = (header.get("__metadata__") or {}) if isinstance(header, dict) else {}
    return tensors, meta


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle)."""
    return _read_safetensors(Path(path))[0]


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file with a clear error when it is missing or malformed."""
    try:
        return json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise CircuitcutError(f"{path} is not valid JSON: {exc}") from exc


def read_text_file(path: str | os.PathLike[str], what: str = "file") -> str:
    """A UTF-8 text file's contents, with a one-line error when it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise CircuitcutError(f"no such {what}: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CircuitcutError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from exc


def read_jsonl(path: str | os.PathLike[str], what: str = "JSONL file") -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each line of a JSONL file (blank lines skipped); one-line errors
    naming the line for invalid JSON or a line that is not an object."""
    records = []
    for lineno, line in enumerate(read_text_file(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CircuitcutError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise CircuitcutError(
                f"{path}:{lineno}: each line must be a JSON object, got {type(record).__name__}"
            )
        records.append((lineno, record))
    return records


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# tensors with a JSON sidecar, as one unit ------------------------------------------------------------
def write_pair(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], sidecar: dict[str, Any],
               fmt: str) -> Path:  # fmt: skip
    """Write ``NAME.safetensors`` and its JSON sidecar ``NAME.json`` as one unit; returns the first.

    The sidecar gets ``format`` and a fresh ``id``; the tensors file's metadata holds the format and
    the SHA-256 of the sidecar's exact bytes, so :func:`read_pair` refuses a tensors file and a
    sidecar from different saves (two writers racing on one path, a save cut short by a full disk)
    or a sidecar edited since. Each file is written atomically, tensors first. Files already at
    either path must be circuitcut's of the same format (:func:`circuitcut.validation.output_pair`):
    nothing else is replaced.
    """
    path = output_pair(path, "output", fmt)
    text = json.dumps({"format": fmt, "id": uuid.uuid4().hex, **sidecar}, indent=2, default=_json_default)
    raw = (text + "\n").encode("utf-8")
    meta = {"format": fmt, "sidecar_sha256": hashlib.sha256(raw).hexdigest()}
    write_tensors(path, tensors, metadata=meta)
    _atomic(path.with_suffix(".json"), lambda tmp: Path(tmp).write_bytes(raw))
    return path


def read_pair(path: str | os.PathLike[str], fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, sidecar)`` written together by :func:`write_pair`; a :class:`MismatchError` when the
    two files are not one save or not of format ``fmt``."""
    path = Path(path)
    side_path = path.with_suffix(".json")
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != fmt:
        raise MismatchError(f"{path} is not a {fmt} file (its format is {meta.get('format')!r})")
    if "sidecar_sha256" not in meta:
        raise MismatchError(
            f"{path} was written without its sidecar's checksum (an older circuitcut); write it again"
        )
    try:
        raw = side_path.read_bytes()
    except FileNotFoundError:
        raise CircuitcutError(f"{side_path} is missing: {path} is read with its JSON sidecar") from None
    if hashlib.sha256(raw).hexdigest() != meta["sidecar_sha256"]:
        raise MismatchError(
            f"{path} and {side_path} are not from the same save (another save to the same path "
            "meanwhile, a save cut short, or an edited sidecar); save again"
        )
    return tensors, json.loads(raw)
