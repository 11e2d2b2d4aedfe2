"""Checks of user input at the door: numbers, lists, data files, record fields, devices, outputs.

One function per kind of argument, used by the command line (as argparse types, through
:mod:`circuitcut.cli.args`) and by the public API functions, so that a bad value is refused the same
way wherever it enters and before any model is loaded or anything computed. Each returns the checked
(normalised) value or raises :class:`~circuitcut.errors.InputError` with one line naming the
argument, the value and the fix.

Only the standard library is imported here (torch only inside :func:`device`), so the command line
can check its arguments at once.
"""

from __future__ import annotations

import codecs
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from circuitcut.errors import InputError

#: what each kind of data file may be
SAMPLE_SUFFIXES = (".jsonl", ".txt")
TASK_SUFFIXES = (".jsonl", ".csv")
#: the task names circuitcut generates (every other task is a file)
GENERATED_TASKS = ("ioi", "greater-than")
#: what a feature-circuit node is: a feature at the explained (last) position, or at every position
FEATURE_NODES = ("last", "all")
PROMPT_SUFFIXES = (".jsonl", ".txt")
#: plain text corpora (calibration, general text, perplexity); "" is a file without a suffix
TEXT_SUFFIXES = (".txt", ".raw", ".text", ".md", "")
#: the file in every run folder that says which verb wrote it (:mod:`circuitcut.run_folder`)
RUN_RECORD = "circuitcut-run.json"
RUN_FORMAT = "circuitcut.run/1"


