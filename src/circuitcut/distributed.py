"""Data-parallel helpers on ``torch.distributed`` (launched by ``torchrun`` or ``accelerate launch``).

circuitcut does not start processes itself: launch with the tools users already run, e.g.
``torchrun --nproc-per-node 2 -m circuitcut.cli.main attribute ...``. When the launcher's
environment is present (``WORLD_SIZE`` > 1), :func:`init_from_env` creates the process group
(gloo on CPU, NCCL on GPUs); without it everything runs single-process on the same code path.
"""

from __future__ import annotations

import gc
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, the one that writes files."""
    return rank() == 0


def init_from_env(backend: str | None = None, timeout_s: int = 1800) -> bool:
    """Create the process group from a launcher's environment; returns whether one is running."""
    if not dist.is_available() or dist.is_initialized():
        return is_distributed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return is_distributed()


def shutdown(drain_s: float = 0.2) -> None:
    """End a data-parallel run cleanly: wait for every rank (so rank 0 has finished writing), then
    destroy the process group. A no-op when no group is running.

    Why the wait after ``destroy_process_group``: gloo's worker threads release a finished
    collective's tensors on their own thread, and releasing a tensor that Python has seen needs the
    GIL. If the interpreter starts finalizing in that moment, the worker thread is torn down holding
    a half-destroyed work object and the process aborts ("terminate called without an active
    exception", SIGABRT at exit; see pytorch/pytorch PR 179291). ``destroy_process_group`` joins those
    threads only when nothing else references the group, and some torch modules keep references once
    imported (``torch.distributed.fsdp`` holds the default group in default arguments). Sleeping
    releases the GIL so the threads finish their last release before the interpreter exits.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    gc.collect()
    time.sleep(drain_s)


def _comm_device(t: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensors: dict) -> dict:
    """Sum every tensor of a dict over all processes (in place semantics: returns new tensors on
    each tensor's own device). A no-op when not distributed. Keys must match on every rank."""
    if not is_distributed():
        return tensors
    out = {}
    for key in sorted(tensors, key=str):  # the same order on every rank
        t = tensors[key]
        buf = t.detach().to(_comm_device(t), torch.float32 if t.is_floating_point() else t.dtype).contiguous()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        out[key] = buf.to(t.device, t.dtype)
    return out


def all_reduce_int(value: int) -> int:
    """Sum an integer over all processes."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.long)
    t = t.to(_comm_device(t))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())
