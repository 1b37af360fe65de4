"""Training on a planted-signal tree: the model learns, trusts the informative modality, and
lowers its trust when that modality is corrupted at test time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from armer.config import TrainConfig
from armer.constants import FEATURE_KEYS, MODALITIES
from armer.data import load_dataset
from armer.evaluate.conditions import predict, to_batch
from armer.evaluate.metrics import emoval
from armer.model.missing import MISSING_RATES
from armer.model.modeling import create_model
from armer.train.folds import fold_indices
from armer.train.loop import feature_statistics, padded_index, train_folds, weight_spread, with_degraded_views
from conftest import feature_names, tiny_config


@pytest.fixture(scope="module")
def trained(planted_tree):
    _, dataset = planted_tree
    config = tiny_config(hidden_dim=32, modality_dropout_warmup=5, modality_noise=0.3, calibration_weight=1.0)
    torch.manual_seed(0)
    return dataset, train_folds(dataset, config, TrainConfig(epochs=25, num_folds=2, seed=0))


def corrupt(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Replace a modality by Gaussian noise with the same per-dimension mean and std."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(features.shape).astype(np.float32)
    return features.mean(axis=0) + noise * features.std(axis=0)


def predict_numpy(ensemble, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in predict(ensemble, batch).items()}


def test_v2_learns_the_planted_signal_and_trusts_the_informative_modality(trained):
    dataset, result = trained
    test = dataset.tests["test1"]
    out = predict_numpy(result.ensemble, to_batch(test))
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
    clean = predict_numpy(result.ensemble, to_batch(test))
    corrupted = predict_numpy(result.ensemble, dict(to_batch(test), audios=torch.from_numpy(corrupt(test.features[0]))))
    assert corrupted["sigma"][:, 0].mean() > clean["sigma"][:, 0].mean()
    assert corrupted["weights"][:, 0].mean() < clean["weights"][:, 0].mean()
    assert corrupted["weights"][:, 1].mean() > clean["weights"][:, 1].mean()  # trust moves to text


def test_best_epoch_is_tracked_per_fold_and_modality_dropout_is_active_after_warmup(trained):
    _, result = trained
    # Model selection starts after the 5-epoch warm-up (select_from_epoch=0).
    assert len(result.best_epochs) == 2 and all(6 <= e <= 25 for e in result.best_epochs)
    first, late = result.history[0]["folds"], result.history[-1]["folds"]
    assert all(f["dropped_modality_share"] == 0.0 for f in first)  # warm-up starts at 0
    # p = 0.15 of samples lose one or two of three modalities: about 0.15 * 1.5 / 3 = 7.5% of them.
    assert all(0.04 < f["dropped_modality_share"] < 0.12 for f in late)
    for fold, best in enumerate(result.best_epochs):  # the test corpora are scored at each fold's best epoch
        assert "test1" in result.history[best - 1]["folds"][fold]["test"]


def test_validation_robustness_scores_each_kept_model_on_its_own_fold_under_the_sweep(trained):
    dataset, result = trained
    full, sweep = result.validation["full"], result.validation["missing_rate"]
    assert full["waf"] > 0.9
    # Out of fold: with every modality present it is the score that picked each fold's best epoch.
    assert emoval(full, dataset.has_valence) == pytest.approx(np.mean(result.best_emovals), abs=1e-5)
    # Audio carries the label: the more often it is missing, the lower the score.
    assert sweep["0.1"]["waf"] > sweep["0.7"]["waf"] + 0.1
    assert sweep["mean"]["waf"] == pytest.approx(np.mean([sweep[f"{r:.1f}"]["waf"] for r in MISSING_RATES]))


def test_weight_spread_tells_sample_dependent_weights_from_constant_ones(trained):
    dataset, result = trained
    assert result.validation["weight_spread"]["audio"] > 0.01  # sigma follows each sample's evidence
    equal = create_model(tiny_config(hidden_dim=32, use_vae=False)).eval()  # equal weights, whatever the input
    sets, data = fold_indices(len(dataset.train), 2, seed=0)[:1], to_batch(dataset.train)
    weights = predict(equal, data, padded_index(sets))["weights"]
    assert max(weight_spread(weights, data["present"], sets).values()) < 1e-6


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
        member_probs = torch.softmax(result.ensemble.member_outputs(batch).logits, -1)  # (E, B, C)
        ensemble_probs = torch.softmax(result.ensemble(batch).logits, -1)
    assert member_probs.shape[0] == 2 and not torch.allclose(member_probs[0], member_probs[1])
    assert torch.allclose(ensemble_probs, member_probs.mean(0), atol=1e-5)


def test_members_of_one_network_train_exactly_as_separate_models():
    """The batched fold ensemble: member e's update depends only on member e's batch."""
    from armer.model import losses
    from armer.model.modeling import create_model
    from conftest import DIMS

    config = tiny_config(dropout=0.0, modality_dropout=0.0, modality_noise=0.0, use_vae=False, recon_dims=0)
    torch.manual_seed(0)
    joint = create_model(config, members=2).train()
    singles = [create_model(config).train() for _ in range(2)]
    for member, single in enumerate(singles):
        single.load_state_dict({k: (v[member:member + 1] if v.dim() else v) for k, v in joint.state_dict().items()})
    generator = torch.Generator().manual_seed(1)
    batch = {"audios": torch.randn(2, 8, DIMS[0], generator=generator), "texts": torch.randn(2, 8, DIMS[1], generator=generator),
             "videos": torch.randn(2, 8, DIMS[2], generator=generator), "emos": torch.randint(0, 6, (2, 8), generator=generator),
             "vals": torch.randn(2, 8, generator=generator), "val_labelled": torch.ones(2, 8, dtype=torch.bool)}

    def step(model, part):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        out = model(part)
        loss = losses.task_loss(out.logits, out.valence, part["emos"], part["vals"], part["val_labelled"]) + out.interloss
        loss.backward()
        optimizer.step()

    step(joint, batch)
    for member, single in enumerate(singles):
        step(single, {k: v[member:member + 1] for k, v in batch.items()})
        for name, value in single.state_dict().items():
            if value.dim():
                assert torch.allclose(joint.state_dict()[name][member], value[0], atol=1e-6), name


def test_every_member_sees_its_own_fold_once_per_epoch():
    from armer.train.loop import member_indices

    sets = [np.arange(0, 10), np.arange(10, 17)]
    order = member_indices(sets, np.random.default_rng(0))
    assert order.shape == (2, 10)
    assert sorted(order[0].tolist()) == list(range(10))
    assert sorted(order[1, :7].tolist()) == list(range(10, 17))  # the smaller set: all of it, then repeats
    assert set(order[1, 7:].tolist()) <= set(range(10, 17))


def with_views(dataset, views: list[np.ndarray]):
    """`dataset` whose train corpus carries `views` as its degraded views."""
    train = dataset.train
    train = type(train)(**{**vars(train), "degraded": views, "degraded_present": np.ones_like(train.present)})
    return type(dataset)(**{**vars(dataset), "corpora": {**dataset.corpora, "train": train}})


def test_modality_scope_gives_each_modality_one_scale_so_its_dimensions_keep_their_relative_spread():
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    spreads = [np.array([0.1, 1.0, 10.0]), np.array([2.0, 2.0]), np.array([0.5, 0.05, 5.0, 50.0])]
    features = [(3.0 + rng.standard_normal((4000, len(s))) * s).astype(np.float32) for s in spreads]
    present = np.ones((4000, 3), dtype=bool)
    present[:1000, 0] = False  # absent samples do not count
    features[0][:1000] = 0.0
    corpus = SimpleNamespace(features=features, present=present)
    per_dimension, per_modality = feature_statistics(corpus), feature_statistics(corpus, "modality")
    for name, x, spread, keep in zip(MODALITIES, features, spreads, present.T):
        normed = (x[keep] - np.array(per_modality[name]["mean"])) / np.array(per_modality[name]["std"])
        assert np.allclose(per_modality[name]["mean"], per_dimension[name]["mean"])
        assert np.isclose(np.mean(normed.var(axis=0)), 1.0, rtol=1e-3)  # unit variance over the modality
        assert np.allclose(normed.std(axis=0) / normed.std(axis=0).max(), spread / spread.max(), rtol=0.1)
        standardised = (x[keep] - np.array(per_dimension[name]["mean"])) / np.array(per_dimension[name]["std"])
        assert np.allclose(standardised.std(axis=0), 1.0, rtol=1e-3)
    centred_only = feature_statistics(corpus, "center")
    for name, x, spread, keep in zip(MODALITIES, features, spreads, present.T):
        centred = (x[keep] - np.array(centred_only[name]["mean"])) / np.array(centred_only[name]["std"])
        assert np.allclose(centred.mean(axis=0), 0.0, atol=0.1) and np.allclose(centred.std(axis=0), spread, rtol=0.1)
        # 'spread' is the spread the scaled features have: the scale of --noise_scale feature's noise
        assert np.allclose(centred_only[name]["spread"], centred.std(axis=0), rtol=1e-3)
        assert np.allclose(per_dimension[name]["spread"], 1.0)
        assert np.allclose(per_modality[name]["spread"], spread / np.sqrt(np.mean(spread ** 2)), rtol=0.1)


def test_raw_features_get_noise_statistics_that_leave_them_raw():
    """--no-normalize --noise_scale feature: identity scaling, the noise at the features' own spread and centre."""
    from types import SimpleNamespace

    from armer.train.loop import raw_noise_statistics

    rng = np.random.default_rng(0)
    features = [(c + rng.standard_normal((3000, 2)) * s).astype(np.float32) for c, s in ((600.0, 10.0), (0.4, 0.05), (3.0, 0.5))]
    stats = raw_noise_statistics(SimpleNamespace(features=features, present=np.ones((3000, 3), dtype=bool)))
    for name, x in zip(MODALITIES, features):
        assert np.allclose(stats[name]["mean"], 0.0) and np.allclose(stats[name]["std"], 1.0)
        assert np.allclose(stats[name]["centre"], x.mean(axis=0), rtol=1e-4)
        assert np.allclose(stats[name]["spread"], x.std(axis=0), rtol=1e-3)


