"""Inference on clips: a checkpoint and its feature extractors, loaded once, behind one call.

    >>> from armer.predict.predictor import Predictor, Degrade
    >>> predictor = Predictor.from_checkpoint("checkpoints/")
    >>> result = predictor.predict(video="clip.mp4")
    >>> result.top, result.weights["audio"]
    >>> predictor.predict(video="clip.mp4", use={"audio": False}).weights  # fusion only, features cached
    >>> predictor.predict(video="clip.mp4", degrade=Degrade(snr_db=5)).weights  # only audio re-extracted

Work is cached by content: decoding by the file's bytes, each modality's feature by its input
(waveform, text, face crops) and its degrade setting. Toggling a modality only re-runs the fusion
(a few milliseconds); changing one degrade control re-extracts that modality only. The app
(`app.py`) and the CLI (`python -m armer.predict`) are thin wrappers around `Predictor.predict`.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from armer.checkpoint import CheckpointInfo, load_checkpoint
from armer.config import MODALITIES

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints"
MAX_TRANSCRIPT_WORDS = 1000  # longer transcripts are cut (MiniLM reads 256 tokens anyway)
MAX_SECONDS = 60.0  # longer clips are truncated by the decoder, with a notice
DEGRADE_SEED = 0  # noise and word drop-out are seeded: the same setting gives the same result

ProgressFn = Callable[[float, str], None]
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="armer-video")


class InferenceError(ValueError):
    """Input the model cannot use (no modality left, unreadable file, bad setting); the message says why."""


@dataclass(frozen=True)
class Degrade:
    """Input corruptions, one per modality (the demo's degrade controls)."""

    snr_db: float | None = None  # audio: white noise at this SNR in dB; None = clean
    blur: int = 1  # video: down/up-sampling factor of the face crops; 1 = sharp
    word_drop: float = 0.0  # text: probability of dropping each word

    def __post_init__(self) -> None:
        if self.snr_db is not None and not np.isfinite(self.snr_db):
            raise InferenceError(f"snr_db must be a finite number of dB or None, got {self.snr_db!r}")
        if int(self.blur) != self.blur or not 1 <= self.blur <= 32:
            raise InferenceError(f"blur must be an integer factor from 1 (sharp) to 32, got {self.blur!r}")
        if not 0.0 <= self.word_drop <= 1.0:
            raise InferenceError(f"word_drop must be in [0, 1], got {self.word_drop!r}")


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


class _LRU:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def clean_text(text: str | bytes | None) -> tuple[str | None, list[str]]:
    """A usable transcript: bytes decoded (invalid UTF-8 replaced), lone surrogates and control
    characters removed, at most MAX_TRANSCRIPT_WORDS words. Blank -> None."""
    notices = []
    if text is None:
        return None, notices
    if isinstance(text, bytes):
        decoded = text.decode("utf-8", errors="replace")
        if "\ufffd" in decoded:
            notices.append("the transcript is not valid UTF-8: undecodable bytes were replaced")
        text = decoded
    if not isinstance(text, str):
        raise InferenceError(f"transcript must be text, got {type(text).__name__}")
    fixed = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> '?'
    if fixed != text:
        notices.append("the transcript held invalid characters (lone surrogates): they were replaced")
    fixed = "".join(c if c.isprintable() or c in "\n\t" else " " for c in fixed)
    words = fixed.split()
    if not words:
        return None, notices
    if len(words) > MAX_TRANSCRIPT_WORDS:
        notices.append(f"the transcript has {len(words)} words: only the first {MAX_TRANSCRIPT_WORDS} are used")
        words = words[:MAX_TRANSCRIPT_WORDS]
    return " ".join(words), notices


class Predictor:
    """A checkpoint and the extractors its config names, loaded once per process.

    Args:
        ensemble, info: from ``armer.checkpoint.load_checkpoint``.
        extractors: modality -> backend name or ``extractors.Extractor`` instance; defaults to the
            checkpoint's ``info.extractors``, else ``extractors.DEFAULT_EXTRACTORS``.
        source: where the checkpoint came from (shown by the app).
    """

    def __init__(self, ensemble: torch.nn.Module, info: CheckpointInfo, extractors: dict[str, Any] | None = None,
                 source: str = "") -> None:
        from armer.extractors import DEFAULT_EXTRACTORS, create_extractor

        self.ensemble = ensemble.eval()
        self.info = info
        self.source = source
        names = dict(info.extractors or DEFAULT_EXTRACTORS)
        names.update(extractors or {})
        self.extractors = {}
        for m in MODALITIES:
            spec = names.get(m)
            if spec is None:
                raise InferenceError(f"no extractor for {m}: the checkpoint config names none ({info.extractors})")
            ext = create_extractor(spec, modality=m) if isinstance(spec, str) else spec
            dim = info.features[m]["dim"]
            if ext.dim != dim:
                raise InferenceError(f"extractor {ext.name!r} gives {ext.dim}-d {m} features but the checkpoint "
                                     f"expects {dim}-d ({info.features[m]['name']})")
            self.extractors[m] = ext
        self._media = _LRU(8)  # file digest -> Media
        self._file_digests = _LRU(64)  # (path, size, mtime) -> digest
        self._features = _LRU(512)  # (modality, input digest, setting) -> (D,) float32
        self._derived = _LRU(64)  # transcripts and face crops, by input digest
        self._locks = {k: threading.Lock() for k in ("decode", "audio", "text", "video", "fuse")}

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike = DEFAULT_CHECKPOINT,
                        extractors: dict[str, Any] | None = None) -> Predictor:
        """Load ``directory`` (``model.safetensors`` + ``config.json``) and its extractors."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"no ARMER checkpoint in {directory} (config.json + model.safetensors). Train one with "
                f"`SYNTHETIC=1 bash scripts/train_v2.sh` (or `python -m armer.train ... --save_root runs/v2`) and "
                f"pass --checkpoint runs/v2/checkpoint, or copy the demo checkpoint into {directory}; "
                f"`python scripts/make_tiny_checkpoint.py {directory}` makes an untrained one for trying the demo.")
        ensemble, info = load_checkpoint(directory)
        return cls(ensemble, info, extractors, source=str(directory))

    def warm_up(self) -> None:
        """Load every extractor's weights now rather than on the first request."""
        for ext in self.extractors.values():
            ext.load()

    def describe(self) -> str:
        """One line naming the checkpoint and the extractors."""
        cfg = self.info.model
        exts = ", ".join(f"{m}: {e.name} ({e.dim}-d)" for m, e in self.extractors.items())
        return (f"checkpoint {self.source or '(in memory)'}: {cfg.model}, {self.info.num_members} member(s), "
                f"labels {', '.join(self.info.label_names)}; extractors {exts}")

    # --- stages -----------------------------------------------------------------------------

    def _file_digest(self, path: str | os.PathLike) -> str:
        p = Path(path)
        try:
            st = p.stat()
        except OSError as err:
            raise InferenceError(f"{p.name}: cannot read the file ({err.strerror or err})") from err
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        digest = self._file_digests.get(key)
        if digest is None:
            h = hashlib.sha1()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest() + p.suffix.lower()  # the extension decides how the bytes are decoded
            self._file_digests.put(key, digest)
        return digest

    def _load(self, path: str | os.PathLike, timings: dict, cached: list) -> tuple[str, Any]:
        from armer.extractors import MediaError, load_media

        digest = self._file_digest(path)
        media = self._media.get(digest)
        if media is None:
            with self._locks["decode"]:
                media = self._media.get(digest)
                if media is None:
                    t = time.perf_counter()
                    try:
                        media = load_media(path, max_seconds=MAX_SECONDS)
                    except MediaError as err:
                        raise InferenceError(str(err)) from err
                    timings[f"decode {Path(path).name}"] = time.perf_counter() - t
                    self._media.put(digest, media)
                    return digest, media
        cached.append(f"decode {Path(path).name}")
        return digest, media

    def _cached_step(self, cache: _LRU, key: tuple, lock: str, step: str, compute: Callable[[], Any],
                     timings: dict, cached: list) -> Any:
        value = cache.get(key)
        if value is not None:
            cached.append(step)
            return value
        with self._locks[lock]:  # one extraction per modality at a time: no duplicate work, no oversubscription
            value = cache.get(key)
            if value is not None:
                cached.append(step)
                return value
            t = time.perf_counter()
            value = compute()
            timings[step] = time.perf_counter() - t
            cache.put(key, value)
            return value

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
        from armer.extractors import add_noise, blur_frames, crop_faces, drop_words

        degrade = degrade or Degrade()
        unknown = set(use or {}) - set(MODALITIES)
        if unknown:
            raise InferenceError(f"use must be keyed by {MODALITIES}, got {sorted(unknown)}")
        use = {m: bool((use or {}).get(m, True)) for m in MODALITIES}
        report = progress or (lambda fraction, desc: None)
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        cached: list[str] = []
        notices: list[str] = []

        text, text_notices = clean_text(transcript)
        notices += text_notices
        if video is None and audio is None and image is None and text is None:
            raise InferenceError("no input: upload a video, an audio file or an image, or type a transcript")

        report(0.05, "decoding")
        wav = wav_key = None
        frames: list = []
        frames_key = None
        if video is not None:
            digest, media = self._load(video, timings, cached)
            notices += media.notices
            if media.kind != "video":
                notices.append(f"{Path(video).name} is an {media.kind} file, not a video: it is used as "
                               f"{'one frame without audio' if media.kind == 'image' else 'audio without frames'}")
            wav, wav_key = media.audio, digest
            frames, frames_key = media.frames, digest
        if audio is not None:
            digest, media = self._load(audio, timings, cached)
            notices += [n for n in media.notices if "video" not in n]
            if media.audio is None:
                raise InferenceError(f"{Path(audio).name}: has no audio")
            wav, wav_key = media.audio, digest
        if image is not None:
            digest, media = self._load(image, timings, cached)
            if not media.frames:
                raise InferenceError(f"{Path(image).name}: no image could be decoded")
            notices += [n for n in media.notices if "audio" not in n]
            frames, frames_key = media.frames, digest
        if wav is None and (video is not None or audio is not None):
            notices.append("no audio in the input: the audio modality is missing")
        if not frames and (video is not None or image is not None):
            notices.append("no frames in the input: the video modality is missing")

        feats: dict[str, np.ndarray | None] = {m: None for m in MODALITIES}
        face_share = None

        video_job = None
        if frames and use["video"]:
            blur = int(degrade.blur)

            def video_branch() -> tuple[np.ndarray, float]:
                crops, share = self._cached_step(self._derived, ("faces", frames_key), "video", "faces",
                                                 lambda: crop_faces(frames), timings, cached)
                feat = self._cached_step(
                    self._features, ("video", frames_key, blur), "video", "video features",
                    lambda: self.extractors["video"].extract(crops if blur == 1 else blur_frames(crops, blur)),
                    timings, cached)
                return feat, share

            # faces and the video encoder run beside the audio work (Whisper and OpenCV release the GIL)
            video_job = _POOL.submit(video_branch)

        if wav is not None and use["audio"]:
            report(0.15, "audio features")
            snr = degrade.snr_db
            if snr is None:
                noisy = lambda: wav
            else:
                noisy = lambda: add_noise(wav, snr, seed=DEGRADE_SEED)
            feats["audio"] = self._cached_step(
                self._features, ("audio", wav_key, snr), "audio", "audio features",
                lambda: self.extractors["audio"].extract(noisy()), timings, cached)

        if text is None and wav is not None and use["text"]:
            asr = self.extractors["audio"]
            if asr.can_transcribe:
                report(0.35, "transcribing the speech")
                said = self._cached_step(self._derived, ("transcript", wav_key), "audio", "transcribe",
                                         lambda: asr.transcribe(wav), timings, cached)
                text, more = clean_text(said)
                notices += more
                if text is None:
                    notices.append("no speech recognised: the text modality is missing")
            else:
                notices.append(f"no transcript given and {asr.name!r} cannot transcribe: the text modality is missing")
        elif text is None and use["text"]:
            notices.append("no transcript: the text modality is missing")
        elif text is None and wav is not None:  # text switched off: report the transcript if it is known
            text, _ = clean_text(self._derived.get(("transcript", wav_key)))

        used_text = text
        if text is not None and use["text"]:
            if degrade.word_drop > 0:
                used_text = drop_words(text, degrade.word_drop, seed=DEGRADE_SEED)
                if not used_text:
                    notices.append("word drop-out removed every word: the text modality is missing")
            if used_text:
                report(0.55, "text features")
                feats["text"] = self._cached_step(
                    self._features, ("text", _digest(used_text)), "text", "text features",
                    lambda: self.extractors["text"].extract(used_text), timings, cached)

        if video_job is not None:
            report(0.8, "video features")
            feats["video"], face_share = video_job.result()
            if face_share == 0.0:
                notices.append("no face found in any frame: whole frames are used")
        elif frames:
            known = self._derived.get(("faces", frames_key))  # the video switched off: report what is known
            face_share = known[1] if known is not None else None

        available = {"audio": wav is not None, "text": text is not None, "video": bool(frames)}
        used = {m: feats[m] is not None for m in MODALITIES}
        if not any(used.values()):
            off = [m for m in MODALITIES if available[m] and not use[m]]
            if off and not any(available[m] and use[m] for m in MODALITIES):
                raise InferenceError(f"every modality the input has is switched off ({', '.join(off)}): "
                                     f"tick at least one")
            raise InferenceError("no modality left to fuse: the input has no usable audio, text or video"
                                 + (f" ({'; '.join(notices)})" if notices else ""))

        report(0.95, "fusion")
        t = time.perf_counter()
        out = self.fuse(feats)
        timings["fusion"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        return Prediction(
            probabilities=out["probabilities"], top=max(out["probabilities"], key=out["probabilities"].get),
            valence=out["valence"], weights=out["weights"], sigma=out["sigma"], attention=out["attention"],
            used=used, available=available, transcript=used_text if available["text"] else None,
            face_share=face_share, timings={k: round(v, 4) for k, v in timings.items()}, cached=cached,
            notices=list(dict.fromkeys(notices)),
        )

    def fuse(self, feats: dict[str, np.ndarray | None]) -> dict[str, Any]:
        """Run the ensemble on one sample's features (None = missing)."""
        batch: dict[str, torch.Tensor] = {}
        present = []
        for m, key in zip(MODALITIES, ("audios", "texts", "videos")):
            dim = self.info.features[m]["dim"]
            vec = feats.get(m)
            present.append(vec is not None)
            batch[key] = torch.from_numpy(np.asarray(vec, np.float32).reshape(1, dim)) if vec is not None \
                else torch.zeros(1, dim)
        batch["present"] = torch.tensor([present])
        with torch.inference_mode():
            out = self.ensemble(batch)
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
