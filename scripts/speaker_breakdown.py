"""Each arm's score per speaker (or per fold group): on the validation folds and on the test corpora.

    python scripts/speaker_breakdown.py --test test1 --out results/speaker_breakdown.md \
        V1=runs/experiments/v1-seed0 V1=runs/experiments/v1-seed1 ... V2=runs/experiments/v2-seed0 ...

Each argument is LABEL=RUN_DIR; runs that share a label (its seeds) are averaged, mean ± std. A run's
data, folds and groups are read from its recorded arguments (`--fold_groups`: the paired benchmark's
speakers, RAVDESS's actors): each validation sample is scored by the fold model that did not train on
it, each test sample by the ensemble (the members' mean probabilities), all modalities present.
A test corpus with few speakers can favour one arm that the validation folds, averaged over their
speakers, do not: the table shows whether any validation speaker behaves like the test speakers.
The validation rows are for choosing; the test rows are for reading only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.checkpoint import load_checkpoint  # noqa: E402
from armer.constants import MODALITIES  # noqa: E402
from armer.data import load_dataset  # noqa: E402
from armer.evaluate.conditions import to_batch  # noqa: E402
from armer.train.folds import sample_group  # noqa: E402
from missing_modality_ceiling import fold_probs, waf  # noqa: E402  (scripts/)
from report_files import generated_line, git_commit, recorded_folds, write_report  # noqa: E402  (scripts/)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="an armer.train run; repeat a label for its seeds")
    p.add_argument("--test", nargs="*", default=[], help="test corpora to break down too (for reading, not choosing)")
    p.add_argument("--out", default=str(ROOT / "results" / "speaker_breakdown.md"))
    args = p.parse_args(argv)
    for item in args.runs:
        if "=" not in item or not Path(item.split("=", 1)[1]).is_dir():
            p.error(f"{item!r} is not LABEL=RUN_DIR with an existing run folder")
    return args


@torch.no_grad()
def group_scores(run_dir: Path, tests: list[str]) -> tuple[dict[str, float], str]:
    """{'<split> <group>': weighted F1} of one run, and the commit it trained at."""
    summary = json.loads((run_dir / "summary.json").read_text())
    args = summary["args"]
    ensemble, info = load_checkpoint(run_dir / "checkpoint")
    names = {m: info.features[m]["name"] for m in MODALITIES}
    dataset = load_dataset(args["features_root"], args["label_path"], names, info.model.feat_type)
    train = dataset.train
    val_sets = recorded_folds(run_dir, train.samples)
    probs = np.zeros((len(train), info.model.output_dim1))
    out_of_fold = fold_probs(ensemble.network, to_batch(train), val_sets, train.present, False)["model"]
    for fold, samples in zip(out_of_fold, val_sets):
        probs[samples] = fold
    scores = {}
    corpora = [("validation", train, probs)]
    for name in tests:
        if name not in dataset.tests:
            raise SystemExit(f"{run_dir} has no test corpus {name!r} (it has {sorted(dataset.tests)})")
        corpus = dataset.tests[name]
        logits = ensemble.network(to_batch(corpus), check_inputs=False).logits
        corpora.append((name, corpus, torch.softmax(logits, dim=-1).mean(dim=0).numpy()))
    for split, corpus, corpus_probs in corpora:
        groups = np.array([sample_group(s, args["fold_groups"]) for s in corpus.samples])
        for group in sorted(set(groups)):
            keep = groups == group
            scores[f"{split} {group}"] = waf(corpus_probs[keep], corpus.emotions[keep])
        if split != "validation":
            scores[f"{split} (all)"] = waf(corpus_probs, corpus.emotions)
    return scores, summary.get("commit", "unrecorded")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    per_label: dict[str, list[dict[str, float]]] = {}
    trained_at = set()
    for item in args.runs:
        label, run_dir = item.split("=", 1)
        scores, commit = group_scores(Path(run_dir), args.test)
        per_label.setdefault(label, []).append(scores)
        trained_at.add(commit)
        print(f"{label}: {run_dir} done", flush=True)
    labels = list(per_label)
    rows = list(per_label[labels[0]][0])
    validation = [r for r in rows if r.startswith("validation ")]
    for runs in per_label.values():
        for scores in runs:
            values = [scores[r] for r in validation]
            scores["validation: mean over the groups"] = float(np.mean(values))
            scores["validation: worst group"] = float(np.min(values))
    rows = validation + ["validation: mean over the groups", "validation: worst group"] + \
        [r for r in rows if not r.startswith("validation ")]

    def cell(row: str, label: str) -> str:
        values = [100 * s[row] for s in per_label[label] if row in s]
        return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else ""

    lines = ["# Scores per speaker (fold group), validation folds and test corpora", "",
             generated_line(Path(__file__).name), "",
             f"Commit: `{git_commit()}`; the runs were trained at " + ", ".join(f"`{c}`" for c in sorted(trained_at)) + ".",
             "", "Weighted F1 %, all modalities present, mean ± std over each label's runs "
             f"({', '.join(f'{label}: {len(runs)}' for label, runs in per_label.items())}). Validation: each sample "
             "scored by the fold model that did not train on it; test (for reading, not choosing): the ensemble.", "",
             "| speaker (group) | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += [f"| {row} | " + " | ".join(cell(row, label) for label in labels) + " |" for row in rows]
    lines += ["", "Runs:", ""] + [f"- {item}" for item in args.runs]
    write_report(args.out, lines + [""], {"labels": labels, "runs": args.runs, "scores": per_label})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
