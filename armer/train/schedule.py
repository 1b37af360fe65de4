"""Per-fold learning-rate schedule and early stopping for folds trained as one batched network.

Every parameter holds all folds (dim 0 is the member), so one optimizer steps every fold with the
same learning rate. Adam's and AdamW's update of a parameter is proportional to the learning rate,
weight decay included, so a fold whose own rate is `scale * lr` gets exactly its update when the
step is rescaled afterwards: `p = before + scale * (p - before)` (`rescale_step`). A fold that
stopped early has scale 0: its weights no longer change and its best epoch is final.

The plateau rule is torch's `ReduceLROnPlateau(mode='max', factor=0.5, patience, threshold=1e-4,
threshold_mode='rel', cooldown=0, min_lr=1e-6)`; the stopping rule the seed's (no improvement of
more than `min_delta` over the best for `patience` epochs).
"""
from __future__ import annotations

import numpy as np
import torch

PLATEAU_FACTOR = 0.5
PLATEAU_THRESHOLD = 1e-4
MIN_LR = 1e-6
STOP_MIN_DELTA = 0.001


class MemberSchedule:
    """Learning rate and stopping state of E folds, updated once per epoch with their validation scores."""

    def __init__(self, members: int, lr: float, lr_patience: int, early_stop: int):
        self.lr = np.full(members, lr, dtype=np.float64)
        self.base_lr, self.lr_patience, self.early_stop = lr, lr_patience, early_stop
        self.plateau_best = np.full(members, -np.inf)
        self.plateau_bad = np.zeros(members, dtype=int)
        self.stop_best = np.full(members, -np.inf)
        self.stop_bad = np.zeros(members, dtype=int)
        self.stopped = np.zeros(members, dtype=bool)

    def step(self, values: list[float]) -> None:
        """One epoch's validation scores (higher is better) of every member."""
        for e, value in enumerate(values):
            if self.stopped[e]:
                continue
            if self.lr_patience > 0:
                if value > self.plateau_best[e] * (1 + PLATEAU_THRESHOLD):  # torch's rule, also for negative scores
                    self.plateau_best[e], self.plateau_bad[e] = value, 0
                else:
                    self.plateau_bad[e] += 1
                if self.plateau_bad[e] > self.lr_patience:
                    self.lr[e] = max(self.lr[e] * PLATEAU_FACTOR, MIN_LR)
                    self.plateau_bad[e] = 0
            if self.early_stop > 0:
                if value > self.stop_best[e] + STOP_MIN_DELTA:
                    self.stop_best[e], self.stop_bad[e] = value, 0
                else:
                    self.stop_bad[e] += 1
                self.stopped[e] = self.stop_bad[e] >= self.early_stop

    @property
    def all_stopped(self) -> bool:
        return bool(self.stopped.all())

    def scales(self) -> torch.Tensor:
        """(E,) each member's step as a share of the optimizer's (base learning rate) step; 0 once stopped."""
        return torch.from_numpy(np.where(self.stopped, 0.0, self.lr / self.base_lr)).float()

    @property
    def uniform(self) -> bool:
        """Whether every member still steps with the base learning rate (no rescaling needed)."""
        return not self.stopped.any() and bool((self.lr == self.base_lr).all())


def rescale_step(params: list[torch.Tensor], before: list[torch.Tensor], scales: torch.Tensor) -> None:
    """Scale each member's optimizer step by `scales[e]`: p = before + scale * (p - before)."""
    with torch.no_grad():
        for p, old in zip(params, before):
            p.copy_(torch.lerp(old, p, scales.to(p.device).view(-1, *([1] * (p.dim() - 1)))))
