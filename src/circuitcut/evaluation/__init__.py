"""Evaluation: perplexity on text corpora (task metrics live with their tasks)."""

from circuitcut.evaluation.perplexity import PerplexityResult, load_text, perplexity, perplexity_of_ids

__all__ = ["PerplexityResult", "load_text", "perplexity", "perplexity_of_ids"]
