"""Live mode: a stream of audio chunks and camera frames in, one fused prediction per update interval.

    stream = LiveStream(predictor, LiveConfig(window=4.0, interval=1.0))
    stream.add_audio(samples, t)        # 16 kHz mono float32, the chunk that ends at time t (seconds)
    stream.add_frame(rgb, t)            # kept at ``fps`` frames per second
    update = stream.update(now)         # the last ``window`` seconds, featurized and fused

Each update featurizes the last ``window`` seconds through ``Predictor.predict_sources``, the clip-to-
features path and caches of uploads. What overlapping windows share is done once: frames are decoded
and downscaled as they arrive, each kept frame's face is detected once, audio chunks are decoded once
(by the caller). Only frames with a face in view feed the video modality; when the newest frames
show none, the video is missing (weight 0) and the state says "no face in view". A silent window,
a stream that stopped and a stream that never started leave their modality missing with a state
saying so; the other modalities go on. One update runs at a time per stream: an update asked for
while one runs is skipped, never queued, and the next result counts the windows skipped.

``replay`` feeds a file through the same path, for ``python -m armer.predict --live`` and the tests.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from armer.constants import MODALITIES
from armer.extractors.base import SAMPLE_RATE
from armer.extractors.degrade import Degrade, InputError
from armer.extractors.faces import crop_faces
from armer.extractors.featurize import Sources, content_digest
from armer.extractors.media import MAX_SIDE, scaled_size
from armer.predict.predictor import InferenceError, Prediction, Predictor, checked_use

LIVE = "live"  # the state of a modality that is fused
_STREAM_IDS = itertools.count(1)  # frame cache keys name their stream
_AUDIO_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="armer-live-audio")  # every stream's


@dataclass(frozen=True)
class LiveConfig:
    """How the live input is windowed (seconds unless named otherwise)."""

    window: float = 4.0  # seconds featurized per update
    interval: float = 1.0  # seconds between updates
    fps: float = 2.0  # camera frames kept per second (each one's face detected once)
    audio_every: int = 4  # audio and transcript refreshed every this many updates (reused in between); 4 =
    # the default window over the interval: each second of audio is encoded and transcribed once
    audio_in_background: bool = False  # refresh them beside the updates (live: no update waits for the
    # audio encoder; each uses the newest audio window encoded) rather than inline (deterministic: replays)
    transcribe: bool = True  # recognise the speech of each window when no transcript is typed
    stale_after: float = 3.0  # a stream with no new data for this long has stopped
    silence_dbfs: float = -50.0  # a window whose audio RMS is below this (dB full scale) is silence
    history: float = 60.0  # seconds of results kept for the chart

    def __post_init__(self) -> None:
        for name in ("window", "interval", "fps", "stale_after", "history"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise InputError(f"live {name} must be a positive number, got {value!r}")
        every = self.audio_every
        if not (_is_number(every) and math.isfinite(every) and every == int(every) and every >= 1):
            raise InputError(f"live audio_every must be a whole number >= 1, got {every!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class LiveUpdate:
    """One window's result. ``prediction`` is None when no modality could be fused (see ``states``)."""

    t: float  # the window's end (the stream's clock)
    window: tuple[float, float]  # the seconds covered
    prediction: Prediction | None
    states: dict[str, str]  # per modality: "live", or why it is missing ("no face in view", "silence", ...)
    message: str  # what the page says when nothing could be fused, else ""
    skipped: int  # windows skipped since the previous update (the machine could not keep up)
    lag_s: float  # seconds from the window's end to this result
    cpu_s: float  # process CPU seconds the update took (every thread of the process, meanwhile)
    frames: int  # camera frames in the window
    faces: int  # of which show a face
    audio_age_s: float | None = None  # how long before ``t`` the audio window fused ended (audio_every, background)

    def to_json(self) -> dict[str, Any]:
        p = self.prediction
        return {
            "t": round(self.t, 3), "window": [round(x, 3) for x in self.window], "states": self.states,
            "top": p and p.top, "probabilities": p and p.probabilities, "valence": p and p.valence,
            "weights": p.weights if p else dict.fromkeys(MODALITIES, 0.0), "sigma": p and p.sigma,
            "transcript": p and p.transcript, "frames": self.frames, "faces": self.faces,
            "skipped": self.skipped, "lag_s": round(self.lag_s, 4), "cpu_s": round(self.cpu_s, 4),
            "audio_age_s": None if self.audio_age_s is None else round(self.audio_age_s, 3),
            "timings": p and p.timings, "cached": p and p.cached, "notices": p.notices if p else [],
            "message": self.message,
        }


