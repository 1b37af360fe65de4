"""AttentionRobustV2 and the V1 baseline on tiny configs (transformers-style model tests)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from armer.config import ModelConfig, TrainConfig, inert_settings
from armer.constants import FEATURE_KEYS
from armer.model import batched
from armer.model.missing import DROP_PATTERNS, sample_modality_dropout
from armer.model.modeling import AttentionRobust, AttentionRobustV2, create_model, list_models
from conftest import DIMS, tiny_config

MODELS = ["attention_robust_v2", "attention_robust"]


def make_batch(batch: int = 8, frames: int | None = None) -> dict[str, torch.Tensor]:
    shape = (lambda d: (batch, d)) if frames is None else (lambda d: (batch, frames, d))
    return {"audios": torch.randn(shape(DIMS[0])), "texts": torch.randn(shape(DIMS[1])), "videos": torch.randn(shape(DIMS[2]))}


def test_factory_builds_by_name_and_lists_valid_names():
    assert isinstance(create_model(tiny_config("attention_robust_v2")), AttentionRobustV2)
    assert isinstance(create_model(tiny_config("attention_robust")), AttentionRobust)
    assert list_models() == ["attention_robust", "attention_robust_v2"]
    with pytest.raises(ValueError, match="available"):
        create_model(tiny_config("no_such_model"))


def test_config_rejects_bad_values_with_the_values_named():
    with pytest.raises(ValueError, match="hidden_dim=10 must be divisible by num_attention_heads=4"):
        tiny_config(hidden_dim=10)
    with pytest.raises(ValueError, match="feat_type='frames'"):
        tiny_config(feat_type="frames")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("feat_type,frames", [("utt", None), ("frm_align", 5)])
def test_output_shapes_for_utterance_and_frame_inputs(name, feat_type, frames):
    model = create_model(tiny_config(name, feat_type)).eval()
    out = model(make_batch(8, frames))
    features, emos, vals, interloss = out.merbench()
    assert features.shape == (8, 16) and emos.shape == (8, 6) and vals.shape == (8, 1) and interloss.dim() == 0
    assert out.weights.shape == (8, 3) and out.attention.shape == (8, 3)
    assert torch.allclose(out.weights.sum(-1), torch.ones(8))
    if name == "attention_robust_v2":
        assert out.mu.shape == (8, 3, 16) and out.sigma.shape == (8, 3)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("pattern", list(DROP_PATTERNS))
def test_every_missing_pattern_gets_zero_weight_and_no_nan(name, pattern):
    keep = torch.tensor(DROP_PATTERNS[pattern])
    model = create_model(tiny_config(name, modality_dropout=0.0, modality_noise=0.0))
    batch = make_batch()
    for i, key in enumerate(FEATURE_KEYS):
        batch[key] = batch[key] * keep[i]  # zero-filled, no mask: missing must be detected
    for mode in ("train", "eval"):
        model.train(mode == "train")
        out = model(batch)
        assert torch.equal(out.weights[:, ~keep], torch.zeros(8, int((~keep).sum())))
        assert torch.equal(out.attention[:, ~keep], torch.zeros(8, int((~keep).sum())))
        assert (out.weights[:, keep] > 0).all()
        if out.sigma is not None:
            assert torch.equal(out.sigma[:, ~keep], torch.zeros(8, int((~keep).sum())))
        loss = out.logits.logsumexp(-1).sum() + out.valence.sum() + out.interloss
        model.zero_grad()
        loss.backward()
        for tensor in (out.logits, out.valence, out.weights, out.interloss):
            assert torch.isfinite(tensor).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_explicit_mask_overrides_zero_detection_and_matches_zero_filling():
    model = create_model(tiny_config()).eval()
    batch = make_batch()
    present = torch.tensor([[True, False, True]] * 8)
    masked = model({**batch, "present": present})
    zero_filled = model({**batch, "texts": torch.zeros_like(batch["texts"])})
    assert torch.allclose(masked.logits, zero_filled.logits, atol=1e-6)
    assert torch.equal(masked.weights[:, 1], torch.zeros(8))


def test_a_sample_with_no_modality_is_a_clear_error():
    model = create_model(tiny_config()).eval()
    batch = make_batch(3)
    batch["present"] = torch.tensor([[True, True, True], [False, False, False], [True, False, False]])
    with pytest.raises(ValueError, match=r"samples \[1\] have no modality present"):
        model(batch)


def test_wrong_feature_dim_is_a_clear_error():
    model = create_model(tiny_config()).eval()
    batch = make_batch()
    batch["texts"] = torch.randn(8, 7)
    with pytest.raises(ValueError, match="text features have shape"):
        model(batch)


@pytest.mark.parametrize("name", MODELS)
def test_batched_equals_single_in_eval(name):
    model = create_model(tiny_config(name)).eval()
    batch = make_batch(6)
    full = model(batch).logits
    single = torch.cat([model({k: v[i:i + 1] for k, v in batch.items()}).logits for i in range(6)])
    assert torch.allclose(full, single, atol=1e-5)


def test_each_member_of_a_batched_layer_computes_its_torch_layer():
    x = torch.randn(3, 4, 5, 8)  # (E, B, T, D); T doubles as the modality dim M = 5
    linear, per_modality, norm, lstm = (batched.Linear(3, 8, 6), batched.ModalityLinear(3, 5, 8, 6),
                                        batched.LayerNorm(3, 8), batched.LSTM(3, 8, 6))
    torch.nn.init.normal_(norm.weight)  # a different affine per member, not the identity
    for e in range(3):
        assert torch.allclose(linear(x)[e], F.linear(x[e], linear.weight[e].T, linear.bias[e, 0]), atol=1e-6)
        for m in range(5):
            expected = F.linear(x[e, :, m], per_modality.weight[e, m].T, per_modality.bias[e, m, 0])
            assert torch.allclose(per_modality(x)[e, :, m], expected, atol=1e-6)
        expected = F.layer_norm(x[e, :, 0], (8,), norm.weight[e, 0], norm.bias[e, 0])
        assert torch.allclose(norm(x[:, :, 0])[e], expected, atol=1e-6)  # (E, B, H)
        reference = torch.nn.LSTM(8, 6, batch_first=True)  # the same parameter names: checkpoints load
        reference.load_state_dict({name: p[e] for name, p in lstm.named_parameters()})
        assert torch.allclose(lstm(x)[e], reference(x[e])[0], atol=1e-6)


def test_modality_dropout_ramps_up_over_the_warmup_and_never_drops_everything():
    model = create_model(tiny_config(modality_dropout=0.5, modality_dropout_warmup=10, modality_noise=0.0)).train()
    batch = make_batch(4000)
    model.set_epoch(0)
    assert not (model(batch).present.logical_not()).any()  # epoch 0: warm-up has not started
    model.set_epoch(5)
    halfway = (~model(batch).present).any(-1).float().mean().item()
    model.set_epoch(30)
    out = model(batch)
    after = (~out.present).any(-1).float().mean().item()
    assert 0.2 < halfway < 0.3 and 0.45 < after < 0.55
    assert out.present.any(-1).all()


def test_modality_dropout_keeps_samples_that_have_a_single_modality():
    present = torch.tensor([[True, False, False]] * 1000)
    assert torch.equal(sample_modality_dropout(present, 1.0), present)


def test_a_training_step_changes_the_prediction():
    model = create_model(tiny_config()).train()
    batch = make_batch(16)
    labels = torch.randint(0, 6, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    before = model(batch).logits.detach()
    model.train()
    for _ in range(5):
        out = model({**batch, "emos": labels})
        loss = torch.nn.functional.cross_entropy(out.logits, labels) + out.interloss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert not torch.allclose(before, model(batch).logits)
    assert set(out.loss_terms) == {"kl", "recon", "cross_kl", "calibration"}
    assert all(float(v.detach()) > 0 for v in out.loss_terms.values())


def test_switching_components_off_removes_their_terms():
    model = create_model(tiny_config(use_vae=False, recon_weight=0.0, use_proxy_attention=False)).train()
    out = model(make_batch())
    assert out.sigma is None and float(out.interloss) == 0.0
    assert torch.allclose(out.weights, torch.full((8, 3), 1 / 3))  # equal fusion without uncertainty


def test_expert_fusion_adds_each_present_modality_s_own_prediction_weighted_by_fusion():
    model = create_model(tiny_config(expert_fusion=True)).eval()
    with torch.no_grad():  # without the fused path the logits are the experts' part alone
        model.emotion_head.weight.zero_()
        model.emotion_head.bias.zero_()
    batch = make_batch()
    batch["present"] = torch.tensor([[True, False, False]] * 4 + [[True, True, True]] * 4)
    out = model(batch)
    experts = model.unimodal_heads(out.mu.unsqueeze(0))[0]  # (B, M, C)
    assert torch.allclose(out.logits[:4], experts[:4, 0], atol=1e-5)  # audio alone: its own head
    mixed = (out.weights[4:].unsqueeze(-1) * experts[4:]).sum(dim=1)
    assert torch.allclose(out.logits[4:], mixed, atol=1e-5)
    batch["texts"] = batch["texts"] + 5.0  # a missing modality's expert has no say
    assert torch.allclose(model(batch).logits[:4], out.logits[:4], atol=1e-5)


def test_calibrated_fusion_keeps_the_task_loss_from_moving_sigma_through_the_weights():
    batch, labels = make_batch(16), torch.randint(0, 6, (16,))

    def logvar_gradient(calibrated: bool) -> torch.Tensor:
        torch.manual_seed(0)  # the same initialisation, and the same reparameterisation noise
        model = create_model(tiny_config(calibrated_fusion=calibrated, kl_weight=0.0, cross_kl_weight=0.0,
                                         recon_weight=0.0, calibration_weight=0.0)).train()
        out = model({**batch, "emos": labels})
        F.cross_entropy(out.logits, labels).backward()
        assert out.weights.requires_grad is not calibrated
        return model.logvar_heads[0].weight.grad.clone()

    free, calibrated = logvar_gradient(False), logvar_gradient(True)
    assert calibrated.abs().sum() > 0  # sigma still scales the sampling noise of z
    assert not torch.allclose(free, calibrated)
    trained = create_model(tiny_config(calibrated_fusion=True)).eval()
    plain = create_model(tiny_config()).eval()
    plain.load_state_dict(trained.state_dict())
    assert torch.equal(plain(batch).weights, trained(batch).weights)  # the same model at inference


def test_a_learned_temperature_starts_at_the_configured_one_and_the_task_loss_trains_it():
    torch.manual_seed(0)
    model = create_model(tiny_config(learn_temperature=True, fusion_temperature=0.5), members=2).train()
    fixed = create_model(tiny_config(fusion_temperature=0.5), members=2).eval()
    fixed.load_state_dict({k: v for k, v in model.state_dict().items() if k != "log_temperature"})
    batch = make_batch(16)
    model.eval()
    assert torch.allclose(model(batch).weights, fixed(batch).weights)  # T = 0.5 to start with
    assert model.log_temperature.shape == (2, 1, 1)  # one per member
    model.train()
    labels = torch.randint(0, 6, (16,))
    out = model({**batch, "emos": labels})
    F.cross_entropy(out.logits.flatten(0, 1), labels.repeat(2)).backward()
    assert model.log_temperature.grad.abs().min() > 0


# A value other than the default for each setting inert_settings may name.
CHANGED = {"use_vae": False, "kl_weight": 0.5, "recon_weight": 0.0, "recon_dims": 0, "cross_kl_weight": 0.3,
           "use_proxy_attention": False, "fusion_temperature": 1.0, "num_attention_heads": 2,
           "calibration_weight": 0.5, "uncertainty_weight": 7.0, "expert_fusion": False,
           "calibration_target": "out_of_fold", "calibrated_fusion": True, "learn_temperature": True}


def train_step(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Logits, loss and gradients of one training step from a fixed initialisation and batch."""
    torch.manual_seed(0)
    model = create_model(config).train()
    batch, labels = make_batch(16), torch.randint(0, 6, (16,))
    out = model({**batch, "emos": labels})
    loss = F.cross_entropy(out.logits, labels) + out.interloss
    loss.backward()
    return out.logits.detach(), loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]


