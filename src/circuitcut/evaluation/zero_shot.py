"""Zero-shot accuracy through lm-evaluation-harness (optional: ``pip install circuitcut[eval]``).

The harness downloads its task data from a hub at run time, so this is not exercised in CI here;
the wiring is tested with a stub harness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from circuitcut.errors import CircuitcutError

#: the seven tasks of the compression papers (BoolQ, RTE, HellaSwag, WinoGrande, ARC-e/c, OBQA)
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def zero_shot_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Sequence[str] = PAPER_TASKS,
    batch_size: int = 8,
    limit: int | None = None,
) -> dict[str, Any]:
    """Accuracy per task (``acc``, or ``acc_norm`` where the harness reports it) and their mean."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        raise CircuitcutError(
            "zero-shot evaluation needs lm-evaluation-harness: pip install 'circuitcut[eval]'"
        ) from exc
    if not tasks:
        raise CircuitcutError("no zero-shot tasks given")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=0, limit=limit)
    per_task = {}
    for task in tasks:
        metrics = out["results"].get(task)
        if metrics is None:
            raise CircuitcutError(f"the harness returned no result for task {task!r}")
        acc = next((v for k, v in metrics.items() if k.split(",")[0] == "acc"), None)
        norm = next((v for k, v in metrics.items() if k.split(",")[0] == "acc_norm"), None)
        per_task[task] = {"acc": acc, "acc_norm": norm}
    values = [m["acc"] for m in per_task.values() if m["acc"] is not None]
    return {"tasks": per_task, "mean_acc": sum(values) / len(values) if values else None}
