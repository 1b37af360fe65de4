"""Media decoded ahead of the models: ``DecodeAhead`` hands out each file's ``Sources`` in order, in
batches, decoded (and its faces cropped) by a pool of worker processes while the caller runs the
models on the previous ones (``workers=0``: in this process, when asked for).

Workers ignore Ctrl-C (the caller handles it and closes the pool) and end themselves when their
parent process is gone (a killed run leaves none behind). A file that crashes a worker process
fails alone: the pool is started again and the other files are decoded again.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from .faces import crop_faces
from .featurize import Sources
from .media import load_media

PARENT_POLL_S = 0.5  # how often a worker checks that its parent still runs


@dataclass
class Decoded:
    """One file's outcome: its decoded sources or the reason it failed, and the seconds decoding took."""

    key: Any  # what the caller passed with the path
    path: Path
    sources: Sources | None
    error: str | None  # "<ExceptionType>: message"
    seconds: float


def describe(err: BaseException) -> str:
    """How a failure is reported: "<ExceptionType>: message"."""
    return f"{type(err).__name__}: {err}"


def decode(path: Path, load_options: dict[str, Any], wanted: tuple[str, ...], faces: bool
           ) -> tuple[Sources | None, str | None, float]:
    """``load_media`` (``load_options``), ``Sources.from_media`` and, with ``faces``, the face crops:
    (sources, None, seconds), or (None, the failure, seconds). Never raises (a worker's exception
    might not survive the trip back)."""
    start = time.perf_counter()
    try:
        sources = Sources.from_media(load_media(path, **load_options), wanted=wanted)
        if faces and sources.frames:
            sources.faces = crop_faces(sources.frames)
        return sources, None, time.perf_counter() - start
    except Exception as err:  # noqa: BLE001  (every failure is the file's, reported by the caller)
        return None, describe(err), time.perf_counter() - start


def _worker_init(parent: int) -> None:
    """Ignore Ctrl-C, use one OpenCV thread (the workers are the parallelism), and exit when the parent ends."""
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="armer-parent-watch").start()


class DecodeAhead:
    """The files of ``items`` ((key, path) pairs) decoded in order and handed out in batches.

    With ``workers`` > 0 a process pool decodes up to ``ahead`` files beyond those handed out
    (``items`` is read that far ahead), and ``batches(size)`` hands out the files already decoded when
    asked (at least one, at most ``size``), so the models never wait for a whole batch while the
    workers catch up; with 0, each batch is ``size`` files decoded here when it is asked for. Use it as
    a context manager: leaving it stops the workers. ``waiting`` says whether any file is to come.
    """

    def __init__(self, items: Iterable[tuple[Any, Path]], workers: int, ahead: int, load_options: dict[str, Any],
                 wanted: tuple[str, ...], faces: bool) -> None:
        self.source = iter(items)
        self.args = (load_options, wanted, faces)
        self.ahead = max(1, ahead) if workers > 0 else 1
        self.pool = _Pool(workers, self.args) if workers > 0 else None
        self.pending: deque[tuple[Any, Path, Future | None]] = deque()
        self._fill()

    @property
    def waiting(self) -> bool:
        return bool(self.pending)

    def _fill(self) -> None:
        while len(self.pending) < self.ahead:
            item = next(self.source, None)
            if item is None:
                return
            key, path = item
            self.pending.append((key, path, self.pool.submit(path) if self.pool is not None else None))

    def _take(self) -> Decoded:
        key, path, future = self.pending.popleft()
        outcome = decode(path, *self.args) if future is None else self.pool.result(future, path, self.pending)
        self._fill()
        return Decoded(key, path, *outcome)

    def batches(self, size: int) -> Iterator[list[Decoded]]:
        while self.pending:
            batch = [self._take()]
            while len(batch) < size and self.pending and (self.pending[0][2] is None or self.pending[0][2].done()):
                batch.append(self._take())
            yield batch

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.close()


class _Pool:
    """The worker processes, started again when a file crashes one."""

    def __init__(self, workers: int, args: tuple[Any, ...]) -> None:
        self.workers, self.args = workers, args
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: the parent holds model threads (OpenMP, CTranslate2) that a fork would copy in a broken state
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(),))

    def submit(self, path: Path) -> Future:
        return self.executor.submit(decode, path, *self.args)

    def result(self, future: Future, path: Path, pending: deque[tuple[Any, Path, Future]]
               ) -> tuple[Sources | None, str | None, float]:
        """The future's result. When the pool broke (a worker died), the file is decoded again alone in a
        fresh pool: if that breaks too, the file is the culprit and fails; the pending files are resubmitted."""
        try:
            return future.result()
        except BrokenProcessPool:
            self.restart()
        try:
            outcome = self.submit(path).result()
        except BrokenProcessPool as err:
            outcome = (None, f"decoding crashed its worker process ({describe(err)})", 0.0)
            self.restart()
        for i, (key, other, _) in enumerate(pending):
            pending[i] = (key, other, self.submit(other))
        return outcome

    def restart(self) -> None:
        self.close()
        self.executor = self._start()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
