"""Cross-validation folds of the train corpus: random, or grouped so a recording (or speaker) stays in one fold."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from armer.config import TrainConfig

FOLD_GROUPS = ("none", "clip", "speaker")
# `--fold_groups regex:PATTERN`: the group of a sample is the first capture group of PATTERN
# searched in its name (e.g. `regex:^(.+)_\d+$` for CMU-MOSI's `<video id>_<n>`).
REGEX_PREFIX = "regex:"


def check_fold_groups(value: str) -> str | None:
    """None when `value` names a fold grouping, else what is wrong with it."""
    if value in FOLD_GROUPS:
        return None
    if not value.startswith(REGEX_PREFIX):
        return f"must be one of {FOLD_GROUPS} or {REGEX_PREFIX}PATTERN"
    try:
        pattern = re.compile(value[len(REGEX_PREFIX):])
    except re.error as exc:
        return f"is not a valid regular expression ({exc})"
    if pattern.groups < 1:
        return "needs a capture group, e.g. regex:^(.+)_\\d+$ (the group is the first one)"
    return None


def fold_indices(num_samples: int, num_folds: int, seed: int) -> list[np.ndarray]:
    """Seeded random split of the training corpus into `num_folds` validation chunks."""
    if num_samples < num_folds:
        raise ValueError(f"{num_samples} training samples cannot be split into {num_folds} folds")
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(chunk) for chunk in np.array_split(order, num_folds)]


def sample_group(sample: str, by: str) -> str:
    """The group of a sample named `<corpus>-<clip>-<copy>` (the paired benchmark's names), or
    by a `regex:PATTERN` (`REGEX_PREFIX`) for any naming.

    `clip`: every copy of one recording; `speaker`: the clip's first two characters (EmoDB's
    speaker code). Random folds would put copies of one recording on both sides of a fold, and
    validation would then measure memorisation. Other names (or names the pattern does not
    match) form a group of their own.
    """
    if by.startswith(REGEX_PREFIX):
        found = re.search(by[len(REGEX_PREFIX):], sample)
        return found.group(1) if found else sample
    parts = sample.split("-")
    if by == "none" or len(parts) < 3:
        return sample
    clip = parts[1]
    return clip[:2] if by == "speaker" else clip


def grouped_fold_indices(groups: list[str], num_folds: int, seed: int) -> list[np.ndarray]:
    """Folds of whole groups: groups shuffled (seeded), largest first, each to the smallest fold."""
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(names) < num_folds:
        raise ValueError(f"{len(names)} groups cannot be split into {num_folds} folds; use fewer folds "
                         f"or a finer fold grouping")
    sizes = np.bincount(inverse)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(num_folds, dtype=np.int64)
    fold_of = np.empty(len(names), dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += sizes[g]
    return [np.flatnonzero(fold_of[inverse] == f) for f in range(num_folds)]


def validation_folds(samples: list[str], config: "TrainConfig") -> list[np.ndarray]:
    problem = check_fold_groups(config.fold_groups)
    if problem:
        raise ValueError(f"fold_groups={config.fold_groups!r} {problem}")
    if config.fold_groups == "none":
        return fold_indices(len(samples), config.num_folds, config.seed)
    groups = [sample_group(s, config.fold_groups) for s in samples]
    return grouped_fold_indices(groups, config.num_folds, config.seed)
