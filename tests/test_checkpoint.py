"""Checkpoints: safetensors + config.json round trip, validation, no pickle."""
from __future__ import annotations

import json

import pytest
import torch

from armer.checkpoint import CheckpointError, CheckpointInfo, load_checkpoint, read_info, save_checkpoint
from armer.config import MODALITIES
from armer.model.robust import Ensemble, create_model
from conftest import DIMS, tiny_config


def make_checkpoint(directory, members: int = 2):
    config = tiny_config()
    torch.manual_seed(0)
    network = create_model(config, members=members)
    stats = [{m: {"mean": torch.randn(d).tolist(), "std": (torch.rand(d) + 0.5).tolist()} for m, d in zip(MODALITIES, DIMS)}
             for _ in range(members)]
    network.normalizer.set_statistics(stats)
    ensemble = Ensemble(network).eval()
    info = CheckpointInfo(
        model=config, label_names=["neutral", "angry", "happy", "sad", "worried", "surprise"], has_valence=True,
        features={m: {"name": f"feat-{m}-UTT", "dim": d} for m, d in zip(MODALITIES, DIMS)},
        normalization=stats, extractors={m: f"feat-{m}" for m in MODALITIES},
    )
    save_checkpoint(directory, ensemble, info)
    return ensemble


def test_round_trip_gives_identical_outputs(tmp_path):
    ensemble = make_checkpoint(tmp_path)
    loaded, info = load_checkpoint(tmp_path)
    batch = {"audios": torch.randn(5, DIMS[0]), "texts": torch.randn(5, DIMS[1]), "videos": torch.zeros(5, DIMS[2])}
    with torch.no_grad():
        before, after = ensemble(batch), loaded(batch)
    assert torch.equal(before.logits, after.logits) and torch.equal(before.weights, after.weights)
    assert torch.equal(before.sigma, after.sigma) and torch.equal(before.valence, after.valence)
    assert info.num_members == 2 and info.extractors["audio"] == "feat-audio" and not loaded.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_a_config_written_before_expert_fusion_loads_as_trained_without_it(tmp_path):
    ensemble = make_checkpoint(tmp_path)
    assert ensemble.config.expert_fusion  # today's default
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["model"]["expert_fusion"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    loaded, info = load_checkpoint(tmp_path)
    assert info.model.expert_fusion is False and loaded.config.expert_fusion is False
    batch = {"audios": torch.randn(5, DIMS[0]), "texts": torch.randn(5, DIMS[1]), "videos": torch.randn(5, DIMS[2])}
    with torch.no_grad():
        assert not torch.allclose(ensemble(batch).logits, loaded(batch).logits)


def test_weights_are_safetensors_not_pickle(tmp_path):
    make_checkpoint(tmp_path, members=1)
    header = (tmp_path / "model.safetensors").read_bytes()[:8]
    assert int.from_bytes(header, "little") > 0  # safetensors starts with its JSON header length
    assert not (tmp_path / "model.safetensors").read_bytes().startswith(b"\x80")  # no pickle protocol byte


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(format="other"), "not an ARMER checkpoint"),
    (lambda c: c["model"].update(hidden_dim=-1), "invalid model config"),
    (lambda c: c.update(label_names=["a", "b"]), "must list output_dim1=6 classes"),
    (lambda c: c["features"]["text"].update(dim=99), r"features\['text'\]"),
    (lambda c: c["normalization"][0]["audio"].update(std=[0.0] * DIMS[0]), "std must be positive"),
    (lambda c: c["model"].update(hidden_dim=32), "does not match config.json"),
])
def test_bad_configs_are_rejected_with_the_problem_named(tmp_path, edit, message):
    make_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_missing_or_damaged_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_info(tmp_path / "none")
    make_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)