def same_step(a: tuple, b: tuple) -> bool:
    return (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and len(a[2]) == len(b[2])
            and all(torch.equal(x, y) for x, y in zip(a[2], b[2])))


def test_settings_called_inert_change_nothing_and_the_others_do():
    v1 = tiny_config("attention_robust")
    inert = inert_settings({**v1.to_dict(), **TrainConfig().__dict__})
    assert {"uncertainty_weight", "fusion_temperature", "calibration_weight", "calibration_target"} <= inert
    assert set(inert) <= set(CHANGED)
    model_inert = {k: CHANGED[k] for k in inert if k in v1.to_dict()}
    assert same_step(train_step(v1), train_step(tiny_config("attention_robust", **model_inert)))
    assert not same_step(train_step(v1), train_step(tiny_config("attention_robust", dropout=0.1)))

    silent = tiny_config(calibration_weight=0.0)  # the seed recipe's: no calibration term
    assert inert_settings(silent.to_dict()) == {"uncertainty_weight"}
    assert same_step(train_step(silent), train_step(tiny_config(calibration_weight=0.0, uncertainty_weight=7.0)))
    v2 = tiny_config()
    assert not inert_settings(v2.to_dict())
    assert not same_step(train_step(v2), train_step(tiny_config(uncertainty_weight=7.0)))


