"""The small interface every feature backend implements, and the errors they raise."""

from __future__ import annotations

import contextlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from armer.constants import MODALITIES  # noqa: F401  (re-exported by armer.extractors)
from armer.device import DeviceSpec, device_name

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000  # every audio backend reads 16 kHz mono float32
T = TypeVar("T")
R = TypeVar("R")


class MissingWeightsError(RuntimeError):
    """A backend's weights are neither in a local folder nor reachable on the hub."""


class Extractor(ABC):
    """One feature backend: ``extract(x)`` -> float32 vector of shape ``(dim,)``.

    ``x`` is, by modality: audio, a 1-D float32 waveform at 16 kHz; text, a string; video, a
    list of RGB uint8 (H, W, 3) face crops or frames. ``extract_batch(xs)`` does many inputs at
    once (one at a time unless the backend batches). Weights load lazily on the first
    ``extract`` (or ``load``), once per instance; ``create_extractor`` keeps one instance per
    name (and options) per process.

    ``device`` (``armer.device``: auto, cpu, cuda, cuda:N; default cpu) is where the weights run;
    outputs are float32 numpy arrays on the CPU whatever the device. A backend with ``half`` runs
    its model under float16 autocast on CUDA (``autocast()``); on the CPU it runs in float32.
    """

    name: str  # MERBench feature-folder stem: features go to <root>/<name>-UTT/<clip>.npy
    modality: str  # "audio", "text" or "video"
    can_transcribe: bool = False  # audio backends that also do speech recognition
    half: bool = False  # float16 autocast on CUDA (backends whose recipe is safe in half precision)
    device_name: str = "cpu"  # set by __init__: "cpu" or "cuda:N"

    def __init__(self, device: DeviceSpec = "cpu") -> None:
        self._loaded = False
        self._lock = threading.Lock()
        self.device_name = device_name(device)  # "cpu" or "cuda:N", resolved now: a missing GPU fails here

    @property
    def device(self) -> torch.device:
        """The torch device the weights run on."""
        import torch

        return torch.device(self.device_name)

    def autocast(self) -> contextlib.AbstractContextManager:
        """float16 autocast on CUDA for a ``half`` backend; otherwise nothing changes (float32)."""
        if not (self.half and self.device_name.startswith("cuda")):
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cuda", dtype=torch.float16)

    @property
    @abstractmethod
    def dim(self) -> int:
        """Output dimension (known without loading the weights where possible)."""

    @abstractmethod
    def _load(self) -> None:
        """Load weights; raise MissingWeightsError when they cannot be found."""

    @abstractmethod
    def _extract(self, x: Any) -> np.ndarray:
        """Backend-specific extraction on validated input."""

    def load(self) -> "Extractor":
        """Load the weights now (otherwise done on first use); returns self."""
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def extract(self, x: Any) -> np.ndarray:
        """Utterance-level feature of one input, float32 of shape (dim,)."""
        x = self._validate(x)
        self.load()
        return self._checked(self._extract(x))

    def extract_batch(self, xs: Sequence[Any]) -> list[np.ndarray]:
        """Features of many inputs at once: one float32 (dim,) vector per input, each equal to its
        ``extract`` within 1e-4. A backend that can batch (padding and attention masks, frames of
        many clips in one pass) overrides ``_extract_batch``; the default runs one at a time. An
        invalid input raises, as ``extract`` does, for the whole call: callers that must let a bad
        input fail alone use ``extract_each``."""
        xs = [self._validate(x) for x in xs]
        if not xs:
            return []
        self.load()
        outs = self._extract_batch(xs)
        if len(outs) != len(xs):
            raise RuntimeError(f"backend {self.name!r} returned {len(outs)} features for {len(xs)} inputs")
        return [self._checked(out) for out in outs]

    def _extract_batch(self, xs: list[Any]) -> Sequence[np.ndarray]:
        """Backend-specific extraction of many validated inputs (default: one at a time)."""
        return [self._extract(x) for x in xs]

    def _checked(self, out: Any) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32).reshape(-1)
        if out.shape != (self.dim,):
            raise RuntimeError(f"backend {self.name!r} returned shape {out.shape}, expected ({self.dim},)")
        return out

    def transcribe(self, waveform: np.ndarray) -> str:
        """Speech recognition; only backends with ``can_transcribe`` implement it."""
        raise NotImplementedError(f"backend {self.name!r} cannot transcribe speech")

    def transcribe_batch(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """``transcribe`` of many waveforms (one at a time unless the backend batches)."""
        return [self.transcribe(w) for w in waveforms]

    def _validate(self, x: Any) -> Any:
        if self.modality == "audio":
            return check_waveform(x, self.name)
        if self.modality == "text":
            if not isinstance(x, str):
                raise TypeError(f"backend {self.name!r} expects a str, got {type(x).__name__}")
            return x
        if not isinstance(x, (list, tuple)) or len(x) == 0:
            raise ValueError(f"backend {self.name!r} expects a non-empty list of RGB uint8 frames")
        for i, frame in enumerate(x):
            ok = isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
            if not ok:
                shape = getattr(frame, "shape", None)
                raise ValueError(f"backend {self.name!r}: frame {i} is not an RGB uint8 (H, W, 3) array "
                                 f"(shape {shape})")
        return list(x)

    def __repr__(self) -> str:
        device = "" if self.device_name == "cpu" else f", device={self.device_name!r}"
        return f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}{device})"


