"""Checkpoints: `model.safetensors` + `config.json`. Loading validates both and never unpickles.

config.json (small, readable) holds what is needed to rebuild and use the model: the model
hyper-parameters, the number of ensemble members (one per CV fold), label names, whether valence
was trained, the feature folders and dims it expects, the extractor backends that produce them
(when known), whether the inputs are standardised (`normalized`) and how the model was trained.
model.safetensors holds the tensors: the weights and, when `normalized`, each member's feature
statistics `normalization.<member>.<modality>.mean` and `.std` (D,).

Version 2 files (the statistics as JSON lists in config.json, `grad_clip` in the model config)
still load, with the same outputs; `python -m armer.checkpoint convert DIR` rewrites one as the
current version.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from armer.config import ABSENT_MEANS, ModelConfig
from armer.constants import MODALITIES
from armer.device import DeviceSpec, device_name
from armer.model import Ensemble, create_model

FORMAT = "armer-checkpoint"
# 3: the normalisation statistics in model.safetensors, grad_clip a training setting;
# 2: the members' weights stacked in one network (armer.model.RobustBase)
VERSION = 3
READABLE_VERSIONS = (2, 3)
# A config.json without one of these model settings was trained with the value here, not today's default.
MODEL_ABSENT_MEANS = {name: value for name, value in ABSENT_MEANS.items() if name in ModelConfig.__dataclass_fields__}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATISTICS_PREFIX = "normalization."


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
        """config.json's contents (the statistics go to model.safetensors: `statistics_tensors`)."""
        return {
            "format": FORMAT, "version": VERSION, "model": self.model.to_dict(),
            "num_members": self.num_members, "label_names": self.label_names, "has_valence": self.has_valence,
            "features": self.features, "extractors": self.extractors, "normalized": self.normalization is not None,
            "training": self.training,
        }


def statistics_tensors(normalization: list[dict] | None) -> dict[str, torch.Tensor]:
    """The statistics as model.safetensors holds them: `normalization.<member>.<modality>.<mean|std>`, float32
    (the precision the model uses them in)."""
    return {
        f"{STATISTICS_PREFIX}{e}.{modality}.{key}": torch.tensor(stats[modality][key], dtype=torch.float32)
        for e, stats in enumerate(normalization or []) for modality in MODALITIES for key in ("mean", "std")
    }


def save_checkpoint(directory: str | Path, ensemble: Ensemble, info: CheckpointInfo) -> Path:
    """Write the ensemble's weights, the statistics and the config to `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info.num_members = ensemble.num_members
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in ensemble.state_dict().items()}
    save_file({**state, **statistics_tensors(info.normalization)}, str(directory / WEIGHTS_FILE),
              metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(info.to_json(), indent=1), encoding="utf-8")
    return directory


def _from_version_2(model: Any, training: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Version 2 kept grad_clip, a training setting, in the model config: it moves to the training
    record's train_config (and is dropped where there is none: an untrained checkpoint)."""
    if not isinstance(model, dict) or "grad_clip" not in model:
        return model, training
    model = dict(model)
    grad_clip = model.pop("grad_clip")
    if isinstance(training.get("train_config"), dict):
        training = {**training, "train_config": {**training["train_config"], "grad_clip": grad_clip}}
    return model, training


