"""Out-of-fold calibration targets (`armer.train --calibration_target out_of_fold`).

V2's calibration term teaches u (a modality's mean sigma) to predict how wrong that modality is on
its own. Its target used to come from the model's own unimodal head on the training sample, which
the network has memorised: on the paired benchmark the audio head is right on every training clip
and on 80% of held-out speakers' clips (results/calibration_targets.md), so u learns little about
degraded or useless inputs. Here the target comes from linear probes that never saw the sample
(cross-fitting inside each fold's training set): for member e (validation fold e) and every other
fold f, one logistic regression per modality (a ridge regression of the valence for a model
without emotion classes) is fitted on member e's training samples outside fold f, clean and
degraded views alike, and a training sample of fold f is scored by probe (e, f), on the very input
the encoder sees (after degraded-view swaps and feature noise). No validation sample of a member
reaches its targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from armer.constants import FEATURE_KEYS, MODALITIES
from armer.model.modeling import pool_frames

PROBE_STEPS = 100  # L-BFGS iterations of each logistic regression
RIDGE_ALPHA = 1.0  # the valence probes' ridge penalty (the late-fusion baseline's)


@dataclass
class CalibrationProbes:
    """The probes of one network's members. `weight[m]` (E, D_m, F * K), `bias[m]` (E, 1, F * K):
    member e's probe for fold f is columns f * K .. (f + 1) * K (K classes, or 1 valence output)."""

    weight: list[torch.Tensor]
    bias: list[torch.Tensor]
    num_folds: int
    valence: bool  # the probes predict the valence (a model without emotion classes)

    def __call__(self, inputs: list[torch.Tensor], fold: torch.Tensor) -> torch.Tensor:
        """(E, B, M, K): class probabilities (or valences) of each modality's probe for each sample's
        fold. inputs (E, B, D_m), or frames (E, B, T, D_m) pooled as the probes were fitted; fold (E, B)."""
        outputs = []
        for x, weight, bias in zip(inputs, self.weight, self.bias):
            x = pool_frames(x, x.dim() - 2)
            every = torch.baddbmm(bias, x, weight).view(*x.shape[:2], self.num_folds, -1)  # (E, B, F, K)
            index = fold.view(*fold.shape, 1, 1).expand(*fold.shape, 1, every.shape[-1])
            outputs.append(every.gather(2, index).squeeze(2))
        stacked = torch.stack(outputs, dim=-2)
        return stacked if self.valence else torch.softmax(stacked, dim=-1)

    def to(self, device: torch.device) -> "CalibrationProbes":
        return CalibrationProbes([w.to(device) for w in self.weight], [b.to(device) for b in self.bias],
                                 self.num_folds, self.valence)


def fold_of_samples(val_sets: list[np.ndarray], num_samples: int) -> np.ndarray:
    """(N,) the validation fold of every training sample."""
    fold = np.full(num_samples, -1, dtype=np.int64)
    for f, rows in enumerate(val_sets):
        fold[rows] = f
    return fold


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, L2-penalised as scikit-learn's default (C = 1), by L-BFGS:
    weight (D, classes), bias (classes,)."""
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=PROBE_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + weight.pow(2).sum() / (2 * len(x))
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_ridge(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression (penalty RIDGE_ALPHA, intercept unpenalised): weight (D, 1), bias (1,)."""
    x_mean, y_mean = x.mean(dim=0), y.mean()
    xc = (x - x_mean).double()
    gram = xc.T @ xc + RIDGE_ALPHA * torch.eye(x.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, xc.T @ (y - y_mean).double()).float()
    return weight[:, None], (y_mean - x_mean @ weight).reshape(1)


def model_inputs(data: dict[str, torch.Tensor], key: str, index: int, stats: dict | None) -> torch.Tensor:
    """Modality `index`'s features as the member's encoder sees them: standardised with the member's
    training statistics (when training normalises), frames pooled."""
    x = data[key].float()
    x = pool_frames(x, x.dim() - 1)
    if stats is not None:
        modality = stats[MODALITIES[index]]
        x = (x - torch.as_tensor(modality["mean"])) / torch.as_tensor(modality["std"])
    return x


def fit_probes(data: dict[str, torch.Tensor], fold: np.ndarray, members: list[int], num_folds: int,
               stats: list[dict] | None, classes: int) -> CalibrationProbes:
    """The probes of `members` (global fold numbers) from the train corpus `data` (`to_batch`, with its
    `degraded_*` views when loaded); `fold` (N,) from `fold_of_samples`; `stats` per member (None
    without normalisation); `classes` 0 for a valence-only model."""
    valence = classes == 0
    outputs = 1 if valence else classes
    labelled = data["val_labelled"].numpy() if valence else np.ones(len(fold), dtype=bool)
    targets = data["vals"].float() if valence else data["emos"].long()
    views = [("", data["present"].numpy())]
    if "degraded_present" in data:
        views.append(("degraded_", data["degraded_present"].numpy()))
    weights = [torch.zeros(len(members), x.shape[-1], num_folds * outputs) for x in (data[k] for k in FEATURE_KEYS)]
    biases = [torch.zeros(len(members), 1, num_folds * outputs) for _ in FEATURE_KEYS]
    for e, member in enumerate(members):
        member_stats = None if stats is None else stats[e]
        for m, key in enumerate(FEATURE_KEYS):
            inputs = {prefix: model_inputs(data, prefix + key, m, member_stats) for prefix, _ in views}
            for f in range(num_folds):
                if f == member:
                    continue
                outside = (fold != member) & (fold != f) & labelled
                parts = [(inputs[prefix][rows], targets[rows]) for prefix, present in views
                         for rows in [torch.from_numpy(np.flatnonzero(outside & present[:, m]))]]
                x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
                if len(x) < 2 or (not valence and len(torch.unique(y)) < 2):
                    continue  # nothing to learn from: a uniform probe (or the valence 0)
                weight, bias = fit_ridge(x, y) if valence else fit_logistic(x, y, classes)
                columns = slice(f * outputs, (f + 1) * outputs)
                weights[m][e, :, columns], biases[m][e, 0, columns] = weight, bias
    return CalibrationProbes(weights, biases, num_folds, valence)