def test_training_on_raw_features_with_noise_at_their_scale_keeps_them_raw(planted_tree):
    _, dataset = planted_tree
    result = train_folds(dataset, tiny_config(noise_scale="feature", modality_noise=0.5),
                         TrainConfig(epochs=1, num_folds=2, workers=1, normalize=False))
    normalizer = result.ensemble.network.normalizer
    audio = dataset.train.features[0][dataset.train.present[:, 0]]
    assert torch.equal(normalizer.audio_mean, torch.zeros_like(normalizer.audio_mean))  # the inputs stay raw
    assert torch.equal(normalizer.audio_std, torch.ones_like(normalizer.audio_std))
    spread, centre = normalizer.noise_scale(0)
    assert np.allclose(centre.numpy(), audio.mean(axis=0), atol=0.1 * audio.std())
    assert np.allclose(spread.numpy(), audio.std(axis=0), rtol=0.2)


def test_an_unknown_normalize_scope_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="normalize_scope='feature' must be one of"):
        TrainConfig(normalize_scope="feature")


def test_degraded_views_are_swapped_in_only_where_asked_and_available(planted_tree):
    _, dataset = planted_tree
    train = dataset.train.subset(np.arange(4))
    views = [-f for f in train.features]
    batch = to_batch(type(train)(**{**vars(train), "degraded": views,
                                    "degraded_present": np.array([[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]], bool)}))
    swap = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    out = with_degraded_views(batch, swap)
    assert not any(k.startswith("degraded_") for k in out)
    for i, key in enumerate(FEATURE_KEYS):
        expected = torch.where(swap[:, i:i + 1] & batch["degraded_present"][:, i:i + 1], -batch[key], batch[key])
        assert torch.equal(out[key], expected)
    assert torch.equal(out["audios"][1], batch["audios"][1])  # sample 1 has no audio view


