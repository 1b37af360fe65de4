"""MERBench's metrics: weighted F1 (WAF), accuracy, valence MSE and emoval; plus uncertainty quality."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from armer.constants import UNLABELLED_VALENCE


def score(
    probs: np.ndarray, valence_pred: np.ndarray, emotions: np.ndarray, valences: np.ndarray, has_valence: bool
) -> dict[str, float]:
    """WAF, accuracy and (when the model has valence and samples are labelled) valence MSE."""
    pred = probs.argmax(axis=-1)
    result = {
        "waf": float(f1_score(emotions, pred, average="weighted", zero_division=0)),
        "acc": float(accuracy_score(emotions, pred)),
    }
    labelled = valences != UNLABELLED_VALENCE
    if has_valence and labelled.any():
        result["val_mse"] = float(np.mean((valence_pred[labelled] - valences[labelled]) ** 2))
    return result


def emoval(metrics: dict[str, float], has_valence: bool) -> float:
    """MERBench's model-selection score: WAF - 0.25 * valence MSE (WAF alone without valence)."""
    if has_valence and "val_mse" in metrics:
        return metrics["waf"] - 0.25 * metrics["val_mse"]
    return metrics["waf"]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class probability with equal-width confidence bins."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def error_auroc(uncertainty: np.ndarray, wrong: np.ndarray) -> float | None:
    """AUROC of separating wrong from right predictions by an uncertainty score (higher = less sure).

    None when all predictions are right or all are wrong (the AUROC is undefined).
    """
    if wrong.all() or not wrong.any():
        return None
    return float(roc_auc_score(wrong.astype(int), uncertainty))
