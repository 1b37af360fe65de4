"""Media decoding with PyAV: 16 kHz mono audio and frames sampled at a set rate.

Limits are applied with a notice, never silently: clips longer than ``max_seconds`` are
truncated, frames larger than ``max_side`` are downscaled, and at most ``max_frames``
evenly spaced frames are kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from .base import SAMPLE_RATE

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SUPPORTED_EXTS = VIDEO_EXTS + AUDIO_EXTS + IMAGE_EXTS
MAX_SIDE = 640  # frames whose longer side exceeds this are downscaled (load_media's default)


class MediaError(ValueError):
    """A media file that cannot be used, with the file and the problem in the message."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{Path(path).name}: {problem}")


@dataclass
class Media:
    """A decoded clip: what the extractors read."""

    path: str | None  # the file it came from (None when built in memory)
    kind: str  # "video", "audio" or "image", from the file extension
    audio: np.ndarray | None  # (N,) float32 mono at 16 kHz; None without an audio stream
    frames: list[np.ndarray] = field(default_factory=list)  # RGB uint8 (H, W, 3), possibly empty
    frame_times: list[float] = field(default_factory=list)  # seconds, one per frame
    duration: float = 0.0  # seconds of media used (after truncation); 0 for an image
    notices: list[str] = field(default_factory=list)  # limits applied and streams missing, for the user

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE


def media_kind(path: str | os.PathLike) -> str:
    """"video", "audio" or "image" from the extension; MediaError for anything else."""
    ext = Path(path).suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in IMAGE_EXTS:
        return "image"
    raise MediaError(path, f"unsupported format {ext or '(no extension)'!r}; supported: {' '.join(SUPPORTED_EXTS)}")


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down to a longer side of at most ``max_side`` (even sizes), else as they are."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def load_media(path: str | os.PathLike, max_seconds: float | None = 60.0, fps: float = 2.0,
               max_frames: int = 32, max_side: int | None = MAX_SIDE, require: Iterable[str] = ()) -> Media:
    """Decode a video, audio or image file.

    Args:
        path: the file; its extension decides how it is read (``SUPPORTED_EXTS``).
        max_seconds: longer clips are truncated to this many seconds (None: no limit).
        fps: frames are sampled at this rate (one frame per ``1 / fps`` seconds).
        max_frames: at most this many frames are kept, evenly spaced over the clip.
        max_side: frames whose longer side exceeds this are downscaled (None: never).
        require: modalities ("audio", "video") the file must have; MediaError otherwise.

    Raises:
        MediaError: missing, empty, corrupt, zero-length or unsupported media, or a required
        stream that is missing.
    """
    if fps <= 0 or max_frames < 1 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(f"need fps > 0, max_frames >= 1 and max_seconds > 0 (or None); "
                         f"got fps={fps}, max_frames={max_frames}, max_seconds={max_seconds}")
    require = set(require)
    unknown = require - {"audio", "video"}
    if unknown:
        raise ValueError(f"require must name 'audio' and/or 'video', got {sorted(unknown)}")
    p = Path(path)
    kind = media_kind(p)
    if not p.exists():
        raise MediaError(p, "file not found")
    if p.is_dir():
        raise MediaError(p, "is a folder, not a media file")
    if p.stat().st_size == 0:
        raise MediaError(p, "zero-length file (0 bytes)")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise MediaError(p, f"cannot be decoded: corrupt or not a real {p.suffix} file ({err})") from err
    with container:
        media = _decode(container, p, kind, max_seconds, fps, max_frames, max_side)
    if media.audio is None and not media.frames:
        raise MediaError(p, "zero-length media: no audio samples and no video frames could be decoded")
    if "audio" in require and media.audio is None:
        raise MediaError(p, "has no audio stream" if kind != "audio" else "its audio stream is empty")
    if "video" in require and not media.frames:
        raise MediaError(p, "has no video stream (an audio-only file)" if kind == "audio" else "has no video frames")
    return media