# numbers ------------------------------------------------------------------------------------------
def _integer(value: Any, name: str, rule: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{name} must be {rule}, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InputError(f"{name} must be {rule}, got {value!r}")


def positive_int(value: Any, name: str) -> int:
    """A whole number >= 1 (counts of samples, steps, sizes)."""
    n = _integer(value, name, "a whole number >= 1")
    if n < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {n}")
    return n


def non_negative_int(value: Any, name: str) -> int:
    """A whole number >= 0 (seeds, counts that may be zero)."""
    n = _integer(value, name, "a whole number >= 0")
    if n < 0:
        raise InputError(f"{name} must be a whole number >= 0, got {n}")
    return n


def optional_positive_int(value: Any, name: str) -> int | None:
    """``None`` (no limit) or a whole number >= 1."""
    return None if value is None else positive_int(value, name)


def fraction(value: Any, name: str, *, zero: bool = False, one: bool = False) -> float:
    """A share between 0 and 1; ``zero`` / ``one`` say whether the ends themselves are allowed."""
    interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in {interval}, got {value!r}") from None
    inside = (x > 0 or (zero and x == 0)) and (x < 1 or (one and x == 1))
    if not inside:  # NaN fails both comparisons
        raise InputError(f"{name} must be a number in {interval}, got {value!r}")
    return x


def positive_float(value: Any, name: str, *, zero: bool = False) -> float:
    """A finite number > 0 (learning rates, penalties), or >= 0 with ``zero``."""
    rule = ">= 0" if zero else "> 0"
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number {rule}, got {value!r}") from None
    if not ((x > 0 or (zero and x == 0)) and math.isfinite(x)):
        raise InputError(f"{name} must be a number {rule}, got {value!r}")
    return x


def non_negative_float(value: Any, name: str) -> float:
    """A finite number >= 0 (bounds, tolerances)."""
    return positive_float(value, name, zero=True)


# lists --------------------------------------------------------------------------------------------
def _items(value: str | Iterable[Any]) -> list[Any]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def int_list(value: str | Iterable[Any], name: str, minimum: int = 1) -> tuple[int, ...]:
    """Whole numbers >= ``minimum``, given as ``"10,20,50"`` or a sequence; at least one."""
    items = _items(value)
    if not items:
        raise InputError(f"{name} is empty; give comma-separated whole numbers such as 10,20,50")
    out = []
    for item in items:
        n = _integer(item, name, f"comma-separated whole numbers >= {minimum} (such as 10,20,50)")
        if n < minimum:
            raise InputError(f"{name} must hold whole numbers >= {minimum}, got {n}")
        out.append(n)
    return tuple(out)


def fraction_list(value: str | Iterable[Any], name: str) -> tuple[float, ...]:
    """Shares in (0, 1], given as ``"1,0.5,0.1"`` or a sequence; at least one."""
    items = _items(value)
    if not items:
        raise InputError(f"{name} is empty; give comma-separated shares in (0, 1] such as 1,0.5,0.1")
    return tuple(fraction(item, name, one=True) for item in items)


def name_list(
    value: str | Iterable[str], name: str, allowed: Sequence[str], *, empty: bool = False
) -> tuple[str, ...]:
    """Names among ``allowed``, given as ``"a,b"`` or a sequence; at least one, unless ``empty``
    allows none (given as ``""`` or ``"none"``)."""
    items = [str(v) for v in _items(value)]
    if empty and items in ([], ["none"]):
        return ()
    if not items:
        raise InputError(f"{name} is empty; give one or more of {', '.join(allowed)}")
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise InputError(f"{name}: unknown {', '.join(map(repr, unknown))}; use {', '.join(allowed)}")
    return tuple(items)


def choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``."""
    if value not in allowed:
        raise InputError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
    return value


# files --------------------------------------------------------------------------------------------
def _formats(suffixes: Sequence[str]) -> str:
    named = [s for s in suffixes if s]
    return " or ".join(named) + (" (or no suffix)" if "" in suffixes else "")


def data_file(path: str | os.PathLike[str], name: str, suffixes: Sequence[str], what: str) -> Path:
    """An existing, readable, non-empty UTF-8 file whose suffix is one of ``suffixes``.

    ``what`` says what the file holds (``"samples"``, ``"task file"``...), for the message. The
    whole file is decoded once, so an encoding error deep inside is found before any work starts.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{name} {str(path)!r}: no such file")
    if p.is_dir():
        raise InputError(f"{name} {str(path)!r} is a folder; pass a {_formats(suffixes)} file")
    if p.suffix.lower() not in suffixes:
        raise InputError(
            f"{name} {str(path)!r}: {what} must be a {_formats(suffixes)} file, not "
            f"{p.suffix or 'a file without a suffix'}; convert it to one of those formats"
        )
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{name} {str(path)!r} is not UTF-8 text (bad byte at offset {offset + exc.start}); "
                        "save it as UTF-8"
                    ) from None
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InputError(
            f"{name} {str(path)!r} is not UTF-8 text (it ends inside a character); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise InputError(
            f"{name} {str(path)!r} cannot be read ({exc.strerror}); check its permissions"
        ) from None
    if offset == 0:
        raise InputError(f"{name} {str(path)!r} is empty")
    return p


def text_source(value: str | os.PathLike[str], name: str) -> str:
    """A plain-text corpus: a file (checked as :func:`data_file` with :data:`TEXT_SUFFIXES`), or a
    corpus name such as ``wikitext2`` or ``hf:PATH:CONFIG:SPLIT`` (passed on; the loader checks it)."""
    text = str(value)
    looks_like_file = os.path.exists(text) or os.sep in text or os.path.splitext(text)[1] != ""
    if text.startswith("hf:") or not looks_like_file:
        return text
    data_file(text, name, TEXT_SUFFIXES, "a text corpus")
    return text


def task_source(value: str | os.PathLike[str], name: str) -> str:
    """A generated task (:data:`GENERATED_TASKS`) or a task file (:data:`TASK_SUFFIXES`, checked as
    :func:`data_file`)."""
    text = str(value)
    if text not in GENERATED_TASKS:
        data_file(text, name, TASK_SUFFIXES, "a task")
    return text


