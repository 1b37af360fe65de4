"""Discovering and reading the three single-modality corpora of a data root.

A data root holds ``emodb/wav/*.wav`` (EmoDB, German acted speech), ``fer2013/fer2013.npz``
(FER2013 faces: ``images`` (N, 48, 48) uint8, ``label`` str, ``usage`` str) and ``meld/*.csv``
(MELD utterances: ``Utterance``, ``Emotion``, ...). Which speakers, usages and CSV files exist is
read from the files; nothing is assumed. Every item is mapped to the six classes the three
corpora share (``CLASSES``); items of other classes (EmoDB boredom, FER/MELD surprise) are
skipped.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ["neutral", "angry", "happy", "sad", "fear", "disgust"]

# EmoDB emotion letter (6th character of the file name) -> class; L (boredom) has no partner.
EMODB_LETTERS = {"N": "neutral", "W": "angry", "F": "happy", "T": "sad", "A": "fear", "E": "disgust"}
# EmoDB documentation: speaker -> sex. Speakers not listed are "unknown".
EMODB_SEX = {"03": "m", "10": "m", "11": "m", "12": "m", "15": "m",
             "08": "f", "09": "f", "13": "f", "14": "f", "16": "f"}
FER_CLASSES = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "sad": "sad",
               "neutral": "neutral"}
MELD_CLASSES = {"anger": "angry", "disgust": "disgust", "fear": "fear", "joy": "happy", "sadness": "sad",
                "neutral": "neutral"}
FER_TRAIN_USAGE = "Training"
MELD_TRAIN_PREFIX = "train"
EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])$")


class SourceError(ValueError):
    """A data root that cannot be used, with a message naming the file and what is wrong."""


def data_root(path: str | os.PathLike | None) -> Path:
    """``path``, else ``$ARMER_DATA``; a SourceError when neither is given or it is not a folder."""
    value = path or os.environ.get("ARMER_DATA")
    if not value:
        raise SourceError("no data root: pass --data_root DIR or set ARMER_DATA")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise SourceError(f"data root {root} is not a folder")
    return root


@dataclass(frozen=True)
class Clip:
    """One EmoDB recording."""

    path: Path
    stem: str  # e.g. 03a01Wa
    speaker: str  # e.g. 03
    label: str  # one of CLASSES


@dataclass(frozen=True)
class Utterance:
    """One MELD row."""

    key: str  # <csv stem>-<Dialogue_ID>-<Utterance_ID> (or row number)
    text: str
    label: str
    split: str  # "train" or "test"
    dialogue: str  # <csv stem>-<Dialogue_ID>, or the key when the CSV has no ids


def read_emodb(root: Path) -> list[Clip]:
    """Every EmoDB clip of one of the six classes, sorted by name."""
    folder = root / "emodb" / "wav"
    if not folder.is_dir():
        raise SourceError(f"{folder} not found: a data root holds emodb/wav/*.wav")
    clips = []
    for path in sorted(folder.glob("*.wav")):
        match = EMODB_NAME.match(path.stem)
        if not match:
            continue  # not an EmoDB name (SSaNNEv)
        label = EMODB_LETTERS.get(match.group(3))
        if label is not None:
            clips.append(Clip(path, path.stem, match.group(1), label))
    if not clips:
        raise SourceError(f"{folder} holds no EmoDB clips (SSaNNEv.wav) of the classes {CLASSES}")
    return clips


def speakers(clips: list[Clip]) -> list[str]:
    return sorted({c.speaker for c in clips})


def default_test_speakers(present: list[str]) -> list[str]:
    """One male and one female speaker (the highest-numbered of each present); without both sexes
    known, the two highest-numbered speakers."""
    males = [s for s in present if EMODB_SEX.get(s) == "m"]
    females = [s for s in present if EMODB_SEX.get(s) == "f"]
    if males and females:
        return sorted([males[-1], females[-1]])
    return present[-2:]


@dataclass
class FerImages:
    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) str (one of CLASSES or "")
    usages: np.ndarray  # (N,) str

    def indices(self, split: str, label: str) -> np.ndarray:
        train = self.usages == FER_TRAIN_USAGE
        return np.flatnonzero((train if split == "train" else ~train) & (self.labels == label))

    @property
    def usage_names(self) -> list[str]:
        return sorted(set(self.usages.tolist()))


def read_fer(root: Path) -> FerImages:
    path = root / "fer2013" / "fer2013.npz"
    if not path.is_file():
        raise SourceError(f"{path} not found: a data root holds fer2013/fer2013.npz")
    with np.load(path, allow_pickle=False) as npz:
        missing = {"images", "label", "usage"} - set(npz.files)
        if missing:
            raise SourceError(f"{path} lacks the arrays {sorted(missing)} (has {npz.files})")
        images = np.asarray(npz["images"], dtype=np.uint8)
        labels = np.array([FER_CLASSES.get(str(v).strip().lower(), "") for v in npz["label"]])
        usages = np.array([str(v).strip() for v in npz["usage"]])
    if images.ndim != 3 or len(images) != len(labels) or len(labels) != len(usages):
        raise SourceError(f"{path}: images {images.shape}, label {labels.shape}, usage {usages.shape} do not fit")
    return FerImages(images, labels, usages)


def read_meld(root: Path) -> list[Utterance]:
    """Every MELD row of one of the six classes; ``train*.csv`` -> train, any other CSV -> test."""
    folder = root / "meld"
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        raise SourceError(f"no CSV files in {folder}: a data root holds meld/*.csv")
    rows = []
    for path in files:
        split = "train" if path.stem.lower().startswith(MELD_TRAIN_PREFIX) else "test"
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "Utterance" not in reader.fieldnames or "Emotion" not in reader.fieldnames:
                raise SourceError(f"{path} lacks the MELD columns Utterance and Emotion (has {reader.fieldnames})")
            for i, row in enumerate(reader):
                label = MELD_CLASSES.get((row.get("Emotion") or "").strip().lower())
                text = " ".join((row.get("Utterance") or "").split())
                if label is None or not text:
                    continue
                ids = (row.get("Dialogue_ID"), row.get("Utterance_ID"))
                key = f"{path.stem}-{ids[0]}-{ids[1]}" if all(ids) else f"{path.stem}-row{i}"
                rows.append(Utterance(key, text, label, split, f"{path.stem}-{ids[0]}" if all(ids) else key))
    return rows
