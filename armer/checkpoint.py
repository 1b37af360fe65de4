"""Checkpoints: `model.safetensors` + `config.json`. Loading validates the config and never unpickles.

config.json holds everything needed to rebuild and use the model: the model hyper-parameters,
the number of ensemble members (one per CV fold), label names, whether valence was trained, the
feature folders and dims it expects, the extractor backends that produce them (when known) and
each member's feature normalisation statistics.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from armer.config import MODALITIES, ModelConfig
from armer.model.robust import Ensemble, create_model

FORMAT = "armer-checkpoint"
VERSION = 2  # 2: the members' weights stacked in one network (armer.model.RobustBase)
# Model options added since version 2 whose default differs from how older files were trained:
# a config.json without the key gets this value, not today's default.
ABSENT_MEANS = {"expert_fusion": False}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the problem."""


@dataclass
class CheckpointInfo:
    model: ModelConfig
    label_names: list[str]
    has_valence: bool
    features: dict[str, dict[str, Any]]  # modality -> {'name': folder name, 'dim': int}
    num_members: int = 1
    normalization: list[dict] | None = None  # per member: modality -> {'mean': [...], 'std': [...]}
    extractors: dict[str, str] | None = None  # modality -> extractor backend name (for the demo)
    training: dict[str, Any] = field(default_factory=dict)  # provenance: data, flags, best epochs

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "model": self.model.to_dict(),
            "num_members": self.num_members, "label_names": self.label_names, "has_valence": self.has_valence,
            "features": self.features, "extractors": self.extractors, "normalization": self.normalization,
            "training": self.training,
        }


def save_checkpoint(directory: str | Path, ensemble: Ensemble, info: CheckpointInfo) -> Path:
    """Write the ensemble's weights and config to `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info.num_members = ensemble.num_members
    state = {name: tensor.detach().contiguous() for name, tensor in ensemble.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(info.to_json(), indent=1), encoding="utf-8")
    return directory


def parse_info(raw: dict[str, Any], source: Path) -> CheckpointInfo:
    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"{source}: {message}")

    if raw.get("format") != FORMAT:
        raise fail(f"not an ARMER checkpoint config (format={raw.get('format')!r}, expected {FORMAT!r})")
    if raw.get("version") != VERSION:
        raise fail(f"unsupported checkpoint version {raw.get('version')!r} (this code reads version {VERSION})")
    for key in ("model", "label_names", "has_valence", "features", "num_members"):
        if key not in raw:
            raise fail(f"missing key {key!r}")
    try:
        model = ModelConfig.from_dict({**ABSENT_MEANS, **raw["model"]})
    except (TypeError, ValueError) as exc:
        raise fail(f"invalid model config: {exc}") from exc
    labels = raw["label_names"]
    if not isinstance(labels, list) or len(labels) != model.output_dim1:
        raise fail(f"label_names {labels!r} must list output_dim1={model.output_dim1} classes")
    features = raw["features"]
    for modality, dim in zip(MODALITIES, model.input_dims):
        entry = features.get(modality) if isinstance(features, dict) else None
        if not entry or entry.get("dim") != dim or not entry.get("name"):
            raise fail(f"features[{modality!r}] = {entry!r} must name the feature and have dim {dim}")
    members = raw["num_members"]
    if not isinstance(members, int) or members < 1:
        raise fail(f"num_members={members!r} must be a positive integer")
    normalization = raw.get("normalization")
    if normalization is not None:
        if not isinstance(normalization, list) or len(normalization) != members:
            raise fail(f"normalization must be a list with one entry per member ({members})")
        for stats in normalization:
            for modality, dim in zip(MODALITIES, model.input_dims):
                for key in ("mean", "std"):
                    values = stats.get(modality, {}).get(key) if isinstance(stats, dict) else None
                    if not isinstance(values, list) or len(values) != dim:
                        raise fail(f"normalization {modality}.{key} must have {dim} values")
                if min(stats[modality]["std"]) <= 0:
                    raise fail(f"normalization {modality}.std must be positive")
    return CheckpointInfo(
        model=model, label_names=[str(n) for n in labels], has_valence=bool(raw["has_valence"]),
        features=features, num_members=members, normalization=normalization,
        extractors=raw.get("extractors"), training=raw.get("training") or {},
    )


def read_info(directory: str | Path) -> CheckpointInfo:
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; is it an ARMER checkpoint folder?")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    return parse_info(raw, config_path)


def load_checkpoint(directory: str | Path) -> tuple[Ensemble, CheckpointInfo]:
    """Rebuild the ensemble from `config.json` and load `model.safetensors` (strict, in eval mode)."""
    directory = Path(directory)
    info = read_info(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read {weights}: {exc}") from exc
    network = create_model(info.model, members=info.num_members)
    if info.normalization is not None:
        network.normalizer.set_statistics(info.normalization)
    ensemble = Ensemble(network)
    expected = ensemble.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights} does not match {CONFIG_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in wrong[:5]]}"
        )
    with torch.no_grad():
        ensemble.load_state_dict(state, strict=True)
    return ensemble.eval(), info