@dataclass
class _Frame:
    t: float
    number: int
    image: np.ndarray
    crop: np.ndarray | None = None  # the face crop, once detected
    face: bool | None = None  # None until detected


@dataclass
class _AudioWindow:
    samples: np.ndarray
    key: str
    update: int  # the update that took it
    t: float  # and its time: the window's end


class LiveStream:
    """One viewer's live input (buffers, face crops, history) and its windowed predictions.

    ``add_audio`` / ``add_frame`` may be called from other threads than ``update``."""

    def __init__(self, predictor: Predictor, config: LiveConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or LiveConfig()
        self.id = next(_STREAM_IDS)
        self._audio: deque[tuple[float, np.ndarray]] = deque()  # (arrival time, samples)
        self._audio_samples = 0
        self._frames: deque[_Frame] = deque()
        self._frame_numbers = itertools.count()
        self._last: dict[str, float | None] = {"audio": None, "video": None}  # when data last came
        self._first: float | None = None  # when the first data came (windows start no earlier)
        self._buffers = threading.Lock()
        self._busy = threading.Lock()
        self._audio_window: _AudioWindow | None = None  # the audio window the updates use (refreshed every audio_every)
        self._audio_job: Future | None = None  # the next one, being encoded in the background
        self.updates = 0
        self.skipped = 0  # windows skipped so far
        self._pending_skips = 0
        self._last_update: float | None = None
        self.history: deque[dict[str, Any]] = deque()  # {"t", "top", "weights"} of the last ``history`` seconds

    # --- input -------------------------------------------------------------------------------

    def add_audio(self, samples: np.ndarray, t: float) -> None:
        """Append mono float32 samples at 16 kHz, the chunk ending at time ``t``."""
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        if chunk.size == 0:
            return
        if not np.isfinite(chunk).all():
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)
        keep = int(self.config.window * SAMPLE_RATE)
        with self._buffers:
            self._audio.append((t, chunk))
            self._audio_samples += chunk.size
            while self._audio and self._audio_samples - self._audio[0][1].size >= keep:
                self._audio_samples -= self._audio.popleft()[1].size
            self._last["audio"] = t
            self._first = t - chunk.size / SAMPLE_RATE if self._first is None else self._first

    def add_frame(self, image: np.ndarray, t: float) -> bool:
        """Keep an RGB uint8 frame seen at time ``t`` if it is due at ``fps``; returns whether it was kept."""
        frame = np.asarray(image)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.size == 0:
            raise InputError(f"a camera frame must be an RGB image (height, width, 3), got shape {frame.shape}")
        with self._buffers:
            self._last["video"] = t
            self._first = t if self._first is None else self._first
            if self._frames and t - self._frames[-1].t < 0.9 / self.config.fps:
                return False
            self._frames.append(_Frame(t, next(self._frame_numbers), _fit(frame)))
            while self._frames and self._frames[0].t <= t - self.config.window:
                self._frames.popleft()
        return True

    # --- windows -----------------------------------------------------------------------------

    def skip(self) -> None:
        """Count a window that was not computed (the caller fell behind); the next result reports it."""
        with self._buffers:
            self._pending_skips += 1

    def update(self, now: float, use: dict[str, bool] | None = None, degrade: Degrade | None = None,
               transcript: str | None = None, transcribe: bool | None = None) -> LiveUpdate | None:
        """The prediction for the window ending at ``now``; None when an update is already running
        (this window is skipped and counted in the next result). ``transcript`` (typed) stands in for
        the recognised speech; ``transcribe`` overrides ``config.transcribe``."""
        if not self._busy.acquire(blocking=False):
            self.skip()
            return None
        try:
            return self._update(now, checked_use(use), degrade or Degrade(), transcript,
                                self.config.transcribe if transcribe is None else bool(transcribe))
        finally:
            self._busy.release()

    def _update(self, now: float, use: dict[str, bool], degrade: Degrade, transcript: str | None,
                transcribe: bool) -> LiveUpdate:
        cfg = self.config
        wall, cpu = time.perf_counter(), time.process_time()
        with self._buffers:
            skipped, self._pending_skips = self._pending_skips, 0  # updates refused since the last one
            # chunks that arrived within the window (speech from before a pause is not the window's)
            recent = [chunk for t, chunk in self._audio if t > now - cfg.window]
            audio = np.concatenate(recent)[-int(cfg.window * SAMPLE_RATE):] if recent else None
            frames = [f for f in self._frames if f.t > now - cfg.window]
            last = dict(self._last)
        if self._last_update is not None:  # or the windows the gap since the last update held
            skipped = max(skipped, round((now - self._last_update) / cfg.interval) - 1)
        self.skipped += skipped
        self._last_update = now
        self.updates += 1
        states = {m: LIVE for m in MODALITIES}
        states["audio"], audio = self._audio_state(audio, last["audio"], now)
        states["video"], seen = self._video_state(frames, last["video"], now)
        typed = (transcript or "").strip()
        if typed:
            states["text"] = LIVE
        elif not transcribe:
            states["text"] = "transcription off (type a transcript)"
        elif states["audio"] != LIVE:
            states["text"] = f"nothing to transcribe ({states['audio']})"
        for m in MODALITIES:
            if not use[m]:
                states[m] = "switched off"

        sources, audio_age = Sources(), None
        recognise = transcribe and not typed and use["text"]
        if audio is not None and (use["audio"] or recognise):
            window = self._audio_for(audio, now, degrade, use["audio"], recognise)
            sources.audio, sources.audio_key = window.samples, window.key
            audio_age = now - window.t
        else:  # no audio, or none of it needed: nothing encoded
            self._audio_window = self._audio_job = None
        if seen:
            sources.frames = [f.image for f in seen]
            sources.faces = ([f.crop for f in seen], 1.0)
            sources.frames_key = f"live{self.id}:" + ",".join(str(f.number) for f in seen)
        prediction, message = None, ""
        if sources.audio is None and not sources.frames and not typed:
            message = "waiting for input: " + "; ".join(f"{m}: {s}" for m, s in states.items() if s != LIVE)
        else:
            try:
                prediction = self.predictor.predict_sources(sources, typed or None, use, degrade, transcribe)
            except InferenceError as err:
                message = str(err)
        if prediction is not None:
            for m in MODALITIES:
                if states[m] == LIVE and not prediction.used[m]:
                    states[m] = "no speech recognised" if m == "text" else "missing"
            self.history.append({"t": now, "top": prediction.top, "weights": dict(prediction.weights)})
        while self.history and self.history[0]["t"] < now - cfg.history:
            self.history.popleft()
        start = max(now - cfg.window, min(now, self._first if self._first is not None else now))
        return LiveUpdate(now, (start, now), prediction, states, message, skipped,
                          time.perf_counter() - wall, time.process_time() - cpu, len(frames), len(seen), audio_age)

    def _audio_for(self, audio: np.ndarray, now: float, degrade: Degrade, encode: bool,
                   transcribe: bool) -> _AudioWindow:
        """The audio window this update fuses: the newest one, every ``audio_every`` updates (and always
        the first); with ``audio_in_background`` the newest one encoded, while the next is encoded
        beside the updates (its features and transcript land in the predictor's caches). A window
        finished in the background is picked up before deciding whether the next one is due, so the
        background refreshes come every ``audio_every`` updates too (counted from the update that took
        the window), not as soon as the worker is free."""
        background = self.config.audio_in_background
        job = self._audio_job
        if background and job is not None and job.done():
            self._audio_window, self._audio_job = job.result(), None
        due = self._audio_window is None or self.updates - self._audio_window.update >= self.config.audio_every
        if not due:
            return self._audio_window
        fresh = _AudioWindow(audio, content_digest(audio.tobytes()), self.updates, now)
        if not background or self._audio_window is None:
            self._audio_window = fresh
            return fresh
        if self._audio_job is None:  # else this stream's last window is still being encoded: the next update
            # after it is done takes the newest window
            self._audio_job = _AUDIO_WORKER.submit(self._encode, fresh, degrade, encode, transcribe)
        return self._audio_window

    def _encode(self, window: _AudioWindow, degrade: Degrade, encode: bool, transcribe: bool) -> _AudioWindow:
        """Fill the caches with ``window``'s audio features and/or its transcript: the background job."""
        sources = Sources(audio=window.samples, audio_key=window.key)
        with contextlib.suppress(InferenceError):  # e.g. nothing recognised: the update says so when it fuses
            self.predictor.predict_sources(sources, None, {"audio": encode, "text": transcribe, "video": False},
                                           degrade, transcribe)
        return window

    def _audio_state(self, audio: np.ndarray | None, last: float | None, now: float) -> tuple[str, np.ndarray | None]:
        if last is None:
            return "no microphone stream", None
        if now - last > self.config.stale_after:
            return f"microphone stopped {now - last:.0f} s ago", None
        if audio is None:
            return "no microphone audio in the window", None
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        if 20 * math.log10(max(rms, 1e-12)) < self.config.silence_dbfs:
            return "silence", None
        return LIVE, audio

    def _video_state(self, frames: list[_Frame], last: float | None, now: float) -> tuple[str, list[_Frame]]:
        """The video state and the frames with a face; faces found once per frame, kept for later windows."""
        if last is None:
            return "no camera stream", []
        if now - last > self.config.stale_after:
            return f"camera stopped {now - last:.0f} s ago", []
        if not frames:
            return "no camera frames in the window", []
        todo = [f for f in frames if f.face is None]
        if todo:
            with self.predictor.lock("video"):
                for f in todo:
                    crops, share = crop_faces([f.image])
                    f.crop, f.face = crops[0], share > 0
        newest = [f for f in frames if f.t > frames[-1].t - self.config.interval]
        if not any(f.face for f in newest):
            return "no face in view", []
        return LIVE, [f for f in frames if f.face]


