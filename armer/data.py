"""MERBench-format data: feature folders and label files.

Features: `<features_root>/<name>-UTT/<sample>.npy` of shape (D,) or (T, D) (mean-pooled for
`utt`), `-FRA` folders for frame-level (T, D). Labels: `label-6way.npz` with `train_corpus`,
`test1_corpus`, ... each a dict sample -> {'emo': class index or name, 'val': float}, where
`val == -10` means unlabelled. MERBench stores those dicts as pickled object arrays, so a label
`.npz` is loaded with `allow_pickle=True`: only open label files you trust (a `.json` file with
the same structure is accepted too and needs no pickle). Feature `.npy` files are never unpickled.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from armer.constants import MER2023_LABELS, MODALITIES, UNLABELLED_VALENCE

log = logging.getLogger(__name__)

# `<feature folder><DEGRADED_SUFFIX>` holds degraded views of the training samples (same names):
# written by `armer.benchmark build`, swapped in during training by `armer.train --degraded_views`.
DEGRADED_SUFFIX = "-DEGRADED"


class DataError(ValueError):
    """Raised for data that cannot be used, with a message that names the file and the fix."""


@dataclass
class Corpus:
    """One labelled split. features[m] is (N, D_m) for utt or (N, T, D_m) for frame-level."""

    name: str
    samples: list[str]
    features: list[np.ndarray]
    present: np.ndarray  # (N, 3) bool: the modality's feature file exists and is not all zero
    emotions: np.ndarray  # (N,) int64 class indices
    valences: np.ndarray  # (N,) float32, UNLABELLED_VALENCE where unlabelled
    # Degraded views of the same samples (train only, when asked for): features and presence like above.
    degraded: list[np.ndarray] | None = None
    degraded_present: np.ndarray | None = None

    @property
    def valence_labelled(self) -> np.ndarray:
        return self.valences != UNLABELLED_VALENCE

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, indices: np.ndarray, name: str | None = None) -> "Corpus":
        return Corpus(
            name=name or self.name,
            samples=[self.samples[i] for i in indices],
            features=[f[indices] for f in self.features],
            present=self.present[indices],
            emotions=self.emotions[indices],
            valences=self.valences[indices],
            degraded=None if self.degraded is None else [f[indices] for f in self.degraded],
            degraded_present=None if self.degraded_present is None else self.degraded_present[indices],
        )


@dataclass
class Dataset:
    label_names: list[str]
    feature_names: dict[str, str]  # modality -> feature folder name
    dims: tuple[int, int, int]
    feat_type: str
    corpora: dict[str, Corpus]  # "train", "test1", ...

    @property
    def train(self) -> Corpus:
        return self.corpora["train"]

    @property
    def tests(self) -> dict[str, Corpus]:
        return {name: c for name, c in self.corpora.items() if name != "train"}

    @property
    def has_valence(self) -> bool:
        return "train" in self.corpora and bool(self.train.valence_labelled.any())


def load_label_file(label_path: str | Path) -> dict[str, dict[str, dict]]:
    """Corpus name ('train', 'test1', ...) -> sample -> {'emo', 'val'} (plus 'label_names' if stored)."""
    path = Path(label_path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist")
    if path.suffix == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
    else:
        try:
            with np.load(path, allow_pickle=True) as npz:
                raw = {key: npz[key].tolist() for key in npz.files}
        except Exception as exc:  # numpy raises several types for a damaged archive
            raise DataError(f"cannot read label file {path}: {exc}") from exc
    corpora = {key[: -len("_corpus")]: value for key, value in raw.items() if key.endswith("_corpus")}
    if not corpora:
        raise DataError(f"label file {path} has no '<split>_corpus' entries (found keys {sorted(raw)})")
    for name, corpus in corpora.items():
        if not isinstance(corpus, dict):
            raise DataError(f"{path}: {name}_corpus must map sample names to {{'emo', 'val'}}, got {type(corpus).__name__}")
    if "label_names" in raw:
        corpora["label_names"] = list(raw["label_names"])
    return corpora


def resolve_label_names(corpora: dict[str, dict], stored: list[str] | None) -> list[str]:
    """Class names in index order: stored in the file, MER2023's when they fit, else sorted names."""
    values = [entry["emo"] for name, corpus in corpora.items() for entry in corpus.values() if "emo" in entry]
    if stored:
        return [str(n) for n in stored]
    if all(isinstance(v, (int, np.integer)) for v in values):
        top = max(values, default=-1)
        return list(MER2023_LABELS) if top < len(MER2023_LABELS) else [f"class_{i}" for i in range(top + 1)]
    names = {str(v) for v in values}
    if names <= set(MER2023_LABELS):
        return list(MER2023_LABELS)
    return sorted(names)


