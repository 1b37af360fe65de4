"""Which modalities a sample has: presence masks, modality dropout, and the evaluation conditions.

A presence mask is a (..., 3) bool tensor in the order of `MODALITIES` (audio, text, video), with
any leading dims: (B, 3) for a batch, (E, B, 3) for a batch per ensemble member.
"""
from __future__ import annotations

import numpy as np
import torch

from armer.constants import MODALITIES

# The six ways to drop one or two of three modalities, as keep masks (audio, text, video).
DROP_PATTERNS: dict[str, tuple[bool, bool, bool]] = {
    "drop_audio": (False, True, True),
    "drop_text": (True, False, True),
    "drop_video": (True, True, False),
    "audio_only": (True, False, False),
    "text_only": (False, True, False),
    "video_only": (False, False, True),
}
MISSING_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def presence_from_features(features: list[torch.Tensor], sample_rank: int = 1) -> torch.Tensor:
    """All-zero features mean "missing" (how MERBench fills absent modalities): (..., 3) bool.

    `sample_rank`: dims of one sample's features, 1 for (D,) vectors, 2 for (T, D) frames.
    """
    return torch.stack([x.abs().flatten(-sample_rank).amax(dim=-1) > 0 for x in features], dim=-1)


def sample_modality_dropout(present: torch.Tensor, probability: torch.Tensor | float) -> torch.Tensor:
    """Drop one or two modalities from each sample with `probability`, never all of them.

    Vectorised: each sample draws one of the six drop patterns; a draw that would leave a
    sample with no present modality is not applied to it.
    """
    shape = present.shape[:-1]
    patterns = torch.tensor(list(DROP_PATTERNS.values()), dtype=torch.bool, device=present.device)  # (6, 3)
    choice = torch.randint(0, len(DROP_PATTERNS), shape, device=present.device)
    candidate = present & patterns[choice]  # (..., 3)
    apply = (torch.rand(shape, device=present.device) < probability) & candidate.any(dim=-1)
    return torch.where(apply.unsqueeze(-1), candidate, present)


def sample_feature_noise(present: torch.Tensor, probability: torch.Tensor | float) -> torch.Tensor:
    """(..., M) noise mixing levels alpha: 0, or U(0, 1) for a present modality drawn with `probability`."""
    draw = torch.rand(present.shape, device=present.device) < probability
    alpha = torch.rand(present.shape, device=present.device)
    return torch.where(draw & present, alpha, torch.zeros_like(alpha))


def mix_with_noise(x: torch.Tensor, alpha: torch.Tensor,
                   scale: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """sqrt(1 - alpha^2) * x + alpha * N(0, I) on standardised features: same scale, less signal.

    alpha has x's leading (sample) dims, e.g. (B,) or (E, B); alpha = 1 leaves pure noise. With
    `scale` = (spread, centre), each (E, D), the noise of member e has standard deviation spread[e]
    per dimension instead of 1 and is mixed in around centre[e] instead of 0: features that keep
    their own scale and offset still get noise of their own size. Zero (missing or padded) entries
    stay zero. Noise is drawn only for the samples that get it (most have alpha = 0).
    """
    flat_x = x.reshape(alpha.numel(), *x.shape[alpha.dim():])
    flat_alpha = alpha.reshape(-1)
    rows = (flat_alpha > 0).nonzero().flatten()
    if len(rows) == 0:
        return x
    a = flat_alpha[rows].reshape((-1,) + (1,) * (flat_x.dim() - 1))
    picked = flat_x[rows]
    noise, centre = torch.randn_like(picked), torch.zeros(())
    if scale is not None:
        member = rows // (alpha.numel() // scale[0].shape[0])
        per_dim = (len(rows),) + (1,) * (flat_x.dim() - 2) + (x.shape[-1],)
        spread, centre = (values[member].reshape(per_dim) for values in scale)
        noise = noise * spread
    mixed = (centre + torch.sqrt(1.0 - a.pow(2)) * (picked - centre) + a * noise) * (picked != 0)
    return flat_x.index_copy(0, rows, mixed).view(x.shape)


def pattern_mask(present: np.ndarray, keep: tuple[bool, bool, bool]) -> np.ndarray:
    """A fixed drop pattern applied to data-presence masks (N, 3)."""
    return present & np.asarray(keep, dtype=bool)[None, :]


def random_missing_mask(present: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Each modality of each sample missing independently with `rate`; all-missing draws are redrawn.

    Samples that have only one modality in the data keep it (there is nothing to redraw).
    """
    rng = np.random.default_rng(seed)
    mask = present & (rng.random(present.shape) >= rate)
    empty = ~mask.any(axis=1) & present.any(axis=1)
    while empty.any():
        redraw = present[empty] & (rng.random((int(empty.sum()), present.shape[1])) >= rate)
        mask[empty] = redraw
        empty = ~mask.any(axis=1) & present.any(axis=1)
    return mask


def sweep_masks(present: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The missing-rate sweep's masks, one per rate in `MISSING_RATES` (keyed "0.1" ...), rate k seeded `seed + k`."""
    return {f"{rate:.1f}": random_missing_mask(present, rate, seed + k) for k, rate in enumerate(MISSING_RATES)}


def describe_mask(mask: tuple[bool, bool, bool]) -> str:
    return "+".join(m for m, keep in zip(MODALITIES, mask) if keep) or "none"
