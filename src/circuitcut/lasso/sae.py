"""Sparse autoencoders: SAELens's on-disk layout, ReLU + L1 and TopK training, reconstruction quality.

On disk (as SAELens writes it): ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``, ``hook_name``,
``apply_b_dec_to_input``, ``activation_fn_kwargs`` ...) and ``sae_weights.safetensors`` with
``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``. Encoding is
``act((x - b_dec) @ W_enc + b_enc)`` (``b_dec`` subtracted when ``apply_b_dec_to_input``), decoding
``z @ W_dec + b_dec``; ``act`` is ReLU (``standard``) or ReLU of the ``k`` largest (``topk``).
The SAE error term is ``x - decode(encode(x))``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from circuitcut.errors import CircuitcutError
from circuitcut.io import read_json, read_tensors, write_json, write_tensors
from circuitcut.lasso.sae_config import ARCHITECTURES
from circuitcut.lasso.sites import Site, parse_site, site_hook
from circuitcut.models.adapter import ModelAdapter


class SAE(nn.Module):
    """A sparse autoencoder over one site's activations."""

    def __init__(self, d_in: int, d_sae: int, architecture: str = "standard", k: int | None = None,
                 hook_name: str = "", apply_b_dec_to_input: bool = True, cfg: dict | None = None,
                 skip_positions: int = 0) -> None:  # fmt: skip
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise CircuitcutError(
                f"unknown SAE architecture {architecture!r}; use {' or '.join(ARCHITECTURES)}"
            )
        if architecture == "topk" and not k:
            raise CircuitcutError("a topk SAE needs k (activation_fn_kwargs.k)")
        self.d_in, self.d_sae, self.architecture, self.k = d_in, d_sae, architecture, k
        self.hook_name = hook_name
        self.apply_b_dec_to_input = apply_b_dec_to_input
        #: the first positions of every sequence the SAE leaves alone (attention sinks, see sequence_codes)
        self.skip_positions = skip_positions
        self.cfg = dict(cfg or {})
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))
            self.W_enc.copy_(self.W_dec.t())

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output before its activation function."""
        x = x.to(self.W_enc.dtype)
        return (x - self.b_dec if self.apply_b_dec_to_input else x) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations (codes) of ``x [..., d_in]``."""
        pre = self.pre_activation(x)
        if self.architecture == "topk":
            top = torch.topk(pre, self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))
        return torch.relu(pre)

    def sequence_codes(self, t: torch.Tensor) -> torch.Tensor:
        """Codes of a site's activations ``[B, T, d_in]``, zero at the first ``skip_positions`` positions.

        Some models put activations of a norm ~100x the rest at the first position of every sequence
        (an attention sink: SmolLM2-135M's residual stream from layer 11 on); an SAE trained without
        them leaves them alone: with zero codes there, ``decode(z) + error`` gives the activation back
        unchanged (the error term is ``x - decode(0)``)."""
        z = self.encode(t)
        if self.skip_positions:
            keep = torch.ones(z.shape[-2], 1, dtype=z.dtype, device=z.device)
            keep[: self.skip_positions] = 0
            z = z * keep
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction from codes."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, codes)``."""
        z = self.encode(x)
        return self.decode(z), z

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """The SAE error term ``x - decode(encode(x))``."""
        return x.to(self.W_enc.dtype) - self.decode(self.encode(x))

    # on disk ------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The SAELens-style ``cfg.json``."""
        return {**self.cfg, "architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae,
                "hook_name": self.hook_name, "apply_b_dec_to_input": self.apply_b_dec_to_input,
                "activation_fn_str": "topk" if self.architecture == "topk" else "relu",
                "activation_fn_kwargs": {"k": self.k} if self.k else {}, "dtype": "float32",
                "normalize_activations": "none", "skip_positions": self.skip_positions}  # fmt: skip

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` (atomically)."""
        out = Path(folder)
        write_tensors(out / "sae_weights.safetensors", {k: v.detach() for k, v in self.state_dict().items()})
        write_json(out / "cfg.json", self.config())
        return out


def load_sae(
    folder: str | os.PathLike[str], adapter: ModelAdapter | None = None, hook_name: str | None = None
) -> SAE:
    """Load an SAE in SAELens's layout; with an adapter, check its hook point and width match the model."""
    folder = Path(folder)
    cfg = read_json(folder / "cfg.json")
    weights = read_tensors(folder / "sae_weights.safetensors")
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in weights]
    if missing:
        raise CircuitcutError(f"{folder}: sae_weights.safetensors lacks {', '.join(missing)}")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise CircuitcutError(
            f"{folder}: activation normalisation {cfg['normalize_activations']!r} is not supported"
        )
    arch = cfg.get("architecture", "standard")
    arch = "standard" if arch in ("standard", "relu") else arch
    kw = cfg.get("activation_fn_kwargs") or {}
    d_in, d_sae = weights["W_enc"].shape
    if (cfg.get("d_in", d_in), cfg.get("d_sae", d_sae)) != (d_in, d_sae):
        raise CircuitcutError(
            f"{folder}: cfg.json says {cfg.get('d_in')}x{cfg.get('d_sae')}, weights are {d_in}x{d_sae}"
        )
    sae = SAE(d_in, d_sae, arch, kw.get("k"), hook_name or cfg.get("hook_name", ""),
              cfg.get("apply_b_dec_to_input", True), cfg, int(cfg.get("skip_positions", 0)))  # fmt: skip
    sae.load_state_dict({k: weights[k].float() for k in ("W_enc", "W_dec", "b_enc", "b_dec")})
    if adapter is not None:
        site = parse_site(sae.hook_name, adapter)
        if site.width(adapter) != d_in:
            raise CircuitcutError(
                f"{folder}: the SAE reads {d_in} features but {sae.hook_name} of this model has {site.width(adapter)}; "
                "it was trained for another model"
            )
    return sae.eval()


def collect_site(model: torch.nn.Module, adapter: ModelAdapter, site: Site, ids: torch.Tensor,
                 batch_size: int = 16) -> torch.Tensor:  # fmt: skip
    """All token activations at a site for token windows ``ids [N, T]``: ``[N * T, width]``."""
    rows: list[torch.Tensor] = []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            x = ids[i : i + batch_size]
            with site_hook(adapter, site, lambda t: rows.append(t.detach().reshape(-1, t.shape[-1]).float()),
                           batch_shape=tuple(x.shape)):  # fmt: skip
                model(input_ids=x, use_cache=False)
    return torch.cat(rows)


@torch.no_grad()
def sae_quality(
    model: torch.nn.Module, adapter: ModelAdapter, sae: SAE, ids: torch.Tensor
) -> dict[str, float]:
    """Explained variance, dead-feature fraction, mean L0, and the model's next-token loss clean, with
    the SAE's reconstruction spliced in, and with the site zeroed. Positions the SAE skips
    (``skip_positions``) are left out of the first three and left unchanged in the spliced run."""
    site = parse_site(sae.hook_name, adapter)
    acts = collect_site(model, adapter, site, ids).reshape(len(ids), ids.shape[1], -1)[
        :, sae.skip_positions :
    ]
    acts = acts.reshape(-1, acts.shape[-1])
    recon, z = sae(acts)
    ev = 1 - (acts - recon).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()

    def loss(fn: Any) -> float:
        total = 0.0
        for i in range(0, len(ids), 16):
            x = ids[i : i + 16]
            ctx = site_hook(adapter, site, fn, batch_shape=tuple(x.shape)) if fn else _null()
            with ctx:
                logits = model(input_ids=x, use_cache=False).logits[:, :-1]
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten(),
                                                       reduction="sum").item()  # fmt: skip
        return total / (len(ids) * (ids.shape[1] - 1))

    clean = loss(None)
    spliced = loss(lambda t: _kept_first(t, sae.decode(sae.encode(t)), sae.skip_positions))
    zero = loss(lambda t: _kept_first(t, torch.zeros_like(t), sae.skip_positions))
    return {
        "explained_variance": float(ev),
        "dead_fraction": float((z.sum(0) == 0).float().mean()),
        "l0": float((z > 0).float().sum(-1).mean()),
        "loss_clean": clean,
        "loss_spliced": spliced,
        "loss_zero_ablated": zero,
        "loss_recovered": (zero - spliced) / (zero - clean) if not math.isclose(zero, clean) else 1.0,
        "skip_positions": sae.skip_positions,
    }


def _kept_first(t: torch.Tensor, new: torch.Tensor, skip: int) -> torch.Tensor:
    """``new`` with the first ``skip`` positions of ``t [B, T, d]`` kept as they are."""
    if not skip:
        return new.to(t.dtype)
    out = new.to(t.dtype).clone()
    out[:, :skip] = t[:, :skip]
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
