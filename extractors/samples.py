"""Redistributable sample media: a public-domain face photograph, synthesised speech, and a
PyAV writer that muxes them into a clip (for tests and the demo's example clips)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .base import SAMPLE_RATE

# extension -> (video codec, audio codec)
CODECS = {
    ".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"), ".mkv": ("libx264", "aac"), ".avi": ("mpeg4", "mp3"),
    ".webm": ("libvpx-vp9", "libopus"), ".wav": (None, "pcm_s16le"), ".flac": (None, "flac"),
    ".mp3": (None, "mp3"), ".ogg": (None, "libopus"), ".m4a": (None, "aac"),
}


def face_image() -> np.ndarray:
    """scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain): RGB uint8 (512, 512, 3)."""
    from skimage import data

    return data.astronaut()


def synthesize_speech(text: str, voice: str = "en-us", words_per_minute: int = 150) -> np.ndarray:
    """Speech from Debian's ``espeak-ng`` as a 16 kHz mono float32 waveform."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install -y espeak-ng)")
    wav = subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "--stdout", text],
                         check=True, capture_output=True).stdout
    with av.open(io.BytesIO(wav)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)


def write_clip(path: str | os.PathLike, frames: list[np.ndarray] | None = None, fps: int = 10,
               audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE) -> Path:
    """Encode RGB uint8 frames and/or a mono float waveform into a media file; the codecs
    follow the extension (``CODECS``)."""
    path = Path(path)
    vcodec, acodec = CODECS[path.suffix.lower()]
    if frames and vcodec is None:
        raise ValueError(f"{path.suffix} holds audio only")
    with av.open(str(path), "w") as out:
        v = a = None
        if frames:
            v = out.add_stream(vcodec, rate=fps)
            h, w = frames[0].shape[:2]
            v.width, v.height, v.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        if audio is not None:
            rate = 48_000 if acodec == "libopus" else sample_rate
            a = out.add_stream(acodec, rate=rate)
            a.layout = "mono"
        if v is not None:
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:v.height, :v.width]), format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                for packet in v.encode(frame):
                    out.mux(packet)
            for packet in v.encode():
                out.mux(packet)
        if a is not None:
            pcm = np.clip(np.asarray(audio, dtype=np.float32), -1, 1).reshape(1, -1)  # (channels, samples)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="flt", layout="mono")
            frame.sample_rate = sample_rate
            # the encoder re-chunks and resamples to its own frame size, format and rate
            for packet in [*a.encode(frame), *a.encode()]:
                out.mux(packet)
    return path
