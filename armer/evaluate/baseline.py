"""The simple baseline beside V1 and V2: naive-Bayes late fusion of per-modality linear models.

Each modality gets its own logistic regression (its own ridge regression for the valence), trained
on the samples that have it, on standardised features. A sample's class posterior is the naive-Bayes
product over its present modalities, p(y | x) ∝ p(y) prod_m p_m(y | x_m) / p(y); a missing modality
is simply left out of the product. The valence is the Gaussian analogue: the present modalities'
predictions averaged with weights 1 / (their cross-validated squared error), the product of
Gaussians with those variances. It is scored under the same conditions and folds as the neural models
(`armer.evaluate.conditions.score_conditions`, `armer.train.folds.validation_folds`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import StandardScaler

from armer.config import TrainConfig
from armer.constants import UNLABELLED_VALENCE
from armer.data import Corpus, Dataset
from armer.evaluate.conditions import mean_of, score_conditions
from armer.evaluate.metrics import score
from armer.train.folds import validation_folds

LOG_FLOOR = -30.0  # log-probability of a class a modality's model never saw in training


class LateFusionBaseline:
    """Per-modality logistic / ridge regressions, fused by the naive-Bayes product (classes) and the mean (valence)."""

    def __init__(self, num_classes: int, C: float = 1.0, alpha: float = 1.0):
        self.num_classes, self.C, self.alpha = num_classes, C, alpha
        self.scalers: list[StandardScaler | None] = []
        self.classifiers: list[LogisticRegression | None] = []
        self.regressors: list[Ridge | None] = []
        self.precisions: list[float] = []  # 1 / cross-validated MSE of each modality's valence
        self.log_prior = np.zeros(num_classes)

    def fit(self, corpus: Corpus) -> "LateFusionBaseline":
        if self.num_classes:
            counts = np.bincount(corpus.emotions, minlength=self.num_classes) + 1.0
            self.log_prior = np.log(counts / counts.sum())
        labelled = corpus.valences != UNLABELLED_VALENCE
        for features, present in zip(corpus.features, corpus.present.T):
            x = features.reshape(len(features), -1)[present]
            if len(x) < 2:
                self.scalers.append(None)
                self.classifiers.append(None)
                self.regressors.append(None)
                self.precisions.append(0.0)
                continue
            scaler = StandardScaler().fit(x)
            xs = scaler.transform(x)
            classifier = None
            if self.num_classes and len(np.unique(corpus.emotions[present])) > 1:
                classifier = LogisticRegression(C=self.C, max_iter=2000).fit(xs, corpus.emotions[present])
            regressor, precision = None, 0.0
            rows = labelled[present]
            if rows.sum() >= 5:
                x_val, y_val = xs[rows], corpus.valences[present][rows]
                regressor = Ridge(alpha=self.alpha).fit(x_val, y_val)
                error = np.mean((cross_val_predict(Ridge(alpha=self.alpha), x_val, y_val, cv=5) - y_val) ** 2)
                precision = 1.0 / max(float(error), 1e-6)
            self.precisions.append(precision)
            self.scalers.append(scaler)
            self.classifiers.append(classifier)
            self.regressors.append(regressor)
        return self

    def predict(self, features: list[np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, C) and valence (N,) of samples with the modalities `mask` (N, M)."""
        n = len(mask)
        log_post = np.tile(self.log_prior, (n, 1))
        valence_sum, valence_count = np.zeros(n), np.zeros(n)
        for i, x in enumerate(features):
            rows = np.flatnonzero(mask[:, i])
            if self.scalers[i] is None or not len(rows):
                continue
            xs = self.scalers[i].transform(x.reshape(len(x), -1)[rows])
            if self.classifiers[i] is not None:
                full = np.full((len(rows), self.num_classes), LOG_FLOOR)
                full[:, self.classifiers[i].classes_] = np.maximum(self.classifiers[i].predict_log_proba(xs), LOG_FLOOR)
                log_post[rows] += full - self.log_prior
            if self.regressors[i] is not None:
                valence_sum[rows] += self.precisions[i] * self.regressors[i].predict(xs)
                valence_count[rows] += self.precisions[i]
        valence = np.divide(valence_sum, valence_count, out=np.zeros(n), where=valence_count > 0)
        if not self.num_classes:  # valence-only
            return log_post, valence
        probs = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        return probs / probs.sum(axis=1, keepdims=True), valence


def score_mask(model: LateFusionBaseline, corpus: Corpus, rows: np.ndarray, mask: np.ndarray,
               has_valence: bool) -> dict[str, float]:
    """Metrics on the samples `rows` of `corpus` with the modalities `mask` (N_corpus, M)."""
    probs, valence = model.predict([f[rows] for f in corpus.features], mask[rows])
    return score(probs, valence, corpus.emotions[rows], corpus.valences[rows], has_valence)


def corpus_conditions(model: LateFusionBaseline, corpus: Corpus, has_valence: bool, seed: int) -> dict[str, Any]:
    """Every condition of `armer.evaluate` on a test corpus (samples left with no modality not scored)."""
    def scored(mask: np.ndarray) -> dict[str, float]:
        return score_mask(model, corpus, np.flatnonzero(mask.any(axis=1)), mask, has_valence)

    return score_conditions(scored, corpus.present, seed)


def validation_conditions(dataset: Dataset, config: TrainConfig) -> dict[str, Any]:
    """Out-of-fold: one baseline per fold on its training samples, scored on its validation samples
    under every condition; metrics averaged over the folds (as `armer.train`'s `validation`)."""
    train = dataset.train
    val_sets = validation_folds(train.samples, config)
    num_classes = len(dataset.label_names)
    models = [LateFusionBaseline(num_classes).fit(train.subset(np.setdiff1d(np.arange(len(train)), v)))
              for v in val_sets]

    def scored(mask: np.ndarray) -> dict[str, float]:
        return mean_of([score_mask(m, train, v[mask[v].any(axis=1)], mask, dataset.has_valence)
                        for m, v in zip(models, val_sets) if mask[v].any()])

    return score_conditions(scored, train.present, config.seed)


def evaluate_baseline(dataset: Dataset, config: TrainConfig) -> dict[str, Any]:
    """The baseline's `validation` (out-of-fold) and `results` (trained on all of train_corpus, per test corpus)."""
    model = LateFusionBaseline(len(dataset.label_names)).fit(dataset.train)
    return {"validation": validation_conditions(dataset, config),
            "results": {name: corpus_conditions(model, corpus, dataset.has_valence, config.seed)
                        for name, corpus in dataset.tests.items()}}

