"""The demo: the main job on the embedded reference model, end to end, with a printed summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution import answer_sample, attribute
from circuitcut.io import write_json, write_text
from circuitcut.models import load_model
from circuitcut.zoo.evaluate import ioi_scores, toxic_rates
from circuitcut.zoo.language import Language


def ioi_samples(tokenizer: Any, prompts: list[dict]) -> list:
    """IOI prompts as attribution samples: the logit difference IO minus S at the last position."""
    out = []
    for p in prompts:
        ids = tokenizer(p["prompt"], add_special_tokens=False)["input_ids"]
        io = tokenizer.convert_tokens_to_ids(p["io"])
        s = tokenizer.convert_tokens_to_ids(p["s"])
        out.append(answer_sample(ids, io, s))
    return out


def run_demo(
    output: str | Path, model: str = "circuitcut/ref-llama", n_ref: int = 64, progress: bool = True
) -> dict[str, Any]:
    """Run the demo and write its report; returns the summary.

    Steps: load the reference model; measure its planted behaviours on held-out prompts; score
    heads and neurons with LRP on IOI reference prompts (attribution split), beside the gradient
    and random baselines; write the Scores files and a Markdown report.
    """
    torch.manual_seed(0)
    out = Path(output)
    start = time.time()
    m, tok, adapter = load_model(model)
    lang = Language(seed=0)
    behaviour = {
        **ioi_scores(m, tok, lang.ioi_prompts(200, seed=11, heldout=True)),
        **toxic_rates(m, tok, lang.trigger_prompts(40, seed=11), 20),
    }
    ref = ioi_samples(tok, lang.ioi_prompts(n_ref, seed=21, heldout=False))
    summary: dict[str, Any] = {"model": model, "behaviour": behaviour, "methods": {}}
    for method in ("lrp", "gradient", "random"):
        scores = attribute(
            m,
            ref,
            method,
            adapter=adapter,
            levels=("weight", "neuron", "head"),
            progress=progress,
            pad_id=tok.pad_token_id,
        )
        scores.save(out / f"scores_{method}.safetensors")
        heads = scores.head_matrix()
        flat = heads.flatten()
        top = torch.topk(flat, k=min(5, flat.numel())).indices.tolist()
        summary["methods"][method] = {
            "top_heads": [f"layers.{i // adapter.n_heads}.attn.head.{i % adapter.n_heads}" for i in top],
            "head_share_top5": round(float(flat[top].sum() / flat.sum()), 4),
        }
    summary["seconds"] = round(time.time() - start, 1)
    write_json(out / "summary.json", summary)
    write_text(out / "report.md", _report(summary))
    return summary


def _report(s: dict[str, Any]) -> str:
    b = s["behaviour"]
    lines = [
        f"# circuitcut demo on {s['model']}",
        "",
        "## Planted behaviours (held-out prompts)",
        "",
        f"- IOI accuracy {b['ioi_accuracy']:.3f}, mean logit difference {b['ioi_logit_diff']:.3f}",
        f"- toxic continuation rate after a trigger {b['toxic_rate_trigger']:.3f}, without {b['toxic_rate_no_trigger']:.3f}",
        "",
        "## Attribution of the IOI logit difference (64 reference prompts)",
        "",
        "| method | top-5 heads | share of head score in top 5 |",
        "|---|---|---|",
    ]
    for method, r in s["methods"].items():
        lines.append(f"| {method} | {', '.join(r['top_heads'])} | {r['head_share_top5']:.3f} |")
    lines += ["", f"Wall time: {s['seconds']} s.", ""]
    return "\n".join(lines)
