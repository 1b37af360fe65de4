"""MERBench's metrics: weighted F1 (WAF), accuracy, valence MSE and emoval, the sentiment metrics of
valence-only datasets; plus uncertainty quality."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from armer.constants import UNLABELLED_VALENCE


def score(
    probs: np.ndarray, valence_pred: np.ndarray, emotions: np.ndarray, valences: np.ndarray, has_valence: bool
) -> dict[str, float]:
    """WAF, accuracy and (when the model has valence and samples are labelled) valence MSE; for a
    model without emotion classes (probs (N, 0)) the sentiment metrics (`sentiment_scores`)."""
    if probs.shape[-1] == 0:
        return sentiment_scores(valence_pred, valences)
    pred = probs.argmax(axis=-1)
    result = {
        "waf": float(f1_score(emotions, pred, average="weighted", zero_division=0)),
        "acc": float(accuracy_score(emotions, pred)),
    }
    labelled = valences != UNLABELLED_VALENCE
    if has_valence and labelled.any():
        result["val_mse"] = float(np.mean((valence_pred[labelled] - valences[labelled]) ** 2))
    return result


SENTIMENT_METRICS = ("val_mse", "mae", "corr", "acc2", "f1")


def sentiment_scores(valence_pred: np.ndarray, valences: np.ndarray) -> dict[str, float]:
    """The metrics of a valence-only (sentiment) dataset over its labelled samples, as MERBench and
    the CMU-MOSI / CMU-MOSEI / CH-SIMS literature report them: valence MSE (MERBench's `valmse`,
    its selection metric for these sets), MAE, Pearson correlation `corr` (0 when either side is
    constant), and on non-negative vs negative valence the accuracy `acc2` and weighted F1 `f1`.
    NaN for all of them when no sample is labelled."""
    labelled = valences != UNLABELLED_VALENCE
    pred, true = valence_pred[labelled].astype(np.float64), valences[labelled].astype(np.float64)
    if not labelled.any():
        return {k: float("nan") for k in SENTIMENT_METRICS}
    constant = pred.std() == 0 or true.std() == 0
    corr = 0.0 if constant else float(np.corrcoef(pred, true)[0, 1])
    positive_pred, positive_true = pred >= 0, true >= 0
    return {
        "val_mse": float(np.mean((pred - true) ** 2)),
        "mae": float(np.mean(np.abs(pred - true))),
        "corr": corr,
        "acc2": float(accuracy_score(positive_true, positive_pred)),
        "f1": float(f1_score(positive_true, positive_pred, average="weighted", zero_division=0)),
    }


def headline(metrics: dict[str, float]) -> str:
    """The metric a result is summed up by in logs and tables: WAF, or for a valence-only model the
    valence MSE."""
    return "waf" if "waf" in metrics else "val_mse"


def emoval(metrics: dict[str, float], has_valence: bool) -> float:
    """MERBench's model-selection score: WAF - 0.25 * valence MSE (WAF alone without valence); for
    a valence-only model MERBench's `val` score, -valence MSE."""
    if "waf" not in metrics:
        return -metrics["val_mse"]
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
