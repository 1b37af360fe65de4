"""Inference on clips: a checkpoint and its feature extractors, loaded once, behind one call.

    >>> from armer.predict import Predictor, Degrade
    >>> predictor = Predictor.from_checkpoint("checkpoints/")
    >>> result = predictor.predict(video="clip.mp4")
    >>> result.top, result.weights["audio"]
    >>> predictor.predict(video="clip.mp4", use={"audio": False}).weights  # fusion only, features cached
    >>> predictor.predict(video="clip.mp4", degrade=Degrade(snr_db=5)).weights  # only audio re-extracted

The predictor decodes the files (cached by content), hands them to the one clip-to-features path
(``armer.extractors.featurize``) with its caches, and fuses the features with the ensemble. Each
modality's feature is cached by its input (waveform, text, face crops) and its degrade setting, so
toggling a modality only re-runs the fusion (a few milliseconds) and changing one degrade control
re-extracts that modality only. The app (``app.py``) and the CLI (``python -m armer.predict``) are
thin wrappers around ``Predictor.predict``.
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from armer.checkpoint import CheckpointInfo, load_checkpoint
from armer.constants import FEATURE_KEYS, MODALITIES
from armer.device import DeviceSpec, device_name
from armer.extractors.degrade import Degrade, InputError
from armer.extractors.featurize import LRUCache, Sources, Steps, clean_text, featurize

# The demo checkpoint: $ARMER_CHECKPOINT, else the checkpoints/ folder of the checkout this package
# runs from (an installed package has none: pass --checkpoint or set ARMER_CHECKPOINT).
DEFAULT_CHECKPOINT = Path(os.environ.get("ARMER_CHECKPOINT") or Path(__file__).resolve().parents[2] / "checkpoints")
MAX_SECONDS = 60.0  # longer clips are truncated by the decoder, with a notice
MAX_FILE_MB = 500  # a larger input file is refused before it is read
MB = 1 << 20
# bytes each cache may hold: decoded files, transcripts and face crops (whole frames when no face is
# found), and (D,) feature vectors; least recently used entries go first
CACHE_BYTES = {"media": 512 * MB, "derived": 256 * MB, "features": 16 * MB}
# step -> (fraction, description) for progress bars; the video steps run in a worker thread, unannounced
PROGRESS = {"audio features": (0.15, "audio features"), "transcribe": (0.35, "transcribing the speech"),
            "text features": (0.55, "text features")}

ProgressFn = Callable[[float, str], None]
InferenceError = InputError  # input the model cannot use; the message says why

__all__ = ["DEFAULT_CHECKPOINT", "Degrade", "InferenceError", "Prediction", "Predictor", "clean_text"]


def checked_use(use: dict[str, bool] | None) -> dict[str, bool]:
    """modality -> switched on, for every modality (default on); InferenceError for an unknown key."""
    unknown = set(use or {}) - set(MODALITIES)
    if unknown:
        raise InferenceError(f"use must be keyed by {MODALITIES}, got {sorted(unknown)}")
    return {m: bool((use or {}).get(m, True)) for m in MODALITIES}


@dataclass
class Prediction:
    """One fused prediction and how it was obtained. Per-modality dicts are keyed audio/text/video."""

    probabilities: dict[str, float]  # label -> probability (mean over the ensemble)
    top: str  # the most probable label
    valence: float | None  # None when the checkpoint has no valence head
    weights: dict[str, float]  # fusion weight per modality; exactly 0 for a modality not used
    sigma: dict[str, float | None]  # mean sigma (uncertainty) per modality; None when not used or V1
    attention: dict[str, float]  # attention over the modality tokens
    used: dict[str, bool]  # modalities fused (available and switched on)
    available: dict[str, bool]  # modalities the input has
    transcript: str | None  # the text the text encoder read (after word drop-out)
    face_share: float | None  # share of sampled frames with a detected face; None without frames
    timings: dict[str, float]  # seconds per step run for this call (cached steps are absent)
    cached: list[str] = field(default_factory=list)  # steps answered from the cache
    notices: list[str] = field(default_factory=list)  # limits applied, modalities missing

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Predictor:
    """A checkpoint and the extractors its config names, loaded once per process.

    Args:
        ensemble, info: from ``armer.checkpoint.load_checkpoint``.
        extractors: modality -> backend name or ``extractors.Extractor`` instance; defaults to the
            checkpoint's ``info.extractors``, else ``armer.extractors.DEFAULT_EXTRACTORS``.
        source: where the checkpoint came from (the app shows its ``source_name``).
        cache_bytes: overrides of ``CACHE_BYTES`` (media, derived, features).
        device: where the ensemble and the extractors named by string run (``armer.device``: auto,
            cpu, cuda, cuda:N); extractor instances passed in keep their own device.
    """

    def __init__(self, ensemble: torch.nn.Module, info: CheckpointInfo, extractors: dict[str, Any] | None = None,
                 source: str = "", cache_bytes: dict[str, int] | None = None, device: DeviceSpec = "cpu") -> None:
        from armer.extractors import DEFAULT_EXTRACTORS, create_extractor

        self.device = torch.device(device_name(device))
        self.ensemble = ensemble.to(self.device).eval()
        self.info = info
        if not info.label_names:
            raise InferenceError("this checkpoint predicts valence only (no emotion classes); the predictor and the "
                                 "demo need an emotion checkpoint (score valence-only checkpoints with armer.evaluate)")
        self.source = source
        names = dict(info.extractors or DEFAULT_EXTRACTORS)
        names.update(extractors or {})
        self.extractors = {}
        for m in MODALITIES:
            spec = names.get(m)
            if spec is None:
                raise InferenceError(f"no extractor for {m}: the checkpoint config names none ({info.extractors})")
            ext = create_extractor(spec, modality=m, device=self.device) if isinstance(spec, str) else spec
            dim = info.features[m]["dim"]
            if ext.dim != dim:
                raise InferenceError(f"extractor {ext.name!r} gives {ext.dim}-d {m} features but the checkpoint "
                                     f"expects {dim}-d ({info.features[m]['name']})")
            self.extractors[m] = ext
        budget = {**CACHE_BYTES, **(cache_bytes or {})}
        self._file_digests = LRUCache(256)  # (path, size, mtime) -> digest
        media = LRUCache(max_bytes=budget["media"])  # ("media", file digest) -> Media
        features = LRUCache(max_bytes=budget["features"])  # (modality, input digest, setting) -> (D,) float32
        derived = LRUCache(max_bytes=budget["derived"])  # transcripts and face crops, by input digest
        self._caches = {"media": media, "audio": features, "text": features, "video": features,
                        "transcript": derived, "faces": derived}
        self._locks = {k: threading.Lock() for k in ("decode", "audio", "text", "video")}

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike = DEFAULT_CHECKPOINT,
                        extractors: dict[str, Any] | None = None, device: DeviceSpec = "cpu") -> Predictor:
        """Load ``directory`` (``model.safetensors`` + ``config.json``) and its extractors on ``device``."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"no ARMER checkpoint in {directory} (config.json + model.safetensors). Train one with "
                f"`SYNTHETIC=1 bash scripts/train_v2.sh` (or `python -m armer.train ... --save_root runs/v2`) and "
                f"pass --checkpoint runs/v2/checkpoint (or set ARMER_CHECKPOINT), or copy the demo checkpoint into "
                f"{directory}; "
                f"`python scripts/make_tiny_checkpoint.py {directory}` makes an untrained one for trying the demo.")
        ensemble, info = load_checkpoint(directory, device=device)
        return cls(ensemble, info, extractors, source=str(directory), device=device)

    def warm_up(self) -> None:
        """Load every extractor's weights now rather than on the first request."""
        for ext in self.extractors.values():
            ext.load()

    @property
    def source_name(self) -> str:
        """The checkpoint folder as a page may show it: relative to the repository, else its name."""
        if not self.source:
            return "(in memory)"
        path = Path(self.source).resolve()
        root = Path(__file__).resolve().parents[2]
        return str(path.relative_to(root)) if path.is_relative_to(root) else path.name

    def lock(self, group: str) -> threading.Lock:
        """The lock of one kind of work (decode, audio, text, video): across requests, one at a time."""
        return self._locks[group]

    def caches(self) -> dict[str, LRUCache]:
        """The caches by name (media, derived, features): their ``nbytes`` is what they hold."""
        return {"media": self._caches["media"], "derived": self._caches["faces"], "features": self._caches["audio"]}

    def describe(self) -> str:
        """One line naming the checkpoint (``source_name``, no server path) and the extractors."""
        cfg = self.info.model
        exts = ", ".join(f"{m}: {e.name} ({e.dim}-d)" for m, e in self.extractors.items())
        return (f"checkpoint {self.source_name}: {cfg.model}, {self.info.num_members} member(s), "
                f"labels {', '.join(self.info.label_names)}; extractors {exts}; device {self.device}")

    # --- stages -----------------------------------------------------------------------------

    def _file_digest(self, path: str | os.PathLike) -> str:
        """The content digest of an input file, after checking that it is a regular file of at most
        MAX_FILE_MB (a pipe or a device would be read forever). Opened without blocking, then checked."""
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as err:
            raise InferenceError(f"{p.name}: cannot read the file ({err.strerror or err})") from err
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise InferenceError(f"{p.name}: is a folder, not a media file")
            if not stat.S_ISREG(st.st_mode):
                raise InferenceError(f"{p.name}: not a regular file (a pipe, device or socket): give a media file")
            if st.st_size > MAX_FILE_MB * MB:
                raise InferenceError(f"{p.name}: the file is {st.st_size / MB:.0f} MB; the limit is {MAX_FILE_MB} MB")
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
            digest = self._file_digests.get(key)
            if digest is None:
                h = hashlib.sha1()
                for block in iter(lambda: os.read(fd, 1 << 20), b""):
                    h.update(block)
                digest = h.hexdigest() + p.suffix.lower()  # the extension decides how the bytes are decoded
                self._file_digests.put(key, digest)
        finally:
            os.close(fd)
        return digest

    def _load(self, path: str | os.PathLike, steps: Steps) -> tuple[str, str, Any]:
        """(file name, content digest, decoded Media) of one input file, decoded once per content."""
        from armer.extractors import MediaError, load_media

        digest = self._file_digest(path)
        name = Path(path).name

        def decode() -> Any:
            try:
                return load_media(path, max_seconds=MAX_SECONDS)
            except MediaError as err:
                raise InferenceError(str(err)) from err

        return name, digest, steps.run(f"decode {name}", ("media", digest), decode, group="decode")

    # --- the call ---------------------------------------------------------------------------

    def predict(self, video: str | os.PathLike | None = None, audio: str | os.PathLike | None = None,
                image: str | os.PathLike | None = None, transcript: str | bytes | None = None,
                use: dict[str, bool] | None = None, degrade: Degrade | None = None,
                progress: ProgressFn | None = None) -> Prediction:
        """Predict the emotion of one input.

        Args:
            video: a video file (its audio track and frames), or any file ``load_media`` reads.
            audio: an audio file; replaces the video's audio track.
            image: an image file; replaces the video's frames.
            transcript: the text; blank or None transcribes the speech when the audio backend can.
            use: modality -> switched on (default all on); a modality switched off gets weight 0.
            degrade: corruptions applied before extraction (``Degrade``).
            progress: called as ``progress(fraction, description)`` before each step.

        Raises:
            InferenceError: unreadable media, a bad setting, or no modality left to fuse.
        """
        use = checked_use(use)
        report = progress or (lambda fraction, desc: None)
        t_start = time.perf_counter()
        if video is None and audio is None and image is None and clean_text(transcript)[0] is None:
            raise InferenceError("no input: upload a video, an audio file or an image, or type a transcript")

        report(0.05, "decoding")
        steps = Steps(self._caches, self._locks, on_start=lambda step: step in PROGRESS and report(*PROGRESS[step]))
        files = {kind: self._load(path, steps) for kind, path in
                 (("video", video), ("audio", audio), ("image", image)) if path is not None}
        return self._predict(Sources.combine(**files), transcript, use, degrade, True, steps, report, t_start)

    def predict_sources(self, sources: Sources, transcript: str | bytes | None = None,
                        use: dict[str, bool] | None = None, degrade: Degrade | None = None,
                        transcribe: bool = True) -> Prediction:
        """``predict`` of inputs decoded already (the live mode's windows): the same features, caches and
        fusion. ``sources.audio_key`` and ``frames_key`` must name their content (the caches trust them).
        ``transcribe=False`` leaves the text missing when no transcript is given."""
        use = checked_use(use)
        return self._predict(sources, transcript, use, degrade, transcribe, Steps(self._caches, self._locks),
                             lambda fraction, desc: None, time.perf_counter())

    def _predict(self, sources: Sources, transcript: str | bytes | None, use: dict[str, bool],
                 degrade: Degrade | None, transcribe: bool, steps: Steps, report: ProgressFn,
                 t_start: float) -> Prediction:
        clip = featurize(sources, self.extractors, transcript, use, degrade,
                         transcriber=self.extractors["audio"] if transcribe else None, steps=steps)

        used = {m: clip.features[m] is not None for m in MODALITIES}
        if not any(used.values()):
            off = [m for m in MODALITIES if clip.available[m] and not use[m]]
            if off and not any(clip.available[m] and use[m] for m in MODALITIES):
                raise InferenceError(f"every modality the input has is switched off ({', '.join(off)}): "
                                     f"tick at least one")
            raise InferenceError("no modality left to fuse: the input has no usable audio, text or video"
                                 + (f" ({'; '.join(clip.notices)})" if clip.notices else ""))

        report(0.95, "fusion")
        start = time.perf_counter()
        out = self.fuse(clip.features)
        timings = {**clip.timings, "fusion": time.perf_counter() - start, "total": time.perf_counter() - t_start}
        shown = clip.text_read if clip.text_read is not None else clip.transcript
        return Prediction(
            probabilities=out["probabilities"], top=max(out["probabilities"], key=out["probabilities"].get),
            valence=out["valence"], weights=out["weights"], sigma=out["sigma"], attention=out["attention"],
            used=used, available=clip.available, transcript=shown if clip.available["text"] else None,
            face_share=clip.face_share, timings={k: round(v, 4) for k, v in timings.items()}, cached=clip.cached,
            notices=clip.notices,
        )

    def fuse(self, feats: dict[str, np.ndarray | None]) -> dict[str, Any]:
        """Run the ensemble on one sample's features (None = missing)."""
        batch: dict[str, torch.Tensor] = {}
        present = []
        for m, key in zip(MODALITIES, FEATURE_KEYS):
            dim = self.info.features[m]["dim"]
            vec = feats.get(m)
            present.append(vec is not None)
            batch[key] = torch.from_numpy(np.asarray(vec, np.float32).reshape(1, dim)) if vec is not None \
                else torch.zeros(1, dim)
        batch["present"] = torch.tensor([present])
        with torch.inference_mode():
            out = self.ensemble({k: v.to(self.device) for k, v in batch.items()})  # read back by .tolist()
        probs = out.logits.exp()[0]
        probs = (probs / probs.sum()).tolist()
        weights = out.weights[0].tolist()
        sigma = out.sigma[0].tolist() if out.sigma is not None else [None] * 3
        attention = out.attention[0].tolist() if out.attention is not None else [0.0] * 3
        return {
            "probabilities": {name: float(p) for name, p in zip(self.info.label_names, probs)},
            "valence": float(out.valence[0, 0]) if self.info.has_valence and out.valence is not None else None,
            "weights": {m: float(w) for m, w in zip(MODALITIES, weights)},
            "sigma": {m: (float(s) if s is not None and p else None) for m, s, p in zip(MODALITIES, sigma, present)},
            "attention": {m: float(a) for m, a in zip(MODALITIES, attention)},
        }
