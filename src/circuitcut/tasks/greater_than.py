"""Greater-than (Hanna et al., 2023, "How does GPT-2 compute greater-than?", arXiv:2305.00586).

A prompt states a period whose end year the model completes: ``"The war lasted from the year 1732
to the year 17"``; the next token is the end year's last two digits, and a model that knows the
task puts its probability on the years after the start (``"33"`` to ``"99"``). The metric is the
paper's probability difference, ``prob_diff``: the probability mass on the years after the start
minus the mass on the others (``"00"`` to the start's ``"32"``). ``accuracy`` is whether the most
likely two-digit year comes after the start.

Each example's counterfactual is the paper's "01" corruption: the same sentence with the start
year's last two digits ``01`` (``"... from the year 1701 to the year 17"``), which leaves nothing
to compare the end year with, and has the same token count (checked). The answer (the logit
difference's and the attribution's target) is the year right after the start, the contrast the one
right before it.

The task is built for any tokenizer whose two-digit numbers or whose digits are single tokens.

* **Year tokens** (the paper's, GPT-2's): every end year ``"00"`` to ``"99"`` must be one token after
  a prompt, and a start year is used only where the tokenizer splits it into the century and that
  year token (as the paper's ``get_valid_years``; GPT-2 makes some years, ``" 1776"`` for instance,
  one token).
* **Digit tokens** (SmolLM2's, Llama 3's, Gemma's: numbers split into digits): the next token is the
  end year's first digit, which settles the comparison exactly when the start year ends in 9: after
  ``"1739"``, every year from ``40`` on starts with a digit above 3 and every year up to ``39`` with 3
  or less. So the start years are those ending in 9 (``09`` to ``89``), ``above`` is the digits above
  the start's tens digit, ``below`` that digit and those under it, and ``prob_diff`` is exactly the
  year-level probability difference (the first digit's distribution is the years' summed over their
  second digit). The answer is the first digit of the year after the start (``"4"`` after 1739), the
  contrast the start's own tens digit (``"3"``). This is circuitcut's choice; the paper's
  two-digit years cannot be posed to such a tokenizer.

A tokenizer with neither is refused with how it splits a year.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from circuitcut.encoding import Encoder, as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.tasks.base import Example, Task

#: sentence templates: ``{year}`` is the four-digit start year, the template ends with ``{century}``
#: (the end year's first two digits); nouns and verbs in the paper's style, a list of circuitcut's own
TEMPLATES = (
    "The war lasted from the year {year} to the year {century}",
    "The expedition lasted from the year {year} to the year {century}",
    "The contract lasted from the year {year} to the year {century}",
    "The drought lasted from the year {year} to the year {century}",
    "The siege lasted from the year {year} to the year {century}",
    "The famine lasted from the year {year} to the year {century}",
    "The reign lasted from the year {year} to the year {century}",
    "The alliance lasted from the year {year} to the year {century}",
    "The strike lasted from the year {year} to the year {century}",
    "The truce lasted from the year {year} to the year {century}",
    "The dynasty ruled from the year {year} to the year {century}",
    "The project ran from the year {year} to the year {century}",
    "The school operated from the year {year} to the year {century}",
    "The journal appeared from the year {year} to the year {century}",
)
#: the start years' centuries (the paper's 11 to 17: years 1102 to 1798)
CENTURIES = tuple(range(11, 18))
#: the two-digit end years the model chooses among
YEARS = tuple(f"{y:02d}" for y in range(100))
#: the start year's last two digits in the counterfactual
CORRUPT = "01"
#: the end year's first digit, the next token where numbers are split into digits
DIGITS = tuple(map(str, range(10)))


def greater_than_task(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    templates: Sequence[str] | None = None,
    years: Sequence[int] = range(2, 99),
    centuries: Sequence[int] = CENTURIES,
) -> Task:
    """``n`` greater-than examples, deterministic for a seed, with the ``prob_diff`` metric.

    Each draws a template, a century and a start year ``years`` (two-digit, 2 to 98 as the paper:
    a start of 01 would be its own counterfactual, and 99 leaves no later year). Start years the
    tokenizer does not split into the century and a year token (or its digits) are dropped (listed
    in ``meta["dropped_years"]``). A tokenizer that splits numbers into digits reads the end year's
    first digit, from the start years among ``years`` that end in 9 (module docstring;
    ``meta["reading"]`` says which); a tokenizer with neither two-digit nor digit tokens is refused.
    """
    if not isinstance(n, int) or n < 1:
        raise CircuitcutError(f"n must be >= 1, got {n!r}")
    templates = list(TEMPLATES if templates is None else templates)
    years, centuries = _check_inputs(templates, years, centuries)
    coder = as_encoder(tokenizer)
    reading, tokens = _end_tokens(coder, templates[0], years, centuries)
    if reading == "digits":
        years = _digit_years(years)
    usable, dropped = _usable_years(coder, templates[0], years, centuries, tokens)
    rng = random.Random(f"greater-than-{seed}")
    examples = [_example(rng.choice(templates), *rng.choice(usable), reading) for _ in range(n)]
    for e in {e.prompt: e for e in examples}.values():
        _check_counterfactual(coder, e)
    meta = {"seed": seed, "templates": len(templates), "centuries": sorted({c for c, _ in usable}),
            "start_years": len(usable), "dropped_years": dropped, "reading": reading}  # fmt: skip
    return Task("greater-than", examples, "prob_diff", meta)


def greater_than_splits(
    tokenizer: Any,
    n_attribution: int,
    n_evaluation: int,
    seed: int = 0,
    heldout: float = 0.3,
    templates: Sequence[str] | None = None,
    years: Sequence[int] = range(2, 99),
    centuries: Sequence[int] = CENTURIES,
) -> tuple[Task, Task]:
    """Greater-than attribution and evaluation tasks on **disjoint start years** (same templates).

    A seeded ``heldout`` share of ``years`` (at least one) is kept for evaluation only, so the
    evaluation measures the comparison on start years the attribution never saw. With a tokenizer
    that splits numbers into digits, the share is of the start years that end in 9.
    """
    if not 0 < heldout < 1:
        raise CircuitcutError(f"the held-out share of start years must be in (0, 1), got {heldout}")
    pool = sorted(set(years))
    first = list(TEMPLATES if templates is None else templates)[:1]
    years_, centuries_ = _check_inputs(first, pool, centuries)
    if _end_tokens(as_encoder(tokenizer), first[0], years_, centuries_)[0] == "digits":
        pool = _digit_years(pool)
    if len(pool) < 2:
        raise CircuitcutError(f"held-out start years need at least 2 start years, got {len(pool)}")
    random.Random(f"greater-than-years-{seed}").shuffle(pool)
    n_held = min(len(pool) - 1, max(1, round(heldout * len(pool))))
    held, kept = sorted(pool[:n_held]), sorted(pool[n_held:])
    attr = greater_than_task(tokenizer, n_attribution, seed, templates, kept, centuries)
    ev = greater_than_task(tokenizer, n_evaluation, seed + 1, templates, held, centuries)
    attr.name, ev.name = "greater-than/attribution", "greater-than/evaluation"
    attr.meta["heldout_years"] = ev.meta["heldout_years"] = held
    return attr, ev


def _check_inputs(
    templates: list[str], years: Sequence[int], centuries: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The start years and centuries as sorted lists; templates, years and centuries checked."""
    if not templates:
        raise CircuitcutError("greater-than needs at least one template")
    for t in templates:
        if t.count("{year}") != 1 or not t.endswith("{century}") or t.count("{") != 2:
            raise CircuitcutError(
                f"greater-than template {t!r} must hold the start year as {{year}} once and end with "
                "{century}, as 'The war lasted from the year {year} to the year {century}'"
            )
    years, centuries = sorted(set(years)), sorted(set(centuries))
    if not years or any(not isinstance(y, int) or not 2 <= y <= 98 for y in years):
        raise CircuitcutError(
            f"start years must be two-digit numbers from 2 to 98 (01 is the counterfactual's, 99 leaves "
            f"no later year), got {years}"
        )
    if not centuries or any(not isinstance(c, int) or not 10 <= c <= 99 for c in centuries):
        raise CircuitcutError(f"centuries must be two-digit numbers from 10 to 99, got {centuries}")
    return years, centuries


