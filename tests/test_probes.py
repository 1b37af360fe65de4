"""Out-of-fold calibration targets (`armer.train.probes`): the probes never see the samples they
score, the calibration term learns their error, and training with them runs end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from armer.config import TrainConfig
from armer.constants import FEATURE_KEYS
from armer.evaluate.conditions import predict, to_batch
from armer.model import losses
from armer.model.modeling import create_model
from armer.train.loop import feature_statistics, train_folds
from armer.train.probes import fit_probes, fold_of_samples
from conftest import DIMS, tiny_config

CLASSES = 6


def corpus_batch(n: int = 240, seed: int = 0) -> dict[str, torch.Tensor]:
    """Features whose first CLASSES dims carry the label (one-hot) in every modality."""
    rng = np.random.default_rng(seed)
    emos = rng.integers(0, CLASSES, n)
    batch = {}
    for key, dim in zip(FEATURE_KEYS, DIMS):
        x = rng.standard_normal((n, dim)).astype(np.float32)
        x[np.arange(n), emos] += 3.0
        batch[key] = torch.from_numpy(x)
    batch.update(present=torch.ones(n, 3, dtype=torch.bool), emos=torch.from_numpy(emos),
                 vals=torch.zeros(n, dtype=torch.float32), val_labelled=torch.ones(n, dtype=torch.bool))
    return batch


def probe(probes, modality: int, member: int, fold: int) -> torch.Tensor:
    columns = slice(fold * CLASSES, (fold + 1) * CLASSES)
    return torch.cat([probes.weight[modality][member, :, columns], probes.bias[modality][member, :, columns]])


def test_the_probe_of_a_fold_never_sees_that_fold_or_the_members_validation_fold():
    batch = corpus_batch()
    val_sets = [np.arange(f, 240, 4) for f in range(4)]
    fold = fold_of_samples(val_sets, 240)
    base = fit_probes(batch, fold, [0], 4, None, CLASSES)
    for changed, unchanged_probes in ((0, (1, 2, 3)), (1, (1,))):  # fold 0 is member 0's validation fold
        scrambled = dict(batch, audios=batch["audios"].clone(), emos=batch["emos"].clone())
        rows = torch.from_numpy(val_sets[changed])
        scrambled["audios"][rows] = torch.randn(len(rows), DIMS[0])
        scrambled["emos"][rows] = torch.randint(0, CLASSES, (len(rows),))
        again = fit_probes(scrambled, fold, [0], 4, None, CLASSES)
        for f in unchanged_probes:
            assert torch.allclose(probe(again, 0, 0, f), probe(base, 0, 0, f), atol=1e-5)
        if changed == 1:  # the other probes trained on fold 1
            assert not torch.allclose(probe(again, 0, 0, 2), probe(base, 0, 0, 2), atol=1e-3)
    assert torch.count_nonzero(probe(base, 0, 0, 0)) == 0  # no probe for the member's own validation fold


def test_probes_score_each_sample_with_its_folds_probe_on_standardised_inputs():
    batch = corpus_batch()
    val_sets = [np.arange(f, 240, 4) for f in range(4)]
    fold = fold_of_samples(val_sets, 240)
    stats = [feature_statistics(_corpus_like(batch, np.setdiff1d(np.arange(240), val_sets[m]))) for m in (1, 2)]
    probes = fit_probes(batch, fold, [1, 2], 4, stats, CLASSES)
    train_rows = [np.setdiff1d(np.arange(240), val_sets[m]) for m in (1, 2)]
    index = torch.from_numpy(np.stack([rows[:50] for rows in train_rows]))  # (E, B)
    inputs = [(batch[key][index] - torch.tensor([s[m]["mean"] for s in stats])[:, None])
              / torch.tensor([s[m]["std"] for s in stats])[:, None] for key, m in zip(FEATURE_KEYS, ("audio", "text", "video"))]
    probs = probes(inputs, torch.from_numpy(fold)[index])
    assert probs.shape == (2, 50, 3, CLASSES) and torch.allclose(probs.sum(-1), torch.ones(2, 50, 3))
    accuracy = (probs.argmax(-1) == batch["emos"][index].unsqueeze(-1)).float().mean()
    assert accuracy > 0.8  # out of fold, the planted dims still predict the label
    e, b = 1, 7
    f = int(fold[index[e, b]])
    columns = slice(f * CLASSES, (f + 1) * CLASSES)
    logits = inputs[0][e, b] @ probes.weight[0][e, :, columns] + probes.bias[0][e, 0, columns]
    assert torch.allclose(probs[e, b, 0], torch.softmax(logits, -1), atol=1e-5)


def _corpus_like(batch: dict[str, torch.Tensor], rows: np.ndarray):
    from types import SimpleNamespace
    return SimpleNamespace(features=[batch[k][rows].numpy() for k in FEATURE_KEYS], present=batch["present"][rows].numpy())


def test_the_calibration_goal_is_the_references_error_when_one_is_given():
    torch.manual_seed(0)
    logits, u = torch.randn(1, 4, 3, CLASSES), torch.rand(1, 4, 3)
    target = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 3]]), CLASSES).float()
    reference = torch.softmax(torch.randn(1, 4, 3, CLASSES), -1)
    present = torch.ones(1, 4, 3, dtype=torch.bool)
    ce = -(target.unsqueeze(-2) * torch.log_softmax(logits, -1)).sum(-1)
    goal = 1 - (target.unsqueeze(-2) * reference).sum(-1)
    expected = (ce + (u - goal) ** 2).mean()
    assert torch.allclose(losses.uncertainty_calibration(logits, u, target, present, reference), expected)
    own_goal = 1 - (target.unsqueeze(-2) * torch.softmax(logits, -1)).sum(-1)
    assert torch.allclose(losses.uncertainty_calibration(logits, u, target, present), (ce + (u - own_goal) ** 2).mean())


def test_the_model_hands_its_inputs_and_each_samples_fold_to_the_reference():
    model = create_model(tiny_config(calibration_weight=1.0, modality_noise=0.0, modality_dropout=0.0), members=2).train()
    seen = {}

    def reference(inputs, fold):
        seen.update(inputs=inputs, fold=fold)
        return torch.full((*fold.shape, 3, CLASSES), 1.0 / CLASSES)

    model.calibration_reference = reference
    batch = corpus_batch(16)
    batch = {k: v.view(2, 8, *v.shape[1:]) for k, v in batch.items()}
    batch["fold"] = torch.arange(16).view(2, 8) % 3
    out = model(batch)
    assert torch.equal(seen["fold"], batch["fold"]) and torch.equal(seen["inputs"][0], batch["audios"])
    assert "calibration" in out.loss_terms
    model.eval()(batch)  # no calibration term, and no reference asked for, outside training
    assert seen["fold"] is batch["fold"]


@pytest.mark.parametrize("target", ["out_of_fold", "held_out"])
def test_split_calibration_targets_need_three_folds(target):
    with pytest.raises(ValueError, match="num_folds >= 3"):
        TrainConfig(calibration_target=target, num_folds=2)


def test_out_of_fold_targets_give_a_memorisable_useless_modality_less_weight(tmp_path):
    """Video: 128 dims of noise, one vector per sample, so a network can memorise its training
    clips. Its own head is then right on them and u learns it is reliable; probes that never saw a
    clip are at chance, and u learns it is not."""
    from conftest import feature_names, write_synthetic_merbench
    from armer.data import load_dataset

    dims = (16, 24, 128)
    paths = write_synthetic_merbench(tmp_path, n_train=300, n_tests=(200,), dims=dims,
                                     signals={"audio": 0.8, "text": 0.5}, seed=0)
    dataset = load_dataset(paths["features_root"], paths["label_path"], feature_names(paths))
    video = {}
    for target in ("head", "out_of_fold"):
        torch.manual_seed(0)
        result = train_folds(dataset, tiny_config(hidden_dim=32, modality_dropout_warmup=5, calibration_weight=0.1,
                                                  video_dim=128),
                             TrainConfig(epochs=40, num_folds=3, seed=0, calibration_target=target))
        out = predict(result.ensemble, to_batch(dataset.tests["test1"]))
        video[target] = float(out["weights"][:, 2].mean())
        assert (out["probs"].argmax(-1).numpy() == dataset.tests["test1"].emotions).mean() > 0.9
    assert video["out_of_fold"] < 0.75 * video["head"]


def test_held_out_samples_teach_u_and_nothing_else():
    """`--calibration_target held_out`: the task loss and the heads ignore the held-out samples, and u
    learns from them alone."""
    torch.manual_seed(0)
    E, B, M, C = 2, 6, 3, CLASSES
    held_out = torch.tensor([[True, False, False, True, False, False], [False, True, False, False, False, True]])
    logits = torch.randn(E, B, C, requires_grad=True)
    emotions = torch.randint(0, C, (E, B))
    valence, vals, labelled = torch.zeros(E, B, 1), torch.zeros(E, B), torch.ones(E, B, dtype=torch.bool)
    losses.task_loss(logits, valence, emotions, vals, labelled, held_out).backward()
    assert (logits.grad[held_out] == 0).all() and (logits.grad[~held_out] != 0).all()

    unimodal = torch.randn(E, B, M, C, requires_grad=True)
    u = torch.rand(E, B, M, requires_grad=True)
    target = torch.nn.functional.one_hot(emotions, C).float()
    present = torch.ones(E, B, M, dtype=torch.bool)
    losses.uncertainty_calibration(unimodal, u, target, present, held_out=held_out).backward()
    assert (unimodal.grad[held_out] == 0).all() and (unimodal.grad[~held_out] != 0).any(dim=-1).all()
    assert (u.grad[~held_out] == 0).all() and (u.grad[held_out] != 0).all()


@pytest.mark.parametrize("num_folds", [3, 5])
def test_held_out_fold_is_one_of_the_members_training_folds(num_folds):
    from armer.train.loop import held_out_fold

    chosen = [held_out_fold(member, num_folds) for member in range(num_folds)]
    assert all(fold != member for member, fold in enumerate(chosen))
    assert sorted(chosen) == list(range(num_folds))  # every training fold is held out by one member
