"""Evaluation under missing and degraded modalities (design.md, "Evaluation under missing ...").

Conditions (`score_conditions`, also what training scores its kept models under on their
validation folds): `full`; the six fixed drop patterns; the missing-rate sweep r = 0.1 .. 0.7
(seeded, all-missing draws redrawn) and its mean. `evaluate_corpus` adds, optionally, Gaussian
feature noise on each modality. Every condition of a corpus reports WAF, accuracy, valence MSE
(when trained) and the mean fusion weight and sigma of each modality over the samples where it is
present. A modality the data lacks altogether is a case of its own: the conditions that need it
(a drop pattern keeping only absent modalities, noise on an absent modality) are None, "n/a" in
Markdown, and the missing-rate sweep drops the modalities that exist.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from armer.constants import EVAL_BATCH, FEATURE_KEYS, MODALITIES
from armer.data import Corpus
from armer.device import DeviceSpec, module_device
from armer.evaluate.metrics import SENTIMENT_METRICS, headline, score
from armer.model import Ensemble, RobustBase
from armer.model.missing import DROP_PATTERNS, pattern_mask, sweep_masks

NOISE_LEVELS = (0.5, 1.0, 2.0)


def to_batch(corpus: Corpus, device: DeviceSpec | None = None) -> dict[str, torch.Tensor]:
    """The corpus as tensors sharing the arrays' memory (no copy); its degraded views, if loaded,
    as `degraded_<key>` and `degraded_present`. With `device`: copies on that device."""
    batch = {
        **{key: torch.from_numpy(x) for key, x in zip(FEATURE_KEYS, corpus.features)},
        "present": torch.from_numpy(corpus.present),
        "emos": torch.from_numpy(corpus.emotions),
        "vals": torch.from_numpy(corpus.valences),
        "val_labelled": torch.from_numpy(corpus.valence_labelled),
    }
    if corpus.degraded is not None:
        batch.update({f"degraded_{key}": torch.from_numpy(x) for key, x in zip(FEATURE_KEYS, corpus.degraded)})
        batch["degraded_present"] = torch.from_numpy(corpus.degraded_present)
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}


def gather(data: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows `index` of every tensor: (N,) -> (N, ...), (E, B) -> (E, B, ...) (index_select: several
    times faster than [] here)."""
    flat = index.reshape(-1)
    return {k: torch.index_select(v, 0, flat).view(*index.shape, *v.shape[1:]) for k, v in data.items()}


@torch.no_grad()
def predict(model: Ensemble | RobustBase, data: dict[str, torch.Tensor], index: torch.Tensor | None = None,
            check_inputs: bool = True) -> dict[str, torch.Tensor]:
    """Probabilities, valence, fusion weights and sigma (NaN for a model without one) of the samples
    `index` of `data` (default: all), EVAL_BATCH samples per forward pass.

    `index` (N,): the samples shared by every member; outputs (N, ...), for an `Ensemble` its
    members' average. `index` (E, N) for a network of E members: member e on the samples
    `index[e]`; outputs (E, N, ...).

    Each batch is gathered where `data` is, run on the model's device, and the outputs come back
    on `data`'s device (`data` on the CPU and the model on a GPU: CPU outputs).
    """
    home, device = data["present"].device, module_device(model)
    index = torch.arange(len(data["present"]), device=home) if index is None else index
    parts: dict[str, list[torch.Tensor]] = {"probs": [], "valence": [], "weights": [], "sigma": []}
    for start in range(0, index.shape[-1], EVAL_BATCH):
        batch = gather(data, index[..., start:start + EVAL_BATCH])
        if device != home:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        out = model(batch, check_inputs=check_inputs)
        parts["probs"].append(torch.softmax(out.logits, dim=-1))
        parts["valence"].append(out.valence[..., 0])
        parts["weights"].append(out.weights)
        parts["sigma"].append(torch.full_like(out.weights, float("nan")) if out.sigma is None else out.sigma)
    return {k: torch.cat(v, dim=-1 if k == "valence" else -2).to(home) for k, v in parts.items()}


def modality_means(values: np.ndarray, present: np.ndarray) -> dict[str, float | None]:
    return {
        m: (float(values[present[:, i], i].mean()) if present[:, i].any() and not np.isnan(values[:, i]).all() else None)
        for i, m in enumerate(MODALITIES)
    }


