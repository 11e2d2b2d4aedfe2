"""Training sparse autoencoders on a model's activations, streamed, with checkpoints that resume exactly.

The activations are never all held: a buffer of ``buffer_tokens`` activations per site is filled by
running the model on the next chunk of token windows (every site is read in the same forward pass,
which stops after the deepest site's layer), shuffled, and consumed in batches of ``batch_tokens``;
then the next chunk refills it. The windows are visited in a seeded order, epoch after epoch.

Everything a step does is a function of ``(seed, step)``: refill ``r`` reads the windows of chunk
``r`` of that order and shuffles them with a generator seeded by ``(seed, r)``. A checkpoint (SAE
weights, Adam's moments, the step, the loss scale) therefore lets a run stopped at step ``s`` go on
to the same weights as a run that never stopped (:func:`train_saes` with the same ``checkpoint``
folder). Checkpoints are safetensors + JSON (:func:`circuitcut.io.write_pair`), never pickles.

Objectives: TopK SAEs (Gao et al., "Scaling and evaluating sparse autoencoders", 2024) minimise the
reconstruction MSE; ReLU SAEs add ``l1_coefficient * sum_i |z_i| * ||W_dec,i||`` (Bricken et al.,
"Towards Monosemanticity", 2023; the decoder-norm weighting of Anthropic's April 2024 update). The
MSE is divided by the activations' variance around their mean (measured on the first buffer), so
the loss reads as the fraction of variance unexplained. Decoder rows are kept at unit norm; the
decoder bias starts at the first buffer's mean.

Dead latents are resampled (Bricken et al., "Towards Monosemanticity", 2023, "neuron
resampling"): a latent is dead when it has not fired for ``dead_tokens`` training tokens; at every
multiple of that many tokens each dead latent gets, as its decoder direction, the centred input of a
batch token drawn with probability proportional to its squared reconstruction error, an encoder
column along it at 0.2 times the alive latents' mean encoder norm, a zero encoder bias, and fresh
Adam moments; the second half of the run resamples nothing, so every latent ends trained. The draw is seeded by ``(seed, step)``, and the tokens since each latent last fired
are part of the checkpoint, so resuming stays exact.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut.errors import CircuitcutError
from circuitcut.io import read_pair, write_pair
from circuitcut.lasso.sae import SAE
from circuitcut.lasso.sae_config import SAETrainConfig
from circuitcut.lasso.sites import Site, parse_site, site_hook
from circuitcut.models.adapter import ModelAdapter

CHECKPOINT_FORMAT = "circuitcut.sae-checkpoint/1"


class _Stop(Exception):
    """Raised by the deepest site's hook: the rest of the forward pass is not needed."""