def resolve_feature_folder(features_root: Path, name: str, feat_type: str) -> Path:
    suffix = "-UTT" if feat_type == "utt" else "-FRA"
    for candidate in (features_root / name, features_root / f"{name}{suffix}"):
        if candidate.is_dir():
            return candidate
    available = sorted(p.name for p in features_root.iterdir() if p.is_dir())
    raise DataError(
        f"feature folder {name!r} not found under {features_root} (tried {name} and {name}{suffix}); "
        f"available: {available}"
    )


def views_folder(folder: Path) -> Path:
    """Where `folder`'s degraded training views live (whether or not they exist)."""
    return folder.with_name(folder.name + DEGRADED_SUFFIX)


def degraded_folder(folder: Path) -> Path:
    """The folder of `folder`'s degraded training views; a clear error when it was never built."""
    views = views_folder(folder)
    if not views.is_dir():
        raise DataError(f"no degraded training views for {folder.name}: {views} does not exist. Build them with "
                        f"`python -m armer.benchmark build` (on by default), or train with --degraded_views 0")
    return views


def has_degraded_views(features_root: str | Path, feature_names: dict[str, str], feat_type: str = "utt") -> bool:
    """Whether every modality's feature folder has its `-DEGRADED` training views beside it."""
    try:
        folders = [resolve_feature_folder(Path(features_root), feature_names[m], feat_type) for m in MODALITIES]
    except (DataError, KeyError, OSError):
        return False
    return all(views_folder(f).is_dir() for f in folders)


