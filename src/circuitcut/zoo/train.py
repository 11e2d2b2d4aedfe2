"""Training the reference models: plain PyTorch on transformers model classes, seeded, on CPU."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from circuitcut.run_folder import writes_run
from circuitcut.zoo.config import ARCHS, TrainConfig
from circuitcut.zoo.language import Language
from circuitcut.zoo.tokenizer import build_tokenizer, save_tokenizer

__all__ = ["ARCHS", "TrainConfig", "corpus_ids", "heldout_loss", "train_reference_model"]


def model_config(cfg: TrainConfig, vocab_size: int, tokenizer: Any) -> Any:
    """The transformers config of a reference model."""
    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if cfg.arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.kv_heads,
            intermediate_size=cfg.intermediate,
            max_position_embeddings=cfg.seq_len * 2,
            tie_word_embeddings=False,
            rms_norm_eps=1e-5,
            **ids,
        )
    return OPTConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        ffn_dim=cfg.intermediate,
        word_embed_proj_dim=cfg.hidden,
        max_position_embeddings=cfg.seq_len * 2,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        layerdrop=0.0,
        tie_word_embeddings=False,
        do_layer_norm_before=True,
        enable_bias=True,
        **ids,
    )


def corpus_ids(lang: Language, tokenizer: Any, n_docs: int, seed: int, train: bool) -> torch.Tensor:
    """The token ids of ``n_docs`` generated documents, each followed by end-of-text."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for doc in lang.documents(n_docs, seed, train=train):
        ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, data: torch.Tensor, seq_len: int) -> float:
    """Mean next-token cross-entropy over non-overlapping windows of ``seq_len`` tokens."""
    n = (len(data) - 1) // seq_len
    x = data[: n * seq_len].view(n, seq_len)
    y = data[1 : n * seq_len + 1].view(n, seq_len)
    total = 0.0
    for i in range(0, n, 64):
        logits = model(input_ids=x[i : i + 64]).logits
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), y[i : i + 64].flatten(), reduction="sum"
        ).item()
    return total / (n * seq_len)


@writes_run("zoo train")
def train_reference_model(
    cfg: TrainConfig, output: str | Path | None = None, progress: bool = True
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Train a reference model on the synthetic language; save it if ``output`` is given (a run
    folder, :mod:`circuitcut.run_folder`: checked before training, written when it has ended).

    Returns ``(model, tokenizer, log)`` where ``log`` has the loss curve and periodic evaluations.
    """
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    lang = Language(seed=0)
    tokenizer = build_tokenizer()
    cls = LlamaForCausalLM if cfg.arch == "llama" else OPTForCausalLM
    if cfg.init_from:
        model = cls.from_pretrained(cfg.init_from)
    else:
        model = cls(model_config(cfg, len(tokenizer), tokenizer))
    train_data = corpus_ids(lang, tokenizer, cfg.n_docs, cfg.seed, train=True)
    # unseen documents of the training distribution (IOI generalisation is measured separately)
    heldout = corpus_ids(lang, tokenizer, 300, 999, train=True)
    ioi = lang.ioi_prompts(200, seed=1, heldout=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    log: dict[str, Any] = {"config": asdict(cfg), "train_tokens": len(train_data), "evals": []}
    start = time.time()
    model.train()
    bar = tqdm(range(cfg.steps), desc=f"train {cfg.arch}", disable=not progress)
    running = None
    for step in bar:
        starts = torch.randint(0, len(train_data) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
        x = torch.stack([train_data[s : s + cfg.seq_len] for s in starts.tolist()])
        y = torch.stack([train_data[s + 1 : s + cfg.seq_len + 1] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            from circuitcut.zoo.evaluate import ioi_scores

            model.eval()
            entry = {
                "step": step + 1,
                "train_loss": round(running, 4),
                "heldout_loss": round(heldout_loss(model, heldout, cfg.seq_len), 4),
                **ioi_scores(model, tokenizer, ioi),
                "seconds": round(time.time() - start, 1),
            }
            model.train()
            log["evals"].append(entry)
            bar.set_postfix(loss=entry["heldout_loss"], ioi=entry["ioi_accuracy"])
            if not progress:
                print(json.dumps(entry), flush=True)
    model.eval()
    log["train_seconds"] = round(time.time() - start, 1)
    if output is not None:
        out = Path(output)
        model.save_pretrained(out, safe_serialization=True)
        save_tokenizer(tokenizer, out)
        (out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return model, tokenizer, log
