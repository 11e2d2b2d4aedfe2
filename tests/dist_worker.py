"""Worker for the data-parallel test: launched twice by torchrun (gloo); rank 0 writes the scores."""

from __future__ import annotations

import sys

import torch

from circuitcut.attribution import attribute, next_token_sample
from circuitcut.attribution.config import ScoringConfig
from circuitcut.distributed import init_from_env, is_main_process, shutdown, world_size
from circuitcut.models.tiny import tiny_model


def samples() -> list:
    """The shared reference samples (different lengths, so batches are padded)."""
    g = torch.Generator().manual_seed(7)
    return [next_token_sample(torch.randint(3, 64, (6 + i % 5,), generator=g).tolist()) for i in range(10)]


def main() -> None:
    """Score with the process group from the launcher's environment."""
    torch.set_num_threads(1)
    assert init_from_env(backend="gloo") and world_size() == 2
    scores = attribute(tiny_model("llama"), samples(), ScoringConfig(batch_size=3), progress=False)
    if is_main_process():
        scores.save(sys.argv[1])
    shutdown()  # nobody tears the group down while rank 0 is still writing


if __name__ == "__main__":
    main()
