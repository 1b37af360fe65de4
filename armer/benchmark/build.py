"""Build the paired emotion benchmark: EmoDB speech + FER2013 faces + MELD text, paired by class.

Each EmoDB clip of the six shared classes is paired ``k`` times (default 8 for train, 4 for test)
with a random FER2013 image and a random MELD utterance of the same class from the same split.
Splits: EmoDB by speaker (``test_speakers``), FER2013 ``Training`` -> train and any other usage ->
test, MELD ``train*.csv`` -> train and any other CSV -> test. Each training speaker draws its faces
from its own share of the images and its sentences from its own share of the MELD dialogues (no
face or sentence crosses a speaker-grouped fold), and with the ``fer2013-cnn`` video backend its
faces only from the images that CNN never trained on (``train_faces``).
Features are extracted once per source item (content-addressed cache outside the repository) and
written as MERBench feature folders with a ``label-6way.npz``-style label file (no valence), so
``armer.train`` and ``armer.evaluate`` run on it unchanged.

Corpora in the label file:
    train   clean training pairs (absent when the data root holds no training material)
    test1   clean test pairs
    test2   the same test pairs with every modality degraded: speech + white noise at 5-10 dB SNR,
            faces blurred by down/up-sampling (x2 or x4), 30 % word drop-out in the text
    test3   the test pairs with only the speech degraded
    test4   the test pairs with only the text degraded
    test5   the test pairs with only the face degraded
    ladder_<modality>_<parameter>_<level>
            the severity ladder (``ladder``): the test pairs with one modality degraded at one fixed
            level, one corpus per level: ladder_audio_snr_20 .. ladder_audio_snr_m5 (white noise at
            20, 10, 5, 0, -5 dB SNR), ladder_text_drop_0p3 .. ladder_text_drop_0p9 (30-90 % word
            drop-out), ladder_video_blur_2 .. ladder_video_blur_8 (faces blurred x2, x4, x8). In a
            level, '-' is written 'm' and '.' 'p' (sample names are split at '-'); `ladder_corpus`
            and `parse_ladder_corpus` convert. The ladder uses the noise corpora's seeds, so each
            item gets the same noise at every SNR (only scaled) and the words dropped at one rate
            are dropped at every higher rate too: the levels differ only in severity.

With ``train_views`` every training source item also gets one degraded copy, drawn from wider
ranges than the test's (speech + white noise at -5 to 10 dB SNR, faces blurred x2-x6, 10-50 % word
drop-out), written to ``<feature folder>-DEGRADED`` under the training pairs' names: the degraded
training views that ``armer.train --degraded_views`` swaps in, so that sigma can learn what a
degraded input looks like. The test corpora never use them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from armer.benchmark.sources import (
    CLASSES,
    EMODB_SEX,
    FER_TRAIN_USAGE,
    Clip,
    FerImages,
    SourceError,
    Utterance,
    default_test_speakers,
    read_emodb,
    read_fer,
    read_meld,
    speakers,
)
from armer.constants import UNLABELLED_VALENCE
from armer.data import DEGRADED_SUFFIX, save_label_file, views_folder

log = logging.getLogger(__name__)

NOISE_CORPORA = {  # corpus -> the modalities degraded in it
    "test2": ("audio", "text", "video"),
    "test3": ("audio",),
    "test4": ("text",),
    "test5": ("video",),
}
CORPUS_DESCRIPTIONS = {
    "train": "clean training pairs",
    "test1": "clean test pairs",
    "test2": "test pairs, every modality degraded (noise corpus)",
    "test3": "test pairs, speech degraded only",
    "test4": "test pairs, text degraded only",
    "test5": "test pairs, face degraded only",
}
# The severity ladder: modality -> (corpus-name parameter, manifest parameter, description of a level)
LADDER_PARAMETERS: dict[str, tuple[str, str, Callable[[float], str]]] = {
    "audio": ("snr", "snr_db", lambda level: f"speech only: white noise at {level:g} dB SNR"),
    "text": ("drop", "word_drop", lambda level: f"text only: {100 * level:g} % word drop-out"),
    "video": ("blur", "blur", lambda level: f"face only: blurred x{level:g}"),
}
LADDER_PREFIX = "ladder_"


def default_cache_dir() -> Path:
    return Path(os.environ.get("ARMER_CACHE", Path.home() / ".cache" / "armer")) / "benchmark-features"


@dataclass
class BuildOptions:
    data_root: Path
    out: Path
    seed: int = 0
    k_train: int = 8
    k_test: int = 4
    test_speakers: list[str] | None = None  # None: automatic (see resolve_test_speakers); ["all"]: every speaker
    extractors: dict[str, str] = field(default_factory=dict)  # modality -> registered backend name
    cache_dir: Path | None = None
    noise: bool = True
    snr_db: tuple[float, float] = (5.0, 10.0)
    blur_factors: tuple[int, ...] = (2, 4)
    word_drop: float = 0.3
    # Degraded training views (see the module docstring); ranges deliberately wider than the test's.
    train_views: bool = True
    train_snr_db: tuple[float, float] = (-5.0, 10.0)
    train_blur_factors: tuple[int, ...] = (2, 3, 4, 6)
    train_word_drop: tuple[float, float] = (0.1, 0.5)
    # Which FER2013 `Training` images the training pairs draw faces from. auto: the fer2013-cnn
    # backend's held-out split when that backend extracts the video (it is right on ~76% of the
    # images it trained on and ~65% of unseen ones, results/fer_cnn_seen_unseen.md, so training and
    # validation would see a face modality far more reliable than the test faces); else every image.
    train_faces: str = "auto"  # auto | heldout | all
    device: str = "cpu"  # where the default extractor factory runs the backends (armer.device: auto, cpu, cuda, cuda:N)
    # The severity ladder (see the module docstring): one test corpus per modality and level, mild to severe.
    ladder: bool = True
    ladder_snr_db: tuple[float, ...] = (20.0, 10.0, 5.0, 0.0, -5.0)
    ladder_word_drop: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    ladder_blur_factors: tuple[int, ...] = (2, 4, 8)

    def __post_init__(self) -> None:
        low, high = self.train_word_drop
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"train_word_drop ({low:g}, {high:g}): need 0 <= LOW <= HIGH <= 1")


@dataclass(frozen=True)
class Pair:
    name: str  # sample name in the label file and feature folders
    corpus: str
    clip: Clip
    fer_index: int
    utterance: Utterance


# A pair's source item per modality: the key of its raw input, its degraded copies and its features.
SOURCE_KEY: dict[str, Callable[[Pair], str]] = {"audio": lambda p: p.clip.stem, "video": lambda p: str(p.fer_index),
                                                "text": lambda p: p.utterance.key}


def item_seed(seed: int, key: str) -> int:
    """A stable per-item seed (independent of iteration order and of Python's hash seed)."""
    return (zlib.crc32(key.encode("utf-8")) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def noise_seed(seed: int, tag: str, key: str) -> int:
    """The seed of an audio item's white noise (``tag``: see `Degradation`)."""
    return item_seed(seed, f"{tag}noise:{key}")


def text_seed(seed: int, tag: str, key: str) -> int:
    """The seed of a sentence's word drop-out (``tag``: see `Degradation`)."""
    return item_seed(seed, f"{tag}text:{key}")


def corpus_sample_name(corpus: str, pair: Pair) -> str:
    """A test pair's sample name in another test corpus: test1-<clip>-<k> -> <corpus>-<clip>-<k>."""
    return corpus + pair.name[len("test1"):]


def resolve_test_speakers(requested: list[str] | None, clips: list[Clip], fer: FerImages,
                          meld: list[Utterance]) -> list[str]:
    present = speakers(clips)
    if requested and [s.lower() for s in requested] == ["all"]:
        return present
    if requested:
        unknown = sorted(set(requested) - set(present))
        if unknown:
            raise SourceError(f"test speakers {unknown} are not in the data root (speakers present: {present})")
        return sorted(set(requested))
    has_train_material = (fer.usages == FER_TRAIN_USAGE).any() and any(u.split == "train" for u in meld)
    if not has_train_material:
        return present  # a test-only root: every speaker is a test speaker
    chosen = default_test_speakers(present)
    if set(chosen) == set(present):
        raise SourceError(f"the data root has training material but only the speakers {present}: the default test "
                          f"speakers {chosen} leave none to train on; name the test speakers (--test_speakers), or "
                          "'all' for a test-only build")
    return chosen


TRAIN_FACES = ("auto", "heldout", "all")


def allowed_train_faces(fer: FerImages, train_faces: str, video_extractor: str) -> np.ndarray | None:
    """FER2013 image indices the training pairs may use (None: every `Training` image)."""
    if train_faces not in TRAIN_FACES:
        raise SourceError(f"train_faces={train_faces!r} must be one of {TRAIN_FACES}")
    if train_faces == "all" or (train_faces == "auto" and video_extractor != "fer2013-cnn"):
        return None
    from armer.extractors.fer_cnn import training_split

    return training_split(fer.usages)[1]


def train_face_pools(fer: FerImages, train_speakers: list[str], allowed: np.ndarray | None, seed: int
                     ) -> dict[tuple[str, str], np.ndarray]:
    """Training faces per (speaker, class): each training speaker gets a disjoint share of a class's
    images, so that no face is on both sides of a speaker-grouped cross-validation fold."""
    rng = np.random.default_rng(item_seed(seed, "train-faces"))
    pools: dict[tuple[str, str], np.ndarray] = {}
    for label in CLASSES:
        images = fer.indices("train", label)
        if allowed is not None:
            images = np.intersect1d(images, allowed)
        shares = np.array_split(rng.permutation(images), len(train_speakers)) if train_speakers else []
        for speaker, share in zip(train_speakers, shares):
            pools[(speaker, label)] = np.sort(share)
    return pools


def train_text_pools(meld: list[Utterance], train_speakers: list[str], seed: int
                     ) -> dict[tuple[str, str], list[Utterance]]:
    """Training sentences per (speaker, class): each training speaker gets a disjoint share of a
    class's MELD dialogues (MELD's own splits are by dialogue), so that no sentence, and no class's
    lines from one scene, are on both sides of a speaker-grouped cross-validation fold (the same
    words in two dialogues, "Okay.", still can be, as between MELD's train and test files). A class
    with fewer dialogues than speakers is shared out by sentence instead."""
    rng = np.random.default_rng(item_seed(seed, "train-texts"))
    pools: dict[tuple[str, str], list[Utterance]] = {}
    for label in CLASSES:
        rows = [u for u in meld if u.split == "train" and u.label == label]
        groups: dict[str, list[Utterance]] = {}
        for u in rows:
            groups.setdefault(u.dialogue, []).append(u)
        units = list(groups.values()) if len(groups) >= len(train_speakers) else [[u] for u in rows]
        totals = dict.fromkeys(train_speakers, 0)
        shares: dict[str, list[Utterance]] = {s: [] for s in train_speakers}
        for i in rng.permutation(len(units)):  # each unit to the speaker with the fewest sentences so far
            speaker = min(train_speakers, key=lambda s: (totals[s], s))
            shares[speaker] += units[i]
            totals[speaker] += len(units[i])
        for speaker in train_speakers:
            pools[(speaker, label)] = sorted(shares[speaker], key=lambda u: u.key)
    return pools


def pair_sources(clips: list[Clip], fer: FerImages, meld: list[Utterance], test_speakers: list[str],
                 k_train: int, k_test: int, seed: int, allowed_faces: np.ndarray | None = None
                 ) -> tuple[list[Pair], dict[str, Any]]:
    """The paired samples of train and test1, deterministic for a seed; and what was skipped.

    Training faces and sentences come from the speaker's own share (`train_face_pools` of
    `allowed_faces`, None: every `Training` image; `train_text_pools`); test faces and sentences
    from any other usage and CSV.
    """
    rng = np.random.default_rng(seed)
    train_speakers = sorted({c.speaker for c in clips} - set(test_speakers))
    pools = train_face_pools(fer, train_speakers, allowed_faces, seed)
    text_pools = train_text_pools(meld, train_speakers, seed)
    test_texts: dict[str, list[Utterance]] = {}
    for u in meld:
        if u.split == "test":
            test_texts.setdefault(u.label, []).append(u)
    pairs: list[Pair] = []
    skipped: dict[str, int] = {}
    for clip in clips:  # sorted by name
        split = "test" if clip.speaker in test_speakers else "train"
        corpus = "test1" if split == "test" else "train"
        faces = fer.indices(split, clip.label) if split == "test" else pools[(clip.speaker, clip.label)]
        texts = test_texts.get(clip.label, []) if split == "test" else text_pools[(clip.speaker, clip.label)]
        if len(faces) == 0 or not texts:
            reason = f"{split}/{clip.label}: no " + ("FER2013 image" if len(faces) == 0 else "MELD utterance")
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        for k in range(k_test if split == "test" else k_train):
            fer_index = int(faces[rng.integers(len(faces))])
            utterance = texts[int(rng.integers(len(texts)))]
            pairs.append(Pair(f"{corpus}-{clip.stem}-{k}", corpus, clip, fer_index, utterance))
    return pairs, skipped


def face_frames(gray: np.ndarray) -> list[np.ndarray]:
    """A 48x48 grayscale face as the one-frame RGB uint8 list the video backends read."""
    return [np.repeat(np.asarray(gray, dtype=np.uint8)[:, :, None], 3, axis=2)]


def content_key(obj: Any) -> str:
    if isinstance(obj, str):
        data = obj.encode("utf-8")
    elif isinstance(obj, list):
        data = b"".join(np.ascontiguousarray(f).tobytes() + str(f.shape).encode() for f in obj)
    else:
        arr = np.ascontiguousarray(obj)
        data = arr.tobytes() + str(arr.shape).encode() + str(arr.dtype).encode()
    return hashlib.sha1(data).hexdigest()


def weights_fingerprint(extractor) -> str | None:
    """A short hash of the weight files behind a backend, when it names a local file or folder
    (``path`` or ``source``): retrained weights then get a fresh cache folder. Backends whose weights
    ship with a pip package (path None) have none."""
    for attr in ("path", "source"):
        value = getattr(extractor, attr, None)
        if not value:
            continue
        path = Path(value).expanduser()
        if not path.exists():
            continue
        files = sorted(f for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
        digest = hashlib.sha1()
        for f in files:
            size = f.stat().st_size
            digest.update(f"{f.relative_to(path) if f != path else f.name}:{size}".encode())
            with f.open("rb") as fh:
                if size <= 64 << 20:
                    digest.update(fh.read())
                else:  # large weights: the first and last MiB and the size
                    digest.update(fh.read(1 << 20))
                    fh.seek(-(1 << 20), os.SEEK_END)
                    digest.update(fh.read())
        return digest.hexdigest()[:12]
    return None


class FeatureStore:
    """Features of one backend, cached on disk by the content of the input (and of the weights,
    see ``weights_fingerprint``), one vector per input item. A backend on a GPU (half precision,
    other kernels: not the same bits) has its own cache folder, ``<name>[@<fingerprint>]@cuda``.
    Inputs not in the cache go through ``extract_batch``, ``batch_size`` at a time (each equal to its
    one-at-a-time feature within 1e-4, so vectors cached before batching stay valid)."""

    def __init__(self, extractor, cache_dir: Path | None, batch_size: int = 32) -> None:
        self.extractor = extractor
        self.batch_size = batch_size  # inputs per extract_batch call
        self.fingerprint = weights_fingerprint(extractor)
        sub = extractor.name if self.fingerprint is None else f"{extractor.name}@{self.fingerprint}"
        if getattr(extractor, "device_name", "cpu") != "cpu":
            sub += "@cuda"
        self.folder = (cache_dir / sub) if cache_dir is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.memory: dict[str, np.ndarray] = {}
        self.computed = 0
        self.cached = 0

    def _path(self, key: str) -> Path | None:
        return self.folder / f"{key}.npy" if self.folder is not None else None

    def features(self, inputs: list[Any]) -> list[np.ndarray]:
        """One (dim,) float32 vector per input of the backend's modality, through ``featurize_many``
        (the clip-to-features path of the extraction CLI and the predictor) with this store as the
        backend. The inputs are already degraded and nothing more is done to them: the FER faces are
        given as the crops (no face detection), the sentences are encoded verbatim (C1 control
        characters kept; one that lost every word is an empty text: the text backends give zeros)."""
        from armer.extractors.featurize import Sources, featurize_many

        modality = self.extractor.modality
        sources = [Sources(audio=x) if modality == "audio" else Sources(frames=x, faces=(x, 1.0))
                   if modality == "video" else Sources() for x in inputs]
        results = featurize_many(sources, {modality: self}, inputs if modality == "text" else None,
                                 clean_transcripts=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [r.features[modality] for r in results]

    def extract(self, x: Any) -> np.ndarray:
        return self.extract_batch([x])[0]

    def extract_batch(self, inputs: list[Any]) -> list[np.ndarray]:
        """The backend's feature of each input, from the cache or computed (duplicates extracted once)."""
        keys = [content_key(x) for x in inputs]
        todo: dict[str, Any] = {}
        for key, x in zip(keys, inputs):
            if key in self.memory or key in todo:
                continue
            path = self._path(key)
            if path is not None and path.is_file():
                vec = np.load(path, allow_pickle=False)
                if vec.shape == (self.extractor.dim,):
                    self.memory[key] = vec
                    self.cached += 1
                    continue
            todo[key] = x
        items = list(todo.items())
        # ``batch_size`` inputs per extract_batch call, each batch saved as soon as it is computed (an
        # interrupted build resumes)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            for (key, _), vec in zip(chunk, self.extractor.extract_batch([x for _, x in chunk]), strict=True):
                self._keep(key, vec)
        return [self.memory[k] for k in keys]

    def _keep(self, key: str, vec: np.ndarray) -> None:
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape != (self.extractor.dim,) or not np.isfinite(vec).all():
            raise RuntimeError(f"backend {self.extractor.name!r} returned an invalid feature of shape {vec.shape}")
        self.memory[key] = vec
        self.computed += 1
        path = self._path(key)
        if path is not None:
            tmp = path.with_name(f"{key}.{os.getpid()}.tmp.npy")
            np.save(tmp, vec)
            os.replace(tmp, path)


@dataclass(frozen=True)
class Degradation:
    """How one set of degraded inputs is drawn: per source item a SNR, a blur factor and a word
    drop-out rate from these ranges, seeded by the item's name (and ``tag``)."""

    snr_db: tuple[float, float]
    blur_factors: tuple[int, ...]
    word_drop: tuple[float, float]
    tag: str = ""  # seed namespace: "" for the noise corpora, "train-" for the training views

    def draw_rate(self, rng: np.random.Generator) -> float:
        low, high = self.word_drop
        return float(low) if low == high else float(rng.uniform(low, high))


def noise_corpus_degradation(options: BuildOptions) -> Degradation:
    return Degradation(tuple(options.snr_db), tuple(options.blur_factors), (options.word_drop, options.word_drop))


def training_view_degradation(options: BuildOptions) -> Degradation:
    return Degradation(tuple(options.train_snr_db), tuple(options.train_blur_factors), tuple(options.train_word_drop),
                       tag="train-")


def degrade_inputs(pairs: list[Pair], raw: dict[str, dict[str, Any]], degradation: Degradation, seed: int
                   ) -> dict[str, dict[str, Any]]:
    """Degraded copies of the pairs' inputs, one per source item: modality -> key -> (input, what was done)."""
    from armer.extractors.degrade import Degrade

    low, high = degradation.snr_db
    tag = degradation.tag
    out: dict[str, dict[str, Any]] = {"audio": {}, "text": {}, "video": {}}
    for p in pairs:
        a_key, v_key, t_key = p.clip.stem, str(p.fer_index), p.utterance.key
        if a_key not in out["audio"]:
            rng = np.random.default_rng(item_seed(seed, f"{tag}audio:{a_key}"))
            noise = Degrade(snr_db=float(rng.uniform(low, high)), seed=noise_seed(seed, tag, a_key))
            out["audio"][a_key] = (noise.apply_audio(raw["audio"][a_key]), {"snr_db": round(noise.snr_db, 2)})
        if v_key not in out["video"]:
            rng = np.random.default_rng(item_seed(seed, f"{tag}video:{v_key}"))
            blur = Degrade(blur=int(rng.choice(degradation.blur_factors)))
            out["video"][v_key] = (blur.apply_frames(raw["video"][v_key]), {"blur": blur.blur})
        if t_key not in out["text"]:
            rate = degradation.draw_rate(np.random.default_rng(item_seed(seed, f"{tag}text-rate:{t_key}")))
            text = Degrade(word_drop=rate, seed=text_seed(seed, tag, t_key)).apply_text(raw["text"][t_key])
            out["text"][t_key] = (text, {"text": text} if not tag else {"word_drop": round(rate, 3), "text": text})
    return out


def level_token(level: float) -> str:
    """A ladder level as it is written in a corpus name, without '-' or '.': 20 -> '20', -5 -> 'm5', 0.3 -> '0p3'."""
    return np.format_float_positional(float(level) + 0.0, trim="-").replace("-", "m").replace(".", "p")


def ladder_corpus(modality: str, level: float) -> str:
    """The severity ladder's corpus of one modality and level, e.g. ladder_audio_snr_m5, ladder_text_drop_0p3."""
    return f"{LADDER_PREFIX}{modality}_{LADDER_PARAMETERS[modality][0]}_{level_token(level)}"


_LADDER_NAME = re.compile(re.escape(LADDER_PREFIX) + r"([a-z]+)_([a-z]+)_(m?[0-9]+(?:p[0-9]+)?)")


def parse_ladder_corpus(name: str) -> tuple[str, float] | None:
    """(modality, level) of a severity-ladder corpus name; None for any other corpus."""
    found = _LADDER_NAME.fullmatch(name)
    if not found or LADDER_PARAMETERS.get(found.group(1), ("",))[0] != found.group(2):
        return None
    return found.group(1), float(found.group(3).replace("m", "-").replace("p", "."))


def ladder_levels(options: BuildOptions) -> dict[str, tuple[float, ...]]:
    """The ladder's levels per modality (checked: finite SNRs, drop-out rates in [0, 1], integer blur
    factors 1-32, no two levels with one corpus name)."""
    from armer.extractors.degrade import Degrade

    levels = {"audio": tuple(float(x) for x in options.ladder_snr_db),
              "text": tuple(float(x) for x in options.ladder_word_drop),
              "video": tuple(options.ladder_blur_factors)}
    for level in levels["audio"]:
        Degrade(snr_db=level)
    for level in levels["text"]:
        Degrade(word_drop=level)
    for level in levels["video"]:
        Degrade(blur=level)
    levels["video"] = tuple(int(x) for x in levels["video"])
    for modality, values in levels.items():
        names = [ladder_corpus(modality, v) for v in values]
        if len(set(names)) != len(names):
            raise ValueError(f"ladder levels {list(values)} of the {modality} give one corpus name twice: {names}")
    return levels


def ladder_inputs(modality: str, level: float, keys: list[str], raw: dict[str, dict[str, Any]], seed: int) -> list[Any]:
    """The source items ``keys`` of one modality degraded at one ladder level, with the noise
    corpora's seeds (same noise at every SNR, only scaled; the words dropped at one rate are dropped
    at every higher one)."""
    from armer.extractors.degrade import Degrade

    if modality == "audio":
        return [Degrade(snr_db=level, seed=noise_seed(seed, "", k)).apply_audio(raw["audio"][k]) for k in keys]
    if modality == "video":
        return [Degrade(blur=int(level)).apply_frames(raw["video"][k]) for k in keys]
    return [Degrade(word_drop=level, seed=text_seed(seed, "", k)).apply_text(raw["text"][k]) for k in keys]


def corpus_description(corpus: str) -> str:
    parsed = parse_ladder_corpus(corpus)
    if parsed is None:
        return CORPUS_DESCRIPTIONS[corpus]
    modality, level = parsed
    return "test pairs, " + LADDER_PARAMETERS[modality][2](level)


def build(options: BuildOptions, extractor_factory: Callable[[str, str], Any] | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the benchmark under ``options.out``; returns the manifest (also written as manifest.json)."""
    say = progress or (lambda msg: log.info(msg))
    t0 = time.perf_counter()
    if extractor_factory is None:
        from armer.extractors import create_extractor

        extractor_factory = lambda name, modality: create_extractor(name, modality=modality, device=options.device)
    if not options.extractors:
        from armer.extractors import DEFAULT_EXTRACTORS

        options.extractors = dict(DEFAULT_EXTRACTORS)
    root = Path(options.data_root)
    clips, fer, meld = read_emodb(root), read_fer(root), read_meld(root)
    test_speakers = resolve_test_speakers(options.test_speakers, clips, fer, meld)
    allowed = allowed_train_faces(fer, options.train_faces, options.extractors["video"])
    pairs, skipped = pair_sources(clips, fer, meld, test_speakers, options.k_train, options.k_test, options.seed,
                                  allowed)
    if not pairs:
        raise SourceError(f"no pairs could be built from {root} (skipped: {skipped})")
    levels = ladder_levels(options) if options.ladder else None
    for reason, n in skipped.items():
        say(f"skipped {n} clips ({reason})")
    say(f"{len(pairs)} pairs: " + ", ".join(f"{c} {sum(p.corpus == c for p in pairs)}" for c in ("train", "test1")))

    # raw inputs, once per source item
    from armer.extractors.media import load_audio

    raw: dict[str, dict[str, Any]] = {"audio": {}, "text": {}, "video": {}}
    for p in pairs:
        if p.clip.stem not in raw["audio"]:
            raw["audio"][p.clip.stem] = load_audio(p.clip.path, max_seconds=None)
        raw["video"].setdefault(str(p.fer_index), face_frames(fer.images[p.fer_index]))
        raw["text"].setdefault(p.utterance.key, p.utterance.text)

    test_pairs = [p for p in pairs if p.corpus == "test1"]
    train_pairs = [p for p in pairs if p.corpus == "train"]
    degraded = degrade_inputs(test_pairs, raw, noise_corpus_degradation(options), options.seed) \
        if options.noise and test_pairs else None
    train_views = degrade_inputs(train_pairs, raw, training_view_degradation(options), options.seed) \
        if options.train_views and train_pairs else None
    ladder = {m: {ladder_corpus(m, v): v for v in levels[m]} for m in levels} if levels and test_pairs else None
    if ladder is not None:
        say(f"severity ladder: {sum(map(len, ladder.values()))} corpora, speech SNR "
            f"{'/'.join(f'{v:g}' for v in levels['audio'])} dB, word drop-out "
            f"{'/'.join(f'{v:g}' for v in levels['text'])}, face blur x{'/x'.join(f'{v:g}' for v in levels['video'])}")

    cache = options.cache_dir if options.cache_dir is not None else default_cache_dir()
    out = Path(options.out)
    feats_root = out / "features"
    derived = (list(NOISE_CORPORA) if degraded is not None else []) + \
        ([c for m in ladder for c in ladder[m]] if ladder is not None else [])  # the test pairs again, degraded
    labels: dict[str, dict[str, dict]] = {c: {} for c in ["train", "test1"] + derived}
    for p in pairs:
        labels[p.corpus][p.name] = {"emo": p.clip.label, "val": UNLABELLED_VALENCE}
    for corpus in derived:
        for p in test_pairs:
            labels[corpus][corpus_sample_name(corpus, p)] = {"emo": p.clip.label, "val": UNLABELLED_VALENCE}
    labels = {c: v for c, v in labels.items() if v}

    folders: dict[str, str] = {}
    stats: dict[str, dict[str, int]] = {}
    ladder_texts: dict[str, dict[str, str]] = {}  # ladder text corpus -> sentence key -> the words kept
    for modality in ("audio", "text", "video"):
        name = options.extractors[modality]
        extractor = extractor_factory(name, modality)
        store = FeatureStore(extractor, cache)
        folder = feats_root / f"{extractor.name}-UTT"
        folder.mkdir(parents=True, exist_ok=True)
        folders[modality] = folder.name
        t1 = time.perf_counter()
        keys = sorted(raw[modality])
        clean = dict(zip(keys, store.features([raw[modality][k] for k in keys])))
        degraded_features: dict[str, dict[str, np.ndarray]] = {}  # corpus -> source key -> this modality, degraded
        if degraded is not None:
            dkeys = sorted(degraded[modality])
            noisy = dict(zip(dkeys, store.features([degraded[modality][k][0] for k in dkeys])))
            degraded_features.update({c: noisy for c, noised in NOISE_CORPORA.items() if modality in noised})
        for p in pairs:
            np.save(folder / f"{p.name}.npy", clean[SOURCE_KEY[modality](p)])
        if train_views is not None:
            view_folder = views_folder(folder)
            view_folder.mkdir(parents=True, exist_ok=True)
            vkeys = sorted(train_views[modality])
            views = dict(zip(vkeys, store.features([train_views[modality][k][0] for k in vkeys])))
            for p in train_pairs:
                np.save(view_folder / f"{p.name}.npy", views[SOURCE_KEY[modality](p)])
        before = store.computed
        if ladder is not None:
            tkeys = sorted({SOURCE_KEY[modality](p) for p in test_pairs})
            for corpus, level in ladder[modality].items():
                inputs = ladder_inputs(modality, level, tkeys, raw, options.seed)
                degraded_features[corpus] = dict(zip(tkeys, store.features(inputs)))
                if modality == "text":
                    ladder_texts[corpus] = dict(zip(tkeys, inputs))
        for corpus in derived:
            features = degraded_features.get(corpus, clean)
            for p in test_pairs:
                np.save(folder / f"{corpus_sample_name(corpus, p)}.npy", features[SOURCE_KEY[modality](p)])
        stats[modality] = {"computed": store.computed, "cached": store.cached, "weights": store.fingerprint,
                           "seconds": round(time.perf_counter() - t1, 1)}
        if ladder is not None:
            stats[modality]["ladder_computed"] = store.computed - before
        say(f"{modality}: {extractor.name} ({extractor.dim}-d), {store.computed} extracted, {store.cached} cached, "
            f"{stats[modality]['seconds']} s")

    out.mkdir(parents=True, exist_ok=True)
    save_label_file(out / "label-6way.npz", labels, label_names=CLASSES)
    manifest = {
        "command": shlex.join([Path(sys.executable).name, "-m", "armer.benchmark", *sys.argv[1:]])
        if sys.argv and sys.argv[0].endswith("__main__.py") else None,
        "data_root": str(root),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "classes": CLASSES,
        "extractors": {m: options.extractors[m] for m in ("audio", "text", "video")},
        "feature_folders": folders,
        "label_path": "label-6way.npz",
        "corpora": {c: {"description": corpus_description(c), "n": len(v),
                        "per_class": {k: sum(e["emo"] == k for e in v.values()) for k in CLASSES}}
                    for c, v in labels.items()},
        "sources": {
            "emodb_speakers": speakers(clips),
            "emodb_sex": {s: EMODB_SEX.get(s, "unknown") for s in speakers(clips)},
            "test_speakers": test_speakers,
            "train_speakers": [s for s in speakers(clips) if s not in test_speakers],
            "fer_usages": {u: ("train" if u == FER_TRAIN_USAGE else "test") for u in fer.usage_names},
            "train_faces": {"option": options.train_faces,
                            "pool": "every Training image" if allowed is None else
                            f"the {options.extractors['video']} backend's held-out split ({len(allowed)} images)",
                            "distinct_images": len({p.fer_index for p in pairs if p.corpus == "train"})},
            "meld_csv": sorted({u.key.rsplit("-", 2)[0] for u in meld}),
            "skipped_clips": skipped,
        },
        "unique_items": {m: len(raw[m]) for m in raw},
        "extraction": stats,
        "pairs": {p.name: {"emodb": p.clip.stem, "fer_index": p.fer_index, "meld": p.utterance.key}
                  for p in pairs},
        "degradations": ({m: {k: v[1] for k, v in sorted(degraded[m].items())} for m in degraded}
                         if degraded is not None else None),
        "train_views": ({"folders": {m: f"{folders[m]}{DEGRADED_SUFFIX}" for m in folders},
                         "degradations": {m: {k: v[1] for k, v in sorted(train_views[m].items())} for m in train_views}}
                        if train_views is not None else None),
        "ladder": ({"levels": {m: {"parameter": LADDER_PARAMETERS[m][1], "levels": list(levels[m])} for m in ladder},
                    "corpora": {c: {"modality": m, "parameter": LADDER_PARAMETERS[m][1], "level": v}
                                for m in ladder for c, v in ladder[m].items()},
                    "texts": {c: dict(sorted(t.items())) for c, t in ladder_texts.items()},
                    # a sentence that lost every word is an empty transcript: zero features, which
                    # armer.data reads as a missing text
                    "empty_texts": {c: sum(not x.split() for x in t.values()) for c, t in ladder_texts.items()}}
                   if ladder is not None else None),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return manifest
