"""Training on a planted-signal tree: the model learns, trusts the informative modality, and
lowers its trust when that modality is corrupted at test time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from armer.config import MODALITIES
from armer.evaluation import predict
from armer.training import TrainConfig, fold_indices, to_batch, train_folds
from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(planted_tree):
    _, dataset = planted_tree
    config = tiny_config(hidden_dim=32, modality_dropout_warmup=5, modality_noise=0.3, calibration_weight=1.0)
    torch.manual_seed(0)
    return dataset, train_folds(dataset, config, TrainConfig(epochs=25, num_folds=2, workers=1, seed=0))


def corrupt(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Replace a modality by Gaussian noise with the same per-dimension mean and std."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(features.shape).astype(np.float32)
    return features.mean(axis=0) + noise * features.std(axis=0)


def test_v2_learns_the_planted_signal_and_trusts_the_informative_modality(trained):
    dataset, result = trained
    test = dataset.tests["test1"]
    out = predict(result.ensemble, test.features, test.present)
    accuracy = (out["probs"].argmax(-1) == test.emotions).mean()
    assert accuracy > 0.95
    weights = out["weights"].mean(axis=0)
    sigma = out["sigma"].mean(axis=0)
    audio, video = MODALITIES.index("audio"), MODALITIES.index("video")
    assert weights[audio] > weights[video] + 0.2  # signal versus pure noise
    assert sigma[audio] < sigma[video] - 0.2
    assert sigma.std() > 0.1  # sigma is not stuck near 1 for every modality


def test_corrupting_the_informative_modality_raises_its_sigma_and_lowers_its_weight(trained):
    dataset, result = trained
    test = dataset.tests["test1"]
    clean = predict(result.ensemble, test.features, test.present)
    corrupted_features = [corrupt(test.features[0]), *test.features[1:]]
    corrupted = predict(result.ensemble, corrupted_features, test.present)
    assert corrupted["sigma"][:, 0].mean() > clean["sigma"][:, 0].mean()
    assert corrupted["weights"][:, 0].mean() < clean["weights"][:, 0].mean()
    assert corrupted["weights"][:, 1].mean() > clean["weights"][:, 1].mean()  # trust moves to text


def test_best_epoch_is_tracked_per_fold_and_modality_dropout_is_active_after_warmup(trained):
    _, result = trained
    assert len(result.best_epochs) == 2 and all(1 <= e <= 25 for e in result.best_epochs)
    first, late = result.history[0]["folds"], result.history[-1]["folds"]
    assert all(f["dropped_modality_share"] == 0.0 for f in first)  # warm-up starts at 0
    # p = 0.15 of samples lose one or two of three modalities: about 0.15 * 1.5 / 3 = 7.5% of them.
    assert all(0.04 < f["dropped_modality_share"] < 0.12 for f in late)
    assert all("test1" in f["test"] for f in late)


def test_folds_partition_the_training_set_and_depend_on_the_seed():
    folds = fold_indices(103, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(103))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, fold_indices(103, 5, seed=4)))
    with pytest.raises(ValueError, match="cannot be split"):
        fold_indices(3, 5, seed=0)


def test_the_ensemble_averages_the_fold_models(trained):
    dataset, result = trained
    batch = to_batch(dataset.tests["test1"])
    with torch.no_grad():
        member_probs = [torch.softmax(m(batch).logits, -1) for m in result.ensemble.members]
        ensemble_probs = torch.softmax(result.ensemble(batch).logits, -1)
    assert torch.allclose(ensemble_probs, torch.stack(member_probs).mean(0), atol=1e-5)


def test_frame_level_features_train_with_lstm_encoders(tmp_path):
    from armer.data import load_dataset
    from armer.synthetic import write_synthetic_merbench
    from conftest import DIMS, feature_names

    paths = write_synthetic_merbench(tmp_path, n_train=40, n_tests=(10,), dims=DIMS, seed=2)
    for folder in (tmp_path / "features").iterdir():  # turn every utterance vector into 3 frames
        for file in folder.glob("*.npy"):
            vector = np.load(file)
            np.save(file, np.stack([vector, 0.5 * vector, -vector]))
    dataset = load_dataset(paths["features_root"], paths["label_path"], feature_names(paths), feat_type="frm_align")
    assert dataset.train.features[0].shape == (40, 3, DIMS[0])
    result = train_folds(dataset, tiny_config(feat_type="frm_align"), TrainConfig(epochs=2, num_folds=2, workers=1))
    out = predict(result.ensemble, dataset.tests["test1"].features, dataset.tests["test1"].present)
    assert out["probs"].shape == (10, 6) and np.isfinite(out["probs"]).all()