def _fit(frame: np.ndarray) -> np.ndarray:
    """An RGB uint8 copy of ``frame`` downscaled as ``load_media`` decodes (to ``MAX_SIDE``)."""
    rgb = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
    size = scaled_size(rgb.shape[1], rgb.shape[0], MAX_SIDE)
    return rgb if size == (rgb.shape[1], rgb.shape[0]) else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


class LiveStreams:
    """The live streams of several viewers by session id: at most ``limit`` at once; a stream with no
    input and no update for ``idle`` seconds is dropped (its viewer left)."""

    def __init__(self, predictor: Predictor, config: LiveConfig | None = None, limit: int = 4,
                 idle: float = 120.0) -> None:
        self.predictor = predictor
        self.config = config or LiveConfig()
        self.limit = limit
        self.idle = idle
        self._streams: dict[str, tuple[LiveStream, list[float]]] = {}  # session -> (stream, [last used])
        self._lock = threading.Lock()

    def get(self, session: str, now: float) -> LiveStream:
        """The session's stream, started on first use; InputError when ``limit`` viewers are live."""
        with self._lock:
            for key, (_, used) in list(self._streams.items()):
                if now - used[0] > self.idle:
                    del self._streams[key]
            if session not in self._streams:
                if len(self._streams) >= self.limit:
                    raise InputError(f"the live view already serves {self.limit} viewers: try again in a minute "
                                     f"(uploads still work)")
                self._streams[session] = (LiveStream(self.predictor, self.config), [now])
            stream, used = self._streams[session]
            used[0] = now
            return stream

    def drop(self, session: str) -> None:
        with self._lock:
            self._streams.pop(session, None)

    def __len__(self) -> int:
        return len(self._streams)


