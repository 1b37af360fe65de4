"""Loss terms. Every KL is averaged over latent dimensions (not summed) so that the seed's
weights (0.01 / 0.1 / 0.01) keep each term well below the classification loss.

Tensors carry a leading ensemble dim E (`armer.model.batched`: one network holds E independent
members, one per cross-validation fold). Each term is a member's own mean over its samples, summed
over the members, so every member gets exactly the gradient it would get trained alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per member (dim 0): the mean of `values` where `mask` holds (0 if nothing is); summed over members."""
    mask = mask.to(values.dtype)
    totals = (values * mask).flatten(1).sum(dim=1)
    counts = mask.flatten(1).sum(dim=1).clamp(min=1.0)
    return (totals / counts).sum()


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per (sample, modality), mean over dims; mu/logvar (E, B, M, H)."""
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=-1)  # (E, B, M)
    return masked_mean(kl, present)


def cross_modal_kl(mu: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Symmetric KL between every pair of present modalities, averaged over present pairs.

    For diagonal Gaussians 0.5 * (KL(p||q) + KL(q||p)) = 0.25 * mean((var_p + d^2) / var_q
    + (var_q + d^2) / var_p - 2) with d = mu_p - mu_q: the log-variances cancel.
    """
    first, second = torch.triu_indices(mu.shape[-2], mu.shape[-2], offset=1, device=mu.device)
    var = logvar.exp()
    diff2 = (mu[..., first, :] - mu[..., second, :]).pow(2)
    var_p, var_q = var[..., first, :], var[..., second, :]
    sym = 0.25 * ((var_p + diff2) / var_q + (var_q + diff2) / var_p - 2.0).mean(dim=-1)  # (E, B, pairs)
    return masked_mean(sym, present[..., first] & present[..., second])


def reconstruction(predictions: list[torch.Tensor], targets: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
    """MSE per (sample, modality), mean over feature dims, averaged over modalities present in the data."""
    errors = torch.stack([F.mse_loss(p, t, reduction="none").mean(dim=-1) for p, t in zip(predictions, targets)], dim=-1)
    return masked_mean(errors, present)


def calibration_mean(head_error: torch.Tensor, u_error: torch.Tensor, present: torch.Tensor,
                     held_out: torch.Tensor | None, uncertainty_weight: float) -> torch.Tensor:
    """head_error + uncertainty_weight * u_error, (E, B, M), averaged where present; with `held_out`
    (E, B) the heads learn from the other samples only and u from the held-out ones only."""
    if held_out is None:
        return masked_mean(head_error + uncertainty_weight * u_error, present)
    held_out = held_out.unsqueeze(-1)
    return (masked_mean(head_error, present & ~held_out)
            + uncertainty_weight * masked_mean(u_error, present & held_out))


def uncertainty_calibration(
    unimodal_logits: torch.Tensor, uncertainty: torch.Tensor, target_probs: torch.Tensor, present: torch.Tensor,
    reference_probs: torch.Tensor | None = None, uncertainty_weight: float = 1.0, held_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teach u = mean sigma to predict how wrong each modality is on its own.

    unimodal_logits (E, B, M, C) come from a small head per modality; their cross-entropy against
    target_probs (E, B, C) trains the heads, and u (E, B, M) regresses 1 - p(target) (detached): about 0
    where the modality alone is right and sure, towards 1 where it is wrong or uninformative. The
    p(target) is the heads' own, or that of `reference_probs` (E, B, M, C) where given (predictors
    that never saw the sample: `armer.train.probes`). With `held_out` (E, B), see `calibration_mean`.
    """
    log_probs = torch.log_softmax(unimodal_logits, dim=-1)
    ce = -(target_probs.unsqueeze(-2) * log_probs).sum(dim=-1)  # (E, B, M)
    probs = log_probs.exp() if reference_probs is None else reference_probs
    goal = 1.0 - (target_probs.unsqueeze(-2) * probs).sum(dim=-1).detach()  # 1 - p(target)
    return calibration_mean(ce, (uncertainty - goal).pow(2), present, held_out, uncertainty_weight)


def valence_calibration(
    unimodal_valence: torch.Tensor, uncertainty: torch.Tensor, target: torch.Tensor, present: torch.Tensor,
    reference: torch.Tensor | None = None, uncertainty_weight: float = 1.0, held_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`uncertainty_calibration` for a model without emotion classes (output_dim1 = 0).

    unimodal_valence (E, B, M, V) come from a small head per modality; their squared error against
    target (E, B, V) trains the heads, and u (E, B, M) regresses 1 - exp(-squared error) (detached):
    about 0 where the modality alone is right, towards 1 where it is far off. The error is the heads'
    own, or that of `reference` (E, B, M, V') where given (V' = 1: the first valence output's).
    """
    error = (unimodal_valence - target.unsqueeze(-2)).pow(2).mean(dim=-1)  # (E, B, M)
    reference_error = error if reference is None else (reference - target[..., :1].unsqueeze(-2)).pow(2).mean(dim=-1)
    goal = 1.0 - torch.exp(-reference_error.detach())
    return calibration_mean(error, (uncertainty - goal).pow(2), present, held_out, uncertainty_weight)


def task_loss(
    logits: torch.Tensor,
    valence: torch.Tensor,
    emotions: torch.Tensor,
    valences: torch.Tensor,
    valence_labelled: torch.Tensor,
    held_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy on emotions plus MSE on valence where it is labelled (MERBench's total loss).

    logits (E, B, C), valence (E, B, 1), labels (E, B); samples where `held_out` (E, B) holds are left
    out (`--calibration_target held_out`).
    """
    keep = torch.ones_like(emotions, dtype=torch.bool) if held_out is None else ~held_out
    mse = masked_mean((valence[..., 0] - valences).pow(2), valence_labelled & keep)
    if logits.shape[-1] == 0:  # no emotion classes (output_dim1 = 0): the valence alone
        return mse
    ce = F.cross_entropy(logits.flatten(0, -2), emotions.flatten(), reduction="none").view(emotions.shape)
    return masked_mean(ce, keep) + mse
