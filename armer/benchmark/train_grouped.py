"""``armer.train`` with cross-validation folds grouped by EmoDB speaker (or clip).

On the paired benchmark every training clip appears in ``k_train`` samples (``train-<clip>-<k>``),
so MERBench's random folds put copies of the same recording in the training and the validation
part of a fold: validation weighted F1 reaches 1.0 within a few epochs and the best epoch (model
selection) means nothing. This runs ``armer.train`` unchanged except that the folds are drawn over
groups (``--fold_groups speaker``: leave-speakers-out folds, as the test split; ``clip``: every
copy of a clip in the same fold):

    python -m armer.benchmark.train_grouped --fold_groups speaker <armer.train arguments>

Samples whose name does not follow ``<corpus>-<clip>-<k>`` form a group of their own.
"""
from __future__ import annotations

import sys

import numpy as np

import armer.train as train_cli
from armer import training

GROUPINGS = ("speaker", "clip", "none")


def sample_group(sample: str, by: str) -> str:
    parts = sample.split("-")
    if by == "none" or len(parts) < 3:
        return sample
    clip = parts[1]
    return clip[:2] if by == "speaker" else clip


def grouped_fold_indices(groups: list[str], num_folds: int, seed: int) -> list[np.ndarray]:
    """Folds of whole groups: groups shuffled (seeded) and dealt to the smallest fold first."""
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(names) < num_folds:
        raise ValueError(f"{len(names)} groups cannot be split into {num_folds} folds; use fewer folds "
                         f"or --fold_groups clip")
    sizes = np.bincount(inverse)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest groups first (ties in seeded order)
    load = np.zeros(num_folds, dtype=np.int64)
    fold_of = np.empty(len(names), dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += sizes[g]
    return [np.flatnonzero(fold_of[inverse] == f) for f in range(num_folds)]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    by = "speaker"
    if "--fold_groups" in argv:
        i = argv.index("--fold_groups")
        by = argv[i + 1]
        del argv[i:i + 2]
    if by not in GROUPINGS:
        raise SystemExit(f"error: --fold_groups must be one of {GROUPINGS}, got {by!r}")
    original_train, original_folds = training.train_folds, training.fold_indices

    def train_folds(dataset, model_config, config):
        groups = [sample_group(s, by) for s in dataset.train.samples]
        training.fold_indices = lambda n, k, seed: grouped_fold_indices(groups, k, seed)
        try:
            return original_train(dataset, model_config, config)
        finally:
            training.fold_indices = original_folds

    train_cli.train_folds = train_folds
    try:
        summary = train_cli.main(argv)
    finally:
        train_cli.train_folds = original_train
    summary_path = None
    for i, a in enumerate(argv):
        if a == "--save_root":
            summary_path = argv[i + 1]
    if summary_path:  # record the grouping beside the numbers
        import json
        from pathlib import Path

        p = Path(summary_path) / "summary.json"
        data = json.loads(p.read_text())
        data["fold_groups"] = by
        p.write_text(json.dumps(data, indent=1))
    return summary


if __name__ == "__main__":
    main()