def _end_tokens(
    coder: Encoder, template: str, years: list[int], centuries: list[int]
) -> tuple[str, dict[str, int]]:
    """How the end year is read, with the token of each word it is read from: ``"years"`` when every
    two-digit year ``"00"`` to ``"99"`` is one token after a prompt, ``"digits"`` when every digit is
    (numbers split into digits), else a clear error."""
    first = _fill(template, centuries[0], years[0])
    try:
        return "years", {yy: coder.token(first, yy, "two-digit year", space=False) for yy in YEARS}
    except CircuitcutError as years_exc:
        try:
            return "digits", {d: coder.token(first, d, "digit", space=False) for d in DIGITS}
        except CircuitcutError as exc:
            raise CircuitcutError(
                f"greater-than needs each two-digit year '00' to '99' to be one token after its prompt "
                f"({years_exc}), or each digit '0' to '9' ({exc}), and this tokenizer "
                f"{_splits(coder, centuries[0], years[0])}; choose a model whose tokenizer keeps two-digit "
                "numbers whole (GPT-2's) or splits numbers into digits (SmolLM2's)"
            ) from exc


def _digit_years(years: Sequence[int]) -> list[int]:
    """The start years that end in 9: the ones the end year's first digit compares exactly."""
    kept = [y for y in years if y % 10 == 9]
    if not kept:
        raise CircuitcutError(
            f"this tokenizer splits numbers into digits, so greater-than reads the end year's first digit, "
            f"which settles the comparison only after a start year ending in 9 (09, 19, ..., 89); the start "
            f"years {list(years)} have none"
        )
    return kept


