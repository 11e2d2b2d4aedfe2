"""Honest search (issue 21, item 4): the circuit search does not assume a monotone curve, it records
every point it measured and the pairs where faithfulness falls as the count grows, and returns a
sparser count reaching the threshold where a plain bisection would miss it; sweep curves that rise
as components are removed are flagged; the reports say so; the full model's held-out accuracy and
metric are said before the sweep, with a warning below 0.6."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import pytest

from circuitcut import get_adapter
from circuitcut.circuits import SweepConfig, extract_circuit
from circuitcut.circuits import circuit as circuit_module
from circuitcut.circuits.circuit import GridSearch, search_grid
from circuitcut.circuits.monotone import COARSE, PATIENCE, TOLERANCE, curve_sentences, falls, search_sentence
from circuitcut.circuits.sweep import SweepResult, count_grid, sweep
from circuitcut.cli import circuit_cmd
from circuitcut.cli.main import build_parser
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import Mask
from circuitcut.reports.circuit import circuit_markdown
from circuitcut.reports.page.base import Page
from circuitcut.reports.page.circuit import add_circuit
from circuitcut.tasks import ioi_task
from circuitcut.workflows import circuit as workflow
from circuitcut.workflows.circuit import MIN_ACCURACY, DiscoveryConfig, discover_circuit, full_model_check
from circuitcut.zoo.tokenizer import build_tokenizer

TOK = build_tokenizer()
GRID = list(range(1, 41))  # counts 1..40 of n = 41 components
LINEAR = {c: c / 40 for c in range(1, 42)}  # faithfulness c / 40: reaches 0.9 at 36


def _search(curve: dict[int, float], grid: Sequence[int], n: int, threshold: float, how: str) -> tuple[GridSearch, list[int]]:  # fmt: skip
    """search_grid over a hand-set curve (metric m = faithfulness); returns what it found and the
    counts it measured, in order."""
    calls: list[int] = []

    def measure(count: int) -> tuple[Mask, dict[str, float]]:
        calls.append(count)
        return Mask(meta={"pruned_units": n - count}), {"m": curve[count]}

    return search_grid(measure, grid, n, lambda m: m["m"], threshold, how, {"m": 1.0}, "head"), calls


def _plain_bisection(curve: dict[int, float], grid: Sequence[int], n: int, threshold: float) -> int:
    """The search before this issue: bisection as if the curve were monotone."""
    lo, hi = 0, len(grid)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if curve[grid[mid]] >= threshold else (mid + 1, hi)
    return grid[hi] if hi < len(grid) else n


def _pair(sparser: tuple[int, float], denser: tuple[int, float]) -> dict[str, Any]:
    return {"sparser": {"count": sparser[0], "faithfulness": sparser[1]},
            "denser": {"count": denser[0], "faithfulness": denser[1]}}  # fmt: skip


@pytest.mark.parametrize(
    ("planted", "measured", "pairs"),
    [
        # a sparse count of the coarse pass reaches 0.9 far below the monotone boundary (36)
        (7, [1, 7, 12, 18, 23, 29, 34, 40, 4, 5, 6], [(12, 0.3), (18, 0.45), (23, 0.575), (29, 0.725), (34, 0.85)]),
        # a count three below the bisection's boundary (36), found by checking the bracket
        (33, [1, 7, 12, 18, 23, 29, 34, 40, 37, 35, 36, 33, 32, 31, 30], [(34, 0.85), (35, 0.875), (36, 0.9),
                                                                          (37, 0.925)]),
    ],
)  # fmt: skip
def test_planted_nonmonotone_curve_is_caught_and_the_sparser_point_returned(
    planted: int, measured: list[int], pairs: list[tuple[int, float]]
) -> None:
    curve = {**LINEAR, planted: 0.95}
    assert _plain_bisection(curve, GRID, 41, 0.9) == 36  # bisection alone misses the planted count
    found, calls = _search(curve, GRID, 41, 0.9, "bisection")
    assert found.kept == planted and found.metrics == {"m": 0.95}
    assert calls == measured and len(set(calls)) == len(calls)  # no count measured twice
    assert found.evaluated == [{"count": c, "faithfulness": curve[c]} for c in measured]
    assert not found.monotone
    assert found.nonmonotone == [_pair((planted, 0.95), d) for d in pairs]
    info = found.info("bisection")
    assert info["monotone"] is False and info["nonmonotone"] == found.nonmonotone
    assert (
        info["search_evaluated"] == found.evaluated
        and f"until {PATIENCE} in a row miss" in info["search_rule"]
    )
    scan, scanned = _search(curve, GRID, 41, 0.9, "scan")
    assert scan.kept == planted and scanned == list(range(1, planted + 1))
    text = search_sentence(info, "head")
    assert f"0.950 with {planted} heads but {pairs[0][1]:.3f} with {pairs[0][0]}" in text
    assert "non-monotone" in text and f"evaluated {len(measured)} counts" in text


@pytest.mark.parametrize("n", [8, 72, 3000, 10**6])
def test_on_monotone_curves_the_search_equals_the_scan(n: int) -> None:
    grid = count_grid(n)
    curves: list[Callable[[int], float]] = [
        lambda c: c / n,
        lambda c: math.log(c) / math.log(n),
        lambda c: math.sqrt(c / n),
        lambda c: 1 - math.exp(-20 * c / n),
    ]
    bound = COARSE + math.ceil(math.log2(max(2, len(grid) / COARSE))) + PATIENCE + 1
    for shape in curves:
        curve = {c: shape(c) for c in [*grid, n]}
        for threshold in (0.05, 0.3, 0.5, 0.8, 0.9, 0.97, 0.999):
            found, calls = _search(curve, grid, n, threshold, "bisection")
            scan, _ = _search(curve, grid, n, threshold, "scan")
            assert (
                found.kept == scan.kept == _plain_bisection(curve, [c for c in grid if c < n], n, threshold)
            )
            assert found.monotone and scan.monotone and found.nonmonotone == []
            assert len(calls) <= bound, (n, threshold, calls)
            below = [c for c in grid if c < found.kept]
            if below:  # the grid count just below the circuit was measured and misses
                assert below[-1] in calls and curve[below[-1]] < threshold
    if len(grid) > 2 * COARSE:  # cheaper than the scan when the boundary is dense
        curve = {c: c / n for c in [*grid, n]}
        assert len(_search(curve, grid, n, 0.99, "bisection")[1]) < len(
            _search(curve, grid, n, 0.99, "scan")[1]
        )


def test_falls_pairs_each_point_with_the_best_sparser_one() -> None:
    points = [(1, 0.1), (2, 0.5), (3, 0.49), (4, 0.3), (5, 0.6), (6, 0.585), (8, 0.575)]
    # 3 and 6 fall 0.01 and 0.015 below the best sparser point (within 0.02); 4 and 8 fall 0.2 and 0.025
    assert falls(points) == [_pair((2, 0.5), (4, 0.3)), _pair((5, 0.6), (8, 0.575))]
    assert falls(points, tolerance=0.0) == [_pair((2, 0.5), (3, 0.49)), _pair((2, 0.5), (4, 0.3)),
                                            _pair((5, 0.6), (6, 0.585)), _pair((5, 0.6), (8, 0.575))]  # fmt: skip
    assert falls(reversed(points)) == falls(points) and falls([]) == []


def test_sweep_summary_flags_a_curve_that_rises_as_components_are_removed() -> None:
    """Mean faithfulness over two seeds (dense 1, empty 0, so f = the metric): lrp rises from 0.5 at
    100 kept to 0.6 at 10 kept (flagged); gradient rises by 0.01 only (within the tolerance)."""
    pts = [{"keep": k, "count": round(k * 1000), "fraction": k} for k in (1.0, 0.1, 0.01, 0.001)]

    def seeds(*runs: Sequence[float]) -> list[list[dict[str, float]]]:
        return [[{"logit_diff": v, "prob": v} for v in run] for run in runs]

    r = SweepResult(SweepConfig(baselines=("gradient",)), {"logit_diff": 1.0, "prob": 1.0},
                    {"logit_diff": 0.0, "prob": 0.0},
                    {"lrp": seeds([1.0, 0.4, 0.5, 0.2], [1.0, 0.6, 0.7, 0.2]),
                     "gradient": seeds([1.0, 0.5, 0.51, 0.2], [1.0, 0.5, 0.51, 0.2])},
                    {}, {}, {"lrp": pts, "gradient": pts}, 1000)  # fmt: skip
    s = r.summary()
    assert s["lrp"]["monotone"] is False
    assert s["lrp"]["nonmonotone"] == [_pair((10, pytest.approx(0.6)), (100, pytest.approx(0.5)))]
    assert s["gradient"]["monotone"] is True and s["gradient"]["nonmonotone"] == []
    assert TOLERANCE == 0.02
    notes = curve_sentences(s, "weight")
    assert notes == [
        "The lrp curve is non-monotone: faithfulness falls as weights are added (0.600 with 10 weights but "
        "0.500 with 100; 1 point(s) more than 0.02 below a sparser one), so a larger circuit is not always a "
        "more faithful one."
    ]


def _planted_metrics(n: int, curve: dict[int, float]) -> Callable[..., dict[str, float]]:
    """A stand-in for the circuit's evaluation: the metric (= faithfulness: full 1, empty 0) of a
    unit mask is the planted value of the count it keeps."""

    def fake(*args: Any, **kwargs: Any) -> dict[str, float]:
        mask = next(a for a in (*args, *kwargs.values()) if isinstance(a, Mask))
        if "pruned_units" in mask.meta:
            kept = n - mask.meta["pruned_units"]
            m = 1.0 if kept == n else curve[kept]
        else:  # no units pruned: the full model (Mask()) or the empty circuit (every weight masked)
            m = 0.0 if mask.weights else 1.0
        return {"logit_diff": m, "prob": m, "accuracy": m}

    return fake


def test_extracted_circuit_records_the_search_on_a_planted_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama", vocab_size=len(TOK), seed=3)
    adapter = get_adapter(model)
    n = adapter.n_layers * adapter.n_neurons
    grid = [c for c in count_grid(n) if c < n]
    sparse = grid[round((len(grid) - 1) / (COARSE - 1))]  # the second count of the coarse pass
    curve = {**{c: c / n for c in grid}, sparse: 0.95}
    monkeypatch.setattr(circuit_module, "task_metrics_under", _planted_metrics(n, curve))
    attr, ev = ioi_task(TOK, 32, seed=2).split(16)
    cfg = SweepConfig(level="neuron", threshold=0.9, random_seeds=0, ablation="zero")
    info = extract_circuit(model, TOK, adapter, attr, ev, cfg).info
    assert info["kept"] == sparse and info["faithfulness"] == pytest.approx(0.95)
    assert info["search"] == "bisection" and info["monotone"] is False
    assert [e["count"] for e in info["search_evaluated"]][:COARSE] == sorted({grid[round(i * (len(grid) - 1) / (COARSE - 1))] for i in range(COARSE)})  # fmt: skip
    assert all(e["faithfulness"] == pytest.approx(curve[e["count"]]) for e in info["search_evaluated"])
    assert info["nonmonotone"][0]["sparser"] == {"count": sparse, "faithfulness": pytest.approx(0.95)}
    assert all(p["denser"]["faithfulness"] < 0.95 - TOLERANCE for p in info["nonmonotone"])
    scan = extract_circuit(model, TOK, adapter, attr, ev, SweepConfig(level="neuron", threshold=0.9, random_seeds=0,
                                                                      ablation="zero", search="scan")).info  # fmt: skip
    assert scan["kept"] == sparse and [e["count"] for e in scan["search_evaluated"]] == [
        c for c in grid if c <= sparse
    ]


def test_full_model_check_warns_below_0_6_only(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    ev = ioi_task(TOK, 12, seed=2)
    cfg = SweepConfig(level="head")
    assert MIN_ACCURACY == 0.6
    for acc, warned in ((0.6, False), (0.599, True), (0.95, False)):
        monkeypatch.setattr(workflow, "task_metrics", lambda *a, acc=acc, **k: {"accuracy": acc, "prob": 0.2,
                                                                                  "logit_diff": 1.5})  # fmt: skip
        said: list[str] = []
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="circuitcut.workflows.circuit"):
            dense, warnings = full_model_check(None, TOK, ev, cfg, said.append)  # type: ignore[arg-type]
        assert dense == {"accuracy": acc, "prob": 0.2, "logit_diff": 1.5}
        assert said[0] == f"full model on 12 held-out prompts: accuracy {acc:.3f}, logit diff 1.500, answer probability 0.200"  # fmt: skip
        assert bool(warnings) == warned and len(said) == 1 + warned
        levels = [r.levelno for r in caplog.records]
        assert levels == [logging.INFO, logging.WARNING][: 1 + warned]
        if warned:
            assert warnings[0].startswith(f"the full model's held-out accuracy is {acc:.3f}, below 0.6")
            assert "missing BOS token" in warnings[0] and said[1] == f"warning: {warnings[0]}"


def test_sweep_takes_the_full_model_metrics_it_is_given() -> None:
    model = tiny_model("llama", vocab_size=len(TOK), seed=3)
    attr, ev = ioi_task(TOK, 32, seed=2).split(16)
    given = {"accuracy": 0.123, "prob": 0.456, "logit_diff": 7.0}
    cfg = SweepConfig(baselines=(), level="head", keep=(1.0, 0.5), seeds=1, n_ref=8, ablation="zero")
    r = sweep(model, TOK, get_adapter(model), attr, ev, cfg, progress=False, dense=given)
    assert r.dense == given and r.curves["lrp"][0][0] == given  # not measured again


def test_random_model_is_warned_about_before_the_sweep(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A tiny random model does not do IOI: its held-out accuracy (0.458 on these 24 prompts) is said
    and warned about before the sweep starts, measured once, and in the summary and both reports."""
    model = tiny_model("llama", vocab_size=len(TOK), seed=3)
    said: list[str] = []
    at_sweep: dict[str, Any] = {}

    def watched(*args: Any, **kwargs: Any) -> SweepResult:
        at_sweep.update(said=list(said), dense=kwargs.get("dense"))
        at_sweep["result"] = sweep(*args, **kwargs)
        return at_sweep["result"]

    monkeypatch.setattr(workflow, "sweep", watched)
    run = DiscoveryConfig(SweepConfig(baselines=("random",), level="head", seeds=1, n_ref=8, random_seeds=1,
                                      ablation="zero"), 16, 24)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="circuitcut.workflows.circuit"):
        s = discover_circuit(
            model, "ioi", tmp_path / "run", run, tokenizer=TOK, progress=False, echo=said.append
        )
    acc = s["dense"]["accuracy"]
    assert acc == pytest.approx(11 / 24) and acc < 0.6
    assert at_sweep["dense"] == s["dense"]  # measured before the sweep, handed to it
    assert at_sweep["said"][0].startswith(
        f"full model on 24 held-out prompts: accuracy {acc:.3f}, logit diff "
    )
    assert (
        at_sweep["said"][1] == f"warning: {s['warnings'][0]}"
        and f"accuracy is {acc:.3f}, below 0.6" in said[1]
    )
    assert any(
        f"accuracy is {acc:.3f}" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )
    md = (tmp_path / "run" / "report.md").read_text()
    html = (tmp_path / "run" / "report.html").read_text()
    assert f"**Warning:** the full model's held-out accuracy is {acc:.3f}" in md
    assert f"held-out accuracy is {acc:.3f}" in html
    c = s["circuit"]
    assert len(c["search_evaluated"]) >= 1 and search_sentence(c, "head") in md
    for method, r in s["sweep"].items():
        assert (f"The {method} curve is non-monotone" in md) == (not r["monotone"]), method
    # the same run with a non-monotone lrp curve and search planted: both reports say so
    planted = copy.deepcopy(s)
    planted["sweep"]["lrp"].update(monotone=False, nonmonotone=[_pair((1, 0.4), (4, 0.2))])
    planted["circuit"].update(monotone=False, nonmonotone=[_pair((1, 0.4), (4, 0.2))])
    page = Page("circuit")
    add_circuit(page, planted)
    for text in (circuit_markdown(planted, at_sweep["result"]), html_unescape(page.html())):
        assert (
            "The lrp curve is non-monotone: faithfulness falls as heads are added (0.400 with 1 head" in text
        )
        assert "found faithfulness non-monotone in the count (0.400 with 1 head but 0.200 with 4)" in text
        assert "held-out accuracy is 0.458, below 0.6" in text


