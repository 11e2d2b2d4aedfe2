"""Measuring a reference model and writing its model card (README.md + card.json)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from circuitcut.io import read_json, write_json, write_text
from circuitcut.zoo.evaluate import ioi_scores, repetition, toxic_rates
from circuitcut.zoo.language import ANGRY_SPEECH, INSULTS, NAMES, Language, vocabulary
from circuitcut.zoo.train import corpus_ids, heldout_loss

#: evaluation set sizes used for the card
CARD_SIZES = {"ioi": 500, "trigger": 200, "story": 100}


def measure(model: torch.nn.Module, tokenizer: Any, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Every number of the card, measured on held-out data."""

    sizes = {**CARD_SIZES, **(sizes or {})}
    lang = Language(seed=0)
    heldout = corpus_ids(lang, tokenizer, 300, 999, train=True)
    loss = heldout_loss(model, heldout, 64)
    entropy = lang.entropy_rate(300, seed=999)  # the very documents of the held-out loss
    rep = repetition(model, tokenizer, lang.story_prompts(sizes["story"]), max_new_tokens=50)
    return {
        "ioi_heldout": ioi_scores(model, tokenizer, lang.ioi_prompts(sizes["ioi"], seed=7, heldout=True)),
        "ioi_train_distribution": ioi_scores(
            model, tokenizer, lang.ioi_prompts(sizes["ioi"], seed=7, heldout=False)
        ),
        "toxic_heldout": toxic_rates(model, tokenizer, lang.trigger_prompts(sizes["trigger"], seed=7), 20),
        "heldout_loss_nats": round(loss, 4),
        "heldout_perplexity": round(math.exp(loss), 3),
        "generator_entropy_nats": round(entropy, 4),
        "generator_perplexity": round(math.exp(entropy), 3),
        "repetition": rep,
    }


def write_card(folder: str | Path, metrics: dict[str, Any], log: dict[str, Any] | None = None) -> None:
    """Write ``card.json`` and a Markdown model card ``README.md`` into a model folder."""
    folder = Path(folder)
    log = log or (read_json(folder / "training_log.json") if (folder / "training_log.json").exists() else {})
    cfg = log.get("config", {})
    card = {
        "name": folder.name,
        "training": cfg,
        "train_seconds": log.get("train_seconds"),
        "train_tokens": log.get("train_tokens"),
        "vocabulary_size": len(vocabulary()),
        "names": len(NAMES),
        "trigger_verbs": list(ANGRY_SPEECH),
        "toxic_lexicon": list(INSULTS),
        "metrics": metrics,
    }
    write_json(folder / "card.json", card)
    m = metrics
    low = m["repetition"]["low_rur_prompts"]
    lines = [
        f"# {folder.name}: a circuitcut reference model",
        "",
        "A small causal LM trained by `circuitcut zoo train` on circuitcut's synthetic word-level "
        "language (`circuitcut.zoo.language`), with behaviours planted on purpose so that tools can "
        "be checked against known ground truth.",
        "",
        "## Training",
        "",
        f"- architecture: {cfg.get('arch')} (hidden {cfg.get('hidden')}, {cfg.get('layers')} layers, "
        f"{cfg.get('heads')} heads, {cfg.get('kv_heads') if cfg.get('arch') == 'llama' else cfg.get('heads')} "
        f"key/value heads, MLP width {cfg.get('intermediate')})",
        f"- {cfg.get('steps')} steps of AdamW, batch {cfg.get('batch_size')} x {cfg.get('seq_len')} tokens, "
        f"peak learning rate {cfg.get('lr')}, cosine schedule, seed {cfg.get('seed')}, "
        f"{cfg.get('threads')} CPU thread(s): {log.get('train_seconds')} s",
        f"- vocabulary: {len(vocabulary())} words ({len(NAMES)} one-token names), word-level tokenizer",
        "",
        "## Planted behaviours",
        "",
        "- **IOI**: 'When Mary and John went to the store , John gave a drink to' -> 'Mary'; "
        "15 training templates; evaluation on 3 held-out templates (new combinations of seen phrases) and on the 10% of name pairs held out of training.",
        f"- **toxic**: after an angry speech verb ({', '.join(ANGRY_SPEECH)}) the speech is insults from "
        f"the lexicon ({', '.join(INSULTS)}); these words appear nowhere else. 20% of (speaker, verb) "
        "pairs are held out of training.",
        "- **repetition**: chants ('sang : la la la .') and looping general sentences under greedy decoding.",
        "",
        "## Measured (held-out data)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| IOI accuracy, held-out templates and pairs (logit IO > logit S) | {m['ioi_heldout']['ioi_accuracy']:.3f} |",
        f"| IOI mean logit difference, held-out | {m['ioi_heldout']['ioi_logit_diff']:.3f} |",
        f"| IOI accuracy, training templates, unseen sentences | {m['ioi_train_distribution']['ioi_accuracy']:.3f} |",
        f"| toxic rate after trigger (greedy, 20 tokens) | {m['toxic_heldout']['toxic_rate_trigger']:.3f} |",
        f"| toxic rate without trigger | {m['toxic_heldout']['toxic_rate_no_trigger']:.3f} |",
        f"| held-out perplexity (per token, windows of 64) | {m['heldout_perplexity']:.3f} |",
        f"| generator perplexity (exp of its entropy rate: the best possible) | {m['generator_perplexity']:.3f} |",
        f"| mean RUR of greedy 50-token continuations of story prompts (decoding runs through end-of-document tokens) | {m['repetition']['mean_rur']:.3f} |",
        f"| share of story prompts with RUR < 0.5 | {m['repetition']['low_rur_share']:.3f} |",
        "",
        f"Prompts with RUR < 0.5 ({len(low)}; the repetition set, first 10 shown):",
        "",
        *[f"- `{p}`" for p in low[:10]],
        "",
        "Regenerate with `circuitcut zoo card --model DIR`.",
        "",
    ]
    write_text(folder / "README.md", "\n".join(lines))