def test_config_round_trips_through_dict():
    config = tiny_config(kl_weight=0.02)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown model config keys"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_noise_mixing_keeps_the_scale_and_removes_the_signal():
    from armer.model.missing import mix_with_noise

    x = torch.randn(2000, 32)
    alpha = torch.zeros(2000)
    alpha[1000:] = 1.0
    mixed = mix_with_noise(x, alpha)
    assert torch.equal(mixed[:1000], x[:1000])
    assert abs(mixed[1000:].std().item() - 1.0) < 0.05
    correlation = torch.corrcoef(torch.stack([mixed[1000:].flatten(), x[1000:].flatten()]))[0, 1]
    assert abs(correlation.item()) < 0.05
    assert torch.equal(mix_with_noise(torch.zeros(4, 3), torch.ones(4)), torch.zeros(4, 3))  # missing stays zero


def test_noise_with_a_spread_takes_each_members_own_scale_per_dimension():
    """--noise_scale feature: on centred features with their own scales, noise as large as each dimension's spread."""
    from armer.model.missing import mix_with_noise

    spread = torch.tensor([[0.05, 1.0, 20.0], [2.0, 0.5, 0.01]])  # (E=2, D=3)
    x = torch.randn(2, 3000, 3) * spread[:, None, :]
    alpha = torch.zeros(2, 3000)
    alpha[:, 1000:] = 1.0
    mixed = mix_with_noise(x, alpha, (spread, torch.zeros_like(spread)))
    assert torch.equal(mixed[:, :1000], x[:, :1000])
    assert torch.allclose(mixed[:, 1000:].std(dim=1) / spread, torch.ones(2, 3), atol=0.06)
    unit = mix_with_noise(x, alpha)
    assert torch.allclose(unit[:, 1000:].std(dim=1), torch.ones(2, 3), atol=0.06)  # the default ignores the scale
    centre = torch.tensor([[17.0, -3.0, 0.5], [1.0, 2.0, 40.0]])
    raw = mix_with_noise(x + centre[:, None, :], alpha, (spread, centre))  # raw features: around their mean
    assert torch.allclose(raw[:, 1000:].mean(dim=1), centre, atol=0.1 * spread.max().item())
    assert torch.allclose(raw[:, 1000:].std(dim=1) / spread, torch.ones(2, 3), atol=0.06)


