"""From a clip to one utterance-level feature vector per modality."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from .base import Extractor
from .faces import crop_faces
from .media import Media, load_media
from .registry import create_extractor

DEFAULT_TRANSCRIBER = "whisper-base"


@dataclass
class ClipFeatures:
    """Features of one clip, and how they were obtained."""

    features: dict[str, np.ndarray | None]  # modality -> (D,) float32, None when the input lacks it
    transcript: str | None  # the text the text backend read (given or transcribed)
    face_share: float  # share of sampled frames with a detected face (0 without frames)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    notices: list[str] = field(default_factory=list)  # limits applied, modalities missing
    backends: dict[str, str] = field(default_factory=dict)  # modality -> backend name (folder stem)


def _backend(spec: str | Extractor, modality: str) -> Extractor:
    return spec if isinstance(spec, Extractor) else create_extractor(spec, modality=modality)


def extract_features(media_or_path: Media | str | os.PathLike, backends: dict[str, str | Extractor],
                     transcript: str | None = None, transcriber: str | Extractor | None = DEFAULT_TRANSCRIBER,
                     **load_kwargs) -> ClipFeatures:
    """Extract the features of every modality in ``backends`` that the clip has.

    Args:
        media_or_path: a decoded ``Media`` or a media file (decoded with ``load_media(**load_kwargs)``).
        backends: modality ("audio", "text", "video") -> backend name, hub id, folder or instance.
        transcript: the text of the clip; when None and the audio backend can transcribe
            (else ``transcriber`` can), the speech is transcribed.
        transcriber: audio backend used for speech recognition when the audio backend cannot
            transcribe; None never transcribes with another model.
    """
    unknown = set(backends) - {"audio", "text", "video"}
    if unknown:
        raise ValueError(f"backends must be keyed by 'audio', 'text', 'video'; got {sorted(unknown)}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    media = media_or_path if isinstance(media_or_path, Media) else load_media(media_or_path, **load_kwargs)
    if not isinstance(media_or_path, Media):
        timings["decode"] = time.perf_counter() - t0
    notices = list(media.notices)
    exts = {m: _backend(b, m) for m, b in backends.items() if b is not None}
    features: dict[str, np.ndarray | None] = {m: None for m in exts}
    face_share = 0.0
    for m, present in (("audio", media.audio is not None), ("video", bool(media.frames))):
        if m in exts and not present and not any(f"{m} modality is missing" in n for n in notices):
            notices.append(f"the {media.kind} has no {m}: the {m} modality is missing")

    if "audio" in exts and media.audio is not None:
        t = time.perf_counter()
        features["audio"] = exts["audio"].extract(media.audio)
        timings["audio"] = time.perf_counter() - t

    if "text" in exts:
        missing = "no transcript given and the clip has no audio to transcribe"
        if transcript is None and media.audio is not None:
            asr = exts.get("audio")
            if asr is None or not asr.can_transcribe:
                asr = _backend(transcriber, "audio") if transcriber is not None else None
            if asr is not None and asr.can_transcribe:
                t = time.perf_counter()
                transcript = asr.transcribe(media.audio)
                timings["transcribe"] = time.perf_counter() - t
                missing = "no speech recognised"
            else:
                missing = "no transcript given and no speech recognition backend"
        elif transcript is not None:
            missing = "the transcript is empty"
        if transcript is not None and transcript.strip():
            t = time.perf_counter()
            features["text"] = exts["text"].extract(transcript)
            timings["text"] = time.perf_counter() - t
        else:
            notices.append(f"{missing}: the text modality is missing")

    if "video" in exts and media.frames:
        t = time.perf_counter()
        crops, face_share = crop_faces(media.frames)
        timings["faces"] = time.perf_counter() - t
        if face_share == 0.0:
            notices.append("no face found in any frame: whole frames are used")
        t = time.perf_counter()
        features["video"] = exts["video"].extract(crops)
        timings["video"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - t0
    return ClipFeatures(features, transcript, face_share, timings, notices, {m: e.name for m, e in exts.items()})