def _statistics_lists(tensors: dict[str, torch.Tensor], members: int, fail: Callable[[str], CheckpointError]
                      ) -> list[dict]:
    """Version 3: the statistics tensors of model.safetensors as `CheckpointInfo.normalization` lists."""
    names = {(e, m, key): f"{STATISTICS_PREFIX}{e}.{m}.{key}"
             for e in range(members) for m in MODALITIES for key in ("mean", "std")}
    missing = sorted(set(names.values()) - set(tensors))
    unexpected = sorted(set(tensors) - set(names.values()))
    if missing or unexpected:
        raise fail(f"the statistics in {WEIGHTS_FILE} do not match num_members={members}: "
                   f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name in names.values():
        if tensors[name].dim() != 1:
            raise fail(f"{WEIGHTS_FILE} {name} must be one-dimensional, not {tuple(tensors[name].shape)}")
    return [{m: {key: tensors[names[e, m, key]].tolist() for key in ("mean", "std")} for m in MODALITIES}
            for e in range(members)]


def _check_statistics(normalization: Any, members: int, dims: tuple[int, ...],
                      fail: Callable[[str], CheckpointError]) -> None:
    if not isinstance(normalization, list) or len(normalization) != members:
        raise fail(f"normalization must be a list with one entry per member ({members})")
    for e, stats in enumerate(normalization):
        for modality, dim in zip(MODALITIES, dims):
            for key in ("mean", "std"):
                name = f"normalization {e}.{modality}.{key}"
                values = stats.get(modality, {}).get(key) if isinstance(stats, dict) else None
                if not isinstance(values, list) or len(values) != dim:
                    raise fail(f"{name} must have {dim} values")
                if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                    raise fail(f"{name} must be finite numbers (no NaN or infinity)")
            if min(stats[modality]["std"]) <= 0:
                raise fail(f"normalization {e}.{modality}.std must be positive")


def parse_info(raw: dict[str, Any], source: Path, statistics: dict[str, torch.Tensor] | None = None
               ) -> CheckpointInfo:
    """Validate config.json's contents `raw` (read from `source`); `statistics`: the `normalization.*`
    tensors of model.safetensors, which a version-3 config with `normalized` needs."""
    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"{source}: {message}")

    if raw.get("format") != FORMAT:
        raise fail(f"not an ARMER checkpoint config (format={raw.get('format')!r}, expected {FORMAT!r})")
    version = raw.get("version")
    if version not in READABLE_VERSIONS:
        raise fail(f"unsupported checkpoint version {version!r} (this code reads versions {list(READABLE_VERSIONS)})")
    for key in ("model", "label_names", "has_valence", "features", "num_members"):
        if key not in raw:
            raise fail(f"missing key {key!r}")
    model_values, training = raw["model"], raw.get("training") or {}
    if version == 2:
        model_values, training = _from_version_2(model_values, training)
    try:
        model = ModelConfig.from_dict({**MODEL_ABSENT_MEANS, **model_values})
    except (TypeError, ValueError) as exc:
        raise fail(f"invalid model config: {exc}") from exc
    labels = raw["label_names"]
    if not isinstance(labels, list) or len(labels) != model.output_dim1:
        raise fail(f"label_names {labels!r} must list output_dim1={model.output_dim1} classes")
    if model.output_dim1 == 0 and not raw["has_valence"]:
        raise fail("a model without emotion classes (output_dim1=0) must have been trained on valence "
                   "(has_valence: true)")
    features = raw["features"]
    for modality, dim in zip(MODALITIES, model.input_dims):
        entry = features.get(modality) if isinstance(features, dict) else None
        if not entry or entry.get("dim") != dim or not entry.get("name"):
            raise fail(f"features[{modality!r}] = {entry!r} must name the feature and have dim {dim}")
    members = raw["num_members"]
    if not isinstance(members, int) or members < 1:
        raise fail(f"num_members={members!r} must be a positive integer")
    if version == VERSION and raw.get("normalized"):
        normalization = _statistics_lists(statistics or {}, members, fail)
    elif statistics:
        raise fail(f"{WEIGHTS_FILE} holds normalisation statistics, but {CONFIG_FILE} has no \"normalized\": true")
    else:
        normalization = raw.get("normalization") if version == 2 else None
    if normalization is not None:
        _check_statistics(normalization, members, model.input_dims, fail)
    return CheckpointInfo(
        model=model, label_names=[str(n) for n in labels], has_valence=bool(raw["has_valence"]),
        features=features, num_members=members, normalization=normalization,
        extractors=raw.get("extractors"), training=training,
    )


def _read_config(directory: Path) -> tuple[dict[str, Any], Path]:
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
    return raw, config_path


def _read_tensors(directory: Path, statistics_only: bool = False, device: str = "cpu") -> dict[str, torch.Tensor]:
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        with safe_open(str(weights), framework="pt", device=device) as tensors:
            return {name: tensors.get_tensor(name) for name in tensors.keys()
                    if not statistics_only or name.startswith(STATISTICS_PREFIX)}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read {weights}: {exc}") from exc


def read_info(directory: str | Path) -> CheckpointInfo:
    """The checkpoint's config, validated, with its statistics (read from model.safetensors when there)."""
    directory = Path(directory)
    raw, config_path = _read_config(directory)
    statistics = _read_tensors(directory, statistics_only=True) if raw.get("normalized") else None
    return parse_info(raw, config_path, statistics)


def load_checkpoint(directory: str | Path, device: DeviceSpec = "cpu") -> tuple[Ensemble, CheckpointInfo]:
    """Rebuild the ensemble from `config.json` and load `model.safetensors` (strict, in eval mode) on
    `device` (`armer.device`: auto, cpu, cuda, cuda:N), whatever device the checkpoint was saved from."""
    directory = Path(directory)
    device = device_name(device)
    raw, config_path = _read_config(directory)
    state = _read_tensors(directory, device=device)
    statistics = {name: state.pop(name) for name in [n for n in state if n.startswith(STATISTICS_PREFIX)]}
    info = parse_info(raw, config_path, statistics)
    network = create_model(info.model, members=info.num_members)
    if info.normalization is not None:
        network.normalizer.set_statistics(info.normalization)
    ensemble = Ensemble(network).to(device)
    expected = ensemble.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} does not match {CONFIG_FILE}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in wrong[:5]]}"
        )
    with torch.no_grad():
        ensemble.load_state_dict(state, strict=True)
    return ensemble.eval(), info


def convert_checkpoint(directory: str | Path) -> int:
    """Rewrite a checkpoint folder as the current version, in place: the same weights and statistics, so
    the same outputs. Returns the version it had."""
    version = _read_config(Path(directory))[0]["version"]
    ensemble, info = load_checkpoint(directory)  # checks the version
    save_checkpoint(directory, ensemble, info)
    return version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m armer.checkpoint", description="Checkpoint maintenance.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help=f"rewrite checkpoint folders as version {VERSION}, in place "
                                                  f"(outputs unchanged)")
    convert.add_argument("directories", nargs="+", help="checkpoint folders (model.safetensors + config.json)")
    args = parser.parse_args(argv)
    for directory in args.directories:
        try:
            version = convert_checkpoint(directory)
        except CheckpointError as exc:
            parser.exit(2, f"error: {exc}\n")
        print(f"{directory}: version {version} -> {VERSION}")


if __name__ == "__main__":
    main()