def evaluate_mask(model: Ensemble, data: dict[str, torch.Tensor], mask: np.ndarray, has_valence: bool) -> dict[str, Any]:
    """Score one condition of `data` (a `to_batch`); samples left with no modality are not scored
    (their count is reported)."""
    usable = mask.any(axis=1)
    out = {k: v.numpy() for k, v in predict(model, dict(data, present=torch.from_numpy(mask)),
                                             torch.from_numpy(np.flatnonzero(usable))).items()}
    result = score(out["probs"], out["valence"], data["emos"].numpy()[usable], data["vals"].numpy()[usable], has_valence)
    result["n"] = int(usable.sum())
    result["n_unscorable"] = int((~usable).sum())
    result["weights"] = modality_means(out["weights"], mask[usable])
    result["sigma"] = modality_means(out["sigma"], mask[usable])
    return result


def mean_of(results: list[dict[str, Any] | None]) -> dict[str, float]:
    """The mean WAF, accuracy and valence MSE of `results`, leaving out the None ones (not applicable)."""
    results = [r for r in results if r is not None]
    keys = [k for k in ("waf", "acc", "val_mse") if all(k in r for r in results)]
    if results and headline(results[0]) != "waf":  # valence-only
        keys = list(SENTIMENT_METRICS)
    return {k: float(np.mean([r[k] for r in results])) for k in keys}


def score_conditions(score_mask: Callable[[np.ndarray], dict[str, Any]], present: np.ndarray, seed: int,
                     full: dict[str, Any] | None = None) -> dict[str, Any]:
    """`score_mask` of each condition's presence mask (N, 3): `full` (`present`; pass `full` when the
    caller has already scored it), the six drop patterns (None, not applicable, for one that leaves
    no sample a modality: it keeps only modalities the data lacks), and under `missing_rate` the
    sweep's rates (masks seeded by `seed`) and their `mean`."""
    results: dict[str, Any] = {"full": full if full is not None else score_mask(present)}
    for name, keep in DROP_PATTERNS.items():
        mask = pattern_mask(present, keep)
        results[name] = score_mask(mask) if mask.any() else None
    sweep = {rate: score_mask(mask) for rate, mask in sweep_masks(present, seed).items()}
    sweep["mean"] = mean_of(list(sweep.values()))
    results["missing_rate"] = sweep
    return results


def add_feature_noise(features: np.ndarray, present: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Gaussian noise with `level` times each dimension's std over the present samples."""
    values = features[present]
    std = values.reshape(-1, features.shape[-1]).std(axis=0) if len(values) else np.ones(features.shape[-1])
    rng = np.random.default_rng(seed)
    noisy = features + level * std * rng.standard_normal(features.shape).astype(np.float32)
    return np.where(present.reshape((-1,) + (1,) * (features.ndim - 1)), noisy, 0.0).astype(np.float32)


def evaluate_corpus(
    model: Ensemble, corpus: Corpus, has_valence: bool, seed: int = 0, noise_levels: tuple[float, ...] = (),
) -> dict[str, Any]:
    """All conditions for one corpus."""
    data, present = to_batch(corpus), corpus.present
    results = score_conditions(lambda mask: evaluate_mask(model, data, mask, has_valence), present, seed)
    if noise_levels:
        noise = {}
        for level in noise_levels:
            for i, (modality, key) in enumerate(zip(MODALITIES, FEATURE_KEYS)):
                if not present[:, i].any():  # noise on a modality no sample has: not applicable
                    noise[f"{modality}@{level:g}"] = None
                    continue
                noisy = add_feature_noise(corpus.features[i], present[:, i], level, seed + i)
                noise[f"{modality}@{level:g}"] = evaluate_mask(model, dict(data, **{key: torch.from_numpy(noisy)}),
                                                               present, has_valence)
        results["noise"] = noise
    return results


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per condition, WAF / accuracy per corpus (a valence-only model: valence MSE / Pearson
    correlation) ("n/a" where a condition does not apply)."""
    corpora = list(results)
    first = results[corpora[0]]
    keys, titles = (("waf", "acc"), ("WAF", "ACC")) if headline(first["full"]) == "waf" else \
        (("val_mse", "corr"), ("valence MSE", "corr"))
    header = "| condition | " + " | ".join(f"{c} {t}" for c in corpora for t in titles) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(corpora))]

    def row(label: str, picks: list[dict[str, Any] | None]) -> str:
        cells = " | ".join("n/a | n/a" if p is None else f"{p[keys[0]]:.4f} | {p[keys[1]]:.4f}" for p in picks)
        return f"| {label} | {cells} |"

    for name in ["full", *DROP_PATTERNS]:
        lines.append(row(name, [results[c][name] for c in corpora]))
    for rate in first["missing_rate"]:
        lines.append(row(f"missing r={rate}", [results[c]["missing_rate"][rate] for c in corpora]))
    for name in first.get("noise", {}):
        lines.append(row(f"noise {name}", [results[c]["noise"][name] for c in corpora]))
    return "\n".join(lines) + "\n"
