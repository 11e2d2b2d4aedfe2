"""Indirect object identification, generated from templates, and task files.

Templates are full sentences with fields ``[A]`` and ``[B]`` (the two names, in first-mention
order), ``[S]`` (the subject, repeated) and ``[IO]`` (the indirect object, the answer), plus
``[PLACE]`` and ``[OBJECT]``. Both conventions are read:

* circuitcut's: ``When [A] and [B] went to the [PLACE] , [S] gave a [OBJECT] to [IO] .``; the
  generator draws the order (ABBA: S = B, IO = A; BABA: S = A, IO = B);
* the ACDC lists' BABA/ABBA templates, where ``[B]`` is the subject and ``[A]`` the answer.

The prompt is the sentence up to the answer; the answer is the IO name, the contrast the subject.
Names are kept only if they are one token after a prompt for the model's tokenizer.
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections.abc import Sequence
from typing import Any

from circuitcut import validation
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.io import read_json, read_jsonl, read_text_file
from circuitcut.tasks.base import Example, Task, examples_from_records
from circuitcut.zoo import language as zl

FIELDS = ("A", "B", "S", "IO", "PLACE", "OBJECT")
_FIELD = re.compile(r"\[([A-Z]+)\]")


def _check_template(t: str) -> None:
    unknown = sorted({f for f in _FIELD.findall(t) if f not in FIELDS})
    if unknown:
        raise CircuitcutError(
            f"unknown template field(s) {', '.join('[' + f + ']' for f in unknown)} in {t!r}; "
            f"use {', '.join('[' + f + ']' for f in FIELDS)}"
        )
    last = _FIELD.findall(t)[-1:] or [None]
    if last[0] not in ("IO", "A"):
        raise CircuitcutError(
            f"template {t!r} must end with the answer field [IO] (or [A] in the ACDC convention)"
        )


def single_token_names(
    tokenizer: Any, names: Sequence[str], probe: str = "Then , Mary gave it to"
) -> list[str]:
    """The names that are one known token after a prompt for this tokenizer (with the leading space
    of running text, see :meth:`circuitcut.encoding.Encoder.continuation`)."""
    enc = as_encoder(tokenizer)
    keep = []
    for name in names:
        try:
            enc.token(probe, name, "name")
        except CircuitcutError:
            continue
        keep.append(name)
    return keep


def ioi_task(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    names: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    places: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
    min_names: int = 10,
) -> Task:
    """Generate ``n`` IOI examples (half ABBA, half BABA), deterministic for a seed.

    Defaults are circuitcut's own lists (:mod:`circuitcut.zoo.language`): the reference models'
    training templates. Pass other lists (e.g. loaded with :func:`load_ioi_lists`) for other models.
    """

    names = list(names or zl.NAMES)
    templates = list(
        templates or [t for i, t in enumerate(zl.IOI_TEMPLATES) if i not in zl.HELDOUT_TEMPLATES]
    )
    places = list(places or zl.PLACES)
    objects = list(objects or zl.OBJECTS)
    if n < 1:
        raise CircuitcutError(f"n must be >= 1, got {n}")
    for t in templates:
        _check_template(t)
    usable = single_token_names(tokenizer, names)
    if len(usable) < min_names:
        raise CircuitcutError(
            f"only {len(usable)} of {len(names)} names are a single token for this tokenizer "
            f"(need at least {min_names}); pass a name list that suits the model"
        )
    rng = random.Random(f"ioi-{seed}")
    abc = random.Random(
        f"ioi-abc-{seed}"
    )  # the counterfactuals' own draw: the clean prompts stay as they were
    examples = []
    for i in range(n):
        t = rng.choice(templates)
        a, b = rng.sample(usable, 2)
        fields = {"PLACE": rng.choice(places), "OBJECT": rng.choice(objects)}
        order = "ABBA" if i % 2 == 0 else "BABA"
        if "[IO]" in t or "[S]" in t:
            s, io = (b, a) if order == "ABBA" else (a, b)
            fields.update(A=a, B=b, S=s, IO=io)
        else:  # ACDC convention: [A] is the answer, [B] the subject; the template fixes the order
            fields.update(A=a, B=b)
            io, s = a, b
            order = "ACDC"
        text = _FIELD.sub(lambda m, f=fields: f[m.group(1)], t)
        cut = _FIELD.sub(lambda m, f=fields: f[m.group(1)], t[: t.rindex("[")]).rstrip()
        corrupt = _abc(t[: t.rindex("[")], fields, [x for x in usable if x not in (a, b)], abc)
        meta = {"order": order, "template": t, "sentence": text}
        examples.append(Example(cut, io, s, meta=meta, corrupt=corrupt))
    dropped = [x for x in names if x not in usable]
    meta = {"seed": seed, "names": len(usable), "dropped_names": dropped, "templates": len(templates)}
    return Task("ioi", examples, "logit_diff", meta)


def _abc(template: str, fields: dict[str, str], others: list[str], rng: random.Random) -> str:
    """The ABC counterfactual of a cut IOI template: every name slot (each mention of the indirect
    object and of the subject) takes its own name, none of them the clean prompt's, so no name
    repeats and nothing points to the answer; places and objects stay (the same token count when
    names are single tokens)."""
    slots = [m.group(1) for m in _FIELD.finditer(template) if m.group(1) in ("A", "B", "S", "IO")]
    if len(others) < len(slots):
        raise CircuitcutError(f"the ABC counterfactual needs {len(slots)} more single-token names")
    fresh = iter(rng.sample(others, len(slots)))
    return _FIELD.sub(lambda m: next(fresh) if m.group(1) in ("A", "B", "S", "IO") else fields[m.group(1)],
                      template).rstrip()  # fmt: skip


def template_frame(template: str) -> str:
    """A template with its name fields made alike: the ABBA and BABA forms of one sentence share it."""
    return re.sub(r"\[(A|B|S|IO)\]", "[NAME]", template)


def ioi_splits(
    tokenizer: Any,
    lists: dict[str, list[str]],
    n_attribution: int,
    n_evaluation: int,
    heldout: float = 0.3,
    seed: int = 0,
) -> tuple[Task, Task]:
    """IOI attribution and evaluation tasks from name/template lists, on disjoint templates.

    Templates are grouped by sentence frame (the ABBA and BABA forms of one sentence go together)
    and a seeded ``heldout`` share of the frames (at least one) is kept for evaluation only, so the
    evaluation measures the task on sentences the attribution never saw. Names are kept where they
    are one token for this tokenizer; the dropped ones are in ``meta["dropped_names"]``.
    """
    if not 0 < heldout < 1:
        raise CircuitcutError(f"the held-out share of templates must be in (0, 1), got {heldout}")
    frames = sorted({template_frame(t) for t in lists["templates"]})
    if len(frames) < 2:
        raise CircuitcutError(
            f"held-out templates need at least 2 distinct sentence frames, the lists have {len(frames)}"
        )
    random.Random(f"ioi-templates-{seed}").shuffle(frames)
    n_held = min(len(frames) - 1, max(1, round(heldout * len(frames))))
    held = set(frames[:n_held])
    common = {k: lists[k] for k in ("names", "places", "objects")}
    attr = ioi_task(
        tokenizer,
        n_attribution,
        seed,
        templates=[t for t in lists["templates"] if template_frame(t) not in held],
        **common,
    )
    ev = ioi_task(
        tokenizer,
        n_evaluation,
        seed + 1,
        templates=[t for t in lists["templates"] if template_frame(t) in held],
        **common,
    )
    attr.name, ev.name = "ioi/attribution", "ioi/evaluation"
    attr.meta["heldout_frames"] = ev.meta["heldout_frames"] = n_held
    attr.meta["frames"] = ev.meta["frames"] = len(frames)
    return attr, ev


def corrupt_ioi(task: Task, seed: int = 0, names: Sequence[str] | None = None) -> Task:
    """The ABC corruption: the subject's second mention replaced by a third name, so no name is
    repeated and there is no indirect object to find. Answer and contrast stay those of the clean
    prompt (their logit difference should then fall to about zero)."""
    rng = random.Random(f"corrupt-{seed}")
    pool = (
        list(names)
        if names is not None
        else sorted({e.answer for e in task.examples} | {e.contrast for e in task.examples if e.contrast})
    )
    out = []
    for e in task.examples:
        if e.contrast is None or e.prompt.count(e.contrast) < 2:
            raise CircuitcutError(f"not an IOI prompt (the subject is not repeated): {e.prompt!r}")
        other = rng.choice([n for n in pool if n not in (e.answer, e.contrast)])
        head, _, tail = e.prompt.rpartition(e.contrast)
        out.append(
            Example(head + other + tail, e.answer, e.contrast, e.candidates, {**e.meta, "corrupted": True})
        )
    return Task(f"{task.name}/corrupted", out, task.metric, dict(task.meta))


def load_ioi_lists(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Name/template/place/object lists from a JSON file in the ACDC lists' layout
    (``NAMES``, ``BABA_TEMPLATES``, ``ABBA_TEMPLATES``, ``PLACES``, ``OBJECTS``)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise CircuitcutError(f"{path}: expected a JSON object with NAMES, *_TEMPLATES, PLACES, OBJECTS")
    try:
        return {
            "names": data["NAMES"],
            "templates": list(data.get("BABA_TEMPLATES", [])) + list(data.get("ABBA_TEMPLATES", [])),
            "places": data["PLACES"],
            "objects": data["OBJECTS"],
        }
    except KeyError as exc:
        raise CircuitcutError(
            f"{path}: missing list {exc} (expected NAMES, PLACES, OBJECTS, *_TEMPLATES)"
        ) from exc


def load_task(path: str | os.PathLike[str], metric: str | None = None) -> Task:
    """A user task from JSONL (``prompt``, ``answer``, optional ``contrast``, ``candidates``,
    ``corrupt``, ``above``, ``below``, ``space``) or CSV with the same columns (word lists separated by
    ``|``); the metric, unless given: ``prob_diff`` when every record has ``above`` and ``below``,
    ``logit_diff`` when every record has a contrast, else ``accuracy`` (docs/circuits.md#task-files)."""
    p = validation.data_file(path, "task file", validation.TASK_SUFFIXES, "a task")
    text = read_text_file(p, "task file")
    if not text.strip():
        raise CircuitcutError(f"task file {p} is empty")
    if p.suffix.lower() == ".csv":
        records = list(csv.DictReader(text.splitlines()))
    else:
        records = [record for _, record in read_jsonl(p, "task file")]
    examples = examples_from_records(records, str(p))
    if metric is None:
        metric = (
            "prob_diff"
            if all(e.above and e.below for e in examples)
            else "logit_diff"
            if all(e.contrast for e in examples)
            else "accuracy"
        )
    return Task(p.stem, examples, metric, {"file": str(p)})
