"""What the benchmarks share: their options (model, torch threads, IOI splits, where results go), model
loading, the exact command, the results JSON and Markdown, and timings and memory peaks taken in one
process.

Every script here runs as ``python benchmarks/NAME.py``, so its folder is first on ``sys.path`` and
this module is imported as ``common``. A script builds its parser with :func:`parser` (which adds
``--threads``), adds the option groups it needs (:func:`add_model`, :func:`add_models`,
:func:`add_ioi`, :func:`add_results`) and parses with :func:`parse`, which pins the torch threads.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE_MODELS = ("circuitcut/ref-llama", "circuitcut/ref-opt")
MODEL_HELP = "model: folder, .gguf file, alias or hub id"


# -- options ------------------------------------------------------------------------------------------
def parser(doc: str | None, threads: int | None = 1) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring, with ``--threads`` (torch threads, pinned by
    :func:`parse`) unless ``threads`` is None."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if threads is not None:
        p.add_argument("--threads", type=int, default=threads, help=f"torch threads (default {threads})")
    return p


def add_model(
    p: argparse.ArgumentParser, default: str | None = REFERENCE_MODELS[0], text: str = MODEL_HELP
) -> None:
    """``--model``: one model."""
    p.add_argument("--model", default=default, help=f"{text} (default {default})")


def add_models(p: argparse.ArgumentParser, default: Sequence[str] = REFERENCE_MODELS) -> None:
    """``--model`` / ``--models``: one or more models, repeated or listed (read them with :func:`models`)."""
    p.add_argument("--model", "--models", dest="models", action="extend", nargs="+", default=None,
                   metavar="MODEL", help=f"{MODEL_HELP}; repeat or list several (default {' '.join(default)})")  # fmt: skip
    p.set_defaults(default_models=tuple(default))


def models(args: argparse.Namespace) -> list[str]:
    """The models of :func:`add_models`: those given, else the default."""
    return list(args.models or args.default_models)


def add_ioi(
    p: argparse.ArgumentParser,
    *,
    seeds: int = 1,
    n_ref: int = 64,
    n_attribution: int = 128,
    n_eval: int = 200,
) -> None:
    """The IOI task options: lists, reference sets and split sizes (see :func:`ioi_splits`)."""
    p.add_argument(
        "--ioi-lists", default=None, help="IOI name/template lists (ACDC layout); default: the zoo's"
    )
    p.add_argument("--seeds", type=int, default=seeds, help=f"reference sets per method (default {seeds})")
    p.add_argument("--n-ref", type=int, default=n_ref, help=f"prompts per reference set (default {n_ref})")
    p.add_argument("--n-attribution", type=int, default=n_attribution,
                   help=f"attribution split (default {n_attribution})")  # fmt: skip
    p.add_argument(
        "--n-eval", type=int, default=n_eval, help=f"held-out evaluation prompts (default {n_eval})"
    )


def add_results(p: argparse.ArgumentParser, tag: str | None = None, text: str = "results file name", *,
                with_tag: bool = True) -> None:  # fmt: skip
    """``--results-dir`` (where results go) and, ``with_tag``, ``--tag`` (their name)."""
    if with_tag:
        p.add_argument("--tag", default=tag, help=f"{text} (default {tag or 'the model name'})")
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="where results go (default benchmarks/results)"
    )


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line and pin torch to ``--threads`` threads."""
    args = p.parse_args(argv)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    return args


def command() -> str:
    """The exact command that runs this benchmark, as the results record it."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *map(shlex.quote, sys.argv[1:])])


def tag_of(args: argparse.Namespace, model: str) -> str:
    """``--tag``, or the model's folder name."""
    return args.tag or Path(model).name


# -- models and tasks ---------------------------------------------------------------------------------
class Loaded(NamedTuple):
    """A loaded model: the module, its tokenizer, its adapter and its encoder."""

    model: Any
    tokenizer: Any
    adapter: Any
    encoder: Any


