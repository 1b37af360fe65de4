"""From a clip to one utterance-level feature vector per modality: the one path that the extraction
CLI (``python -m armer.extractors``), the predictor (``armer.predict``, the demo) and the benchmark
builder (``armer.benchmark build``) share.

    Sources.from_media(load_media(path))  or  Sources.combine(video=..., audio=..., image=...)
        -> featurize(sources, extractors, transcript, use, degrade, steps) -> ClipFeatures
    [sources, ...] -> featurize_many(sources_list, extractors, transcripts, ...) -> [ClipFeatures | Exception, ...]

``featurize_many`` cleans the transcripts (or transcribes the speech), crops the faces, applies the
degradations and runs each modality's encoder, each model step once for a batch of clips
(``Extractor.extract_batch``): the extraction CLI's path, and the benchmark builder's (whose inputs
come degraded, faces cropped and sentences verbatim: ``clean_transcripts=False``). ``featurize`` is
``featurize_many`` of one clip. Each clip's steps go through its ``Steps`` runner, which times them
and, given a cache, answers a repeat of the same input without recomputing it: that is how the demo
re-runs only the fusion when a modality is toggled.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from armer.constants import MODALITIES

from .base import Extractor, run_each
from .degrade import Degrade, InputError
from .faces import crop_faces
from .media import Media

DEFAULT_TRANSCRIBER = "whisper-base"  # the extraction CLI's speech recogniser when the audio backend has none
MAX_TRANSCRIPT_WORDS = 1000  # longer transcripts are cut (MiniLM reads 256 tokens anyway)
MAX_TRANSCRIPT_CHARS = 10_000  # cut first, before any other work: one 5-million-character "word" is still cut
NO_AUDIO_TO_TRANSCRIBE = "no transcript given and the clip has no audio to transcribe: the text modality is missing"
_VIDEO_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="armer-video")

T = TypeVar("T")


def clean_text(text: str | bytes | None) -> tuple[str | None, list[str]]:
    """A usable transcript: bytes decoded (invalid UTF-8 replaced), cut to MAX_TRANSCRIPT_CHARS
    characters before anything else, lone surrogates and control characters removed, at most
    MAX_TRANSCRIPT_WORDS words. Blank -> None. Returns (text, notices)."""
    notices = []
    if text is None:
        return None, notices
    from_bytes = isinstance(text, bytes)
    if from_bytes:
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise InputError(f"transcript must be text, got {type(text).__name__}")
    length = len(text)
    text = text[:MAX_TRANSCRIPT_CHARS]
    if from_bytes and "\ufffd" in text:
        notices.append("the transcript is not valid UTF-8: undecodable bytes were replaced")
    if length > MAX_TRANSCRIPT_CHARS:
        notices.append(f"the transcript has {length} characters: only the first {MAX_TRANSCRIPT_CHARS} are used")
    fixed = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> '?'
    if fixed != text:
        notices.append("the transcript held invalid characters (lone surrogates): they were replaced")
    fixed = "".join(c if c.isprintable() or c in "\n\t" else " " for c in fixed)
    words = fixed.split()
    if not words:
        return None, notices
    if len(words) > MAX_TRANSCRIPT_WORDS:
        count = f"at least {len(words)}" if length > MAX_TRANSCRIPT_CHARS else str(len(words))
        notices.append(f"the transcript has {count} words: only the first {MAX_TRANSCRIPT_WORDS} are used")
        words = words[:MAX_TRANSCRIPT_WORDS]
    return " ".join(words), notices


def content_digest(*parts: bytes | str) -> str:
    """A cache key for text or bytes."""
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def nbytes(value: Any) -> int:
    """The memory a cached value holds: numpy arrays (a view counts the whole array it keeps alive,
    once), and the lists, tuples, dicts and dataclasses around them; anything else by ``sys.getsizeof``."""
    seen: set[int] = set()

    def size(v: Any) -> int:
        if isinstance(v, np.ndarray):
            while isinstance(v.base, np.ndarray):
                v = v.base
            if id(v) in seen:
                return 0
            seen.add(id(v))
            return v.nbytes
        if isinstance(v, (list, tuple)):
            return sys.getsizeof(v) + sum(size(x) for x in v)
        if isinstance(v, dict):
            return sys.getsizeof(v) + sum(size(k) + size(x) for k, x in v.items())
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return sys.getsizeof(v) + sum(size(getattr(v, f.name)) for f in dataclasses.fields(v))
        return sys.getsizeof(v)

    return size(value)


class LRUCache:
    """A thread-safe least-recently-used cache, bounded by entries (``capacity``) and/or by bytes
    (``max_bytes``, as ``nbytes`` counts them). A value larger than ``max_bytes`` is not kept."""

    def __init__(self, capacity: int | None = None, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.nbytes = 0  # bytes held (counted only with max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key: Hashable, value: Any) -> None:
        size = nbytes(value) if self.max_bytes is not None else 0
        with self._lock:
            if key in self._items:
                self.nbytes -= self._items.pop(key)[1]
            if self.max_bytes is not None and size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self.nbytes += size
            while (self.capacity is not None and len(self._items) > self.capacity) or \
                    (self.max_bytes is not None and self.nbytes > self.max_bytes):
                self.nbytes -= self._items.popitem(last=False)[1][1]

    def values(self) -> list[Any]:
        """The values held, least recently used first."""
        with self._lock:
            return [value for value, _ in self._items.values()]

    def __len__(self) -> int:
        return len(self._items)


class Steps:
    """Runs the steps of one clip (one ``featurize`` call): times each one and answers a step whose key
    is in its cache from there (listed in ``cached``). Keys are tuples whose first item names the kind of
    value ("audio", "text", "video" features, "faces", "transcript"); ``caches`` maps a kind to its
    cache (none: computed every time). One step per lock group runs at a time, so two requests never
    extract the same input twice nor oversubscribe the cores. ``on_start(name)`` announces a step
    that is about to be computed (progress bars)."""

    def __init__(self, caches: dict[str, LRUCache] | None = None, locks: dict[str, threading.Lock] | None = None,
                 on_start: Callable[[str], None] | None = None) -> None:
        self.caches = caches or {}
        self.locks = locks if locks is not None else {}
        self.on_start = on_start or (lambda name: None)
        self.timings: dict[str, float] = {}
        self.cached: list[str] = []

    def peek(self, key: tuple) -> Any:
        """The cached value of ``key``, or None."""
        cache = self.caches.get(key[0])
        return cache.get(key) if cache is not None else None

    def run(self, name: str, key: tuple, compute: Callable[[], T], group: str = "") -> T:
        value = self.peek(key)
        if value is not None:
            self.cached.append(name)
            return value
        with self.locks.setdefault(group or name, threading.Lock()):
            value = self.peek(key)
            if value is not None:
                self.cached.append(name)
                return value
            self.on_start(name)
            start = time.perf_counter()
            value = compute()
            self.timings[name] = time.perf_counter() - start
            self.put(key, value)
            return value

    def put(self, key: tuple, value: Any) -> None:
        """Cache ``value`` under ``key`` (when its kind has a cache)."""
        if key[0] in self.caches:
            self.caches[key[0]].put(key, value)


@dataclass
class Sources:
    """The decoded inputs of one clip; each keyed by its content for the step cache."""

    audio: np.ndarray | None = None  # mono float32 waveform at SAMPLE_RATE
    frames: list[np.ndarray] = field(default_factory=list)  # RGB uint8 frames
    audio_key: str = ""
    frames_key: str = ""
    notices: list[str] = field(default_factory=list)  # limits applied, streams missing
    faces: tuple[list[np.ndarray], float] | None = None  # crop_faces(frames) when done ahead (decode workers)

    @classmethod
    def from_media(cls, media: Media, wanted: tuple[str, ...] = MODALITIES) -> Sources:
        """One decoded file; a notice for each modality in ``wanted`` that it lacks."""
        notices = list(media.notices)
        for m, present in (("audio", media.audio is not None), ("video", bool(media.frames))):
            if m in wanted and not present and not any(f"{m} modality is missing" in n for n in notices):
                notices.append(f"the {media.kind} has no {m}: the {m} modality is missing")
        return cls(media.audio, media.frames, notices=notices)

    @classmethod
    def combine(cls, video: tuple[str, str, Media] | None = None, audio: tuple[str, str, Media] | None = None,
                image: tuple[str, str, Media] | None = None) -> Sources:
        """A video's audio track and frames, with ``audio`` replacing the track and ``image`` the frames.
        Each argument is (file name, content key, decoded file)."""
        out = cls()
        if video is not None:
            name, key, media = video
            out.notices += media.notices
            if media.kind != "video":
                use = "one frame without audio" if media.kind == "image" else "audio without frames"
                out.notices.append(f"{name} is an {media.kind} file, not a video: it is used as {use}")
            out.audio, out.audio_key, out.frames, out.frames_key = media.audio, key, media.frames, key
        if audio is not None:
            name, key, media = audio
            out.notices += [n for n in media.notices if "video" not in n]
            if media.audio is None:
                raise InputError(f"{name}: has no audio")
            out.audio, out.audio_key = media.audio, key
        if image is not None:
            name, key, media = image
            if not media.frames:
                raise InputError(f"{name}: no image could be decoded")
            out.notices += [n for n in media.notices if "audio" not in n]
            out.frames, out.frames_key = media.frames, key
        if out.audio is None and (video is not None or audio is not None):
            out.notices.append("no audio in the input: the audio modality is missing")
        if not out.frames and (video is not None or image is not None):
            out.notices.append("no frames in the input: the video modality is missing")
        return out


@dataclass
class ClipFeatures:
    """Features of one clip, and how they were obtained. Per-modality dicts are keyed audio/text/video."""

    features: dict[str, np.ndarray | None]  # (D,) float32; None when missing, switched off or not asked for
    available: dict[str, bool]  # modalities the input has (text: a transcript given or recognised)
    transcript: str | None  # the clean transcript before word drop-out (given or recognised)
    text_read: str | None  # the text after word drop-out ("" when every word was dropped); None when text is off
    empty_speech: bool  # speech was transcribed but held no words (MERBench stores zeros for that text)
    face_share: float | None  # share of frames with a detected face; None without frames or when not cropped
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step run (cached steps are absent)
    cached: list[str] = field(default_factory=list)  # steps answered from the cache
    notices: list[str] = field(default_factory=list)  # limits applied, modalities missing


def _no_recogniser(asr: Extractor | None) -> str | None:
    """Why ``asr`` cannot give a transcript (a notice), or None when it can."""
    if asr is None:
        return "no transcript given and speech recognition is off: the text modality is missing"
    if not asr.can_transcribe:
        return f"no transcript given and {asr.name!r} cannot transcribe: the text modality is missing"
    return None


def _recognised(said: str, notices: list[str]) -> tuple[str | None, bool]:
    """The clean transcript of what the recogniser said, and whether it heard no words."""
    text, more = clean_text(said)
    notices += more
    if text is None:
        notices.append("no speech recognised: the text modality is missing")
    return text, text is None


def featurize(sources: Sources, extractors: dict[str, Extractor], transcript: str | bytes | None = None,
              use: dict[str, bool] | None = None, degrade: Degrade | None = None,
              transcriber: Extractor | None = None, steps: Steps | None = None) -> ClipFeatures:
    """Extract the features of every modality in ``extractors`` that the clip has and ``use`` keeps:
    ``featurize_many`` of one clip, raising the exception that fails it.

    Args:
        sources: the decoded clip (``Sources.from_media`` / ``Sources.combine``).
        extractors: modality -> backend instance; a modality without one is not extracted.
        transcript: the text of the clip; blank or None transcribes the speech with ``transcriber``
            (None: the text modality is missing).
        transcriber: the backend that recognises speech (usually the audio backend, when it can).
        use: modality -> switched on (default all on); an extractor still runs the steps another
            modality needs (a transcript for a switched-off text is reported when already known).
        degrade: corruptions applied before encoding (``Degrade``).
        steps: the step runner (timings, cache); a fresh uncached one by default.
    """
    result = featurize_many([sources], extractors, [transcript], use, degrade, transcriber, steps=[steps or Steps()])[0]
    if isinstance(result, Exception):
        raise result
    return result


def featurize_many(sources: list[Sources], extractors: dict[str, Extractor],
                   transcripts: list[str | bytes | None] | None = None, use: dict[str, bool] | None = None,
                   degrade: Degrade | None = None, transcriber: Extractor | None = None,
                   clean_transcripts: bool = True, steps: list[Steps] | None = None) -> list[ClipFeatures | Exception]:
    """``featurize`` for many clips at once: each model step runs once for all of them that it does
    not find in their caches (``extract_batch``, ``transcribe_batch``; a lone clip's ``extract``), the
    face crops and the video encoder beside the audio work. Returns per clip its ``ClipFeatures`` or
    the exception that failed it: a bad clip fails alone (a failed batch is redone one clip at a time).
    ``transcripts`` gives each clip's text (None: transcribe), cleaned by ``clean_text`` unless
    ``clean_transcripts`` is False: then each (a str or None) is encoded as it is, even empty (without
    ``degrade.word_drop`` not even its spaces change), for trusted corpus text (the benchmark's MELD
    sentences, some with C1 control characters that ``clean_text`` would blank). Face crops already in
    ``Sources.faces`` (decode workers, the benchmark's FER faces) are used as they are. ``steps`` gives
    each clip's step runner (fresh uncached ones by default); a step's time is shared out equally
    among the clips it ran for."""
    degrade = degrade or Degrade()
    use = {m: bool((use or {}).get(m, True)) and m in extractors for m in MODALITIES}
    runners = steps if steps is not None else [Steps() for _ in sources]
    clips = [_Clip(src, runner, faces=src.faces) for src, runner in zip(sources, runners, strict=True)]
    for clip, transcript in zip(clips, transcripts if transcripts is not None else [None] * len(clips), strict=True):
        try:
            clip.text, clip.notices = clean_text(transcript) if clean_transcripts else (transcript, [])
        except InputError as err:
            clip.error = err
        clip.notices += clip.sources.notices

    def live(wanted: Callable[[_Clip], bool]) -> list[_Clip]:
        return [c for c in clips if c.error is None and wanted(c)]

    seeing = live(lambda c: bool(c.sources.frames) and use["video"])
    # faces and the video encoder run beside the audio work (Whisper and OpenCV release the GIL)
    video_job = _VIDEO_POOL.submit(_video_branch, seeing, extractors.get("video"), degrade) if seeing else None

    hearing = live(lambda c: c.sources.audio is not None and use["audio"])
    for clip, vec in zip(hearing, _extract("audio", hearing, lambda c: ("audio", c.sources.audio_key, degrade.snr_db),
                                           lambda c: degrade.apply_audio(c.sources.audio), extractors.get("audio"))):
        clip.features["audio"] = clip.keep(vec)

    missing = _no_recogniser(transcriber)
    for clip in live(lambda c: c.text is None and use["text"]):
        if clip.sources.audio is None:
            clip.notices.append(NO_AUDIO_TO_TRANSCRIBE)
        elif missing is not None:
            clip.notices.append(missing)
    speaking = live(lambda c: c.text is None and use["text"] and c.sources.audio is not None) if missing is None else []
    said = _step("transcribe", speaking, lambda c: ("transcript", c.sources.audio_key), lambda c: c.sources.audio,
                 transcriber.transcribe, transcriber.transcribe_batch, group="audio") if speaking else []
    for clip, words in zip(speaking, said):
        if clip.keep(words) is not None:
            clip.text, clip.empty_speech = _recognised(words, clip.notices)
    for clip in live(lambda c: c.text is None and not use["text"] and c.sources.audio is not None):
        clip.text, _ = clean_text(clip.steps.peek(("transcript", clip.sources.audio_key)))  # text off: if known

    reading = live(lambda c: c.text is not None and use["text"])
    for clip in reading:  # a verbatim transcript is encoded as it is, even empty (the text backends give zeros)
        clip.text_read = degrade.apply_text(clip.text) if clean_transcripts or degrade.word_drop else clip.text
        if not clip.text_read and clean_transcripts:
            clip.notices.append("word drop-out removed every word: the text modality is missing")
    reading = [c for c in reading if c.text_read or not clean_transcripts]
    for clip, vec in zip(reading, _extract("text", reading, lambda c: ("text", content_digest(c.text_read)),
                                           lambda c: c.text_read, extractors.get("text"))):
        clip.features["text"] = clip.keep(vec)

    for clip, vec in zip(seeing, video_job.result() if video_job is not None else []):
        clip.features["video"] = clip.keep(vec)  # last: an audio or text error comes first
    return [clip.error if clip.error is not None else clip.result() for clip in clips]


@dataclass(eq=False)
class _Clip:
    """One clip's progress through ``featurize_many``."""

    sources: Sources
    steps: Steps
    faces: tuple[list[np.ndarray], float] | Exception | None = None  # (crops, face share) once known
    text: str | None = None
    notices: list[str] = field(default_factory=list)
    features: dict[str, np.ndarray | None] = field(default_factory=lambda: dict.fromkeys(MODALITIES))
    error: Exception | None = None
    text_read: str | None = None
    empty_speech: bool = False

    def keep(self, value: T | Exception) -> T | None:
        """``value``, or None when it is the exception that failed the clip (the first one is kept)."""
        if isinstance(value, Exception):
            self.error = self.error or value
            return None
        return value

    def result(self) -> ClipFeatures:
        if self.features["video"] is not None:
            face_share = self.faces[1]
            if face_share == 0.0:
                self.notices.append("no face found in any frame: whole frames are used")
        else:  # the video off: report what is known
            known = self.faces or (self.steps.peek(("faces", self.sources.frames_key)) if self.sources.frames else None)
            face_share = known[1] if known is not None else None
        available = {"audio": self.sources.audio is not None, "text": self.text is not None,
                     "video": bool(self.sources.frames)}
        return ClipFeatures(self.features, available, self.text, self.text_read, self.empty_speech, face_share,
                            self.steps.timings, self.steps.cached, list(dict.fromkeys(self.notices)))


def _step(name: str, clips: list[_Clip], key: Callable[[_Clip], tuple], make: Callable[[_Clip], Any],
          one: Callable[[Any], Any], batch: Callable[[list[Any]], Sequence[Any]] | None = None,
          group: str = "") -> list[Any]:
    """Step ``name`` of ``clips``, as ``Steps.run`` runs one clip's: a clip whose runner has ``key(clip)``
    cached is answered from there; the inputs ``make(clip)`` of the others go through ``one``, or all
    at once through ``batch`` when there are several (``run_each``: a failed batch is redone one at a
    time), each clip charged an equal share of the time. Per clip its value or the exception that
    failed it."""
    keys = [key(c) for c in clips]
    values = [c.steps.peek(k) for c, k in zip(clips, keys)]
    todo = [i for i, v in enumerate(values) if v is None]
    if todo:
        with clips[todo[0]].steps.locks.setdefault(group or name, threading.Lock()):
            for i in todo:
                values[i] = clips[i].steps.peek(keys[i])
            todo = [i for i in todo if values[i] is None]
            for i in todo:
                clips[i].steps.on_start(name)
            start = time.perf_counter()
            computed = run_each(batch if len(todo) > 1 else None, one, [make(clips[i]) for i in todo])
            share = (time.perf_counter() - start) / max(1, len(todo))
            for i, value in zip(todo, computed):
                values[i] = value
                clips[i].steps.timings[name] = share
                if not isinstance(value, Exception):
                    clips[i].steps.put(keys[i], value)
    for i, clip in enumerate(clips):
        if i not in todo:
            clip.steps.cached.append(name)
    return values


def _extract(modality: str, clips: list[_Clip], key: Callable[[_Clip], tuple], make: Callable[[_Clip], Any],
             extractor: Extractor | None) -> list[Any]:
    """The "<modality> features" step (``_step``) of ``clips`` through ``extractor``."""
    return _step(f"{modality} features", clips, key, make, extractor.extract, extractor.extract_batch,
                 group=modality) if clips else []


def _video_branch(clips: list[_Clip], extractor: Extractor, degrade: Degrade) -> list[np.ndarray | Exception]:
    """Face crops (``clip.faces``, unless done ahead) and video features of ``clips``: per clip its
    features or the exception that failed it."""
    todo = [c for c in clips if c.faces is None]
    for clip, found in zip(todo, _step("faces", todo, lambda c: ("faces", c.sources.frames_key),
                                       lambda c: c.sources.frames, crop_faces, group="video")):
        clip.faces = found
    done = [c for c in clips if not isinstance(c.faces, Exception)]
    vectors = dict(zip(map(id, done), _extract("video", done, lambda c: ("video", c.sources.frames_key, degrade.blur),
                                               lambda c: degrade.apply_frames(c.faces[0]), extractor)))
    return [vectors.get(id(c), c.faces) for c in clips]
