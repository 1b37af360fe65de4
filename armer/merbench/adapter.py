"""AttentionRobustV2 and its V1 baseline behind MERBench's model interface.

MERBench (zeroQiaoba/MERTools, folder MERBench) builds a model as `MODEL_MAP[args.model](args)`
and then, in `main-release.py`:
  - reads `model.model.grad_clip` (-1: no clipping, else `clip_grad_value_`),
  - calls `features, emos_out, vals_out, interloss = model(batch)` with `batch` a dict of
    `audios`, `texts`, `videos` (B, D) for `utt` or (B, T, D) for `frm_*` features,
  - adds `interloss` to its CE / MSE losses,
  - switches `model.train()` / `model.eval()` once per epoch and never says which epoch it is.

The classes here wrap `armer.model` (the one implementation of the model) so that MERBench
sees exactly that interface. The modality-dropout warm-up still progresses inside MERBench: every
switch from eval to train mode starts a new epoch (see `train`).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
import torch.nn as nn

from armer.config import ModelConfig, TrainConfig
from armer.constants import MODEL_CLASSES
from armer.model.modeling import ModelOutput, RobustBase, create_model

_DEFAULTS = ModelConfig()
_TRAIN_DEFAULTS = TrainConfig()


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"MERBench argument {name}={value!r} is not a boolean (use true/false)")


def config_from_args(args: Any, model: str) -> ModelConfig:
    """A `ModelConfig` from MERBench's `args` namespace.

    Every `ModelConfig` field is read from `args` by the same name. A field that `args` lacks or
    holds as None (MERBench fills hyper-parameters from `toolkit/model-tune.yaml` into `args`,
    and an older yaml or `--hyper_path` file may not name the V2 settings) keeps the seed default.
    MERBench sets `output_dim1 = 0` for valence-only datasets (CMU-MOSI, CMU-MOSEI, SIMS): the model
    is then built with no emotion head classes, and returns zero-width emotion logits (B, 0), as
    MERBench's own models (`nn.Linear(hidden_dim, 0)`) do.
    """
    values: dict[str, Any] = {"model": model}
    for f in fields(ModelConfig):
        if f.name == "model":
            continue
        value = getattr(args, f.name, None)
        if value is None:
            continue
        default = getattr(_DEFAULTS, f.name)
        if isinstance(default, bool):
            value = _as_bool(f.name, value)
        elif isinstance(default, int):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        else:
            value = str(value)
        values[f.name] = value
    return ModelConfig(**values)


class MERBenchModel(nn.Module):
    """MERBench-facing wrapper around one `armer.model` network (`self.core`); one subclass per
    model, named as the model's class (`armer.constants.MODEL_CLASSES`)."""

    model_name = ""  # the subclass's registry name in armer.model and in MERBench

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.model_name = next(name for name, class_name in MODEL_CLASSES.items() if class_name == cls.__name__)

    def __init__(self, args: Any):
        super().__init__()
        self.config = config_from_args(args, self.model_name)
        self.core: RobustBase = create_model(self.config)
        # MERBench's training loop reads `model.model.grad_clip` (a training setting, so no ModelConfig
        # field); -1 disables clipping there.
        grad_clip = getattr(args, "grad_clip", None)
        self.grad_clip = _TRAIN_DEFAULTS.grad_clip if grad_clip is None else float(grad_clip)

    def train(self, mode: bool = True) -> "MERBenchModel":
        # MERBench never passes the epoch: a switch from eval back to train starts the next one.
        # The first train() of a fresh model (already in train mode) stays epoch 0.
        if mode and not self.training:
            self.core.set_epoch(int(self.core.epoch.item()) + 1)
        return super().train(mode)

    @property
    def epoch(self) -> int:
        """Training epochs completed, as the modality-dropout warm-up sees them."""
        return int(self.core.epoch.item())

    def output(self, batch: dict) -> ModelOutput:
        """The full typed output (fusion weights, sigma, attention, loss terms) for one batch."""
        return self.core(batch)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.core(batch).merbench()


class AttentionRobustV2(MERBenchModel):
    """MERBench model `attention_robust_v2`: variational encoders, uncertainty-weighted fusion,
    proxy cross-modal attention (see `armer.model.AttentionRobustV2`)."""


class AttentionRobust(MERBenchModel):
    """MERBench model `attention_robust`: the V1 baseline (see `armer.model.AttentionRobust`)."""


MERBENCH_MODELS: dict[str, type[MERBenchModel]] = {cls.model_name: cls for cls in MERBenchModel.__subclasses__()}