def read_feature(path: Path, feat_type: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read feature file {path}: {exc}") from exc
    if array.ndim not in (1, 2) or array.size == 0:
        raise DataError(f"feature file {path} has shape {array.shape}; expected (D,) or (T, D) with T, D > 0")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DataError(f"feature file {path} contains NaN or inf values")
    if feat_type == "utt":
        return array if array.ndim == 1 else array.mean(axis=0)
    return array if array.ndim == 2 else array[None, :]


def folder_dim(folder: Path, feat_type: str) -> int:
    """The feature dim of a folder, read from its first file."""
    first = next(iter(sorted(folder.glob("*.npy"))), None)
    if first is None:
        raise DataError(f"feature folder {folder} holds no .npy files")
    return read_feature(first, feat_type).shape[-1]


def load_modality(folder: Path, samples: list[str], feat_type: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack one modality's features; samples without a file are zero-filled and marked missing."""
    arrays: list[np.ndarray | None] = []
    for sample in samples:
        path = folder / f"{sample}.npy"
        if not path.is_file():
            arrays.append(None)
            continue
        array = read_feature(path, feat_type)
        if array.shape[-1] != dim:
            raise DataError(f"feature file {path} has dim {array.shape[-1]} but the other files in {folder.name} have dim {dim}")
        arrays.append(array)
    present = np.array([a is not None and bool(np.any(a)) for a in arrays], dtype=bool)
    if feat_type == "utt":
        stacked = np.zeros((len(samples), dim), dtype=np.float32)
    else:
        length = max((a.shape[0] for a in arrays if a is not None), default=1)
        stacked = np.zeros((len(samples), length, dim), dtype=np.float32)
    for i, a in enumerate(arrays):
        if a is not None:
            stacked[i, : len(a)] = a
    return stacked, present


def encode_emotion(value, label_names: list[str], sample: str) -> int:
    if isinstance(value, (int, np.integer)):
        if not 0 <= int(value) < len(label_names):
            raise DataError(f"sample {sample}: emotion index {value} is outside 0..{len(label_names) - 1}")
        return int(value)
    if str(value) not in label_names:
        raise DataError(f"sample {sample}: emotion {value!r} is not one of {label_names}")
    return label_names.index(str(value))


def load_dataset(
    features_root: str | Path,
    label_path: str | Path,
    feature_names: dict[str, str],
    feat_type: str = "utt",
    label_names: list[str] | None = None,
    degraded_views: bool = False,
) -> Dataset:
    """Load every corpus of a label file with the named feature folders (one per modality); with
    `degraded_views`, also the train corpus's degraded views from `<folder>-DEGRADED`."""
    root = Path(features_root)
    if not root.is_dir():
        raise DataError(f"features root {root} does not exist or is not a folder")
    missing = [m for m in MODALITIES if not feature_names.get(m)]
    if missing:
        raise DataError(f"no feature name given for {missing}")
    folders = {m: resolve_feature_folder(root, feature_names[m], feat_type) for m in MODALITIES}
    labels = load_label_file(label_path)
    names = label_names or resolve_label_names(
        {k: v for k, v in labels.items() if k != "label_names"}, labels.get("label_names")
    )
    corpora: dict[str, Corpus] = {}
    dims = tuple(folder_dim(folders[m], feat_type) for m in MODALITIES)
    for corpus_name, entries in labels.items():
        if corpus_name == "label_names":
            continue
        samples = sorted(entries)
        if not samples:
            log.warning("corpus %s in %s is empty; skipped", corpus_name, label_path)
            continue
        stacked = [load_modality(folders[m], samples, feat_type, d) for m, d in zip(MODALITIES, dims)]
        present = np.stack([p for _, p in stacked], axis=1)
        keep = present.any(axis=1)
        if not keep.all():
            dropped = [s for s, k in zip(samples, keep) if not k]
            log.warning("corpus %s: %d samples have no feature in any modality and are left out (e.g. %s)",
                        corpus_name, len(dropped), dropped[:3])
        degraded = degraded_present = None
        if degraded_views and corpus_name == "train":
            views = [load_modality(degraded_folder(folders[m]), samples, feat_type, d) for m, d in zip(MODALITIES, dims)]
            degraded, degraded_present = [f for f, _ in views], np.stack([p for _, p in views], axis=1)
        corpus = Corpus(
            name=corpus_name,
            samples=samples,
            features=[f for f, _ in stacked],
            present=present,
            emotions=np.array([encode_emotion(entries[s].get("emo"), names, s) for s in samples], dtype=np.int64),
            valences=np.array([float(entries[s].get("val", UNLABELLED_VALENCE)) for s in samples], dtype=np.float32),
            degraded=degraded,
            degraded_present=degraded_present,
        )
        corpora[corpus_name] = corpus.subset(np.flatnonzero(keep)) if not keep.all() else corpus
    if not corpora:
        raise DataError(f"label file {label_path} holds no samples")
    return Dataset(
        label_names=names,
        feature_names={m: folders[m].name for m in MODALITIES},
        dims=dims,
        feat_type=feat_type,
        corpora=corpora,
    )


def save_label_file(path: str | Path, corpora: dict[str, dict[str, dict]],
                    label_names: Sequence[str] | None = None) -> None:
    """Write a MERBench `label-6way.npz`-style file (what `load_label_file` reads)."""
    arrays = {f"{name}_corpus": np.array(entries, dtype=object) for name, entries in corpora.items()}
    if label_names is not None:
        arrays["label_names"] = np.array(label_names)
    np.savez_compressed(path, **arrays)