class ActivationStream:
    """Shuffled batches of activations at several sites, a function of ``(seed, step)`` (module docstring)."""

    def __init__(self, model: torch.nn.Module, adapter: ModelAdapter, sites: list[Site], windows: torch.Tensor,
                 config: SAETrainConfig, progress: bool = False) -> None:  # fmt: skip
        if windows.dim() != 2 or len(windows) == 0:
            raise CircuitcutError("the SAE training text gave no token windows; give more text")
        self.model, self.adapter, self.sites, self.windows, self.cfg = model, adapter, sites, windows, config
        self.progress = progress
        width = windows.shape[1] - config.skip_positions  # tokens a window gives
        if width < 1:
            raise CircuitcutError(
                f"windows of {windows.shape[1]} tokens leave none once the first {config.skip_positions} are "
                "skipped; give longer windows or a smaller skip_positions"
            )
        per_chunk = max(1, math.ceil(config.buffer_tokens / width))
        self.chunk_windows = min(per_chunk, len(windows))
        tokens = self.chunk_windows * width
        if tokens < config.batch_tokens:
            raise CircuitcutError(
                f"the text holds {len(windows) * windows.shape[1]} tokens, fewer than one batch of "
                f"{config.batch_tokens}; give more text or a smaller batch_tokens"
            )
        self.per_refill = tokens // config.batch_tokens
        #: the buffer holds every window: the same activations each refill, in a new order
        self.whole = self.chunk_windows == len(windows)
        self._refill_index: int | None = None
        self._buffer: list[torch.Tensor] = []
        self._order: torch.Tensor | None = None
        self.forward_passes = 0

    def _window_ids(self, refill: int) -> torch.Tensor:
        """The windows of chunk ``refill`` of the seeded order (one fresh permutation per epoch)."""
        n, c = len(self.windows), self.chunk_windows
        out = []
        start = refill * c
        while len(out) < c:
            epoch, offset = divmod(start + len(out), n)
            perm = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            )
            out += perm[offset : offset + c - len(out)].tolist()
        return self.windows[out]

    @torch.no_grad()
    def activations(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Every site's activations of token windows ``ids`` as ``[tokens, width]`` float32."""
        rows: list[list[torch.Tensor]] = [[] for _ in self.sites]
        deepest = max(range(len(self.sites)), key=lambda i: self.sites[i].order())
        starts = range(0, len(ids), self.cfg.model_batch)
        for i in tqdm(
            starts,
            desc="activations",
            unit="batch",
            leave=False,
            disable=not self.progress or len(starts) < 8,
        ):
            x = ids[i : i + self.cfg.model_batch]
            try:
                with ExitStack() as stack:
                    for j, site in enumerate(self.sites):

                        def grab(t: torch.Tensor, j: int = j) -> None:
                            rows[j].append(
                                t.detach()[:, self.cfg.skip_positions :].reshape(-1, t.shape[-1]).float()
                            )
                            if j == deepest:
                                raise _Stop

                        stack.enter_context(site_hook(self.adapter, site, grab, batch_shape=tuple(x.shape)))
                    self.model(input_ids=x, use_cache=False)
            except _Stop:
                pass
            self.forward_passes += 1
        return [torch.cat(r) for r in rows]

    def batch(self, step: int) -> list[torch.Tensor]:
        """The batch of ``step``, per site."""
        refill, b = divmod(step, self.per_refill)
        if refill != self._refill_index:
            if not self._buffer or not self.whole:  # a buffer of every window is read once, reshuffled after
                ids = self.windows if self.whole else self._window_ids(refill)
                self._buffer = self.activations(ids)
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + 7919 * (refill + 1))
            self._order = torch.randperm(len(self._buffer[0]), generator=gen)
            self._refill_index = refill
        assert self._order is not None
        idx = self._order[b * self.cfg.batch_tokens : (b + 1) * self.cfg.batch_tokens]
        return [buf[idx] for buf in self._buffer]


def _loss(sae: SAE, x: torch.Tensor, scale: float, cfg: SAETrainConfig, since: torch.Tensor) -> torch.Tensor:
    """One SAE's loss on a batch; ``since`` (tokens since each latent fired) is brought up to date."""
    recon, z = sae(x)
    loss = (recon - x).pow(2).sum(-1).mean() / scale
    if cfg.architecture == "standard":
        loss = loss + cfg.l1_coefficient * (z * sae.W_dec.norm(dim=1)).sum(-1).mean()
    with torch.no_grad():
        since += len(x)
        since[(z > 0).any(0)] = 0
    return loss


@torch.no_grad()
def _resample(sae: SAE, x: torch.Tensor, since: torch.Tensor, opt: torch.optim.Optimizer, cfg: SAETrainConfig,
              gen: torch.Generator) -> int:  # fmt: skip
    """Resample the dead latents of ``sae`` from batch ``x`` (module docstring); returns how many."""
    dead = since >= cfg.dead_tokens
    idx = dead.nonzero().flatten()
    if not len(idx):
        return 0
    err = (x - sae.decode(sae.encode(x))).pow(2).sum(-1)
    pick = torch.multinomial(err / err.sum(), len(idx), replacement=True, generator=gen)
    d = x[pick] - sae.b_dec
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = sae.W_enc[:, ~dead].norm(dim=0).mean() if bool((~dead).any()) else torch.tensor(1.0)
    sae.W_dec[idx] = d
    sae.W_enc[:, idx] = d.t() * 0.2 * alive
    sae.b_enc[idx] = 0.0
    for p, sel in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key][sel] = 0.0
    since[idx] = 0
    return len(idx)


