"""The settings of a reference model's training (:func:`circuitcut.zoo.train.train_reference_model`),
checked when made: plain data, importable without torch, so the command line shows the defaults at
once."""

from __future__ import annotations

from dataclasses import dataclass

from circuitcut import validation
from circuitcut.errors import InputError

ARCHS = ("llama", "opt")


@dataclass
class TrainConfig:
    """Everything that determines a reference model (recorded in its card)."""

    arch: str = "llama"
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    seq_len: int = 64
    batch_size: int = 32
    steps: int = 3000
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    n_docs: int = 30000
    eval_every: int = 250
    threads: int = 1
    #: continue from a saved reference model (its weights; optimiser state starts afresh)
    init_from: str | None = None

    def __post_init__(self) -> None:
        validation.choice(self.arch, "arch", ARCHS)
        for name in ("hidden", "layers", "heads", "kv_heads", "intermediate", "seq_len", "batch_size",
                     "steps", "n_docs", "eval_every", "threads"):  # fmt: skip
            setattr(self, name, validation.positive_int(getattr(self, name), name))
        self.warmup = validation.non_negative_int(self.warmup, "warmup")
        self.seed = validation.non_negative_int(self.seed, "seed")
        self.lr = validation.positive_float(self.lr, "lr")
        if self.hidden % self.heads:
            raise InputError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise InputError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
