"""The attribution and held-out evaluation prompts of a run, from a task name, a task file or a Task."""

from __future__ import annotations

from typing import Any

from circuitcut.errors import CircuitcutError
from circuitcut.tasks.base import Task
from circuitcut.tasks.greater_than import greater_than_splits, greater_than_task
from circuitcut.tasks.ioi import ioi_splits, ioi_task, load_ioi_lists, load_task


def build_task(task: str | Task, tokenizer: Any, n_total: int, seed: int = 0) -> Task:
    """``"ioi"`` or ``"greater-than"`` (generated), a task file (.jsonl/.csv), or a :class:`Task` as is."""
    if isinstance(task, Task):
        return task
    if task == "ioi":
        return ioi_task(tokenizer, n_total, seed=seed)
    if task == "greater-than":
        return greater_than_task(tokenizer, n_total, seed=seed)
    return load_task(task)


def task_splits(
    task: str | Task,
    tokenizer: Any,
    n_attribution: int,
    n_evaluation: int,
    eval_task: str | Task | None = None,
    ioi_lists: str | None = None,
    heldout_templates: float = 0.3,
) -> tuple[Task, Task]:
    """The attribution and held-out evaluation tasks of a run.

    * ``eval_task`` given: ``task`` is all attribution (at most ``n_attribution`` examples), the
      evaluation is that task (file or Task) as is;
    * ``task="ioi"`` with ``ioi_lists`` (the ACDC lists' JSON layout): generated from those lists,
      evaluation on held-out sentence templates (:func:`~circuitcut.tasks.ioi_splits`);
    * ``task="greater-than"``: evaluation on held-out start years
      (:func:`~circuitcut.tasks.greater_than_splits`);
    * otherwise one task split at random into disjoint attribution and evaluation prompts.
    """
    if ioi_lists is not None and task != "ioi":
        raise CircuitcutError("ioi_lists (--ioi-lists) builds the IOI task: use it with task 'ioi'")
    if ioi_lists is not None and eval_task is None:
        lists = load_ioi_lists(ioi_lists)
        return ioi_splits(tokenizer, lists, n_attribution, n_evaluation, heldout_templates)
    if eval_task is not None:
        if ioi_lists is not None:
            attribution = ioi_task(tokenizer, n_attribution, **load_ioi_lists(ioi_lists))
        else:
            attribution = build_task(task, tokenizer, n_attribution)
        if len(attribution) > n_attribution:
            attribution = attribution.subset(n_attribution, seed=0)
        evaluation = eval_task if isinstance(eval_task, Task) else load_task(eval_task, attribution.metric)
        if evaluation.metric != attribution.metric:
            raise CircuitcutError(
                f"the evaluation task's metric ({evaluation.metric}) differs from the attribution task's "
                f"({attribution.metric}); give both a contrast (logit_diff) or neither"
            )
        return attribution, evaluation
    if task == "greater-than":
        return greater_than_splits(tokenizer, n_attribution, n_evaluation)
    full = build_task(task, tokenizer, n_attribution + n_evaluation)
    n_attr = n_attribution if len(full) > n_attribution else max(1, len(full) // 2)
    return full.split(n_attr, seed=0)
