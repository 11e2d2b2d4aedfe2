"""Pruning: masks from scores, applying them, and exporting pruned models."""

from circuitcut.pruning.apply import apply_mask, export_pruned, masked, sparsity_report
from circuitcut.pruning.masks import SCHEMES, Mask, nm_mask, unit_mask, unstructured_mask

__all__ = [
    "SCHEMES",
    "Mask",
    "apply_mask",
    "export_pruned",
    "masked",
    "nm_mask",
    "sparsity_report",
    "unit_mask",
    "unstructured_mask",
]
