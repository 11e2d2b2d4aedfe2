"""Is faithfulness monotone in the circuit's size? Checks over measured (count, faithfulness) points
and the sentences reports use to say when it is not.

A curve of faithfulness against the number of kept components is expected to grow with the count.
Real curves need not: pruning a component can raise the metric, and head curves of deep models
have been seen at 0.15 with 36 heads and 0.26 with 7. A point is a *fall* when its faithfulness is
more than :data:`TOLERANCE` below that of a sparser measured point (the best sparser point so far,
in count order), so every fall is a pair of measured points and a slow drift over several points
is caught as well as a single jump. The circuit search's constants live here too. Plain data only
(no torch): report pages and the command line import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: how far (in faithfulness) a denser point may fall below a sparser one before the curve counts as
#: non-monotone (measurement noise on a few hundred prompts is of this order)
TOLERANCE = 0.02
#: the circuit search's coarse pass: this many counts spread evenly over the grid (both ends included)
COARSE = 8
#: after the search's bisection, the counts below the circuit are evaluated until this many in a row miss
PATIENCE = 3
#: how each search goes over the grid (:func:`circuitcut.circuits.circuit.search_grid`; recorded in
#: the circuit's info and named in reports and the command line's help)
SEARCH_RULES = {
    "bisection": f"a coarse pass over {COARSE} counts spread over the grid, bisection below the sparsest that "
    f"reaches the threshold, then the counts below the circuit until {PATIENCE} in a row miss",
    "scan": "every count from the sparsest up to the first reaching the threshold",
}


def falls(points: Iterable[tuple[int, float]], tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """The non-monotone pairs of measured ``(count, faithfulness)`` points: each point whose
    faithfulness is more than ``tolerance`` below the best sparser point's, paired with that point
    (``{"sparser": {count, faithfulness}, "denser": {count, faithfulness}}``), sparsest pair first.
    Points measured twice at one count are taken once (the first)."""
    seen: dict[int, float] = {}
    for count, f in points:
        seen.setdefault(int(count), float(f))
    out: list[dict[str, Any]] = []
    best: tuple[int, float] | None = None
    for count in sorted(seen):
        f = seen[count]
        if best is not None and f < best[1] - tolerance:
            out.append({"sparser": {"count": best[0], "faithfulness": best[1]},
                        "denser": {"count": count, "faithfulness": f}})  # fmt: skip
        if best is None or f > best[1]:
            best = (count, f)
    return out


def curve_check(
    counts: Sequence[int], faithfulness: Sequence[float], tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """``{"monotone": bool, "nonmonotone": [pairs]}`` for a sweep curve (see :func:`falls`)."""
    pairs = falls(zip(counts, faithfulness, strict=True), tolerance)
    return {"monotone": not pairs, "nonmonotone": pairs}


def _pair_text(pair: dict[str, Any], unit: str) -> str:
    """``"0.260 with 7 heads but 0.150 with 36"``."""
    lo, hi = pair["sparser"], pair["denser"]
    units = unit if lo["count"] == 1 else f"{unit}s"
    return (
        f"{lo['faithfulness']:.3f} with {lo['count']} {units} but {hi['faithfulness']:.3f} with {hi['count']}"
    )


def _worst(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pair with the largest fall."""
    return max(pairs, key=lambda p: p["sparser"]["faithfulness"] - p["denser"]["faithfulness"])


def curve_sentences(sweep: dict[str, Any], unit: str) -> list[str]:
    """One sentence per method whose sweep curve is non-monotone (summaries without the check say
    nothing)."""
    out = []
    for method, r in sweep.items():
        pairs = r.get("nonmonotone") or []
        if r.get("monotone", True) or not pairs:
            continue
        out.append(f"The {method} curve is non-monotone: faithfulness falls as {unit}s are added "
                   f"({_pair_text(_worst(pairs), unit)}; {len(pairs)} point(s) more than {TOLERANCE:g} below a "
                   "sparser one), so a larger circuit is not always a more faithful one.")  # fmt: skip
    return out


def search_sentence(circuit: dict[str, Any], unit: str) -> str:
    """What the circuit search evaluated and whether faithfulness grew with the count over it
    (empty for circuits recorded before the check)."""
    evaluated = circuit.get("search_evaluated")
    if not evaluated:
        return ""
    n = len(evaluated)
    how = circuit.get("search_rule", circuit.get("search", ""))
    if circuit.get("monotone", True):
        return (f"The search ({how}) evaluated {n} counts; over them faithfulness grew with the count "
                f"(within {TOLERANCE:g}).")  # fmt: skip
    pairs = circuit.get("nonmonotone") or []
    worst = f" ({_pair_text(_worst(pairs), unit)})" if pairs else ""
    rest = ("every sparser count was evaluated and misses" if circuit.get("search") == "scan" else
            "an unevaluated sparser count may reach it too (search scan evaluates every count)")  # fmt: skip
    return (f"The search ({how}) evaluated {n} counts and found faithfulness non-monotone in the count{worst}: "
            f"the circuit is the sparsest evaluated count reaching the threshold; {rest}.")  # fmt: skip
