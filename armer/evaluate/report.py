"""Tables from finished runs: `python -m armer.evaluate.report ablation ROOT NAME ...`.

Reads `<ROOT>/<NAME>/summary.json` of each run and prints one Markdown table with, per test
corpus, the weighted F1 with all modalities, the mean over the six drop patterns and the mean of
the missing-rate sweep; and the same on the validation folds (each fold's kept model on its own
validation samples), the numbers to choose between variants by, with the spread of the fusion
weights over those samples and, for runs on data with degraded training views, how each
modality's weight moves when that modality is degraded.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from armer.constants import MODALITIES
from armer.evaluate.metrics import headline
from armer.model.missing import DROP_PATTERNS


def condition_row(results: dict) -> list[float]:
    """Weighted F1 (a valence-only run: valence MSE) with all modalities, mean over the six drop
    patterns, mean of the missing-rate sweep."""
    key = headline(results["full"])
    return [
        results["full"][key],
        float(np.mean([results[p][key] for p in DROP_PATTERNS if results[p] is not None])),  # None: n/a
        results["missing_rate"]["mean"][key],
    ]


def validation_row(summary: dict) -> list[float | None]:
    """`condition_row` of the validation folds and the mean weight spread."""
    validation = summary.get("validation")
    if not validation:  # runs from before armer.train scored the validation folds
        return [None, None, None, None]
    spread = validation.get("weight_spread")
    spreads = [v for v in (spread or {}).values() if v is not None]  # None: a modality the data lacks
    return condition_row(validation) + [float(np.mean(spreads)) if spreads else None]


def degraded_cell(summary: dict) -> str:
    """Validation weight change per modality (audio/text/video) when only that modality is degraded."""
    degraded = summary.get("validation", {}).get("degraded")
    if not degraded:
        return "n/a"
    return " / ".join(f"{degraded[m]['weight_degraded'] - degraded[m]['weight_clean']:+.3f}" for m in MODALITIES)


def ablation_table(root: Path, names: list[str]) -> str:
    summaries = {}
    for name in names:
        path = root / name / "summary.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found; did run {name!r} finish?")
        summaries[name] = json.loads(path.read_text(encoding="utf-8"))
    corpora = list(next(iter(summaries.values()))["results"])
    header = ("| run | validation full | validation drop-pattern mean | validation missing-rate mean | "
              "validation weight spread | validation weight change, one modality degraded (a / t / v) | "
              + " | ".join(f"{c} full | {c} drop-pattern mean | {c} missing-rate mean" for c in corpora) + " |")
    lines = [header, "|" + "---|" * (6 + 3 * len(corpora))]
    for name, summary in summaries.items():
        cells = ["n/a" if v is None else f"{v:.4f}" for v in validation_row(summary)] + [degraded_cell(summary)]
        cells += [f"{v:.4f}" for corpus in corpora for v in condition_row(summary["results"][corpus])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nWeighted F1 from each run's summary.json: validation = each fold's kept model on "
                               "its own validation samples (averaged over the folds); test corpora = fold-averaged "
                               "test predictions. Weight spread: the std of a modality's fusion weight over the "
                               "validation samples, mean over the modalities (near 0: constant weights). Weight "
                               "change: validation mean fusion weight with only that modality replaced by its "
                               "degraded view minus clean (n/a: the data has no degraded views).\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m armer.evaluate.report", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ablation = commands.add_parser("ablation", help="one row per run folder")
    ablation.add_argument("root")
    ablation.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    print(ablation_table(Path(args.root), args.names), end="")


if __name__ == "__main__":
    main()