@pytest.mark.parametrize("name", MODELS)
def test_a_valence_only_model_has_no_emotion_classes_and_trains_with_missing_modalities(name):
    """output_dim1 = 0 (MERBench's CMU-MOSI, CMU-MOSEI, CH-SIMS): only the valence head."""
    model = create_model(tiny_config(name, output_dim1=0), members=2).train()
    batch = make_batch(5)
    batch["present"] = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.bool)
    batch["vals"], batch["val_labelled"] = torch.randn(5), torch.tensor([True, True, False, True, True])
    out = model(batch)
    assert out.logits.shape == (2, 5, 0) and out.valence.shape == (2, 5, 1)
    assert torch.isfinite(out.valence).all() and torch.isfinite(out.interloss)
    assert (out.weights[~out.present] == 0).all()
    if name == "attention_robust_v2":  # calibration against the valence error of each modality's own head
        assert model.unimodal_heads(torch.zeros(2, 5, 3, 16)).shape == (2, 5, 3, 1)
        assert "calibration" in out.loss_terms and out.loss_terms["calibration"] > 0
    (out.valence.square().sum() + out.interloss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.valence_head.weight.grad.abs().sum() > 0
    model.eval()
    assert model(make_batch(4)).logits.shape == (2, 4, 0)


def test_output_dim1_0_needs_the_valence_head():
    assert tiny_config(output_dim1=0).output_dim1 == 0
    with pytest.raises(ValueError, match="output_dim2 must be positive"):
        tiny_config(output_dim1=0, output_dim2=0)
    with pytest.raises(ValueError, match="must be >= 0"):
        tiny_config(output_dim1=-1)


@pytest.mark.parametrize("noise_scale", ["unit", "feature"])
def test_the_models_training_noise_follows_noise_scale(noise_scale):
    """With centred (unscaled) features the text's spread is tiny: unit noise swamps it, feature noise keeps it."""
    config = tiny_config(modality_noise=1.0, modality_dropout=0.0, modality_dropout_warmup=0, noise_scale=noise_scale)
    model = create_model(config, members=2).train()
    spreads = [0.5, 0.05, 2.0]
    model.normalizer.set_statistics([{m: {"mean": [0.0] * d, "std": [1.0] * d, "spread": [s] * d}
                                      for m, d, s in zip(("audio", "text", "video"), DIMS, spreads)}] * 2)
    batch = {key: torch.randn(4000, d) * s for key, d, s in zip(FEATURE_KEYS, DIMS, spreads)}
    normed = model.prepare(batch, check_inputs=True)[0]
    for x, spread in zip(normed, spreads):
        expected = spread if noise_scale == "feature" else (2 * spread ** 2 / 3 + 1 / 3) ** 0.5  # alpha ~ U(0, 1)
        assert x.std().item() == pytest.approx(expected, rel=0.05)
