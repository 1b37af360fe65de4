"""Trained runs on the demo's example clip: each modality's fusion weight clean and with only it at its
ladder's most severe level (`scripts/real_data.py`'s demo check, for every run of a group, not only
the exported checkpoint), mean over each group's runs.

    python scripts/demo_weights.py "raw=runs/calibration/benchmark/seed_raw_features*" \
        "standardised=runs/calibration/benchmark/defaults*" \
        --out results/demo_weights_by_scaling.md

Each argument is LABEL=GLOB: the run folders (with a `checkpoint/` inside) of one group.
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from armer.constants import MODALITIES  # noqa: E402
from real_data import DEMO_CLIP, SEVERE, demo_weights  # noqa: E402
from report_files import generated_line, git_commit, write_report  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("groups", nargs="+", metavar="LABEL=GLOB")
    p.add_argument("--out", default=str(ROOT / "results" / "demo_weights.md"))
    args = p.parse_args(argv)
    args.runs = {}
    for item in args.groups:
        label, sep, pattern = item.partition("=")
        runs = sorted(Path(x) for x in glob.glob(pattern) if (Path(x) / "checkpoint").is_dir())
        if not sep or not runs:
            p.error(f"{item!r}: expected LABEL=GLOB matching run folders with a checkpoint/ inside")
        args.runs[label] = runs
    return args


def change(clean: float, degraded: float) -> float:
    return 100.0 * (degraded / clean - 1.0)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    flags = " / ".join(" ".join(f"--{k} {v:g}" for k, v in SEVERE[m].items()) for m in MODALITIES)
    header = "| " + " | ".join(f"{m} clean -> degraded" for m in MODALITIES) + " |"
    lines = ["# Fusion weights on the demo's example clip, run by run", "", generated_line("demo_weights.py"), "",
             f"Written at commit `{git_commit()}`. Clip `{DEMO_CLIP.relative_to(ROOT)}`; each modality alone degraded "
             f"at its ladder's most severe level ({flags}), as `python -m armer.predict CLIP --<flag> <level>`.", "",
             "| group | run " + header, "|---|---|" + "---|" * len(MODALITIES)]
    data: dict = {}
    for label, runs in args.runs.items():
        data[label] = {str(run): demo_weights(run / "checkpoint") for run in runs}
        for run, weights in data[label].items():
            lines.append(f"| {label} | {run} | " + " | ".join(
                f"{c:.3f} -> {d:.3f} ({change(c, d):+.0f}%)" for c, d in (weights[m] for m in MODALITIES)) + " |")
    lines += ["", "Mean ± std over each group's runs of the change in weight:", "",
              "| group | runs | " + " | ".join(MODALITIES) + " |", "|---|---|" + "---|" * len(MODALITIES)]
    for label, runs in data.items():
        cells = []
        for m in MODALITIES:
            changes = [change(*weights[m]) for weights in runs.values()]
            cells.append(f"{np.mean(changes):+.0f}% ± {np.std(changes):.0f}")
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    write_report(args.out, [*lines, ""], data)


if __name__ == "__main__":
    main()
