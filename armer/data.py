"""MERBench-format data: feature folders and label files.

Features: `<features_root>/<name>-UTT/<sample>.npy` of shape (D,) or (T, D) (mean-pooled for
`utt`), `-FRA` folders for frame-level (T, D). Labels: `label-6way.npz` with `train_corpus`,
`test1_corpus`, ... each a dict sample -> {'emo': class index or name, 'val': float}, where
`val == -10` means unlabelled (a `.json` file with the same structure is accepted too). A file
whose samples have only 'val' (no 'emo' anywhere) is valence-only, as MERBench's sentiment sets
(CMU-MOSI, CMU-MOSEI, CH-SIMS): no classes (`label_names` []), the model has only its valence head. MERBench
stores those dicts as pickled object arrays; they are unpickled by a restricted unpickler that
rebuilds only containers, strings, numbers and numpy scalars/arrays and refuses anything else, so
a label file cannot run code. Feature `.npy` files are never unpickled.
"""
from __future__ import annotations

import io
import json
import logging
import numbers
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from armer.constants import MER2023_LABELS, MODALITIES, UNLABELLED_VALENCE

log = logging.getLogger(__name__)

# `<feature folder><DEGRADED_SUFFIX>` holds degraded views of the training samples (same names):
# written by `armer.benchmark build`, swapped in during training by `armer.train --degraded_views`.
DEGRADED_SUFFIX = "-DEGRADED"


class DataError(ValueError):
    """Raised for data that cannot be used, with a message that names the file and the fix."""


NO_CLASS = -1  # Corpus.emotions of a valence-only dataset (no emotion classes)


@dataclass
class Corpus:
    """One labelled split. features[m] is (N, D_m) for utt or (N, T, D_m) for frame-level."""

    name: str
    samples: list[str]
    features: list[np.ndarray]
    present: np.ndarray  # (N, 3) bool: the modality's feature file exists and is not all zero
    emotions: np.ndarray  # (N,) int64 class indices; NO_CLASS throughout for a valence-only dataset
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


# The only globals a label file's pickles may name (strings, numbers, None, lists, tuples and dicts
# have opcodes of their own): the containers pickle protocols 0-2 build by name (`__builtin__`:
# Python 2's module) and numpy's hooks for scalars and arrays, under numpy 2's module path and
# numpy 1's. Any other global is refused before it is imported.
_NUMPY_HOOKS = {"_reconstruct": np.empty(0, dtype=object).__reduce__()[0], "scalar": np.float64(0).__reduce__()[0]}
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", name): hook for core in ("_core", "core") for name, hook in _NUMPY_HOOKS.items()},
    **{(module, t.__name__): t for module in ("builtins", "__builtin__")
       for t in (dict, list, tuple, set, frozenset, bytes)},
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz archive (the second: an empty one)
_MAX_VALENCE = float(np.finfo(np.float32).max)


class _LabelUnpickler(pickle.Unpickler):
    """Unpickles only `_SAFE_GLOBALS`; np.load's defaults otherwise (encoding ASCII, fix_imports)."""

    def __init__(self, file: BinaryIO, source: Path):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        json_path = self.source.with_suffix(".json")
        raise DataError(
            f"label file {self.source} holds a pickled {module}.{name}; a label file may hold only dicts, lists, "
            f"tuples, sets, strings, bytes, numbers, None and numpy scalars/arrays, since unpickling anything else "
            f"can run code. If you trust the file, convert it to JSON once: python -c \"from armer.data import "
            f"convert_trusted_label_file as c; c('{self.source}', '{json_path}')\" (or write your corpora with "
            f"armer.data.save_label_file('{json_path}', corpora)) and pass the .json file"
        )


