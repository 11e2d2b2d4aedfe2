"""The HTML run reports (report.html) and the index of ``circuitcut view``; the demo's page in a real
headless Chromium (slow)."""

from __future__ import annotations

import html
import json
import os
import re
import threading
import urllib.request
from pathlib import Path

import pytest

from circuitcut import get_adapter
from circuitcut.circuits.sweep import SweepConfig
from circuitcut.cli.main import main
from circuitcut.errors import OutputError
from circuitcut.models.tiny import tiny_model
from circuitcut.reports.page import make_server, write_report
from circuitcut.reports.page.circuit import ranges
from circuitcut.reports.page.correction import marked
from circuitcut.workflows.circuit import DiscoveryConfig, discover_circuit
from circuitcut.workflows.explain import explain_prompts
from circuitcut.zoo.tokenizer import build_tokenizer
from tests.browser import Browser, chromium_binary

MAX_PAGE = 2 * 1024 * 1024
# numbers in the pages: 3 decimals, or 3 significant digits below 0.001


def _tips(page: str, scope: str) -> list[str]:
    """The tooltips of the chart points inside the element with id ``scope``."""
    part = page[page.index(f'id="{scope}"') :]
    part = part[: part.index("</div>")]
    return [html.unescape(t) for t in re.findall(r'class="pt"[^>]*data-tip="([^"]*)"', part)]