def run_each(batch: Callable[[list[T]], Sequence[R]] | None, one: Callable[[T], R], items: Sequence[T]
             ) -> list[R | Exception]:
    """``batch(items)``, or, when it raises (or is None), ``one(item)`` for each item: per item a
    result or the exception that failed it, so that a bad input fails alone and the others keep
    their results."""
    items = list(items)
    if not items:
        return []
    if batch is not None:
        try:
            results = list(batch(items))
        except Exception:  # noqa: BLE001  (redone one at a time below: the error goes to the bad item)
            results = []
        if len(results) == len(items):
            return results
    out: list[R | Exception] = []
    for item in items:
        try:
            out.append(one(item))
        except Exception as err:  # noqa: BLE001  (the item's own failure, returned to the caller)
            out.append(err)
    return out


def extract_each(extractor: Extractor, xs: Sequence[Any]) -> list[np.ndarray | Exception]:
    """``extractor.extract_batch(xs)``; when the batch fails, each input again alone: per input its
    feature or the exception that failed it (see ``run_each``)."""
    return run_each(extractor.extract_batch, extractor.extract, xs)


def check_waveform(x: Any, name: str) -> np.ndarray:
    """A 1-D, non-empty, finite float32 waveform, or a ValueError naming the backend."""
    wav = np.asarray(x, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"backend {name!r} expects a 1-D mono waveform at 16 kHz, got shape {wav.shape}")
    if wav.size == 0:
        raise ValueError(f"backend {name!r} got an empty waveform")
    if not np.isfinite(wav).all():
        raise ValueError(f"backend {name!r} got a waveform with NaN or infinite samples")
    return wav


def weights_root() -> Path | None:
    """``$ARMER_WEIGHTS``: a folder holding one sub-folder of weights per backend name."""
    root = os.environ.get("ARMER_WEIGHTS")
    return Path(root) if root else None


def resolve_source(name: str, default: str, path: str | os.PathLike | None) -> str:
    """Where a hub backend reads its weights: an explicit ``path``, else ``$ARMER_WEIGHTS/<name>``
    when that folder exists, else the hub id ``default``."""
    if path is not None:
        return str(path)
    root = weights_root()
    if root is not None and (root / name).is_dir():
        return str(root / name)
    return default


def missing_weights(name: str, source: str, err: BaseException, hint: str = "") -> MissingWeightsError:
    """The error every backend raises for weights it cannot load."""
    src = Path(source).expanduser()
    if src.exists():
        where = f"local folder {source!r}"
    elif src.is_absolute() or source.startswith((".", "~")):
        where = f"local folder {source!r} (it does not exist)"
    else:
        where = f"hub id {source!r} (no hub access, or not cached)"
    how = hint or (
        f"On a machine with hub access run `huggingface-cli download {source} --local-dir DIR` (or "
        f"`save_pretrained(DIR)`), copy DIR here, then pass it: create_extractor({name!r}, path=DIR), "
        f"create_extractor(DIR), `python -m armer.extractors --<modality> DIR`, or put it at $ARMER_WEIGHTS/{name}."
    )
    return MissingWeightsError(f"backend {name!r}: cannot load weights from {where}: {err}. {how}")


def folder_stem(name_or_path: str) -> str:
    """MERBench folder stem of a hub id or folder: its last path component."""
    return Path(str(name_or_path).rstrip("/\\")).name