def load(name: str) -> Loaded:
    """Load a model (no progress bar) with its tokenizer, adapter and encoder."""
    from circuitcut.encoding import as_encoder
    from circuitcut.models import load_model

    model, tok, adapter = load_model(name, progress=False)
    return Loaded(model, tok, adapter, as_encoder(tok, model))


def ioi_splits(enc: Any, args: argparse.Namespace, n_attribution: int | None = None,
               n_eval: int | None = None) -> tuple[Any, Any]:  # fmt: skip
    """IOI attribution and held-out evaluation splits (from ``--ioi-lists`` when given)."""
    return task_splits_of(enc, args, "ioi", n_attribution, n_eval)


def task_splits_of(enc: Any, args: argparse.Namespace, task: str, n_attribution: int | None = None,
                   n_eval: int | None = None) -> tuple[Any, Any]:  # fmt: skip
    """A generated task's attribution and held-out evaluation splits (:func:`add_ioi`'s sizes; IOI
    from ``--ioi-lists`` when given, which another task refuses)."""
    from circuitcut.tasks import task_splits

    return task_splits(task, enc, n_attribution or args.n_attribution, n_eval or args.n_eval,
                       ioi_lists=args.ioi_lists)  # fmt: skip


def scoring_of(methods: Sequence[str], **fields: Any) -> dict[str, Any]:
    """A workflow config's ``scoring`` and ``baselines`` from a list of methods: the first method's
    scoring (``fields`` on top of the workflows' batch of 16) and the others as its baselines."""
    from circuitcut.attribution.config import ScoringConfig

    scoring = ScoringConfig(method=methods[0], **{"batch_size": 16, **fields})
    return {"scoring": scoring, "baselines": tuple(methods[1:])}


# -- results ------------------------------------------------------------------------------------------
def write_results(args: argparse.Namespace, stem: str, payload: Any, markdown: str | None = None) -> Path:
    """Write ``STEM.json`` (and ``STEM.md``) under ``--results-dir``; returns the JSON's path."""
    from circuitcut.io import write_json, write_text

    folder = Path(args.results_dir)
    path = write_json(folder / f"{stem}.json", payload)
    if markdown is not None:
        write_text(folder / f"{stem}.md", markdown)
    return path


# -- timing and memory --------------------------------------------------------------------------------
class Timed(NamedTuple):
    """One timed call: its wall time and what it returned."""

    seconds: float
    value: Any


def timed(fn: Callable[[], Any]) -> Timed:
    """Call ``fn`` once, timed."""
    start = time.perf_counter()
    value = fn()
    return Timed(time.perf_counter() - start, value)


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``."""
    return statistics.median(timed(fn).seconds for _ in range(repeats))


def interleaved(runs: Mapping[str, Callable[[], Any]], repeats: int, *, warmup: bool = False,
                alternate: bool = False) -> dict[str, list[Timed]]:  # fmt: skip
    """Every run once per round, ``repeats`` rounds in one process, so that load on the machine
    falls on all of them alike (``alternate``: every other round in reverse order; ``warmup``: one
    untimed round first)."""
    if warmup:
        for fn in runs.values():
            fn()
    out: dict[str, list[Timed]] = {name: [] for name in runs}
    for r in range(repeats):
        order = list(runs)[::-1] if alternate and r % 2 else list(runs)
        for name in order:
            out[name].append(timed(runs[name]))
    return out


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a / b (paired timings of one process)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def peak_memory(fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run ``fn`` with the kernel's peak-RSS mark reset first: what it returned, and the resident
    memory before, the peak, the peak added and the seconds."""
    from circuitcut.attribution.memory import current_rss_mib, peak_rss_mib, reset_peak_rss

    reset_peak_rss()
    before = current_rss_mib()
    run = timed(fn)
    peak = peak_rss_mib()
    return run.value, {
        "before_mib": before,
        "peak_mib": peak,
        "added_mib": peak - before,
        "seconds": run.seconds,
    }


def child_json(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> Any:
    """Run a command (a fresh process) and read the JSON of its last output line."""
    res = subprocess.run(list(cmd), capture_output=True, text=True, env=None if env is None else dict(env),
                         check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])