def test_training_on_degraded_views_teaches_the_weight_to_fall_on_them(planted_tree):
    """Feature noise off: the only degraded inputs training shows are the views (audio: 10 % of its
    signal left under noise). On held-out folds the audio weight then falls when audio is degraded."""
    _, dataset = planted_tree
    rng = np.random.default_rng(1)
    audio = dataset.train.features[0]
    views = [0.1 * audio + rng.standard_normal(audio.shape).astype(np.float32) * audio.std(axis=0),
             *[f.copy() for f in dataset.train.features[1:]]]
    config = tiny_config(hidden_dim=32, modality_dropout_warmup=5, modality_noise=0.0, calibration_weight=1.0)
    torch.manual_seed(0)
    result = train_folds(with_views(dataset, views), config,
                         TrainConfig(epochs=20, num_folds=2, seed=0, degraded_views=0.5))
    response = result.validation["degraded"]
    # Without the views (degraded_views=0, checked by hand): weight ratio 0.94, WAF on degraded inputs 0.68.
    assert response["audio"]["weight_degraded"] < 0.85 * response["audio"]["weight_clean"]
    assert abs(response["video"]["weight_degraded"] - response["video"]["weight_clean"]) < 0.02  # its view is clean
    assert response["all"]["waf"] > 0.85


