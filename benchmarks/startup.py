"""Start-up time of the command line: ``circuitcut --help`` and every ``circuitcut VERB --help``.

Usage::

    python benchmarks/startup.py [--repeats 5] [--importtime]

Each command runs ``--repeats`` times in a fresh interpreter (``python -m circuitcut.cli.main``, as
the ``circuitcut`` script does); the median wall time is reported, and as a ratio to the median
start of a bare interpreter (``python -c pass``) measured in the same run. ``--importtime`` adds the
ten slowest imports of ``circuitcut --help`` (cumulative, from ``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import common


def verbs() -> list[list[str]]:
    """The verb paths of the parser (``["attribute"]``, ``["zoo", "train"]``, ...)."""
    from circuitcut.cli.main import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        """The verb paths below ``prefix``."""
        out = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    out.append([*prefix, name])
                    out.extend(walk(child, [*prefix, name]))
        return out

    return walk(build_parser(), [])


def median_seconds(cmd: list[str], repeats: int) -> float:
    """Median wall time of ``repeats`` runs of ``cmd`` (which must exit 0)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return common.median_seconds(
        lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env), repeats
    )


def slowest_imports(n: int = 10) -> list[tuple[str, float]]:
    """The ``n`` top-level packages imported by ``circuitcut --help`` with the largest cumulative time."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "circuitcut.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    top: dict[str, float] = {}
    for line in res.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        name = name.strip()
        if "." not in name and not name.startswith("_"):  # top-level packages, wherever imported
            top[name] = max(top.get(name, 0.0), int(cumulative) / 1e6)
    return sorted(top.items(), key=lambda kv: -kv[1])[:n]


def main() -> None:
    """Measure and print a JSON report."""
    p = common.parser(__doc__, threads=None)
    p.add_argument("--repeats", type=int, default=5, help="runs per command (default 5)")
    p.add_argument("--importtime", action="store_true", help="also list the slowest top-level imports")
    args = common.parse(p)
    base = median_seconds([sys.executable, "-c", "pass"], args.repeats)
    report: dict = {"python -c pass": round(base, 3), "commands": {}}
    for path in [[], *verbs()]:
        cmd = [sys.executable, "-m", "circuitcut.cli.main", *path, "--help"]
        secs = median_seconds(cmd, args.repeats)
        label = " ".join(["circuitcut", *path, "--help"])
        report["commands"][label] = {"median_s": round(secs, 3), "x_bare_python": round(secs / base, 1)}
    if args.importtime:
        report["slowest_imports_of_help"] = {k: round(v, 3) for k, v in slowest_imports()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