def replay(predictor: Predictor, path: str, config: LiveConfig | None = None, use: dict[str, bool] | None = None,
           degrade: Degrade | None = None, transcript: str | None = None, realtime: bool = False,
           max_seconds: float | None = 600.0) -> Iterator[LiveUpdate]:
    """Feed a clip through a ``LiveStream`` as if it were live: its audio and frames arrive at their
    times, and an update runs at every ``interval``. ``realtime`` paces the arrivals with the clock
    (an update that takes too long makes later windows skipped, as live); otherwise as fast as the
    updates run, none skipped."""
    from armer.extractors import MediaError, load_media

    cfg = config or LiveConfig()
    try:
        media = load_media(path, max_seconds=max_seconds, fps=cfg.fps, max_frames=1_000_000)
    except MediaError as err:
        raise InferenceError(str(err)) from err
    stream = LiveStream(predictor, cfg)
    audio = media.audio if media.audio is not None else np.zeros(0, np.float32)
    frames = list(zip(media.frame_times, media.frames))
    fed_samples, next_frame = 0, 0
    start = time.perf_counter()
    ticks = max(1, math.floor(media.duration / cfg.interval + 1e-9))
    for tick in range(1, ticks + 1):
        t = tick * cfg.interval
        if realtime:
            ahead = start + t - time.perf_counter()
            if ahead < 0:  # behind: this window's time has passed while the last update ran
                stream.skip()
                continue
            time.sleep(ahead)
        upto = min(audio.size, int(round(t * SAMPLE_RATE)))
        if upto > fed_samples:
            stream.add_audio(audio[fed_samples:upto], t)
            fed_samples = upto
        while next_frame < len(frames) and frames[next_frame][0] <= t:
            stream.add_frame(frames[next_frame][1], frames[next_frame][0])
            next_frame += 1
        result = stream.update(t, use, degrade, transcript)
        if result is not None:
            if realtime:
                result.lag_s = time.perf_counter() - (start + t)
            yield result
