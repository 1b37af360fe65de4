"""The seed's recipe (`--recipe seed`): its formulas against torch's own, per-fold schedules in one
batched network, the recipe's defaults and a missing modality fed as zeros."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from armer.config import RECIPES
from armer.model import losses
from armer.model.modeling import create_model
from armer.train.folds import check_fold_groups, sample_group
from armer.train.schedule import MemberSchedule, rescale_step
from conftest import DIMS, tiny_config


def test_plateau_schedule_follows_torchs_reduce_lr_on_plateau():
    rng = np.random.default_rng(0)
    scores = np.concatenate([np.linspace(0.2, 0.6, 8), np.full(15, 0.6), rng.uniform(0.3, 0.7, 60)])
    ours = MemberSchedule(members=2, lr=5e-4, lr_patience=3, early_stop=0)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=5e-4)
    torchs = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3, min_lr=1e-6)
    for value in scores:
        ours.step([float(value), float(value) - 1.0])  # a negative score (e.g. -MSE) on member 1
        torchs.step(float(value))
        assert ours.lr[0] == pytest.approx(optimizer.param_groups[0]["lr"])
    assert ours.lr[0] < 5e-4 / 4  # it did reduce, several times
    negative = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.AdamW([param], lr=5e-4), mode="max",
                                                          factor=0.5, patience=3, min_lr=1e-6)
    for value in scores:
        negative.step(float(value) - 1.0)
    assert ours.lr[1] == pytest.approx(negative.optimizer.param_groups[0]["lr"])


def test_early_stopping_waits_for_a_gain_above_min_delta():
    schedule = MemberSchedule(members=2, lr=1e-3, lr_patience=0, early_stop=3)
    for first, second in [(0.5, 0.5), (0.6, 0.6), (0.6005, 0.7), (0.6009, 0.8), (0.601, 0.9)]:
        schedule.step([first, second])
    assert schedule.stopped.tolist() == [True, False] and not schedule.all_stopped
    assert schedule.scales().tolist() == [0.0, 1.0] and not schedule.uniform


def test_rescaled_steps_equal_each_member_trained_with_its_own_learning_rate():
    """One AdamW over a batched parameter, steps rescaled per member == separate AdamW per member."""
    torch.manual_seed(0)
    start, target = torch.randn(3, 4), torch.randn(3, 4)
    joint = torch.nn.Parameter(start.clone())
    joint_opt = torch.optim.AdamW([joint], lr=1e-2, weight_decay=0.1)
    scales = torch.tensor([1.0, 0.25, 0.0])
    singles = [torch.nn.Parameter(start[e:e + 1].clone()) for e in range(3)]
    single_opts = [torch.optim.AdamW([p], lr=1e-2 * float(s), weight_decay=0.1) for p, s in zip(singles, scales)]
    for _ in range(5):
        joint_opt.zero_grad()
        (joint - target).pow(2).sum().backward()
        before = [joint.detach().clone()]
        joint_opt.step()
        rescale_step([joint], before, scales)
        for e, (p, opt) in enumerate(zip(singles, single_opts)):
            opt.zero_grad()
            (p - target[e:e + 1]).pow(2).sum().backward()
            opt.step()
    for e, p in enumerate(singles):
        assert torch.allclose(joint[e], p[0], atol=1e-6)
    assert torch.equal(joint[2], start[2])  # a stopped member does not move


def test_the_seeds_kl_terms_equal_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8)
    present = torch.ones(1, 4, 3, dtype=torch.bool)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, prior).mean(dim=-1).mean()
    assert losses.kl_to_prior(mu, logvar, present) == pytest.approx(float(expected), rel=1e-5)
    pairs = []
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        p_a = torch.distributions.Normal(mu[..., a, :], torch.exp(0.5 * logvar[..., a, :]))
        p_b = torch.distributions.Normal(mu[..., b, :], torch.exp(0.5 * logvar[..., b, :]))
        pairs.append(0.5 * (torch.distributions.kl_divergence(p_a, p_b) + torch.distributions.kl_divergence(p_b, p_a)))
    expected_cross = torch.stack(pairs, dim=-2).mean(dim=-1).mean()
    assert losses.cross_modal_kl(mu, logvar, present) == pytest.approx(float(expected_cross), rel=1e-5)


def test_a_missing_modality_is_masked_by_default_and_fused_as_zeros_in_the_seed_recipe():
    batch = {"audios": torch.randn(4, DIMS[0]), "texts": torch.randn(4, DIMS[1]), "videos": torch.zeros(4, DIMS[2])}
    torch.manual_seed(0)
    masked = create_model(tiny_config()).eval()
    torch.manual_seed(0)
    zeros = create_model(tiny_config(missing_modality="zeros")).eval()
    with torch.no_grad():
        assert torch.all(masked(batch).weights[:, 2] == 0)
        assert torch.all(zeros(batch).weights[:, 2] > 0)


def test_the_seed_recipe_sets_its_defaults_and_explicit_flags_win(tiny_tree, tmp_path):
    from armer.train.cli import main
    from conftest import feature_names

    common = ["--features_root", tiny_tree["features_root"], "--label_path", tiny_tree["label_path"],
              *[x for m, name in feature_names(tiny_tree).items() for x in (f"--{m}_feature", name)],
              "--epochs", "3", "--num_folds", "2", "--hidden_dim", "16", "--workers", "1", "--recipe", "seed"]
    main([*common, "--save_root", str(tmp_path / "seed"), "--lr", "1e-3"])
    config = json.loads((tmp_path / "seed" / "checkpoint" / "config.json").read_text())
    train, model = config["training"]["train_config"], config["model"]
    expected = {**RECIPES["seed"], "epochs": 3, "lr": 1e-3}
    assert {k: {**train, **model}[k] for k in expected} == expected


def test_fold_groups_by_a_regular_expression():
    assert sample_group("1DmNV9C1hbY_10", r"regex:^(.+)_\d+$") == "1DmNV9C1hbY"
    assert sample_group("03-01-05-01-02-01-12", r"regex:-(\d\d)$") == "12"
    assert sample_group("no-match", r"regex:^(\d+)$") == "no-match"
    assert check_fold_groups("speaker") is None and check_fold_groups(r"regex:(\d)") is None
    assert "capture group" in check_fold_groups(r"regex:\d")
    assert "regular expression" in check_fold_groups("regex:(")
    assert "one of" in check_fold_groups("voice")
