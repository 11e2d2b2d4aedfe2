"""Streaming batches through a collector: data-parallel sharding, checkpoints, the final reduction.

Batches are formed first, then dealt round-robin to the processes, so every sample is computed in
exactly the batch it would have in a single-process run; only the order of the float32 sums
differs. Each process accumulates locally; one all-reduce of the sums at the end combines them
(counts are known). With a checkpoint path, the accumulators and the number of batches done are
saved every ``every`` batches (safetensors + JSON, one unit per rank: :func:`circuitcut.io.write_pair`); a rerun with the
same settings resumes after the last checkpoint and ends with the same scores as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution.targets import Sample
from circuitcut.distributed import all_reduce_sum, rank, world_size
from circuitcut.errors import CircuitcutError
from circuitcut.io import read_pair, write_pair

FORMAT = "circuitcut.checkpoint/1"


def fingerprint(samples: Sequence[Sample], settings: dict[str, Any]) -> str:
    """A hash of the samples and the settings that determine the scores."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for s in samples:
        h.update(
            str(
                (s.input_ids, s.target) if s.baseline_ids is None else (s.input_ids, s.target, s.baseline_ids)
            ).encode()
        )
    return h.hexdigest()[:16]


class Checkpointer:
    """Saves and restores one process's accumulators."""

    def __init__(self, path: str | os.PathLike[str], every: int, key: str) -> None:
        if every < 1:
            raise CircuitcutError(f"checkpoint_every must be >= 1, got {every}")
        base = Path(path)
        self.tensors = base.with_name(f"{base.name}.rank{rank()}-of-{world_size()}.safetensors")
        self.sidecar = self.tensors.with_suffix(".json")
        self.every = every
        self.key = key

    def load(self) -> tuple[int, dict[str, torch.Tensor] | None]:
        """``(batches done, state)`` of a matching checkpoint, or ``(0, None)``."""
        if not self.sidecar.exists():
            return 0, None
        state, side = read_pair(self.tensors, FORMAT)
        if side.get("fingerprint") != self.key:
            raise CircuitcutError(
                f"checkpoint {self.sidecar} was written for other samples or settings; delete it to start over"
            )
        return int(side["batches_done"]), state

    def save(self, done: int, state: dict[str, torch.Tensor]) -> None:
        """Write the accumulators and the count of batches they hold, as one unit (a save cut short
        leaves a pair that :meth:`load` refuses, never sums with the wrong count)."""
        write_pair(self.tensors, state, {"fingerprint": self.key, "batches_done": done}, FORMAT)

    def finish(self) -> None:
        """Remove the checkpoint once the run is complete."""
        for p in (self.sidecar, self.tensors):
            if p.exists():
                p.unlink()


def run_batches(
    batches: Sequence[list[Sample]],
    step: Callable[[list[Sample]], None],
    collector: Any,
    checkpointer: Checkpointer | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Run ``step`` on this process's share of the batches, then sum the accumulators over processes."""
    local = list(batches)[rank() :: world_size()]
    done = 0
    if checkpointer is not None:
        done, state = checkpointer.load()
        if state is not None:
            collector.load_state(state)
    for i, batch in enumerate(local):
        if i >= done:
            step(batch)
            if checkpointer is not None and (i + 1) % checkpointer.every == 0 and i + 1 < len(local):
                checkpointer.save(i + 1, collector.state())
        if on_batch is not None:
            on_batch(len(batch))
    collector.load_state(all_reduce_sum(collector.state()))
    if checkpointer is not None:
        checkpointer.finish()
