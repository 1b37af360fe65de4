"""The naive-Bayes late-fusion baseline: its product rule, a planted signal, missing modalities left out."""
from __future__ import annotations

import numpy as np

from armer.config import TrainConfig
from armer.evaluate.baseline import LateFusionBaseline, evaluate_baseline


def test_the_posterior_is_the_naive_bayes_product_of_the_present_modalities(planted_tree):
    _, dataset = planted_tree
    model = LateFusionBaseline(len(dataset.label_names)).fit(dataset.train)
    test = dataset.tests["test1"]
    both = np.ones_like(test.present)
    probs, _ = model.predict(test.features, both)
    prior = np.exp(model.log_prior)
    per_modality = [clf.predict_proba(scaler.transform(x)) for clf, scaler, x in
                    zip(model.classifiers, model.scalers, test.features)]
    expected = prior * np.prod([p / prior for p in per_modality], axis=0)
    assert np.allclose(probs, expected / expected.sum(axis=1, keepdims=True), atol=1e-6)
    audio_only = both.copy()
    audio_only[:, 1:] = False
    probs_audio, _ = model.predict(test.features, audio_only)
    assert np.allclose(probs_audio, per_modality[0], atol=1e-6)  # a missing modality is left out


def test_the_baseline_learns_the_planted_signal_and_scores_every_condition(planted_tree):
    _, dataset = planted_tree
    result = evaluate_baseline(dataset, TrainConfig(num_folds=3, seed=0))
    test = result["results"]["test1"]
    assert test["full"]["waf"] > 0.8 and result["validation"]["full"]["waf"] > 0.8
    assert test["video_only"]["waf"] < 0.35  # video is pure noise
    assert test["audio_only"]["waf"] > test["text_only"]["waf"]
    assert 0.3 < test["missing_rate"]["mean"]["waf"] < test["full"]["waf"]