def load_tree(paths: dict):
    return load_dataset(paths["features_root"], paths["label_path"], feature_names(paths))


def test_divergence_is_detected_per_member():
    from armer.train.loop import diverged_members

    model = create_model(tiny_config(), members=3)
    assert diverged_members(model, torch.zeros(3), [0.5, 0.5, 0.5]) == {}
    with torch.no_grad():
        model.emotion_head.weight[1, 0, 0] = float("inf")
    found = diverged_members(model, torch.tensor([0.0, 0.0, float("nan")]), [0.5, 0.5, float("nan")])
    assert found == {1: ["weights"], 2: ["training cross-entropy", "validation emoval"]}


def test_a_fold_without_a_finite_validation_score_stops_training(tiny_tree, monkeypatch):
    from armer.train import loop

    monkeypatch.setattr(loop, "emoval", lambda metrics, has_valence: float("nan"))
    with pytest.raises(loop.TrainingError, match=r"^training diverged: folds 1, 2 at epoch 1 \(non-finite validation "
                                                 r"emoval; every loss term finite.*Lower --lr \(now 0.001\)"):
        train_folds(load_tree(tiny_tree), tiny_config(), TrainConfig(epochs=3, num_folds=2, workers=1))


def test_a_worker_whose_fold_diverges_stops_the_other_workers(tiny_tree, tmp_path, monkeypatch):
    """Folds 1 2 and fold 3 train in two processes; fold 3 diverges at its epoch 2 (faked), the other stops soon."""
    from armer.train import loop

    original = loop.diverged_members

    def fold_3_diverges_at_epoch_2(model, ce, values):
        epochs = tmp_path / f"epochs_of_a_{model.members}_member_network"  # written by each worker process
        with epochs.open("a") as f:
            f.write(".")
        if model.members == 1 and len(epochs.read_text()) == 2:
            return {0: ["weights"]}
        return original(model, ce, values)

    monkeypatch.setattr(loop, "diverged_members", fold_3_diverges_at_epoch_2)
    with pytest.raises(loop.TrainingError, match=r"^training diverged: fold 3 at epoch 2 \(non-finite weights; "):
        train_folds(load_tree(tiny_tree), tiny_config(), TrainConfig(epochs=200, num_folds=3, workers=2))
    assert len((tmp_path / "epochs_of_a_2_member_network").read_text()) < 200


def test_a_modality_no_training_sample_has_is_masked_and_its_conditions_are_not_applicable(tiny_tree):
    """Video absent from the whole train corpus (with degraded views, to cover their response too)."""
    dataset = load_tree(tiny_tree)
    train = dataset.train
    present = train.present.copy()
    present[:, 2] = False
    features = [*train.features[:2], np.zeros_like(train.features[2])]
    no_video = type(train)(**{**vars(train), "features": features, "present": present})
    no_video = no_video.subset(np.flatnonzero(present.any(axis=1)))  # as load_dataset leaves out samples with nothing
    features = no_video.features
    dataset = type(dataset)(**{**vars(dataset), "corpora": {**dataset.corpora, "train": no_video}})
    result = train_folds(with_views(dataset, [-f for f in features]), tiny_config(),
                         TrainConfig(epochs=2, num_folds=2, workers=1, degraded_views=0.5))
    validation = result.validation
    assert validation["video_only"] is None and validation["weight_spread"]["video"] is None
    assert validation["degraded"]["video"] is None and validation["degraded"]["audio"] is not None
    for name in ("full", "drop_video", "audio_only", "text_only"):
        assert 0.0 <= validation[name]["waf"] <= 1.0 and np.isfinite(validation[name]["val_mse"])
    assert all(np.isfinite(validation["missing_rate"][r]["waf"]) for r in validation["missing_rate"])
    assert all(np.isfinite(validation["weight_spread"][m]) for m in ("audio", "text"))


