"""Safe file output: atomic writes of safetensors, JSON and text (temporary file, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from circuitcut.errors import CircuitcutError


def _atomic(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never a pickle)."""
    path = Path(path)
    if not path.is_file():
        raise CircuitcutError(f"no such file: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CircuitcutError(f"{path} is not a valid safetensors file: {exc}") from exc


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
