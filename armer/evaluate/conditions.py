"""Evaluation under missing and degraded modalities (design.md, "Evaluation under missing ...").

Conditions: `full`; the six fixed drop patterns; the missing-rate sweep r = 0.1 .. 0.7 (seeded,
all-missing draws redrawn) and its mean; optionally Gaussian feature noise on each modality.
Every condition reports WAF, accuracy, valence MSE (when trained) and the mean fusion weight and
sigma of each modality over the samples where it is present.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from armer.config import MODALITIES
from armer.data import Corpus
from armer.evaluate.metrics import score
from armer.model.missing import DROP_PATTERNS, pattern_mask, sweep_masks
from armer.model.robust import Ensemble

EVAL_BATCH = 512
NOISE_LEVELS = (0.5, 1.0, 2.0)


@torch.no_grad()
def predict(model: Ensemble, features: list[np.ndarray], present: np.ndarray) -> dict[str, np.ndarray]:
    """Probabilities, valence, fusion weights and sigma for samples with the given presence mask."""
    parts: dict[str, list[np.ndarray]] = {"probs": [], "valence": [], "weights": [], "sigma": []}
    for start in range(0, len(present), EVAL_BATCH):
        window = slice(start, start + EVAL_BATCH)
        mask = torch.from_numpy(present[window])
        batch = {
            key: torch.from_numpy(f[window]) * mask[:, i].reshape((-1,) + (1,) * (f.ndim - 1))
            for i, (key, f) in enumerate(zip(("audios", "texts", "videos"), features))
        }
        batch["present"] = mask
        out = model(batch)
        parts["probs"].append(torch.softmax(out.logits, dim=-1).numpy())
        parts["valence"].append(out.valence[:, 0].numpy())
        parts["weights"].append(out.weights.numpy())
        parts["sigma"].append(out.sigma.numpy() if out.sigma is not None else np.full(mask.shape, np.nan, np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}


def modality_means(values: np.ndarray, present: np.ndarray) -> dict[str, float | None]:
    return {
        m: (float(values[present[:, i], i].mean()) if present[:, i].any() and not np.isnan(values[:, i]).all() else None)
        for i, m in enumerate(MODALITIES)
    }


def evaluate_mask(model: Ensemble, corpus: Corpus, mask: np.ndarray, has_valence: bool,
                  features: list[np.ndarray] | None = None) -> dict[str, Any]:
    """Score one condition; samples left with no modality are not scored (their count is reported)."""
    usable = mask.any(axis=1)
    feats = [f[usable] for f in (features or corpus.features)]
    out = predict(model, feats, mask[usable])
    result = score(out["probs"], out["valence"], corpus.emotions[usable], corpus.valences[usable], has_valence)
    result["n"] = int(usable.sum())
    result["n_unscorable"] = int((~usable).sum())
    result["weights"] = modality_means(out["weights"], mask[usable])
    result["sigma"] = modality_means(out["sigma"], mask[usable])
    return result


def mean_of(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in ("waf", "acc", "val_mse") if all(k in r for r in results)]
    return {k: float(np.mean([r[k] for r in results])) for k in keys}


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
    present = corpus.present
    results: dict[str, Any] = {"full": evaluate_mask(model, corpus, present, has_valence)}
    for name, keep in DROP_PATTERNS.items():
        results[name] = evaluate_mask(model, corpus, pattern_mask(present, keep), has_valence)
    sweep = {rate: evaluate_mask(model, corpus, mask, has_valence) for rate, mask in sweep_masks(present, seed).items()}
    sweep["mean"] = mean_of(list(sweep.values()))
    results["missing_rate"] = sweep
    if noise_levels:
        noise = {}
        for level in noise_levels:
            for i, modality in enumerate(MODALITIES):
                features = list(corpus.features)
                features[i] = add_feature_noise(features[i], present[:, i], level, seed + i)
                noise[f"{modality}@{level:g}"] = evaluate_mask(model, corpus, present, has_valence, features)
        results["noise"] = noise
    return results


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per condition, WAF / accuracy per corpus (valence MSE when present)."""
    corpora = list(results)
    header = "| condition | " + " | ".join(f"{c} WAF | {c} ACC" for c in corpora) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(corpora))]

    def row(label: str, picks: list[dict[str, Any]]) -> str:
        cells = " | ".join(f"{p['waf']:.4f} | {p['acc']:.4f}" for p in picks)
        return f"| {label} | {cells} |"

    first = results[corpora[0]]
    for name in ["full", *DROP_PATTERNS]:
        lines.append(row(name, [results[c][name] for c in corpora]))
    for rate in first["missing_rate"]:
        lines.append(row(f"missing r={rate}", [results[c]["missing_rate"][rate] for c in corpora]))
    for name in first.get("noise", {}):
        lines.append(row(f"noise {name}", [results[c]["noise"][name] for c in corpora]))
    return "\n".join(lines) + "\n"