def test_the_severity_ladder_scores_weight_and_alone_score_per_level(trained):
    """A ladder of the informative audio mixed ever more with noise: clean first, then mild to severe;
    the audio alone scores lower at each level and its weight is below the clean weight at every
    level; the verdict correlates the two and asks for a fall only where the audio alone loses 10+
    points."""
    from dataclasses import replace

    from scipy.stats import spearmanr

    from armer.evaluate.ladder import ladder_points, ladder_verdict

    dataset, result = trained
    test = dataset.tests["test1"]
    noise = corrupt(test.features[0])
    mixes = {0.0: 0.6, -10.0: 1.0, 10.0: 0.3}  # an audio ladder's levels are SNRs: lower is more severe
    levels = {snr: replace(test, features=[((1 - mix) * test.features[0] + mix * noise).astype(np.float32),
                                           *test.features[1:]]) for snr, mix in mixes.items()}
    points = ladder_points(result.ensemble, test, {"audio": levels}, has_valence=True)["audio"]
    assert [p.level for p in points] == [None, 10.0, 0.0, -10.0]
    alone = [p.alone for p in points]
    weights = [p.weight for p in points]
    assert alone == sorted(alone, reverse=True) and alone[0] - alone[-1] > 0.3
    assert max(weights[1:]) < weights[0] - 0.05
    verdict = ladder_verdict(points)
    assert verdict["rank_correlation"] == pytest.approx(spearmanr(weights, alone).statistic)
    for level, point in zip(verdict["levels"], points[1:]):
        assert (level["falls_enough"] is None) == (points[0].alone - point.alone < 0.10)
        assert level["fall"] == pytest.approx(1 - point.weight / points[0].weight)


def test_oracle_weights_give_the_informative_audio_most_weight_until_it_is_noised(trained):
    """scripts/oracle_weights.py: the run's weight is the ladder's; with u = each head's own error the
    audio, which carries the label, gets most of the weight on clean pairs and loses most of it as
    noise, where its head is no better than chance; the oracle weights over the modalities sum to 1."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    from armer.evaluate.ladder import ladder_point

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from oracle_weights import level_numbers

    dataset, result = trained
    model = result.ensemble.eval()
    clean = dataset.tests["test1"]
    noised = replace(clean, features=[corrupt(clean.features[0]), *clean.features[1:]])
    before, after = ({k: v[0] for k, v in level_numbers(model, c, [0.25, 1.0]).items()} for c in (clean, noised))
    assert before["weight"] == pytest.approx(ladder_point(model, clean, "audio", None, True).weight, abs=1e-5)
    assert before["head_accuracy"] > 0.8 and after["head_accuracy"] < 0.35
    assert before["oracle_T0.25"] > 0.5 and after["oracle_T0.25"] < 0.5 * before["oracle_T0.25"]
    assert sum(level_numbers(model, clean, [0.25])["oracle_T0.25"]) == pytest.approx(1.0, abs=1e-5)


def test_the_ladder_verdict_asks_for_a_30_percent_fall_where_the_modality_alone_loses_10_points():
    from armer.evaluate.ladder import LadderPoint, ladder_verdict

    clean = LadderPoint(None, 0.50, 0.80)
    mild, severe = LadderPoint(10.0, 0.48, 0.75), LadderPoint(0.0, 0.40, 0.60)  # -5 and -20 points alone
    verdict = ladder_verdict([clean, mild, severe])
    assert [x["falls_enough"] for x in verdict["levels"]] == [None, False]  # -20 points, weight only -20%
    assert not verdict["falls_met"] and verdict["rank_correlation"] == pytest.approx(1.0)
    enough = ladder_verdict([clean, mild, LadderPoint(0.0, 0.30, 0.60)])
    assert enough["falls_met"] and enough["levels"][1]["fall"] == pytest.approx(0.4)
    rising = ladder_verdict([clean, LadderPoint(10.0, 0.55, 0.75), LadderPoint(0.0, 0.60, 0.60)])
    assert rising["rank_correlation"] == pytest.approx(-1.0)
