"""The Markdown report of a compression run (``report.md``), from its report dict."""

from __future__ import annotations

from typing import Any


def compression_markdown(r: dict[str, Any]) -> str:
    """Perplexity before and after, what was pruned and how."""
    c = r["config"]
    return "\n".join([
        f"# Compression of {r['model']}",
        "",
        f"{c['scoring']['method']} scores, {c['scheme']} scheme, target sparsity {c['sparsity']:.0%} of layers `{c['layers']}`"
        + (" (sequential protocol)" if c["sequential"] else "") + ".",
        f"Calibration: {c['n_samples']} windows of {c['seqlen']} tokens from `{r['calibration']}`.",
        "",
        "| | perplexity | tokens |",
        "|---|---|---|",
        f"| dense | {r['dense']['perplexity']:.4f} | {r['dense']['tokens']} |",
        f"| pruned | {r['pruned']['perplexity']:.4f} | {r['pruned']['tokens']} |",
        "",
        f"Pruned {r['masked_weights']} weights ({r['sparsity']:.2%} of the selected layers) in {r['seconds']} s.",
        "",
    ])  # fmt: skip