def string_fields(
    record: Mapping[str, Any], required: Sequence[str], optional: Sequence[str] = (), where: str = "record"
) -> None:
    """Fields of a data record that must be text: each of ``required`` present and a string, each of
    ``optional`` absent, ``null`` or a string (``{"text": 123}`` or ``"prompt": null`` are refused
    instead of being turned into the text ``"123"`` or ``"None"``)."""
    for key in required:
        if key not in record:
            raise InputError(f"{where}: missing field {key!r} (has {', '.join(sorted(record)) or 'none'})")
    for key in (*required, *optional):
        value = record.get(key)
        if (key in required or value is not None) and not isinstance(value, str):
            raise InputError(
                f"{where}: field {key!r} must be a string, got {type(value).__name__} ({value!r:.40})"
            )


# devices ------------------------------------------------------------------------------------------
def device(spec: Any, name: str = "device") -> str:
    """A device that exists here (``cpu``, ``cuda``, ``cuda:1``, ``mps``...); as a string."""
    # deferred heavy import: torch is needed only when a device is actually named
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise InputError(f"{name} {spec!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "meta":
        raise InputError(f"{name} {spec!r} holds no data; use cpu, cuda, cuda:N or mps")
    if dev.type != "cpu":
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", lambda: False)()
        if not available:
            build = (
                " (this torch is a CPU-only build)"
                if dev.type == "cuda" and torch.version.cuda is None
                else ""
            )
            raise InputError(
                f"{name} {spec!r}: no {dev.type} device is available{build}; use --device cpu or run "
                f"where a {dev.type} device is present"
            )
        count = getattr(backend, "device_count", lambda: 1)()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"{name} {spec!r}: there are {count} {dev.type} devices (0 to {count - 1})")
    return str(dev)


