"""Checkpoints: safetensors + config.json round trip, validation, no pickle, version 2 files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from armer.checkpoint import (VERSION, CheckpointError, CheckpointInfo, convert_checkpoint, load_checkpoint, read_info,
                              save_checkpoint)
from armer.constants import MODALITIES
from armer.model.modeling import Ensemble, create_model
from conftest import DIMS, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(directory, members: int = 2, **overrides):
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    network = create_model(config, members=members)
    stats = [{m: {"mean": torch.randn(d).tolist(), "std": (torch.rand(d) + 0.5).tolist()} for m, d in zip(MODALITIES, DIMS)}
             for _ in range(members)]
    network.normalizer.set_statistics(stats)
    ensemble = Ensemble(network).eval()
    info = CheckpointInfo(
        model=config, label_names=["neutral", "angry", "happy", "sad", "worried", "surprise"][:config.output_dim1],
        has_valence=True,
        features={m: {"name": f"feat-{m}-UTT", "dim": d} for m, d in zip(MODALITIES, DIMS)},
        normalization=stats, extractors={m: f"feat-{m}" for m in MODALITIES},
    )
    save_checkpoint(directory, ensemble, info)
    return ensemble


def random_batch() -> dict[str, torch.Tensor]:
    return {"audios": torch.randn(5, DIMS[0]), "texts": torch.randn(5, DIMS[1]), "videos": torch.zeros(5, DIMS[2])}


def assert_same_outputs(a, b) -> None:
    batch = random_batch()
    with torch.no_grad():
        before, after = a(batch), b(batch)
    for name in ("logits", "weights", "sigma", "valence"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name


def as_version_2(directory, grad_clip: float = 0.5) -> None:
    """Rewrite a checkpoint as version 2 wrote it: the statistics as JSON lists in config.json,
    grad_clip in the model config."""
    raw = json.loads((directory / "config.json").read_text())
    tensors = load_file(str(directory / "model.safetensors"))
    raw["normalization"] = [{m: {k: tensors.pop(f"normalization.{e}.{m}.{k}").tolist() for k in ("mean", "std")}
                             for m in MODALITIES} for e in range(raw["num_members"])]
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    del raw["normalized"]
    raw["version"], raw["model"]["grad_clip"], raw["training"] = 2, grad_clip, {"train_config": {"epochs": 3}}
    (directory / "config.json").write_text(json.dumps(raw))


def test_round_trip_gives_identical_outputs(tmp_path):
    ensemble = make_checkpoint(tmp_path)
    loaded, info = load_checkpoint(tmp_path)
    assert_same_outputs(ensemble, loaded)
    assert info.num_members == 2 and info.extractors["audio"] == "feat-audio" and not loaded.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_a_learned_temperature_is_saved_and_loaded(tmp_path):
    ensemble = make_checkpoint(tmp_path, learn_temperature=True)
    with torch.no_grad():
        ensemble.network.log_temperature.copy_(torch.tensor([-2.0, 0.5]).view(2, 1, 1))
    save_checkpoint(tmp_path, ensemble, load_checkpoint(tmp_path)[1])
    loaded, _ = load_checkpoint(tmp_path)
    assert torch.equal(loaded.network.log_temperature, ensemble.network.log_temperature)
    assert_same_outputs(ensemble, loaded)


def test_a_valence_only_checkpoint_has_no_label_names_and_round_trips(tmp_path):
    ensemble = make_checkpoint(tmp_path, output_dim1=0)
    loaded, info = load_checkpoint(tmp_path)
    assert_same_outputs(ensemble, loaded)
    assert info.label_names == [] and info.model.output_dim1 == 0 and info.has_valence
    assert loaded(random_batch()).logits.shape == (5, 0)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, has_valence=False)))
    with pytest.raises(CheckpointError, match="output_dim1=0"):
        load_checkpoint(tmp_path)


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
    (lambda c: c["model"].update(fusion_temperature=float("nan")), "fusion_temperature=nan must be a finite"),
    (lambda c: c.update(label_names=["a", "b"]), "must list output_dim1=6 classes"),
    (lambda c: c["features"]["text"].update(dim=99), r"features\['text'\]"),
    (lambda c: c["model"].update(hidden_dim=32), "does not match config.json"),
])
def test_bad_configs_are_rejected_with_the_problem_named(tmp_path, edit, message):
    make_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_statistics_are_tensors_in_the_weights_file_and_config_json_stays_small(tmp_path):
    make_checkpoint(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["version"] == VERSION and raw["normalized"] is True and "normalization" not in raw
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert tensors["normalization.1.text.std"].shape == (DIMS[1],)
    assert read_info(tmp_path).normalization[1]["text"]["std"] == tensors["normalization.1.text.std"].tolist()


@pytest.mark.parametrize("value,message", [
    (0.0, "std must be positive"), (float("nan"), "must be finite"), (float("inf"), "must be finite"),
])
def test_a_bad_std_is_rejected(tmp_path, value, message):
    make_checkpoint(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["normalization.1.video.std"][3] = value
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)
    as_version_2(tmp_path)  # the same in config.json
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_statistics_that_do_not_match_the_config_are_rejected(tmp_path):
    make_checkpoint(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["normalization.0.audio.mean"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['normalization.0.audio.mean'\]"):
        load_checkpoint(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "normalized": False}))
    with pytest.raises(CheckpointError, match="holds normalisation statistics"):
        load_checkpoint(tmp_path)


def test_a_version_2_checkpoint_loads_and_converts_with_the_same_outputs(tmp_path):
    ensemble = make_checkpoint(tmp_path)
    as_version_2(tmp_path)
    loaded, info = load_checkpoint(tmp_path)
    assert_same_outputs(ensemble, loaded)
    assert "grad_clip" not in info.model.to_dict() and info.training["train_config"] == {"epochs": 3, "grad_clip": 0.5}
    result = subprocess.run([sys.executable, "-m", "armer.checkpoint", "convert", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and f"version 2 -> {VERSION}" in result.stdout, result.stderr
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["version"] == VERSION and "normalization" not in raw and "grad_clip" not in raw["model"]
    assert raw["training"]["train_config"]["grad_clip"] == 0.5
    converted, _ = load_checkpoint(tmp_path)
    assert_same_outputs(ensemble, converted)
    assert convert_checkpoint(tmp_path) == VERSION  # converting again changes nothing
    assert_same_outputs(ensemble, load_checkpoint(tmp_path)[0])


def test_other_versions_are_refused_by_name(tmp_path):
    make_checkpoint(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "version": 1}))
    with pytest.raises(CheckpointError, match="unsupported checkpoint version 1"):
        load_checkpoint(tmp_path)


def test_the_demo_checkpoint_is_the_current_version_with_a_small_config():
    config = ROOT / "checkpoints" / "config.json"
    assert json.loads(config.read_text())["version"] == VERSION and config.stat().st_size < 10_000
    info = read_info(ROOT / "checkpoints")
    assert info.num_members == 5 and len(info.normalization[4]["audio"]["std"]) == info.model.audio_dim


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
