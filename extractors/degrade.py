"""Seeded input corruptions: the demo's degrade controls, the noise corpora and the training views."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEGRADE_SEED = 0  # noise and word drop-out are seeded: the same setting gives the same result


class InputError(ValueError):
    """Input that cannot be used (unreadable file, bad setting, nothing left to fuse); the message says why."""


@dataclass(frozen=True)
class Degrade:
    """Input corruptions, one per modality (the demo's degrade controls; the benchmark draws one per item)."""

    snr_db: float | None = None  # audio: white noise at this SNR in dB; None = clean
    blur: int = 1  # video: down/up-sampling factor of the face crops; 1 = sharp
    word_drop: float = 0.0  # text: probability of dropping each word
    seed: int = DEGRADE_SEED  # of the noise and of the dropped words

    def __post_init__(self) -> None:
        if self.snr_db is not None and not np.isfinite(self.snr_db):
            raise InputError(f"snr_db must be a finite number of dB or None, got {self.snr_db!r}")
        if int(self.blur) != self.blur or not 1 <= self.blur <= 32:
            raise InputError(f"blur must be an integer factor from 1 (sharp) to 32, got {self.blur!r}")
        if not 0.0 <= self.word_drop <= 1.0:
            raise InputError(f"word_drop must be in [0, 1], got {self.word_drop!r}")

    def apply_audio(self, waveform: np.ndarray) -> np.ndarray:
        return waveform if self.snr_db is None else add_noise(waveform, self.snr_db, seed=self.seed)

    def apply_frames(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return frames if self.blur == 1 else blur_frames(frames, int(self.blur))

    def apply_text(self, text: str) -> str:
        return drop_words(text, self.word_drop, seed=self.seed)


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