def _decode(container: "av.container.InputContainer", path: Path, kind: str, max_seconds: float | None,
            fps: float, max_frames: int, max_side: int | None) -> Media:
    a_stream = container.streams.audio[0] if container.streams.audio and kind != "image" else None
    # an audio file's "video" stream is cover art, not frames of the clip
    v_stream = container.streams.video[0] if container.streams.video and kind != "audio" else None
    notices: list[str] = []
    if kind == "video" and a_stream is None:
        notices.append("no audio stream: the audio modality is missing")
    if kind == "video" and v_stream is None:
        notices.append("no video stream: the video modality is missing")
    if a_stream is None and v_stream is None:
        raise MediaError(path, "has neither an audio nor a video stream")

    limit = None if max_seconds is None else int(round(max_seconds * SAMPLE_RATE))
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    n_samples = 0
    frames: list[np.ndarray] = []
    times: list[float] = []
    next_t, step = 0.0, 1.0 / fps
    audio_done, video_done = a_stream is None, v_stream is None
    truncated = False
    size_note = None
    n_decoded = 0

    def add_audio(decoded: Iterable["av.AudioFrame"]) -> None:
        nonlocal n_samples, audio_done, truncated
        for out in decoded:
            chunk = out.to_ndarray().reshape(-1).astype(np.float32)
            if limit is not None and n_samples + chunk.size > limit:
                chunk, audio_done, truncated = chunk[:limit - n_samples], True, True
            chunks.append(chunk)
            n_samples += chunk.size
            if audio_done:
                return

    try:
        for packet in container.demux([s for s in (a_stream, v_stream) if s is not None]):
            if packet.stream is a_stream and not audio_done:
                for af in packet.decode():
                    add_audio(resampler.resample(af))
                    if audio_done:
                        break
            elif packet.stream is v_stream and not video_done:
                for vf in packet.decode():
                    rate = float(v_stream.average_rate or 25)
                    t = float(vf.time) if vf.time is not None else n_decoded / rate
                    n_decoded += 1
                    if max_seconds is not None and t >= max_seconds:
                        video_done, truncated = True, True
                        break
                    if t + 1e-6 >= next_t:
                        w, h = scaled_size(vf.width, vf.height, max_side)
                        if (w, h) != (vf.width, vf.height):
                            size_note = (f"frames downscaled from {vf.width}x{vf.height} to {w}x{h} "
                                         f"(max_side={max_side})")
                        frames.append(vf.reformat(width=w, height=h, format="rgb24").to_ndarray())
                        times.append(t)
                        next_t = max(next_t + step, t + step / 2)
                    if kind == "image":
                        video_done = True
                        break
            if audio_done and video_done:
                break
        if a_stream is not None and not audio_done:
            add_audio(resampler.resample(None))  # flush the resampler's buffered tail
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise MediaError(path, f"decoding failed: corrupt or truncated file ({err})") from err

    audio = np.concatenate(chunks) if n_samples > 0 else None
    if a_stream is not None and audio is None:
        notices.append("the audio stream holds no samples: the audio modality is missing")
    if v_stream is not None and not frames:
        notices.append("the video stream holds no frames: the video modality is missing")
    total = container.duration / av.time_base if container.duration else None
    if truncated:
        length = f"{total:.1f} s" if total else f"longer than {max_seconds:g} s"
        notices.append(f"clip is {length} long: only the first {max_seconds:g} s are used (max_seconds)")
    if size_note:
        notices.append(size_note)
    if len(frames) > max_frames:
        keep = np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))
        notices.append(f"{len(frames)} frames sampled at {fps:g} fps: kept {len(keep)} evenly spaced (max_frames)")
        frames, times = [frames[i] for i in keep], [times[i] for i in keep]
    if kind == "image":
        duration = 0.0
    else:
        seconds = [n_samples / SAMPLE_RATE]
        if total:
            seconds.append(min(total, max_seconds) if max_seconds is not None else total)
        duration = max(seconds)
    return Media(str(path), kind, audio, frames, times, duration, notices)


def load_audio(path: str | os.PathLike, max_seconds: float | None = 60.0) -> np.ndarray:
    """The 16 kHz mono waveform of an audio or video file; MediaError when it has none."""
    return load_media(path, max_seconds=max_seconds, max_frames=1, require=("audio",)).audio


def load_frames(path: str | os.PathLike, max_seconds: float | None = 60.0, fps: float = 2.0,
                max_frames: int = 32, max_side: int | None = MAX_SIDE) -> list[np.ndarray]:
    """Sampled RGB frames of a video or image file; MediaError when it has none."""
    return load_media(path, max_seconds, fps, max_frames, max_side, require=("video",)).frames
