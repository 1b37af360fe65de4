"""Validation numbers of finished `armer.train` runs side by side, from their summary.json files.

    python scripts/compare_runs.py --out results/fusion_temperature.md \
        "RAVDESS T=1.0=runs/rv_T1.0" "RAVDESS T=0.25=runs/rv_T0.25" ...

Each argument is LABEL=RUN_DIR. Per run: the validation folds' weighted F1 (or binary accuracy for a
valence-only dataset) with all modalities and the missing-rate mean, each modality's mean fusion
weight with all modalities present, and with the degraded views (when the data has them) each
modality's weight clean -> with only it degraded; and the run's command (its arguments as
summary.json records them, defaults included, shown where they differ from the first run's).
`--test test1 test2`: also those test corpora's score with all modalities and missing-rate mean,
to see how a variant generalises; they are for reading, never for choosing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from armer.constants import MODALITIES  # noqa: E402
from report_files import generated_line, git_commit, write_report  # noqa: E402


def metric_key(scores: dict) -> str:
    """Weighted F1, or binary accuracy for a valence-only dataset."""
    return "waf" if "waf" in scores["full"] else "acc2"


def test_cells(summary: dict, tests: list[str]) -> list[str]:
    """Each of `tests`: the test corpus's score with all modalities / its missing-rate mean."""
    results = summary.get("results") or {}
    return [f"{100 * r['full'][metric_key(r)]:.1f} / {100 * r['missing_rate']['mean'][metric_key(r)]:.1f}"
            if (r := results.get(name)) else "n/a" for name in tests]


def test_header(tests: list[str]) -> tuple[str, str]:
    return "".join(f" {name} full / missing-rate mean (test, not for choosing) |" for name in tests), "---|" * len(tests)


def row(label: str, summary: dict, tests: list[str] = ()) -> tuple[str, dict]:
    validation = summary["validation"]
    key = metric_key(validation)
    weights = validation.get("weight_mean") or {}
    degraded = validation.get("degraded") or {}
    cells = [f"{100 * validation['full'][key]:.1f}", f"{100 * validation['missing_rate']['mean'][key]:.1f}",
             " / ".join("n/a" if weights.get(m) is None else f"{weights[m]:.3f}" for m in MODALITIES),
             " / ".join(f"{d['weight_clean']:.3f} -> {d['weight_degraded']:.3f}" if (d := degraded.get(m)) else "n/a"
                        for m in MODALITIES), *test_cells(summary, list(tests))]
    data = {"validation_full": validation["full"][key], "validation_missing_rate_mean":
            validation["missing_rate"]["mean"][key], "weights": weights, "degraded": degraded}
    return f"| {label} | " + " | ".join(cells) + " |", data


def main(argv: list[str] | None = None, generated: str | None = None, before: list[str] | None = None) -> None:
    """`generated`: the provenance line, when another script trained the runs and calls this one;
    `before`: lines of its own, put before the table of the runs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--test", nargs="*", default=[], metavar="CORPUS", help="also these test corpora (for reading)")
    args = p.parse_args(argv)
    header, rule = test_header(args.test)
    lines = ["# Runs compared on their validation folds", "", generated or generated_line("compare_runs.py"), "",
             f"Written at commit `{git_commit()}`; each run records the commit it trained at (`commit`, when "
             "a results script trained it) and its arguments, below.", "", *(before or []),
             "| run | full | missing-rate mean | weight audio / text / video | clean -> degraded view, audio / text / "
             "video |" + header, "|---|---|---|---|---|" + rule]
    data, first_args = {}, None
    commands = []
    for item in args.runs:
        label, _, folder = item.rpartition("=")
        summary = json.loads((Path(folder) / "summary.json").read_text())
        line, data[label] = row(label, summary, args.test)
        lines.append(line)
        run_args = summary["args"]
        first_args = first_args or run_args
        differs = {k: v for k, v in run_args.items() if first_args.get(k) != v}
        commands.append(f"- {label}: trained at `{summary.get('commit', 'unrecorded')}`; "
                        + (f"arguments as the first run but {json.dumps(differs)}" if run_args is not first_args
                           else f"arguments {json.dumps(run_args)}"))
        data[label]["args"] = run_args
    lines += ["", "Runs:", "", *commands, ""]
    write_report(args.out, lines, data)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