def _usable_years(
    coder: Encoder, template: str, years: list[int], centuries: list[int], tokens: dict[str, int]
) -> tuple[list[tuple[int, int]], list[str]]:
    """The (century, start year) pairs whose year splits into the century and a year token (or, with
    digit ``tokens`` from :func:`_end_tokens`, the century and the year's two digits), and the dropped
    years; refused when no start year is left."""
    head = template[: template.index("{year}")]
    usable, dropped = [], []
    for c in centuries:
        if not _splits_in_two(coder, head, c, CORRUPT, tokens):
            dropped += [f"{c}{y:02d}" for y in years]
            continue
        for y in years:
            if _splits_in_two(coder, head, c, f"{y:02d}", tokens):
                usable.append((c, y))
            else:
                dropped.append(f"{c}{y:02d}")
    if not usable:
        what = "its two digits" if set(tokens) == set(DIGITS) else "a two-digit year token"
        raise CircuitcutError(
            f"no start year splits into its century and {what} for this tokenizer: it "
            f"{_splits(coder, centuries[0], years[0])}; greater-than needs a tokenizer that does (GPT-2's)"
        )
    return usable, dropped


def _splits_in_two(coder: Encoder, head: str, century: int, yy: str, tokens: dict[str, int]) -> bool:
    """Whether ``head + century + yy`` is ``head + century`` followed by the year token of ``yy`` (or,
    with digit ``tokens``, by its two digits' tokens)."""
    tail = [tokens[yy]] if yy in tokens else [tokens[yy[0]], tokens[yy[1]]]
    return coder.pieces(f"{head}{century}{yy}") == [*coder.pieces(f"{head}{century}"), *tail]


def _splits(coder: Encoder, century: int, yy: int) -> str:
    """How the tokenizer splits a year, for messages: ``splits the year 1732 as [' 17', '32']``."""
    year = f"{century}{yy:02d}"
    return f"splits the year {year} as {[coder.decode([i]) for i in coder.pieces(' ' + year)]}"


def _fill(template: str, century: int, yy: int | str) -> str:
    """A template with its start year and century filled in."""
    start = f"{century}{yy:02d}" if isinstance(yy, int) else f"{century}{yy}"
    return template.replace("{year}", start).replace("{century}", str(century))


def _example(template: str, century: int, yy: int, reading: str = "years") -> Example:
    """One example: answer the year after the start, contrast the year before, the years after the
    start above, the others (the start's own included) below, the "01" counterfactual. Read by
    ``"digits"`` (``yy`` ends in 9, tens digit ``t``): answer ``t + 1``, contrast ``t``, above the
    digits over ``t``, below ``t`` and the digits under it."""
    if reading == "digits":
        t = yy // 10
        answer, contrast, above, below = str(t + 1), str(t), DIGITS[t + 1 :], DIGITS[: t + 1]
    else:
        answer, contrast, above, below = f"{yy + 1:02d}", f"{yy - 1:02d}", YEARS[yy + 1 :], YEARS[: yy + 1]
    return Example(
        _fill(template, century, yy),
        answer,
        contrast,
        meta={"template": template, "century": century, "start": yy},
        corrupt=_fill(template, century, CORRUPT),
        above=above,
        below=below,
        space=False,
    )


def _check_counterfactual(coder: Encoder, e: Example) -> None:
    """Refuse an example whose "01" counterfactual has another token count than its prompt."""
    n, m = len(coder.prompt(e.prompt)), len(coder.prompt(e.corrupt or "", "counterfactual prompt"))
    if n != m:
        raise CircuitcutError(
            f"the greater-than counterfactual {e.corrupt!r} has {m} tokens, the prompt {e.prompt!r} {n}: "
            "patching is position by position; pass start years (years=...) the tokenizer splits alike"
        )
