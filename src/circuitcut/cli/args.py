"""Argument types of the command line: :mod:`circuitcut.validation`'s checks as argparse ``type=``
functions, and a parser that reports a bad argument in one line.

argparse calls a ``type=`` function on the option's text while parsing, so a bad number, list, file
or output path is refused before the verb runs (no model loaded, nothing written). The checks are the
same functions the Python API calls; only the wrapping into argparse's error type lives here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from circuitcut import validation
from circuitcut.errors import InputError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit code 2), naming the fix: the usage
    block argparse prints by default is replaced by a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit with code 2."""
        message = " ".join(message.split())  # argparse may wrap long messages over lines
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """Exit after writing ``message`` to stderr (as argparse does)."""
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def _argparse_type(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[str], Any]:
    """``check(text, "value", *args, **kwargs)`` as an argparse type (argparse names the option)."""

    def convert(text: str) -> Any:
        try:
            return check(text, "value", *args, **kwargs)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__  # argparse names the type in some messages
    return convert


positive_int = _argparse_type(validation.positive_int)
non_negative_int = _argparse_type(validation.non_negative_int)
positive_float = _argparse_type(validation.positive_float)
non_negative_float = _argparse_type(validation.non_negative_float)


def fraction(*, zero: bool = False, one: bool = False) -> Callable[[str], float]:
    """A share in (0, 1), with 0 and/or 1 allowed when asked."""
    return _argparse_type(validation.fraction, zero=zero, one=one)


def int_list(minimum: int = 1) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated whole numbers >= ``minimum``."""
    return _argparse_type(validation.int_list, minimum)


fraction_list = _argparse_type(validation.fraction_list)


def name_list(allowed: Sequence[str], *, empty: bool = False) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated names among ``allowed`` (``none`` for no name, with ``empty``)."""
    return _argparse_type(validation.name_list, allowed, empty=empty)


def data_file(suffixes: Sequence[str], what: str) -> Callable[[str], str]:
    """An existing UTF-8 file of one of ``suffixes`` (the path comes back as given)."""
    check = _argparse_type(validation.data_file, suffixes, what)
    return lambda text: str(check(text))


text_source = _argparse_type(validation.text_source)
task_source = _argparse_type(validation.task_source)


def output_dir(verb: str | None = None) -> Callable[[str], str]:
    """A run folder to fill: absent, empty, or an earlier run of ``verb`` (``None``: the verb's
    workflow checks which), and no other run writing into it."""
    check = _argparse_type(validation.output_dir, verb)
    return lambda text: str(check(text))


def output_file(suffix: str, fmt: str | None = None) -> Callable[[str], str]:
    """A file path ending in ``suffix`` whose folder is writable; with ``fmt``, an existing JSON
    sidecar beside it must be circuitcut's of that format."""
    check = _argparse_type(validation.output_file, suffix, fmt)
    return lambda text: str(check(text))


def device(text: str) -> str:
    """A device that exists here (imports torch, so only when the option is given)."""
    return _argparse_type(validation.device)(text)
