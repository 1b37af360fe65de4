"""How much room the missing-rate sweep leaves, on validation folds only.

    python scripts/missing_modality_ceiling.py --runs_dir runs/experiments [--seeds 0 1 2 3 4] \
        [--out results/missing_modality_ceiling.md]
    python scripts/missing_modality_ceiling.py --runs_dir runs/real_data/ravdess \
        --out results/missing_modality_ceiling_ravdess.md

On the paired benchmark the modalities are paired by class only, so given the class they are
independent, and the best any model can do with a set of modalities is to combine what each one
says alone: the product of the unimodal posteriors (naive Bayes, exact under that independence; on
truly paired data such as RAVDESS only an approximation). Per seed and on each fold's own
validation samples (the runs' data and folds, from their recorded arguments), this script scores:
V1, the seed's recipe (where its runs are there) and V2 as trained; the product of V2's own
unimodal heads (the calibration term's heads) over the present modalities; the best of these for
each pattern of present modalities, chosen on the same samples (an optimistic bound on what any
choice among them could score on the sweep); and, for one modality alone, a logistic regression on
the same features (best of a small grid of C, so a slightly optimistic reference). Every condition
of the validation protocol (all modalities, the six drop patterns, the missing-rate sweep) and the
share of one-, two- and three-modality samples at each missing rate. Writes --out (and .json
beside it). The test split is never read.
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
from armer.evaluate.conditions import gather, to_batch  # noqa: E402
from armer.evaluate.metrics import score  # noqa: E402
from armer.model.missing import DROP_PATTERNS, pattern_mask, sweep_masks  # noqa: E402
from armer.train.loop import padded_index  # noqa: E402
from report_files import generated_line, git_commit, recorded_args, recorded_commit, recorded_folds, write_report  # noqa: E402  (scripts/)

UNIMODAL = {"audio_only": 0, "text_only": 1, "video_only": 2}
ARMS = {"v1": "V1", "seed": "seed recipe", "v2": "V2"}  # run name (scripts/run_experiments.py) -> column
ORACLE = "best per pattern"
GRID_C = (0.001, 0.01, 0.1, 1.0)


def waf(probs: np.ndarray, labels: np.ndarray) -> float:
    return score(probs, np.zeros(len(labels)), labels, np.zeros(len(labels)), False)["waf"]


@torch.no_grad()
def fold_probs(network, data: dict, val_sets: list[np.ndarray], mask: np.ndarray, heads: bool
               ) -> dict[str, list[np.ndarray]]:
    """Class probabilities on each fold's validation samples: of the model and (V2) of the product of
    its unimodal heads."""
    index = padded_index(val_sets)
    out = network(gather(dict(data, present=torch.from_numpy(mask)), index), check_inputs=False)
    probs = {"model": torch.softmax(out.logits, dim=-1)}
    if heads:
        log_probs = torch.log_softmax(network.unimodal_heads(out.mu), dim=-1)  # (E, N, M, C)
        probs["heads_product"] = torch.softmax((log_probs * out.present.unsqueeze(-1)).sum(dim=-2), dim=-1)
    return {name: [p[e, :len(s)].numpy() for e, s in enumerate(val_sets)] for name, p in probs.items()}


def fold_waf(probs: list[np.ndarray], labels: np.ndarray, val_sets: list[np.ndarray]) -> float:
    """WAF averaged over the folds."""
    return float(np.mean([waf(p, labels[s]) for p, s in zip(probs, val_sets)]))


def pattern_condition(present: np.ndarray) -> str:
    """The fixed condition ('full' or a drop pattern) with the modalities `present` (M,)."""
    if present.all():
        return "full"
    return next(name for name, keep in DROP_PATTERNS.items() if tuple(present) == keep)


def best_per_pattern(probs: dict[str, list[np.ndarray]], mask: np.ndarray, val_sets: list[np.ndarray],
                     rows: dict[str, dict[str, float]]) -> list[np.ndarray]:
    """Each sample's probabilities from the model that scores best on its pattern of modalities (by
    `rows`, the fixed conditions' scores on these same samples: an optimistic, oracle choice)."""
    best = {condition: max(probs, key=lambda column: rows[condition][column])
            for condition in ("full", *DROP_PATTERNS) if condition in rows}
    chosen = []
    for e, s in enumerate(val_sets):
        columns = [best[pattern_condition(mask[i])] for i in s]
        chosen.append(np.stack([probs[column][e][j] for j, column in enumerate(columns)]))
    return chosen


