"""Tables from finished runs: `python -m armer.report ablation ROOT NAME ...`.

Reads `<ROOT>/<NAME>/summary.json` of each run and prints one Markdown table with, per test
corpus, the weighted F1 with all modalities, the mean over the six drop patterns and the mean of
the missing-rate sweep.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from armer.missing import DROP_PATTERNS


def run_row(summary: dict, corpus: str) -> list[float]:
    results = summary["results"][corpus]
    return [
        results["full"]["waf"],
        float(np.mean([results[p]["waf"] for p in DROP_PATTERNS])),
        results["missing_rate"]["mean"]["waf"],
    ]


def ablation_table(root: Path, names: list[str]) -> str:
    summaries = {}
    for name in names:
        path = root / name / "summary.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found; did run {name!r} finish?")
        summaries[name] = json.loads(path.read_text(encoding="utf-8"))
    corpora = list(next(iter(summaries.values()))["results"])
    header = "| run | " + " | ".join(f"{c} full | {c} drop-pattern mean | {c} missing-rate mean" for c in corpora) + " |"
    lines = [header, "|" + "---|" * (1 + 3 * len(corpora))]
    for name, summary in summaries.items():
        cells = [f"{v:.4f}" for corpus in corpora for v in run_row(summary, corpus)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nWeighted F1 (fold-averaged test predictions) from each run's summary.json.\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m armer.report", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ablation = commands.add_parser("ablation", help="one row per run folder")
    ablation.add_argument("root")
    ablation.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    print(ablation_table(Path(args.root), args.names), end="")


if __name__ == "__main__":
    main()
