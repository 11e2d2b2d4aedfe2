"""One table of compression results across models, merged from ``compression-*.json`` files.

Usage::

    python benchmarks/compression_table.py \\
        --inputs compression-protocol-smollm2 compression-protocol-smollm2-token-norm \\
                 compression-protocol-gemma3-s0 compression-protocol-gemma3-s12 \\
                 compression-protocol-gemma3-token-norm \\
                 compression-protocol-reference-ref-llama compression-protocol-reference-token-norm-ref-llama \\
                 compression-protocol-reference-ref-opt compression-protocol-reference-token-norm-ref-opt \\
        --tag families

Runs of one model (the same protocol: calibration and evaluation sizes, seeds) are merged: a method's
values at a scheme and sparsity are the union of its per-seed values over the inputs, so seeds run
in separate processes join (a seed present twice is refused where the runs record their seeds). Each cell is the mean ± SEM over
seeds and the ratio to Wanda's mean on the same model, scheme and sparsity. Writes
``benchmarks/results/compression-TAG.md`` and ``.json`` (nothing is recomputed: figures are read).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import common

PROTOCOL_KEYS = ("calibration", "evaluation", "n_samples", "seqlen", "eval_seqlen", "eval_windows")


def merge(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """model -> {"dense", "protocol", "values": {(method, scheme, sparsity): [per-seed values]}}."""
    models: dict[str, dict[str, Any]] = {}
    for path in paths:
        res = json.loads(path.read_text())
        protocol = {k: res.get(k) for k in PROTOCOL_KEYS}
        entry = models.setdefault(res["model"], {"dense": res["dense"], "protocol": protocol, "values": {},
                                                 "sources": []})  # fmt: skip
        if entry["protocol"] != protocol:
            raise SystemExit(
                f"{path.name}: another protocol than the other runs of {res['model']}: {protocol}"
            )
        entry["sources"].append(path.stem)
        seeds = set(res.get("seeds", ()))
        for method, by_scheme in res["results"].items():
            for scheme, by_sparsity in by_scheme.items():
                for sparsity, values in by_sparsity.items():
                    key = (method, scheme, sparsity)
                    seen = entry.setdefault("seeds", {}).setdefault(key, set())
                    if seen & seeds:
                        raise SystemExit(f"{path.name}: {key} repeats seeds {sorted(seen & seeds)}")
                    seen |= seeds
                    entry["values"].setdefault(key, []).extend(values)
    return models


def cell(values: list[float], wanda: list[float] | None) -> str:
    """``mean ± SEM (ratio to Wanda)``."""
    mean = statistics.fmean(values)
    sem = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    ratio = f" ({mean / statistics.fmean(wanda):.3f}x)" if wanda else ""
    return f"{mean:.3f} ± {sem:.3f}{ratio}"


def markdown(models: dict[str, dict[str, Any]], command: str) -> str:
    """A table per model: methods down, scheme and sparsity across."""
    lines = ["## Compression across models: mean ± SEM over calibration seeds (ratio to Wanda)", "",
             f"Command: `{command}`", ""]  # fmt: skip
    for model, entry in models.items():
        values = entry["values"]
        columns = sorted({(sc, sp) for _, sc, sp in values}, key=lambda c: (c[0], float(c[1])))
        methods = list(dict.fromkeys(m for m, _, _ in values))
        p = entry["protocol"]
        lines += [f"### {model} (dense {entry['dense']:.3f})", "",
                  f"Calibration {p['n_samples']} x {p['seqlen']} tokens, evaluation {p['eval_windows'] or 'all'} windows "
                  f"of {p['eval_seqlen']}; from {', '.join(f'`{s}`' for s in entry['sources'])}.", "",
                  "| method | " + " | ".join(f"{sc} {float(sp):.0%}" if sc != "2:4" else sc for sc, sp in columns) + " |",
                  "|---|" + "---|" * len(columns)]  # fmt: skip
        for method in methods:
            cells = []
            for sc, sp in columns:
                v = values.get((method, sc, sp))
                cells.append(cell(v, values.get(("wanda", sc, sp))) if v else "")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Merge the inputs and write the table."""
    p = common.parser(__doc__, threads=None)
    p.add_argument(
        "--inputs", nargs="+", required=True, help="result stems (or .json paths) under --results-dir"
    )
    common.add_results(p, tag="families")
    args = common.parse(p)
    folder = Path(args.results_dir)
    paths = [Path(x) if x.endswith(".json") else folder / f"{x}.json" for x in args.inputs]
    missing = [str(x) for x in paths if not x.exists()]
    if missing:
        raise SystemExit(f"no such results: {', '.join(missing)}")
    models = merge(paths)
    text = markdown(models, common.command())
    payload = {
        model: {"dense": e["dense"], "protocol": e["protocol"], "sources": e["sources"],
                "values": [{"method": m, "scheme": sc, "sparsity": sp, "values": v}
                           for (m, sc, sp), v in e["values"].items()]}
        for model, e in models.items()
    }  # fmt: skip
    common.write_results(args, f"compression-{args.tag}", payload, text)
    print(text)


if __name__ == "__main__":
    main()