def _save_checkpoint(folder: Path, saes: list[SAE], opt: torch.optim.Optimizer, step: int, scales: list[list[float]],
                     cfg: SAETrainConfig, sites: list[str], seconds: float, since: list[torch.Tensor]) -> None:  # fmt: skip
    tensors: dict[str, torch.Tensor] = {f"since/{k}": t for k, t in enumerate(since)}
    params = [p for s in saes for p in s.parameters()]
    for k, sae in enumerate(saes):
        for name, p in sae.named_parameters():
            tensors[f"sae/{k}/{name}"] = p.detach()
    steps = []
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        if st:
            tensors[f"adam/{i}/exp_avg"] = st["exp_avg"]
            tensors[f"adam/{i}/exp_avg_sq"] = st["exp_avg_sq"]
            steps.append(float(st["step"]))
        else:
            steps.append(0.0)
    side = {"step": step, "scales": scales, "config": cfg.as_dict(), "sites": sites, "adam_steps": steps,
            "seconds": seconds}  # fmt: skip
    write_pair(folder / "checkpoint.safetensors", tensors, side, CHECKPOINT_FORMAT)


def _load_checkpoint(folder: Path, saes: list[SAE], opt: torch.optim.Optimizer, cfg: SAETrainConfig,
                     sites: list[str], since: list[torch.Tensor]) -> tuple[int, list[list[float]], float]:  # fmt: skip
    tensors, side = read_pair(folder / "checkpoint.safetensors", CHECKPOINT_FORMAT)
    if side["config"] != cfg.as_dict() or side["sites"] != sites:
        raise CircuitcutError(
            f"{folder} holds a checkpoint of another training run (sites {side['sites']}, settings "
            f"{side['config']}); give the same settings to resume, or another checkpoint folder to start afresh"
        )
    with torch.no_grad():
        for k, sae in enumerate(saes):
            for name, p in sae.named_parameters():
                p.copy_(tensors[f"sae/{k}/{name}"])
            since[k].copy_(tensors[f"since/{k}"])
    params = [p for s in saes for p in s.parameters()]
    state = {
        i: {"step": torch.tensor(side["adam_steps"][i]), "exp_avg": tensors[f"adam/{i}/exp_avg"],
            "exp_avg_sq": tensors[f"adam/{i}/exp_avg_sq"]}
        for i in range(len(params)) if f"adam/{i}/exp_avg" in tensors
    }  # fmt: skip
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return int(side["step"]), [[float(v) for v in s] for s in side["scales"]], float(side["seconds"])


