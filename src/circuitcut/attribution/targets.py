"""What is explained: per sample, which output logits (or differences, or log-probabilities).

A :class:`Sample` is a token sequence with a :class:`Target`. The target names, for each explained
output ``k``, the position whose logits are read and the token id, optionally a contrast token
(logit difference), and the kind of quantity. Constructors cover the common cases: next-token
targets for language-model text (compression), an answer at the last position (IOI-style tasks),
and the response tokens of a prompt + response (behaviour sets).

Seeding. The explained function of a sample is ``f = sum_k s_k * o_k``; relevance of a tensor is
``t * df/dt`` under the LRP backward, so the output ``o_k`` itself carries ``s_k * o_k``.

* ``"unit"`` (default): ``s_k = 1 / o_k`` (stabilised), every explained output carries relevance 1,
  so reference sets of different sizes and targets of different scale compare;
* ``"value"``: ``s_k = 1``, each output carries its own value (then, with CP-LRP, the input
  relevance of a bias-free model sums to the explained value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from circuitcut.errors import CircuitcutError

KINDS = ("logit", "logit_diff", "logprob")
SEED_MODES = ("unit", "value")


@dataclass(frozen=True)
class Target:
    """The outputs to explain in one sample.

    Attributes:
        positions: the positions whose logits are read (the logits there predict the next token).
        token_ids: the token explained at each position.
        contrast_ids: with ``kind="logit_diff"``, the token subtracted at each position.
        kind: ``"logit"``, ``"logit_diff"`` (token minus contrast) or ``"logprob"``.
    """

    positions: tuple[int, ...]
    token_ids: tuple[int, ...]
    contrast_ids: tuple[int, ...] | None = None
    kind: str = "logit"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CircuitcutError(f"unknown target kind {self.kind!r}; use one of {KINDS}")
        if len(self.positions) != len(self.token_ids) or not self.positions:
            raise CircuitcutError(
                "a target needs one token id per position and at least one position; got "
                f"{len(self.positions)} positions and {len(self.token_ids)} token ids"
            )
        if self.kind == "logit_diff":
            if self.contrast_ids is None or len(self.contrast_ids) != len(self.positions):
                raise CircuitcutError("a logit_diff target needs one contrast id per position")
        elif self.contrast_ids is not None:
            raise CircuitcutError("contrast ids are only used with kind='logit_diff'")


@dataclass(frozen=True)
class Sample:
    """A token sequence and what to explain in it; ``baseline_ids``, its counterfactual (as many
    tokens), is what an attribution against the counterfactual explains the difference from."""

    input_ids: tuple[int, ...]
    target: Target
    meta: dict = field(default_factory=dict, compare=False)
    baseline_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        if n == 0:
            raise CircuitcutError("a sample needs at least one token")
        if self.baseline_ids is not None and len(self.baseline_ids) != n:
            raise CircuitcutError(
                f"the counterfactual has {len(self.baseline_ids)} tokens, the sample {n}: they must be as many"
            )
        bad = [p for p in self.target.positions if not 0 <= p < n]
        if bad:
            raise CircuitcutError(f"target positions {bad} are outside the sample's {n} tokens (0..{n - 1})")


def next_token_sample(input_ids: Sequence[int], kind: str = "logit") -> Sample:
    """Explain every next ground-truth token of a text (the compression target)."""
    ids = tuple(int(t) for t in input_ids)
    if len(ids) < 2:
        raise CircuitcutError("a language-model sample needs at least two tokens")
    return Sample(ids, Target(tuple(range(len(ids) - 1)), ids[1:], kind=kind))


def answer_sample(
    prompt_ids: Sequence[int],
    answer_id: int,
    contrast_id: int | None = None,
    kind: str | None = None,
    baseline_ids: Sequence[int] | None = None,
) -> Sample:
    """Explain the answer token at the last position (logit difference if a contrast is given);
    ``baseline_ids``: the prompt's counterfactual, for attribution against it."""
    ids = tuple(int(t) for t in prompt_ids)
    if kind is None:
        kind = "logit" if contrast_id is None else "logit_diff"
    contrast = None if contrast_id is None else (int(contrast_id),)
    base = None if baseline_ids is None else tuple(int(t) for t in baseline_ids)
    return Sample(ids, Target((len(ids) - 1,), (int(answer_id),), contrast, kind), baseline_ids=base)


def response_sample(prompt_ids: Sequence[int], response_ids: Sequence[int], kind: str = "logit") -> Sample:
    """Explain each token of a response given its prompt (behaviour sets)."""
    p = tuple(int(t) for t in prompt_ids)
    r = tuple(int(t) for t in response_ids)
    if not p or not r:
        raise CircuitcutError("a response sample needs a non-empty prompt and response")
    ids = p + r
    positions = tuple(range(len(p) - 1, len(ids) - 1))
    return Sample(ids, Target(positions, r, kind=kind))


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int = 0, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token sequences to one width: ``(input_ids [B, T], attention_mask [B, T])``, on the right
    (scoring, where positions index from the start) or the left (generation)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[i, cols] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def collate(samples: Sequence[Sample], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch of samples: ``(input_ids [B, T], attention_mask [B, T])``."""
    return pad_batch([s.input_ids for s in samples], pad_id)


def explained_outputs(logits: torch.Tensor, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the explained outputs of a batch.

    Returns ``(values [K], sample_index [K])``: one entry per explained output of every sample.
    """
    rows, pos, tok, con, kinds = [], [], [], [], []
    for i, s in enumerate(samples):
        t = s.target
        k = len(t.positions)
        rows += [i] * k
        pos += list(t.positions)
        tok += list(t.token_ids)
        con += list(t.contrast_ids) if t.contrast_ids is not None else [-1] * k
        kinds += [t.kind] * k
    dev = logits.device
    rows_t = torch.tensor(rows, device=dev)
    pos_t = torch.tensor(pos, device=dev)
    tok_t = torch.tensor(tok, device=dev)
    picked = logits[rows_t, pos_t].float()  # [K, V]
    values = picked.gather(1, tok_t[:, None])[:, 0]
    kind_set = set(kinds)
    if "logit_diff" in kind_set:
        con_t = torch.tensor([max(c, 0) for c in con], device=dev)
        diff = values - picked.gather(1, con_t[:, None])[:, 0]
        is_diff = torch.tensor([k == "logit_diff" for k in kinds], device=dev)
        values = torch.where(is_diff, diff, values)
    if "logprob" in kind_set:
        lp = torch.log_softmax(picked, dim=-1).gather(1, tok_t[:, None])[:, 0]
        is_lp = torch.tensor([k == "logprob" for k in kinds], device=dev)
        values = torch.where(is_lp, lp, values)
    return values, rows_t


def seed_weights(values: torch.Tensor, mode: str, eps: float = 1e-6) -> torch.Tensor:
    """The seed ``s_k`` of each explained output (see the module docstring), detached."""
    if mode not in SEED_MODES:
        raise CircuitcutError(f"unknown seed mode {mode!r}; use one of {SEED_MODES}")
    v = values.detach()
    if mode == "value":
        return torch.ones_like(v)
    return 1.0 / (v + eps * torch.where(v >= 0, 1.0, -1.0))
