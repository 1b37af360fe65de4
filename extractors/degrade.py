"""Seeded input corruptions for the noise benchmark and the demo's degrade controls."""

from __future__ import annotations

import cv2
import numpy as np


def add_noise(waveform: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White Gaussian noise mixed in at ``snr_db`` dB signal-to-noise ratio.

    A silent waveform (zero power) has no defined SNR and is returned unchanged.
    """
    wav = np.asarray(waveform, dtype=np.float32)
    power = float(np.mean(wav.astype(np.float64) ** 2)) if wav.size else 0.0
    if power == 0.0:
        return wav.copy()
    noise = np.random.default_rng(seed).standard_normal(wav.shape)
    noise *= np.sqrt(power / 10 ** (snr_db / 10))
    return (wav + noise).astype(np.float32)


def blur_frames(frames: list[np.ndarray], factor: int) -> list[np.ndarray]:
    """Blur by down-sampling each frame by ``factor`` (area) and up-sampling back (bilinear)."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"blur factor must be a positive integer (2 or 4 in the benchmark), got {factor}")
    factor = int(factor)
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
        out.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def drop_words(text: str, rate: float, seed: int = 0) -> str:
    """Drop each whitespace-separated word independently with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"word drop rate must be in [0, 1], got {rate}")
    words = text.split()
    keep = np.random.default_rng(seed).random(len(words)) >= rate
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)
