"""Training SAEs for a model and measuring them: the workflow behind ``circuitcut sae train``.

The output folder holds one sub-folder per hook point in SAELens's layout (``cfg.json``,
``sae_weights.safetensors``: what ``circuitcut lasso --sae OUT`` and SAELens read), ``quality.json``
and ``report.md`` with, per site: explained variance, L0, the dead fraction, the model's next-token
loss with the SAE's reconstruction spliced in against the dense loss (and with the site zeroed, for
the share of loss recovered), on held-out windows of an evaluation text; and the training time.

Training streams activations (:mod:`circuitcut.lasso.sae_training`) and writes a checkpoint beside
the output (``OUT.checkpoint``, or ``checkpoint``) every ``checkpoint_every`` steps: running the same
command again after an interruption resumes from it to the same weights. The checkpoint is removed
when the run has finished, unless ``keep_checkpoint``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from circuitcut.encoding import text_windows
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation import load_text
from circuitcut.io import write_json, write_text
from circuitcut.lasso.sae import sae_quality
from circuitcut.lasso.sae_config import SAETrainConfig
from circuitcut.lasso.sae_training import train_saes
from circuitcut.lasso.sites import sites_matching
from circuitcut.models import ModelOptions, as_loaded
from circuitcut.run_folder import writes_run


def checkpoint_folder(output: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Where a run into ``output`` keeps its checkpoint: ``checkpoint``, else ``OUTPUT.checkpoint`` beside it."""
    if checkpoint is not None:
        return Path(checkpoint)
    out = Path(output).expanduser().absolute()
    return out.with_name(out.name + ".checkpoint")


def train_sae_run(
    model: str | torch.nn.Module,
    sites: str,
    texts: Sequence[str],
    output: str | Path | None,
    config: SAETrainConfig | None = None,
    eval_text: str | None = None,
    seqlen: int = 128,
    eval_windows: int = 32,
    checkpoint: str | Path | None = None,
    keep_checkpoint: bool = False,
    progress: bool = True,
    model_options: ModelOptions | None = None,
) -> dict[str, Any]:
    """Train one SAE per site of ``sites`` (``blocks.*.hook_resid_post`` style) on ``texts`` (files or
    corpus names, joined), measure each on ``eval_windows`` windows of ``eval_text`` (default: the last
    windows of the training text, then left out of training), write the run folder (module docstring)
    and return the summary. ``checkpoint`` defaults to ``OUTPUT.checkpoint``; without an output, no
    checkpoint is written unless one is given."""
    ck = checkpoint_folder(output, checkpoint) if output is not None else checkpoint
    return _train(model, sites, texts, output, config or SAETrainConfig(), eval_text, seqlen, eval_windows,
                  ck, keep_checkpoint, progress, model_options)  # fmt: skip


@writes_run("sae")
def _train(model: str | torch.nn.Module, sites: str, texts: Sequence[str], output: Path | None, cfg: SAETrainConfig,
           eval_text: str | None, seqlen: int, eval_windows: int, ck: str | Path | None, keep_checkpoint: bool,
           progress: bool, model_options: ModelOptions | None) -> dict[str, Any]:  # fmt: skip
    """:func:`train_sae_run` inside its run folder (``output`` is the temporary folder)."""
    if not texts:
        raise CircuitcutError("no training text given; give at least one file or corpus name (--text)")
    m, tok, adapter, name = as_loaded(model, purpose="SAE training", options=model_options)
    chosen = [s.name for s in sites_matching(sites, adapter)]
    windows = torch.tensor(text_windows(tok, "\n\n".join(load_text(t) for t in texts), seqlen))
    if eval_text is not None:
        held = torch.tensor(text_windows(tok, load_text(eval_text), seqlen)[:eval_windows])
    else:
        if len(windows) <= eval_windows:
            raise CircuitcutError(
                f"the training text gives {len(windows)} windows of {seqlen} tokens, not more than the "
                f"{eval_windows} held out for evaluation; give more text, an --eval-text or fewer --eval-windows"
            )
        windows, held = windows[:-eval_windows], windows[-eval_windows:]
    t0 = time.perf_counter()
    saes, info = train_saes(m, adapter, chosen, windows, cfg, checkpoint=ck, progress=progress)
    quality = {}
    for sae in saes:
        q = sae_quality(m, adapter, sae, held)
        q["loss_increase"] = q["loss_spliced"] / q["loss_clean"] - 1
        quality[sae.hook_name] = q
    summary = {
        "model": name, "sites": chosen, "config": cfg.as_dict(), "texts": [str(t) for t in texts],
        "training_windows": len(windows), "seqlen": seqlen, "training_tokens": int(windows.numel()),
        "evaluation": {"text": str(eval_text) if eval_text else "the training text's last windows (held out)",
                       "windows": len(held), "tokens": int(held.numel())},
        "training": info, "quality": quality, "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    if output is not None:
        out = Path(output)
        for sae in saes:
            sae.save(out / sae.hook_name)
        write_json(out / "quality.json", summary)
        write_text(out / "report.md", report(summary))
    if ck is not None and info["finished"] and not keep_checkpoint:
        shutil.rmtree(ck, ignore_errors=True)
    return summary


def report(s: dict[str, Any]) -> str:
    """The Markdown quality table of a run."""
    c = s["config"]
    lines = [
        f"# SAEs for {s['model']}",
        "",
        f"{c['architecture']} SAEs, {c['d_sae']} features"
        + (f", k = {c['k']}" if c["architecture"] == "topk" else f", L1 {c['l1_coefficient']}")
        + f"; {s['training']['steps']} steps of {c['batch_tokens']} tokens (lr {c['lr']}, seed {c['seed']}) on "
        f"{s['training_tokens']} tokens of {', '.join(s['texts'])} in windows of {s['seqlen']}; "
        f"{s['training']['seconds']:.0f} s of training for all sites together "
        f"({s['training']['forward_passes']} model forward passes).",
        "",
        f"Measured on {s['evaluation']['windows']} windows ({s['evaluation']['tokens']} tokens) of "
        f"{s['evaluation']['text']}.",
        "",
        *quality_table(s["quality"]),
    ]
    return "\n".join(lines) + "\n"


def quality_table(quality: dict[str, dict[str, float]]) -> list[str]:
    """Markdown table lines: each site's explained variance, L0, dead share and losses (``quality`` as
    :func:`train_sae_run` reports it)."""
    lines = [
        "| site | explained variance | L0 | dead | loss dense | loss spliced | increase | loss zeroed | recovered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for site, q in quality.items():
        lines.append(
            f"| {site} | {q['explained_variance']:.3f} | {q['l0']:.1f} | {q['dead_fraction']:.3f} | "
            f"{q['loss_clean']:.4f} | {q['loss_spliced']:.4f} | {100 * q['loss_increase']:+.1f}% | "
            f"{q['loss_zero_ablated']:.4f} | {q['loss_recovered']:.3f} |"
        )
    return lines
