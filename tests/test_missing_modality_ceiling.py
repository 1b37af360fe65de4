"""The oracle column of scripts/missing_modality_ceiling.py: each sample scored by the model that is
best on its own pattern of modalities."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from missing_modality_ceiling import best_per_pattern, pattern_condition  # noqa: E402


def test_pattern_condition_names_the_fixed_condition():
    assert pattern_condition(np.array([True, True, True])) == "full"
    assert pattern_condition(np.array([True, False, False])) == "audio_only"
    assert pattern_condition(np.array([False, True, True])) == "drop_audio"
    with pytest.raises(StopIteration):
        pattern_condition(np.array([False, False, False]))


def test_each_sample_takes_the_model_that_is_best_on_its_pattern():
    mask = np.array([[True, True, True], [True, False, False], [True, True, True], [True, False, False]])
    val_sets = [np.array([0, 1]), np.array([2, 3])]
    probs = {"A": [np.full((2, 2), 0.1), np.full((2, 2), 0.2)],
             "B": [np.full((2, 2), 0.7), np.full((2, 2), 0.8)]}
    rows = {"full": {"A": 0.9, "B": 0.5}, "audio_only": {"A": 0.4, "B": 0.6}}  # A wins full, B audio alone
    chosen = best_per_pattern(probs, mask, val_sets, rows)
    assert np.allclose(chosen[0], [[0.1, 0.1], [0.7, 0.7]]) and np.allclose(chosen[1], [[0.2, 0.2], [0.8, 0.8]])
