"""Tasks (prompts with answers and contrasts) and their metrics; IOI and greater-than built in."""

from circuitcut.tasks.base import METRICS, Encoded, Example, Task, evaluate_task, faithfulness, task_metrics
from circuitcut.tasks.greater_than import greater_than_splits, greater_than_task
from circuitcut.tasks.ioi import (
    corrupt_ioi,
    ioi_splits,
    ioi_task,
    load_ioi_lists,
    load_task,
    single_token_names,
)
from circuitcut.tasks.splits import build_task, task_splits

__all__ = [
    "METRICS",
    "Encoded",
    "Example",
    "Task",
    "build_task",
    "corrupt_ioi",
    "evaluate_task",
    "faithfulness",
    "greater_than_splits",
    "greater_than_task",
    "ioi_splits",
    "ioi_task",
    "load_ioi_lists",
    "load_task",
    "single_token_names",
    "task_metrics",
    "task_splits",
]
