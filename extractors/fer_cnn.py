"""A small face-expression CNN trained on FER2013 (see scripts/train_fer_cnn.py).

The network reads 48x48 grayscale faces and its pooled last-stage activations are the
utterance-level visual feature (``FerCNNConfig.widths[-1]`` dims).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
TRAINING_USAGE = "Training"
SPLIT_SEED = 0  # the held-out split never changes, so a continued run never trains on it


def training_split(usages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the FER2013 `Training` images the CNN trains on, and of the fixed 5% it never
    sees (its validation split; the paired benchmark draws its training faces from these)."""
    train_idx = np.flatnonzero(np.asarray(usages) == TRAINING_USAGE)
    np.random.default_rng(SPLIT_SEED).shuffle(train_idx)
    n_heldout = len(train_idx) // 20
    return train_idx[n_heldout:], train_idx[:n_heldout]


@dataclass
class FerCNNConfig:
    """Architecture, input size and normalisation of a FerCNN (its checkpoint's config.json)."""

    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels of each stage; the last is the feature dim
    convs_per_stage: int = 2  # 3x3 conv + BN + ReLU layers per stage; 2x2 max-pool between stages
    dropout: float = 0.3  # on the pooled feature, before the classifier
    image_size: int = 48  # side of the square grayscale face the model expects at inference
    train_crop: int = 40  # side of the random crops seen in training (global pooling makes sizes interchangeable)
    mean: float = 0.5  # pixel normalisation after scaling to [0, 1]
    std: float = 0.25
    classes: tuple[str, ...] = field(default=FER_CLASSES)  # FER2013 label order of the classifier

    @classmethod
    def from_json(cls, path: str | Path) -> "FerCNNConfig":
        """The config saved at ``path`` (unknown keys are ignored)."""
        data = json.loads(Path(path).read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("widths", "classes"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def to_dict(self) -> dict:
        """The config as plain JSON-ready values."""
        return asdict(self)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FerCNN(nn.Module):
    """VGG-style CNN: stages of 3x3 convs, max-pool between stages, global average pool, linear head."""

    def __init__(self, config: FerCNNConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for i, width in enumerate(config.widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(config.convs_per_stage):
                layers.append(_conv_bn_relu(c_in, width))
                c_in = width
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(c_in, len(config.classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) normalised faces -> (B, D) pooled features."""
        return self.body(x).mean(dim=(2, 3))  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) normalised faces -> (B, C) class logits."""
        return self.head(self.dropout(self.features(x)))