@pytest.fixture(scope="module")
def circuit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A head-level circuit run of a tiny 2 x 4-head llama (its own report.html beside its JSON)."""
    out = tmp_path_factory.mktemp("runs") / "circuit"
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=3)
    run = DiscoveryConfig(
        SweepConfig(baselines=("activation", "random"), level="head", seeds=2, n_ref=8), 16, 24
    )
    s = discover_circuit(model, "ioi", out, run, tokenizer=tok, progress=False)
    return out, s


def test_circuit_run_page_shows_every_point_the_map_and_the_heatmaps(circuit_run: tuple[Path, dict]) -> None:
    out, s = circuit_run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert len(page.encode()) < MAX_PAGE
    assert '<meta name="generator" content="circuitcut report/1">' in page
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page
    tips = _tips(page, "circuit-curves")
    n_points = sum(len(r["points"]) for r in s["sweep"].values())
    assert len(tips) == 3 * (n_points + 1)  # three charts, each with every point and the random control
    for p in s["sweep"]["lrp"]["points"]:  # every point's values, in each of the three charts
        share = {8: "100%", 4: "50%", 2: "25%", 1: "12.5%"}[p["count"]]
        std = (
            f"{p['logit_diff_std']:.3f}"
            if p["logit_diff_std"] == 0 or p["logit_diff_std"] >= 1e-3
            else f"{p['logit_diff_std']:.3g}"
        )
        tip = (f"lrp\nkept {share} ({p['count']} heads)\nlogit diff {p['logit_diff']:.3f} ± {std}\n"
               f"answer probability {p['prob']:.3f}\naccuracy {p['accuracy']:.3f}\nfaithfulness {p['faithfulness']:.3f}")  # fmt: skip
        assert tips.count(tip) == 3
    c = s["circuit"]
    control = [t for t in tips if t.startswith("random control")]
    assert len(control) == 3 and f"faithfulness {c['random_faithfulness']:.3f}" in control[0]
    # the map: one button per layer; its data lists exactly the kept heads
    assert page.count('class="layer"') == 2
    data = json.loads(re.search(r'id="circuit-map-data">(.*?)</script>', page).group(1))
    for layer in ("0", "1"):
        assert data[layer]["lines"][0] == f"kept heads: {ranges(c['kept_heads'][int(layer)]) or 'none'}"
    # top components: the 8 heads by score, marked kept or not as the mask says
    top = c["top_components"]
    assert len(top) == 8 and [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    kept_names = {f"layers.{i}.attn.head.{j}" for i, js in c["kept_heads"].items() for j in js}
    assert {t["component"] for t in top if t["kept"]} == kept_names
    # three reference prompts as heatmaps, one box per token
    assert len(s["reference_relevance"]) == 3
    assert page.count('class="tok"') == sum(len(r["tokens"]) for r in s["reference_relevance"])
    assert "special tokens on" in page  # the encoding provenance


def test_ranges_and_marks_by_hand() -> None:
    assert ranges([7, 0, 1, 2, 5, 8]) == "0-2, 5, 7-8"
    assert ranges([]) == ""
    assert marked("You JERK, a jerky <jerk>!", ["jerk"]) == (
        "You <mark>JERK</mark>, a jerky &lt;<mark>jerk</mark>&gt;!"
    )
    assert marked("a <b>", []) == "a &lt;b&gt;"


def test_explain_page_is_escaped_and_foreign_pages_are_never_replaced(tmp_path: Path) -> None:
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=3)
    adapter = get_adapter(model)
    prompt = "When Mary and John went to the store , John gave a drink to"
    recs = explain_prompts(model, tok, adapter, [prompt], target="Mary", output=tmp_path / "ex.html")
    page = (tmp_path / "ex.report.html").read_text(encoding="utf-8")
    assert page.count('class="tok"') == len(recs[0]["tokens"])
    assert "token relevance of 1 prompt(s) by lrp (attnlrp)" in page
    # a page that is not circuitcut's is refused before any work, and left as it was
    foreign = tmp_path / "other.report.html"
    foreign.write_text("<html>mine</html>")
    with pytest.raises(OutputError, match="is not a circuitcut report"):
        explain_prompts(model, tok, adapter, [prompt], target="Mary", output=tmp_path / "other.html")
    assert foreign.read_text() == "<html>mine</html>" and not (tmp_path / "other.html").exists()
    (tmp_path / "run").mkdir()
    with pytest.raises(Exception, match="no circuitcut run in"):
        write_report(tmp_path / "run")


def test_view_indexes_runs_builds_missing_pages_and_serves(
    circuit_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, s = circuit_run
    root = tmp_path / "runs"
    root.mkdir()
    for name in ("summary.json", "curves.json"):
        (root / "a" / "b").mkdir(parents=True, exist_ok=True)
        (root / "a" / "b" / name).write_bytes((out / name).read_bytes())
    broken = json.loads((out / "summary.json").read_text())
    del broken["circuit"]["kept"]
    (root / "old").mkdir()
    (root / "old" / "summary.json").write_text(json.dumps(broken))
    (root / "c").mkdir()
    (root / "c" / "summary.json").write_bytes((out / "summary.json").read_bytes())
    (root / "c" / "report.html").write_text("<html>mine</html>")
    assert main(["view", str(root)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {root / 'index.html'} (3 run(s))")
    assert (root / "c" / "report.html").read_text() == "<html>mine</html>"  # not circuitcut's: kept
    assert (root / "a" / "b" / "report.html").is_file()  # a run without a page gets one
    index = (root / "index.html").read_text(encoding="utf-8")
    assert index.count('<a href="a/b/report.html">') == 1
    c = s["circuit"]
    assert f"head circuit of ioi: {c['kept']} of 8 heads" in html.unescape(index)
    assert "no page: its JSON lacks 'kept'" in html.unescape(index)
    assert "c/report.html exists and is not a circuitcut report" in index
    server = make_server(root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and resp.read().decode() == index
    finally:
        server.shutdown()
        server.server_close()
    assert main(["view", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["view", str(root), "--port", "-1"]) == 2


# the demo's page in a real browser ----------------------------------------------------------------
@pytest.mark.slow
def test_demo_report_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip(
            "no chromium binary on PATH (Debian: apt-get install chromium; scripts/test.sh installs it as root)"
        )
    from circuitcut.workflows.demo import run_demo

    out = tmp_path / "demo"
    run_demo(out, quick=True, progress=False)
    page = out / "report.html"
    assert page.stat().st_size < MAX_PAGE
    circuit = json.loads((out / "circuit" / "summary.json").read_text())
    shots = Path(os.environ.get("CIRCUITCUT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with Browser(binary, width=1280, height=900) as b:
        b.open(page)
        assert b.js("document.querySelectorAll('#circuit-curves svg.chart').length") == 3
        n_layers = len(circuit["circuit"]["kept_per_layer"])
        assert b.js("document.querySelectorAll('#circuit-map button.layer').length") == n_layers
        assert b.js("document.querySelectorAll('#correction-table tbody tr').length") == 13
        assert (
            b.js("document.querySelectorAll('#per-seed tbody tr').length") == 2 + 5
        )  # splits, dense, 5 models
        assert b.js("document.querySelectorAll('#continuations-test mark').length") > 0  # insults marked
        # hovering a curve point shows its values: the first LRP point not covered by another series'
        x, y, count = b.js(
            "(() => { for (const p of document.querySelectorAll('#circuit-curves .pt')) {"
            " if (!p.dataset.tip.startsWith('lrp')) continue; p.scrollIntoView({block: 'center'});"
            " const r = p.getBoundingClientRect(), x = r.x + r.width / 2, y = r.y + r.height / 2;"
            " if (document.elementFromPoint(x, y) === p) return [x, y, +p.dataset.tip.match(/[(]([0-9]+) /)[1]]; } })()"
        )
        b.mouse_move(x, y)
        tip = b.js("[document.getElementById('tip').hidden, document.getElementById('tip').textContent]")
        p = next(q for q in circuit["sweep"]["lrp"]["points"] if q["count"] == count)
        assert tip[0] is False
        assert tip[1].startswith(
            f"lrp\nkept {100 * p['fraction']:.3g}% ({count} neurons)\nlogit diff {p['logit_diff']:.3f}"
        )
        assert (
            f"answer probability {p['prob']:.3f}" in tip[1]
            and f"faithfulness {p['faithfulness']:.3f}" in tip[1]
        )
        b.screenshot(shots / "demo-report-1280.png", full_page=False)
        b.mouse_move(0, 0)
        # keyboard: Enter on a focused layer lists its kept neurons
        b.js("document.querySelector('#circuit-map button.layer').focus()")
        b.key("Enter", "Enter", 13, "\r")
        kept = circuit["circuit"]["kept_neurons"]["0"]
        detail = b.js("document.getElementById('circuit-map-detail').textContent")
        assert f"kept neurons: {ranges(kept)}" in detail
        assert b.js("getComputedStyle(document.activeElement).outlineStyle") != "none"  # visible focus
        b.screenshot(shots / "demo-report-1280-full.png")
        b.resize(800, 900)
        assert b.js("document.documentElement.scrollWidth <= window.innerWidth")  # nothing wider than 800 px
        b.screenshot(shots / "demo-report-800-full.png")
        assert b.console == []
    assert (shots / "demo-report-1280.png").stat().st_size > 10_000
