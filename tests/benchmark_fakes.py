"""Tiny data roots with the layout of ../shared/data, and cheap deterministic extractor backends."""
from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np

from armer.extractors.base import Extractor
from armer.extractors.registry import register_extractor

LETTERS = {"neutral": "N", "angry": "W", "happy": "F", "sad": "T", "fear": "A", "disgust": "E"}
FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "neutral"]
MELD_EMOTIONS = {"neutral": "neutral", "angry": "anger", "happy": "joy", "sad": "sadness", "fear": "fear",
                 "disgust": "disgust"}
WORDS = {"neutral": "table", "angry": "furious", "happy": "wonderful", "sad": "miserable", "fear": "scared",
         "disgust": "gross"}
CLASS_FREQ = {c: 200.0 + 120.0 * i for i, c in enumerate(LETTERS)}  # a planted signal per class


def write_wav(path: Path, wav: np.ndarray, rate: int = 22050) -> None:
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(pcm.tobytes())


def make_data_root(root: Path, speakers=("03", "08", "10", "09"), usages=("Training", "PublicTest"),
                   csvs=("train_sent_emo", "dev_sent_emo"), clips_per_class: int = 2, images_per_class: int = 4,
                   rows_per_class: int = 3, seed: int = 0, boredom: bool = True) -> Path:
    """EmoDB-named wavs (0.3 s tones), a FER2013-style npz, MELD-style CSVs; every class in every split."""
    rng = np.random.default_rng(seed)
    wav_dir = root / "emodb" / "wav"
    wav_dir.mkdir(parents=True)
    rate = 22050
    t = np.arange(int(0.3 * rate)) / rate
    for spk in speakers:
        for label, letter in LETTERS.items():
            for j in range(clips_per_class):
                wav = 0.3 * np.sin(2 * np.pi * CLASS_FREQ[label] * t) + 0.01 * rng.standard_normal(len(t))
                write_wav(wav_dir / f"{spk}a0{j}{letter}a.wav", wav, rate)
        if boredom:
            write_wav(wav_dir / f"{spk}a05La.wav", 0.1 * rng.standard_normal(len(t)), rate)
    (wav_dir / "notes.wav").write_bytes(b"")  # not an EmoDB name: ignored

    images, labels, usage = [], [], []
    for u in usages:
        for i, label in enumerate(FER_LABELS + ["surprise"]):
            for _ in range(images_per_class):
                img = rng.integers(0, 60, (48, 48)).astype(np.uint8)
                img[4 + 6 * (i % 6): 10 + 6 * (i % 6), :] = 220  # a bright band whose row codes the class
                images.append(img)
                labels.append(label)
                usage.append(u)
    (root / "fer2013").mkdir()
    np.savez(root / "fer2013" / "fer2013.npz", images=np.stack(images), label=np.array(labels),
             usage=np.array(usage), source_id=np.arange(len(images)))

    (root / "meld").mkdir()
    for name in csvs:
        with (root / "meld" / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"])
            n = 0
            for label in list(LETTERS) + ["surprise"]:
                for j in range(rows_per_class):
                    word = WORDS.get(label, "wow")
                    w.writerow([n, f"I’m {word} about this, {name} line {j}", "Joey",
                                MELD_EMOTIONS.get(label, label), "neutral", n // 4, n % 4])
                    n += 1
    return root


class FakeExtractor(Extractor):
    """What the fakes share: a fixed dim (`DIM`) and nothing to load."""

    DIM = 0

    @property
    def dim(self) -> int:
        return self.DIM

    def _load(self) -> None:
        pass


class FakeAudio(FakeExtractor):
    """Band energies of the waveform (cheap, deterministic)."""

    name = "fake-audio"
    modality = "audio"
    DIM = 16

    def _extract(self, wav: np.ndarray) -> np.ndarray:
        spec = np.abs(np.fft.rfft(wav[:4096], n=4096))[:1024]
        bands = spec.reshape(16, -1).mean(axis=1)
        return np.log1p(bands)


class FakeText(FakeExtractor):
    """Hashed bag of words."""

    name = "fake-text"
    modality = "text"
    DIM = 12

    def _extract(self, text: str) -> np.ndarray:
        import zlib

        vec = np.zeros(12, dtype=np.float32)
        for word in text.lower().split():
            vec[zlib.crc32(word.encode()) % 12] += 1.0
        return vec


class FakeVideo(FakeExtractor):
    """Row means of the grayscale face, pooled to 8 values."""

    name = "fake-video"
    modality = "video"
    DIM = 8

    def _extract(self, frames: list[np.ndarray]) -> np.ndarray:
        rows = np.stack([f[..., 0].astype(np.float32).mean(axis=1) for f in frames]).mean(axis=0)
        return rows.reshape(8, 6).mean(axis=1) / 255.0


FAKES = {"audio": "fake-audio", "text": "fake-text", "video": "fake-video"}


def register_fakes() -> dict[str, str]:
    for cls in (FakeAudio, FakeText, FakeVideo):
        register_extractor(cls.name, modality=cls.modality, dim=None, offline=True, description="test backend",
                           replace=True)(cls)
    return dict(FAKES)


register_fakes()  # importing this module registers the fake backends (armer.benchmark build --extractor_module)