def logistic_unimodal(train_corpus, val_sets: list[np.ndarray]) -> dict[str, float]:
    """Out-of-fold WAF of a standardised logistic regression per modality, best C of GRID_C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    labels = train_corpus.emotions
    result = {}
    for condition, i in UNIMODAL.items():
        x = train_corpus.features[i]
        per_c = []
        for c in GRID_C:
            fold_waf = []
            for val in val_sets:
                fit = np.setdiff1d(np.arange(len(labels)), val)
                scaler = StandardScaler().fit(x[fit])
                clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x[fit]), labels[fit])
                fold_waf.append(waf(clf.predict_proba(scaler.transform(x[val])), labels[val]))
            per_c.append(float(np.mean(fold_waf)))
        result[condition] = max(per_c)
    return result


def sweep_composition(present: np.ndarray, seed: int) -> dict[str, list[float]]:
    """Share of samples with 1, 2 and 3 modalities at each missing rate."""
    return {rate: [float((mask.sum(axis=1) == k).mean()) for k in (1, 2, 3)]
            for rate, mask in sweep_masks(present, seed).items()}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs_dir", default=str(ROOT / "runs" / "experiments"),
                   help="the runs <arm>-seed<n> (scripts/run_experiments.py's, or one dataset's folder of "
                        "scripts/real_data.py's --runs_dir)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default=str(ROOT / "results" / "missing_modality_ceiling.md"))
    return p.parse_args()


def data_settings(run_dir: Path) -> dict:
    """What a run trained on and how its folds were drawn, from its recorded arguments."""
    args = recorded_args(run_dir)
    return {key: args[key] for key in ("features_root", "label_path", "seed", "fold_groups", "num_folds")}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    runs = Path(args.runs_dir)
    per_seed, trained_at, data_of = [], set(), set()
    for seed in args.seeds:
        models, settings = {}, set()
        for arm, label in ARMS.items():
            path = runs / f"{arm}-seed{seed}"
            if path.exists() or arm != "seed":  # the seed recipe's runs are optional (older runs dirs)
                models[label], info = load_checkpoint(path / "checkpoint")
                trained_at.add(recorded_commit(path))
                settings.add(json.dumps(data_settings(path), sort_keys=True))
        if len(settings) != 1:
            raise SystemExit(f"the runs of seed {seed} in {runs} trained on different data or folds: {sorted(settings)}")
        setting = json.loads(settings.pop())
        data_of.add(setting["features_root"])
        names = {m: info.features[m]["name"] for m in MODALITIES}
        dataset = load_dataset(setting["features_root"], setting["label_path"], names, info.model.feat_type)
        train = dataset.train
        val_sets = recorded_folds(path, train.samples)  # every arm's, as checked above
        data, labels = to_batch(train), train.emotions
        present = train.present
        masks = {"full": present, **{n: pattern_mask(present, keep) for n, keep in DROP_PATTERNS.items()},
                 **{f"missing r={r}": m for r, m in sweep_masks(present, seed).items()}}
        rows = {}
        for condition, mask in masks.items():
            probs = {}
            for label, model in models.items():
                for kind, values in fold_probs(model.network, data, val_sets, mask, label == "V2").items():
                    probs[label if label != "V2" else f"V2 {kind}"] = values
            rows[condition] = {column: fold_waf(values, labels, val_sets) for column, values in probs.items()}
            if condition.startswith("missing r="):  # the fixed conditions come first
                rows[condition][ORACLE] = fold_waf(best_per_pattern(probs, mask, val_sets, rows), labels, val_sets)
            else:
                rows[condition][ORACLE] = max(rows[condition].values())
        for condition, value in logistic_unimodal(train, val_sets).items():
            rows[condition]["logistic regression"] = value
        per_seed.append({"seed": seed, "rows": rows, "composition": sweep_composition(present, seed)})
        print(f"seed {seed} done", flush=True)

    trained = [c for c in ["V1", "seed recipe", "V2 model", "V2 heads_product"] if c in per_seed[0]["rows"]["full"]]
    columns = [*trained, ORACLE, "logistic regression"]
    conditions = list(per_seed[0]["rows"])
    sweep = [c for c in conditions if c.startswith("missing r=")]

    def mean_std(condition: str, column: str) -> str:
        values = [s["rows"][condition].get(column) for s in per_seed]
        if any(v is None for v in values):
            return ""
        return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"

    for s in per_seed:
        s["rows"]["**missing-rate mean**"] = {c: float(np.mean([s["rows"][r][c] for r in sweep]))
                                              for c in columns[:-1]}
    lines = ["# Room left on the missing-rate sweep (validation folds only)", "",
             generated_line(Path(__file__).name), "", f"Commit: `{git_commit()}`; the runs were trained at "
             + ", ".join(f"`{c}`" for c in sorted(trained_at)) + ".",
             "", f"Runs `{args.runs_dir}` (seeds {args.seeds}), features `{', '.join(sorted(data_of))}`, folds as "
             "the runs drew them. Weighted F1 in percent, "
             "mean ± std over the seeds, each fold's kept model on its own validation samples. "
             "'V2 heads_product' = product of V2's unimodal-head posteriors over the present modalities "
             "(naive Bayes: exact where the modalities are paired by class only, as on the paired benchmark). "
             f"'{ORACLE}' = on a fixed condition the best of the columns before it; on the sweep each sample "
             "takes the prediction of the column that scores best on its own pattern of modalities, chosen on "
             "these same samples (an optimistic bound for any choice among these models, not a model). "
             "'logistic regression' = one modality alone, best C of " + ", ".join(map(str, GRID_C)) + ".", "",
             "| condition | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for condition in [*conditions, "**missing-rate mean**"]:
        lines.append(f"| {condition} | " + " | ".join(mean_std(condition, c) for c in columns) + " |")
    composition = per_seed[0]["composition"]
    lines += ["", f"Share of validation samples with one / two / three modalities in the sweep (seed {per_seed[0]['seed']}):",
              "", "| missing rate | 1 | 2 | 3 |", "|---|---|---|---|"]
    lines += [f"| {rate} | " + " | ".join(f"{100 * v:.0f} %" for v in shares) + " |" for rate, shares in composition.items()]
    lines.append("")
    write_report(args.out, lines, per_seed)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