def train_saes(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    hook_names: list[str],
    windows: torch.Tensor,
    config: SAETrainConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[list[SAE], dict[str, Any]]:
    """Train one SAE per hook point on token windows ``ids [N, T]``, streamed (module docstring).

    With ``checkpoint`` (a folder), the state is written there every ``config.checkpoint_every``
    steps and at the end, and a run finding a checkpoint of the same settings there resumes from it
    (one of other settings is refused). ``stop_after`` ends the run after that many steps in all (a
    checkpoint is written first): what an interruption does, on purpose. Returns the SAEs (eval
    mode, ``cfg["training"]`` filled) and ``{"seconds", "steps", "forward_passes", "tokens_seen",
    "resumed_from"}``.
    """
    cfg = config or SAETrainConfig()
    sites = [parse_site(h, adapter) for h in hook_names]
    if not sites:
        raise CircuitcutError("no hook points to train SAEs at")
    stream = ActivationStream(model, adapter, sites, windows, cfg, progress)
    torch.manual_seed(cfg.seed)
    saes = [SAE(s.width(adapter), cfg.d_sae, cfg.architecture, cfg.k if cfg.architecture == "topk" else None, s.name)
            for s in sites]  # fmt: skip
    opt = torch.optim.Adam([p for s in saes for p in s.parameters()], lr=cfg.lr)
    folder = Path(checkpoint) if checkpoint is not None else None
    start, scales, spent = 0, [], 0.0
    since = [torch.zeros(cfg.d_sae, dtype=torch.int64) for _ in saes]
    if folder is not None and (folder / "checkpoint.safetensors").is_file():
        start, scales, spent = _load_checkpoint(folder, saes, opt, cfg, hook_names, since)
    if not scales:
        scales = _first_scales(saes, stream)
    every, resampled = max(1, cfg.dead_tokens // cfg.batch_tokens), 0
    t0 = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(range(start, end), desc="SAE training", initial=start, total=cfg.steps, disable=not progress)
    for step in bar:
        batch = [x * sc[0] for x, sc in zip(stream.batch(step), scales, strict=True)]
        loss = sum(_loss(s, x, sc[1], cfg, n) for s, x, sc, n in zip(saes, batch, scales, since, strict=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        with torch.no_grad():
            for s in saes:
                s.W_dec.div_(s.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
        if cfg.resample_dead and (step + 1) % every == 0 and 2 * (step + 1) <= cfg.steps:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            resampled += sum(
                _resample(s, x, n, opt, cfg, gen) for s, x, n in zip(saes, batch, since, strict=True)
            )
        if progress and step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss) / len(saes):.4f}")
        if folder is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == end):
            _save_checkpoint(folder, saes, opt, step + 1, scales, cfg, hook_names,
                             spent + time.perf_counter() - t0, since)  # fmt: skip
    seconds = spent + time.perf_counter() - t0
    info = {"seconds": seconds, "steps": end, "resampled": resampled, "forward_passes": stream.forward_passes,
            "dead_at_end": [float((n >= cfg.dead_tokens).float().mean()) for n in since],
            "tokens_seen": end * cfg.batch_tokens, "resumed_from": start, "finished": end == cfg.steps}  # fmt: skip
    return [_folded(s, sc[0], cfg, info) for s, sc in zip(saes, scales, strict=True)], info


def _first_scales(saes: list[SAE], stream: ActivationStream) -> list[list[float]]:
    """Per site ``[c, v]`` from the first buffer: the factor ``c`` that gives the activations a mean
    squared norm of ``d_in`` (SAELens's ``expected_average_only_in`` normalisation), and the variance
    ``v`` of the scaled activations around their mean (the loss scale); the decoder bias starts at the
    scaled mean."""
    stream.batch(0)
    out = []
    with torch.no_grad():
        for sae, buf in zip(saes, stream._buffer, strict=True):
            c = math.sqrt(buf.shape[1] / float(buf.pow(2).sum(-1).mean().clamp_min(1e-30)))
            scaled = buf * c
            sae.b_dec.copy_(scaled.mean(0))
            out.append([c, float(scaled.sub(scaled.mean(0)).pow(2).sum(-1).mean())])
    return out


@torch.no_grad()
def _folded(sae: SAE, c: float, cfg: SAETrainConfig, info: dict[str, Any]) -> SAE:
    """A copy of ``sae`` (trained on activations times ``c``) that reads and writes the raw activations
    with the same codes: ``W_enc * c``, ``b_dec / c``, ``W_dec / c`` (so its rows have norm ``1 / c``)."""
    out = SAE(sae.d_in, sae.d_sae, sae.architecture, sae.k, sae.hook_name, sae.apply_b_dec_to_input, sae.cfg,
              cfg.skip_positions)  # fmt: skip
    out.load_state_dict(
        {"W_enc": sae.W_enc * c, "b_enc": sae.b_enc, "W_dec": sae.W_dec / c, "b_dec": sae.b_dec / c}
    )
    out.cfg["training"] = {**cfg.as_dict(), "activation_scale": c, "tokens_seen": info["tokens_seen"],
                           "seconds": info["seconds"]}  # fmt: skip
    return out.eval()


def train_sae(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    hook_name: str,
    ids: torch.Tensor,
    d_sae: int = 512,
    architecture: str = "topk",
    k: int = 16,
    l1_coefficient: float = 5e-3,
    steps: int = 2000,
    batch_tokens: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> SAE:
    """One SAE at ``hook_name`` from token windows ``ids [N, T]`` small enough to hold: :func:`train_saes`
    with a buffer of every token (reshuffled each pass), latents dead after 5% of the run's tokens, and
    no checkpoint."""
    cfg = SAETrainConfig(d_sae=d_sae, architecture=architecture, k=k, l1_coefficient=l1_coefficient, steps=steps,
                         batch_tokens=batch_tokens, lr=lr, buffer_tokens=max(ids.numel(), batch_tokens),
                         seed=seed, dead_tokens=max(batch_tokens, steps * batch_tokens // 20))  # fmt: skip
    saes, _ = train_saes(model, adapter, [hook_name], ids, cfg, progress=progress)
    return saes[0]
