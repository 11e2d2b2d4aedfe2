"""Run folders: how every verb writes its ``--output`` folder (the one place that decides it).

A run of a verb (``compress``, ``correct``, ``circuit``, ``lasso``, ``demo``, ``zoo train``) writes
into a temporary folder beside its output, ``.NAME.partial-PID-XXXXXXXX``, and only when it has
finished is that folder renamed to ``NAME``, with a :data:`~circuitcut.validation.RUN_RECORD` saying
which verb wrote it. So:

* an interrupted run (Ctrl-C, an error, a full disk during the export) leaves the output as it was
  (absent, empty, or the earlier run), never a half-written folder the next run would refuse;
* an earlier run of the same verb is replaced only when the new one has succeeded;
* a folder holding another verb's run, or files circuitcut did not write, is refused before any
  work (:func:`circuitcut.validation.output_dir`);
* while a run writes, it holds a lock, ``.NAME.lock`` beside the output (an ``flock``, which the
  system releases when the process ends, however it ends): a second run into the same folder is
  refused with the first one's process named, and a lock file left by a dead process is taken over.

Leftovers of runs killed outright (``kill -9``, a power cut) are removed by the next run into the
same folder, under the lock. Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import inspect
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from circuitcut import __version__, validation
from circuitcut.errors import OutputError

P = ParamSpec("P")
R = TypeVar("R")

#: what the temporary folders beside an output are called after the output's name
_LEFTOVER = re.compile(r"\.(partial|replaced)-\d+-[0-9a-f]{8}")


@contextlib.contextmanager
def run_folder(
    output: str | os.PathLike[str] | None, verb: str, name: str = "output"
) -> Iterator[Path | None]:
    """The folder a run of ``verb`` writes into, renamed to ``output`` when the block ends without
    an error (see the module docstring); ``None`` (nothing written) when ``output`` is ``None``.

    ``output`` is checked first (:func:`circuitcut.validation.output_dir`, ``name`` names it in
    messages) and locked for the whole block; on an error or an interruption the temporary folder
    is removed and ``output`` is left as it was.
    """
    if output is None:
        yield None
        return
    validation.output_dir(output, name, verb)
    target = Path(os.path.abspath(Path(output).expanduser()))
    with _locked(output, target, verb, name):
        validation.output_dir(output, name, verb, locked=True)  # again: a run may have ended meanwhile
        _clear_leftovers(target)
        tmp = _sibling(target, "partial")
        try:
            tmp.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create {tmp}: {exc.strerror or exc}; choose another folder") from exc
        try:
            yield tmp
        except BaseException:  # an error or Ctrl-C: the output stays as it was
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            _commit(tmp, target, verb)
        except OSError as exc:
            raise OutputError(
                f"cannot move the finished run into {target}: {exc.strerror or exc}; it is in {tmp}: move "
                "it elsewhere before running into that folder again (the next run removes it)"
            ) from exc


def writes_run(verb: str, param: str = "output") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a workflow whose argument ``param`` is its output folder (or ``None``): the call runs
    inside :func:`run_folder`, the workflow writing into the temporary folder it is given in place of
    ``param``, renamed to the caller's folder when the workflow returns."""

    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:  # a wrong call: let Python say how, before anything runs
                return func(*args, **kwargs)
            with run_folder(bound.arguments.get(param), verb) as out:
                if out is not None:
                    bound.arguments[param] = out
                return func(*bound.args, **bound.kwargs)

        return run

    return wrap


class _Held(Exception):
    """The lock is held by another run (its lock record attached)."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def _locked(output: str | os.PathLike[str], target: Path, verb: str, name: str) -> Iterator[None]:
    """Hold the run lock of ``target`` (refusing a folder another live run holds) for the block."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    lock = validation.lock_path(target)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(lock, fcntl)
    except _Held as held:
        raise validation.busy(output, name, held.holder) from None
    except OSError as exc:
        raise OutputError(f"cannot create {lock}: {exc.strerror or exc}; choose another folder") from exc
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "verb": verb, "started": _now()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode("utf-8"))
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _open_lock(lock: Path, fcntl: Any) -> int:
    """An open descriptor of ``lock`` holding its ``flock``; :class:`_Held` when another run holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = validation.read_lock(fd)  # empty while its holder has not written it yet
            os.close(fd)
            raise _Held(holder) from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the run before us removed this file as we opened it: lock the new one


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _clear_leftovers(target: Path) -> None:
    """Remove the temporary folders of earlier runs into ``target`` that were killed outright (no
    live run owns them: the caller holds the lock)."""
    prefix = f".{target.name}"
    for entry in target.parent.iterdir():
        if entry.name.startswith(prefix) and _LEFTOVER.fullmatch(entry.name[len(prefix) :]):
            shutil.rmtree(entry, ignore_errors=True)


def _commit(tmp: Path, target: Path, verb: str) -> None:
    """Record the verb in ``tmp`` and put it in place of ``target``: a rename; over an earlier run a
    swap of two renames. A folder that cannot be renamed (a mount point, a symbolic link, the working
    folder) is emptied and filled instead."""
    record = {"format": validation.RUN_FORMAT, "verb": verb, "finished": _now(), "circuitcut": _version()}
    (tmp / validation.RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if not target.is_symlink() and not _inside(target):
        try:
            _swap(tmp, target)
            return
        except OSError:
            pass
    _fill(tmp, target)


def _inside(folder: Path) -> bool:
    """Whether the working folder is ``folder`` or inside it (renaming it would strand the process)."""
    try:
        return Path.cwd().is_relative_to(folder)
    except OSError:  # the working folder is gone
        return False


def _swap(tmp: Path, target: Path) -> None:
    old = _sibling(target, "replaced")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fill(tmp: Path, target: Path) -> None:
    """Replace ``target``'s contents by ``tmp``'s, the run record first (so a fill cut short leaves a
    folder the same verb replaces, not one it refuses)."""
    for entry in target.iterdir():
        if entry.name != validation.RUN_RECORD:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    os.replace(tmp / validation.RUN_RECORD, target / validation.RUN_RECORD)
    for entry in tmp.iterdir():
        os.rename(entry, target / entry.name)
    tmp.rmdir()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:

    return __version__