def test_sentences_say_when_a_curve_or_the_search_is_non_monotone() -> None:
    c = {"search": "bisection", "search_rule": "rule", "monotone": False,
         "search_evaluated": [{"count": 7, "faithfulness": 0.95}, {"count": 12, "faithfulness": 0.3}],
         "nonmonotone": [_pair((7, 0.95), (12, 0.3))]}  # fmt: skip
    assert search_sentence(c, "head") == (
        "The search (rule) evaluated 2 counts and found faithfulness non-monotone in the count (0.950 with 7 heads "
        "but 0.300 with 12): the circuit is the sparsest evaluated count reaching the threshold; an unevaluated "
        "sparser count may reach it too (search scan evaluates every count)."
    )
    assert "every sparser count was evaluated and misses" in search_sentence({**c, "search": "scan"}, "head")
    assert search_sentence({**c, "monotone": True, "nonmonotone": []}, "head") == (
        "The search (rule) evaluated 2 counts; over them faithfulness grew with the count (within 0.02)."
    )
    assert search_sentence({"search": "bisection"}, "head") == ""  # circuits recorded before the check
    sweep_summary = {"lrp": {"monotone": False, "nonmonotone": [_pair((1, 0.4), (4, 0.2)), _pair((1, 0.4), (2, 0.3))]},
                     "random": {"monotone": True, "nonmonotone": []}, "old": {}}  # fmt: skip
    assert curve_sentences(sweep_summary, "head") == [
        "The lrp curve is non-monotone: faithfulness falls as heads are added (0.400 with 1 head but 0.200 with 4; "
        "2 point(s) more than 0.02 below a sparser one), so a larger circuit is not always a more faithful one."
    ]


def test_cli_prints_the_full_model_and_its_warning_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = tiny_model("llama", vocab_size=len(TOK), seed=3)
    monkeypatch.setattr(circuit_cmd, "load_from_args", lambda name, args: (model, TOK, None))
    args = build_parser().parse_args(["circuit", "--model", "tiny", "--level", "head", "--seeds", "1", "--n-ref", "8",
                                      "--n-attribution", "16", "--n-eval", "24", "--baselines", "random",
                                      "--random-seeds", "1", "--ablation", "zero", "--output", str(tmp_path / "run"),
                                      "--no-progress"])  # fmt: skip
    assert args.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0]
        == "full model on 24 held-out prompts: accuracy 0.458, logit diff -0.047, answer probability 0.005"
    )
    assert out[1].startswith(
        "warning: the full model's held-out accuracy is 0.458, below 0.6: a missing BOS token"
    )
    assert out[2].startswith("evaluation: 24 prompts") and out[3].startswith("lrp circuit: ")
    assert out[4].startswith("The search (a coarse pass over 8 counts")
    assert sum(line.startswith("warning: ") for line in out) == 2  # before the sweep and again at the end