def _plain(value: Any) -> Any:
    """An array as the Python value it holds (a 0-d object array: its object), like np.load's .tolist()."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def _read_npy(fp: BinaryIO, source: Path) -> np.ndarray:
    """One .npy array: an object array through `_LabelUnpickler`, any other without pickle."""
    start = fp.tell()
    version = np.lib.format.read_magic(fp)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version in read_header and read_header[version](fp)[2].hasobject:
        return _LabelUnpickler(fp, source).load()
    fp.seek(start)
    return np.lib.format.read_array(fp, allow_pickle=False)  # refuses object arrays of other versions


def _read_pickled_labels(path: Path) -> Any:
    """A non-JSON label file's contents: an .npz archive (MERBench's), one .npy array, or a pickle."""
    data = path.read_bytes()
    if data.startswith(_ZIP_MAGIC):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {member[: -len(".npy")]: _plain(_read_npy(io.BytesIO(archive.read(member)), path))
                    for member in archive.namelist() if member.endswith(".npy")}
    if data.startswith(np.lib.format.MAGIC_PREFIX):
        return _plain(_read_npy(io.BytesIO(data), path))
    return _LabelUnpickler(io.BytesIO(data), path).load()


def _is_index(value: Any) -> bool:
    """An integer class index (Python or numpy; not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_sample_name(sample: Any, where: str) -> None:
    """A sample name must stay a file name inside its feature folder (<folder>/<sample>.npy)."""
    if not isinstance(sample, str):
        raise DataError(f"{where}: sample names must be strings, got {type(sample).__name__}")
    if sample in ("", ".", "..") or any(c in sample for c in "/\\\0") or sample[1:2] == ":":  # C:x: a drive
        raise DataError(f"{where}: the sample name is not a plain file name (empty, '.', '..', or holding a path "
                        f"separator, a drive or NUL); features are read from <feature folder>/<sample>.npy")


def _check_emotion(value: Any, where: str) -> None:
    """An 'emo' must be a class name or an integer class index; 1.0 is refused, not read as 1."""
    if isinstance(value, str) and value.strip() or _is_index(value):
        return
    hint = " (write an integer index such as 1, not 1.0)" if isinstance(value, numbers.Real) else ""
    raise DataError(f"{where}: emotion {value!r:.80} is not a class name or an integer class index{hint}")


def _check_corpus(path: Path, name: str, corpus: Any) -> None:
    """Safe sample names, an 'emo' per sample, and valences that are finite numbers (or absent)."""
    where = f"label file {path}, {name}_corpus"
    if not isinstance(corpus, dict):
        raise DataError(f"{where} must map sample names to {{'emo', 'val'}}, got {type(corpus).__name__}")
    not_finite = []
    for sample, entry in corpus.items():
        at = f"{where}, sample {sample!r:.120}"
        _check_sample_name(sample, at)
        if not isinstance(entry, dict) or ("emo" not in entry and "val" not in entry):
            raise DataError(f"{at}: expected {{'emo': class name or index, 'val': number}}, got {entry!r:.120}")
        if "emo" in entry:  # without: a valence-only sample (see `_check_label_kind`)
            _check_emotion(entry["emo"], at)
        valence = entry.get("val", UNLABELLED_VALENCE)
        if isinstance(valence, bool) or not isinstance(valence, numbers.Real):
            raise DataError(f"{at}: valence {valence!r:.80} is not a number ({UNLABELLED_VALENCE:g}: unlabelled)")
        if not abs(valence) <= _MAX_VALENCE:  # NaN, inf, or beyond float32
            not_finite.append(sample)
    if not_finite:
        raise DataError(f"{where}: valence is NaN or infinite for {len(not_finite)} sample(s): "
                        f"{', '.join(not_finite[:5])}{' ...' if len(not_finite) > 5 else ''}; give a finite "
                        f"valence, or {UNLABELLED_VALENCE:g} for an unlabelled sample")


def _check_label_kind(path: Path, corpora: dict[str, dict]) -> None:
    """Every sample has an 'emo', or none has (a valence-only file: MERBench's sentiment sets)."""
    without = [(name, sample) for name, corpus in corpora.items() for sample, entry in corpus.items()
               if "emo" not in entry]
    total = sum(len(corpus) for corpus in corpora.values())
    if without and len(without) < total:
        name, sample = without[0]
        raise DataError(f"label file {path}, {name}_corpus, sample {sample!r:.120}: no 'emo', but {total - len(without)} "
                        f"other sample(s) have one; give every sample an 'emo', or none (a valence-only file)")


def _check_label_names(path: Path, value: Any) -> list[str]:
    """Stored class names: distinct, non-empty strings."""
    names = _plain(value)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != len(names):
        raise DataError(f"label file {path}: label_names must be a list of distinct class names, got {value!r:.200}")
    return list(names)


def load_label_file(label_path: str | Path) -> dict[str, dict[str, dict]]:
    """Corpus name ('train', 'test1', ...) -> sample -> {'emo', 'val'} (plus 'label_names' if stored).

    Pickled files are read without running code (see `_LabelUnpickler`); every entry is checked."""
    path = Path(label_path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else _read_pickled_labels(path)
    except DataError:
        raise
    except Exception as exc:  # bad JSON, an unreadable file, a damaged archive or pickle: many types
        raise DataError(f"cannot read label file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"label file {path} must hold a dict of '<split>_corpus' entries, got {type(raw).__name__}")
    corpora = {key[: -len("_corpus")]: _plain(value) for key, value in raw.items()
               if isinstance(key, str) and key.endswith("_corpus")}
    if not corpora:
        raise DataError(f"label file {path} has no '<split>_corpus' entries (found keys {sorted(map(str, raw))})")
    for name, corpus in corpora.items():
        _check_corpus(path, name, corpus)
    _check_label_kind(path, corpora)
    if "label_names" in raw:
        corpora["label_names"] = _check_label_names(path, raw["label_names"])
    return corpora


def resolve_label_names(corpora: dict[str, dict], stored: list[str] | None,
                        source: str | Path = "the label file") -> list[str]:
    """Class names in index order: stored in the file, MER2023's when they fit, else sorted names, or
    class_0..class_K-1 for indices beyond MER2023's, which must then run 0..K-1 without gaps."""
    if stored:
        return [str(n) for n in stored]
    values = [entry["emo"] for corpus in corpora.values() for entry in corpus.values() if "emo" in entry]
    indices = sorted({int(v) for v in values if _is_index(v)})
    names = sorted({str(v) for v in values if not _is_index(v)})
    if indices and names:
        raise DataError(f"{source} mixes class names (e.g. {names[:3]}) and class indices (e.g. {indices[:3]}) in "
                        f"'emo' and stores no label_names: use one kind, or store label_names")
    if names:
        return list(MER2023_LABELS) if set(names) <= set(MER2023_LABELS) else names
    top = max(indices, default=-1)
    if top < len(MER2023_LABELS):
        return list(MER2023_LABELS)
    if indices != list(range(top + 1)):
        missing = sorted(set(range(top + 1)) - set(indices))
        raise DataError(f"{source} stores no label_names, so its class indices must run 0..K-1 without gaps; "
                        f"found {len(indices)} distinct indices from {indices[0]} to {top}"
                        + (f", missing {len(missing)} (e.g. {missing[:5]})" if missing else "")
                        + ": fix the indices, or store label_names (save_label_file(..., label_names=...))")
    return [f"class_{i}" for i in range(top + 1)]


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
    if array.dtype.kind not in "biuf":
        raise DataError(f"feature file {path} holds {array.dtype} values; expected numbers")
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


def encode_emotion(value: Any, label_names: list[str], where: str) -> int:
    """The class index of an 'emo' value (a class name or an integer index) among `label_names`."""
    if _is_index(value):
        if not 0 <= int(value) < len(label_names):
            raise DataError(f"{where}: emotion index {value} is outside 0..{len(label_names) - 1} ({label_names})")
        return int(value)
    if str(value) not in label_names:
        raise DataError(f"{where}: emotion {value!r} is not one of {label_names}")
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
    stored_names = labels.pop("label_names", None)
    valence_only = not any("emo" in entry for corpus in labels.values() for entry in corpus.values())
    if valence_only and label_names:
        raise DataError(f"label file {label_path} has valences only (no 'emo'); the model predicts the classes "
                        f"{label_names}: use a label file with emotions, or a valence-only model")
    if valence_only or label_names is not None and not label_names:  # no classes: the valence alone is scored
        names = []
    else:
        names = label_names or resolve_label_names(labels, stored_names, f"label file {label_path}")
    corpora: dict[str, Corpus] = {}
    dims = tuple(folder_dim(folders[m], feat_type) for m in MODALITIES)
    for corpus_name, entries in labels.items():
        samples = sorted(entries)
        if not samples:
            log.warning("corpus %s in %s is empty; skipped", corpus_name, label_path)
            continue
        stacked = [load_modality(folders[m], samples, feat_type, d) for m, d in zip(MODALITIES, dims)]
        present = np.stack([p for _, p in stacked], axis=1)
        keep = present.any(axis=1)
        if not keep.any():
            raise DataError(f"label file {label_path}, {corpus_name}_corpus: none of its {len(samples)} samples has a "
                            f"non-zero feature file in any modality (e.g. {folders[MODALITIES[0]] / samples[0]}.npy); "
                            f"check --features_root and the feature folder names")
        if not keep.all():
            dropped = [s for s, k in zip(samples, keep) if not k]
            log.warning("corpus %s: %d samples have no feature in any modality and are left out (e.g. %s)",
                        corpus_name, len(dropped), dropped[:3])
        degraded = degraded_present = None
        if degraded_views and corpus_name == "train":
            views = [load_modality(degraded_folder(folders[m]), samples, feat_type, d) for m, d in zip(MODALITIES, dims)]
            degraded, degraded_present = [f for f, _ in views], np.stack([p for _, p in views], axis=1)
        where = f"label file {label_path}, {corpus_name}_corpus, sample"
        corpus = Corpus(
            name=corpus_name,
            samples=samples,
            features=[f for f, _ in stacked],
            present=present,
            emotions=np.array([encode_emotion(entries[s]["emo"], names, f"{where} {s!r}") if names else NO_CLASS
                               for s in samples], dtype=np.int64),
            valences=np.array([float(entries[s].get("val", UNLABELLED_VALENCE)) for s in samples], dtype=np.float32),
            degraded=degraded,
            degraded_present=degraded_present,
        )
        corpora[corpus_name] = corpus.subset(np.flatnonzero(keep)) if not keep.all() else corpus
    if not corpora:
        raise DataError(f"label file {label_path} holds no samples")
    if not names and "train" in corpora and not corpora["train"].valence_labelled.any():
        raise DataError(f"label file {label_path} has no emotions ('emo') and no labelled valence in train_corpus "
                        f"(every 'val' is {UNLABELLED_VALENCE:g}): nothing to learn")
    return Dataset(
        label_names=names,
        feature_names={m: folders[m].name for m in MODALITIES},
        dims=dims,
        feat_type=feat_type,
        corpora=corpora,
    )


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays as the plain values JSON holds."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} cannot be written to a JSON label file")


def _write_json_labels(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, ensure_ascii=False, default=_json_value), encoding="utf-8")


def save_label_file(path: str | Path, corpora: dict[str, dict[str, dict]],
                    label_names: Sequence[str] | None = None) -> None:
    """Write a label file `load_label_file` reads: MERBench's `label-6way.npz` format, or JSON when
    `path` ends in `.json` (numpy scalars become plain numbers and strings)."""
    if Path(path).suffix == ".json":
        document: dict[str, Any] = {f"{name}_corpus": entries for name, entries in corpora.items()}
        if label_names is not None:
            document["label_names"] = list(label_names)
        _write_json_labels(Path(path), document)
        return
    arrays = {f"{name}_corpus": np.array(entries, dtype=object) for name, entries in corpora.items()}
    if label_names is not None:
        arrays["label_names"] = np.array(label_names)
    np.savez_compressed(path, **arrays)


def convert_trusted_label_file(source: str | Path, target: str | Path) -> None:
    """Rewrite a label file that `load_label_file` refuses (it pickles other objects) as JSON at `target`.

    This unpickles `source` WITHOUT restriction, which can run code: only for files you trust."""
    raw = np.load(source, allow_pickle=True)  # an .npz archive, an array, or any unpickled object
    if isinstance(raw, np.lib.npyio.NpzFile):
        with raw:
            raw = {key: raw[key] for key in raw.files}
    raw = _plain(raw)
    if not isinstance(raw, dict):
        raise DataError(f"label file {source} holds a {type(raw).__name__}, not a dict of '<split>_corpus' entries")
    _write_json_labels(Path(target), {str(key): _plain(value) for key, value in raw.items()})