# outputs ------------------------------------------------------------------------------------------
def safetensors_format(path: str | os.PathLike[str]) -> str | None:
    """The ``format`` entry of a safetensors file's metadata (``None`` if absent or not safetensors);
    reads only the header."""
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size < 100_000_000:
                return None
            header = json.loads(fh.read(size))
    except (OSError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta.get("format") if isinstance(meta, dict) else None


def json_format(path: str | os.PathLike[str]) -> str | None:
    """The ``format`` entry of a JSON file holding an object (``None`` otherwise)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("format") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _writable_parent(p: Path, name: str) -> None:
    """The nearest existing ancestor of ``p`` must be a folder we may write in."""
    parent = p.parent if str(p.parent) else Path(".")
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{name} {str(p)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{name} {str(p)!r}: cannot write in {str(parent)!r} (permission denied)")


def output_pair(path: str | os.PathLike[str], name: str, fmt: str) -> Path:
    """Where a tensors file and its JSON sidecar will be written (``NAME.safetensors`` + ``NAME.json``),
    checked before any work: neither is a folder, the folder is writable, and any file already there is
    one circuitcut wrote in the same format (``fmt``, e.g. ``circuitcut.scores/1``), so a sidecar never
    replaces, say, a model's ``config.json``. Returns the ``.safetensors`` path."""
    p = Path(path).expanduser()
    p = p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")
    side = p.with_suffix(".json")
    for target, read in ((p, safetensors_format), (side, json_format)):
        if target.is_dir():
            raise InputError(f"{name} {str(path)!r}: {str(target)!r} is a folder; give a file path")
        if target.exists() and read(target) != fmt:
            raise InputError(
                f"{name} {str(path)!r}: {str(target)!r} exists and was not written by circuitcut as "
                f"{fmt.split('/')[0]}; choose another path (nothing was overwritten)"
            )
    _writable_parent(p, name)
    return p


def output_file(path: str | os.PathLike[str], name: str, suffix: str, fmt: str | None = None) -> Path:
    """Where one file (and, with ``fmt``, its JSON sidecar of that format) will be written: the suffix
    is ``suffix``, it is not a folder, the folder is writable, and an existing sidecar is circuitcut's."""
    p = Path(path).expanduser()
    if p.suffix != suffix:
        raise InputError(f"{name} {str(path)!r}: give a file path ending in {suffix}")
    if p.is_dir():
        raise InputError(f"{name} {str(path)!r} is a folder; give a file path ending in {suffix}")
    if fmt is not None:
        side = p.with_suffix(".json")
        if side.is_dir() or (side.exists() and json_format(side) != fmt):
            raise InputError(
                f"{name} {str(path)!r}: {str(side)!r} exists and was not written by circuitcut; choose "
                "another path (nothing was overwritten)"
            )
    _writable_parent(p, name)
    return p


def run_verb(folder: str | os.PathLike[str]) -> str | None:
    """The verb recorded in a run folder's :data:`RUN_RECORD` (``None`` if it has none of circuitcut's)."""
    try:
        data = json.loads((Path(folder) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        return None
    return data.get("verb") if isinstance(data.get("verb"), str) else None


def lock_path(folder: str | os.PathLike[str]) -> Path:
    """The lock file of a run folder: ``.NAME.lock`` beside it (the folder itself may not exist yet)."""
    p = Path(os.path.abspath(Path(folder).expanduser()))
    return p.with_name(f".{p.name}.lock")


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the live run writing into ``folder`` recorded in its lock (``pid``, ``verb``, ``host``...),
    or ``None`` when no run holds the lock. The lock is an ``flock`` on :func:`lock_path`, which the
    system releases when its process ends however it ends, so a lock file left by a dead process is
    free. Platforms without ``fcntl`` have no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fd = os.open(lock_path(folder), os.O_RDONLY)
    except OSError:  # no lock file: nobody holds it
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_lock(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_lock(fd: int) -> dict[str, Any]:
    """The record in an open lock file (``{}`` while its holder has not written it yet)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 65536).decode("utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def busy(path: str | os.PathLike[str], name: str, holder: dict[str, Any]) -> InputError:
    """The error for an output folder another run is writing into, naming that run's process."""
    who = f"process {holder['pid']}" if "pid" in holder else "another process"
    if holder.get("host"):
        who += f" on {holder['host']}"
    what = f"a circuitcut {holder['verb']} run" if holder.get("verb") else "another circuitcut run"
    since = f" since {holder['started']}" if holder.get("started") else ""
    return InputError(
        f"{name} {str(path)!r} is being written by {what} ({who}{since}); wait for it to finish or choose "
        "another folder (nothing was overwritten)"
    )


def output_dir(
    path: str | os.PathLike[str], name: str, verb: str | None = None, locked: bool = False
) -> Path:
    """A folder the run of ``verb`` will fill (:mod:`circuitcut.run_folder`): absent, empty, or an
    earlier run of the same verb (its :data:`RUN_RECORD` says so; ``verb=None``: of any verb), and
    no other run writing into it now (``locked``: the caller holds its lock). So a run never mixes
    its files into a model folder, a user's project or another verb's run, and two runs never race
    on one folder."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{name} {str(path)!r} is a file; give a folder (it is created if absent)")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{name} {str(path)!r}: cannot write in this folder (permission denied)")
        if any(p.iterdir()):
            _earlier_run(p, path, name, verb)
    _writable_parent(Path(os.path.abspath(p)), name)  # the run is written beside it, then renamed
    holder = None if locked else lock_holder(p)
    if holder is not None:
        raise busy(path, name, holder)
    return p


def _earlier_run(p: Path, path: str | os.PathLike[str], name: str, verb: str | None) -> None:
    """Refuse a non-empty folder unless it holds an earlier run of ``verb`` (any verb if ``None``)."""
    found = run_verb(p)
    if found is None:
        raise InputError(
            f"{name} {str(path)!r} is a folder with other files in it (no {RUN_RECORD} of an earlier "
            "circuitcut run); give a new or empty folder (nothing was overwritten)"
        )
    if verb is not None and found != verb:
        raise InputError(
            f"{name} {str(path)!r} holds a circuitcut {found} run; {verb} does not write over another "
            f"verb's run: choose another folder (nothing was overwritten)"
        )
