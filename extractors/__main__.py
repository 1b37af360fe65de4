"""Write MERBench feature folders for a folder (or list) of clips.

    python -m armer.extractors clips/ --out features/
    python -m armer.extractors clips/ --out features/ --audio chinese-hubert-large --video clip-vit-large-patch14
    python -m armer.extractors clips/ --out features/ --device cuda     # on the GPU (auto: CUDA when there is one)
    python -m armer.extractors clips/ --out features/ --batch_size 1 --decode_workers 0   # one clip at a time
    python -m armer.extractors clips/ --out features/ --ray HEAD:6379   # on a Ray cluster (pip install 'armer[ray]')
    python -m armer.extractors --list

Each backend writes ``<out>/<name>-UTT/<clip>.npy`` (shape (D,)). With no backend options the
offline defaults are used and every modality an input has is extracted: a video gives audio,
text (from its transcribed speech) and video features, an audio file audio and text, an image
video. Clips whose features all exist are skipped; failures are reported at the end (and in
``<out>/failures.tsv``) instead of stopping the run. ``<out>/extract_log.jsonl`` records per clip
the transcript, face share, timings and notices; ``<out>/transcripts.csv`` the transcripts.

Clips go through the models ``--batch_size`` at a time (``featurize_many``: each clip gets its
one-at-a-time features within 1e-4, and a bad clip fails alone), while ``--decode_workers``
processes decode the next clips and crop their faces. Records are written as each clip finishes
and features atomically, so an interrupted run (Ctrl-C, a kill) loses at most the batch in
progress: rerun the same command to resume. On a rerun, existing feature files are checked and a
clip whose files are truncated or corrupt is extracted again.

``--ray [ADDRESS]`` runs the same extraction on a Ray cluster (``extractors/ray_extract.py``) and
writes the same files from this process; it resumes the same way.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from armer.device import add_device_argument

from . import (
    DEFAULT_EXTRACTORS,
    MODALITIES,
    SUPPORTED_EXTS,
    ClipFeatures,
    Extractor,
    create_extractor,
    featurize_many,
    list_extractors,
)
from .featurize import DEFAULT_TRANSCRIBER
from .media import MAX_SIDE, media_kind
from .prefetch import DecodeAhead, Decoded, describe
from .registry import extractor_spec

TEXT_COLUMNS = ("english", "chinese", "sentence", "text", "transcript", "utterance")
KIND_MODALITIES = {"video": ("audio", "text", "video"), "audio": ("audio", "text"), "image": ("video",)}
TMP_SUFFIX = ".tmp"  # temporary files are hidden ``.<name>.<pid>.tmp``: never matched by ``*.npy``
INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C
DEFAULT_BATCH = 8
DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 2) // 2))  # 1 on 2 cores: the models keep the other busy
LOCAL_RAY = "local"  # --ray without an address


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m armer.extractors", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="media files and/or folders (searched recursively)")
    p.add_argument("--file-list", help="text file with one media path per line (relative paths: to the list's folder)")
    p.add_argument("--out", help="root of the MERBench feature folders")
    for m in MODALITIES:
        p.add_argument(f"--{m}", default=DEFAULT_EXTRACTORS[m], metavar="NAME",
                       help=f"{m} backend: registered name, hub id or model folder; 'none' skips {m} "
                            f"(default: {DEFAULT_EXTRACTORS[m]})")
    p.add_argument("--transcripts", help="CSV with a 'name' column and a text column (english, chinese, sentence, "
                                         "text, transcript or utterance): used instead of speech recognition")
    p.add_argument("--no-asr", action="store_true", help="never transcribe speech (text only from --transcripts)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longer clips are truncated (default 60)")
    p.add_argument("--fps", type=float, default=2.0, help="frame sampling rate (default 2)")
    p.add_argument("--max-frames", type=int, default=32, help="at most this many frames per clip (default 32)")
    p.add_argument("--max-side", type=int, default=MAX_SIDE,
                   help=f"larger frames are downscaled (default {MAX_SIDE})")
    p.add_argument("--overwrite", action="store_true", help="re-extract clips whose features exist")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH,
                   help=f"clips per model pass (default {DEFAULT_BATCH}; 1: one clip at a time)")
    p.add_argument("--decode_workers", type=int, default=DEFAULT_WORKERS,
                   help="processes that decode the media and crop the faces ahead of the models "
                        f"(default {DEFAULT_WORKERS}; 0: in this process, beside the models; with --ray, Ray tasks decode)")
    add_device_argument(p)
    ray = p.add_argument_group("on a Ray cluster (pip install 'armer[ray]'; docs/extractors.md)")
    ray.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                     help="extract with Ray Data: decoding in Ray tasks, the models in a pool of Ray actors, the files "
                          "written here as by a plain run. Without ADDRESS: the Ray that RAY_ADDRESS or `ray start` "
                          "on this machine started, else a new local one; ADDRESS: a running cluster (HEAD:6379 or "
                          "auto). The clips and this checkout must be at the same paths on every node")
    ray.add_argument("--ray_actors", type=int, default=None, metavar="N",
                     help="at most N model actors (default: one per GPU they can have, else half the cluster's CPUs)")
    ray.add_argument("--ray_gpus", type=float, default=None, metavar="G",
                     help="GPUs per model actor, 0.5 puts two on a GPU (default: 1 when the cluster has GPUs and "
                          "--device is not cpu, else 0: the models on CPUs)")
    p.add_argument("--list", action="store_true", help="list the registered backends and exit")
    return p.parse_args(argv)


def find_media(inputs: list[str], file_list: str | None) -> list[Path]:
    """Media files from files, folders (recursive) and a list file, in a stable order."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_EXTS)
        else:
            paths.append(p)  # missing or unsupported files are reported as failures
    if file_list:
        base = Path(file_list).parent
        for line in Path(file_list).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                p = Path(line.strip())
                paths.append(p if p.is_absolute() else base / p)
    return paths


def read_transcripts(path: str) -> dict[str, str]:
    """name -> transcript from a MERBench-style CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = {c.lower(): c for c in reader.fieldnames or []}
        if "name" not in cols:
            raise SystemExit(f"--transcripts {path}: no 'name' column (columns: {reader.fieldnames})")
        text_col = next((cols[c] for c in TEXT_COLUMNS if c in cols), None)
        if text_col is None:
            raise SystemExit(f"--transcripts {path}: no text column among {TEXT_COLUMNS} "
                             f"(columns: {reader.fieldnames})")
        return {row[cols["name"]]: row[text_col] or "" for row in reader}


def print_backends() -> None:
    for m in MODALITIES:
        print(f"{m}:")
        for name in list_extractors(m):
            spec = extractor_spec(name)
            dim = spec.dim if spec.dim is not None else create_extractor(name).dim
            tag = "offline" if spec.offline else "hub/folder"
            default = " (default)" if DEFAULT_EXTRACTORS[m] == name else ""
            print(f"  {name:<24} {dim:>5}-d  {tag:<10} {spec.description}{default}")
    print("Any Hugging Face hub id or local model folder also works (MERBench recipe for its modality).")


def load_weights(backends: list[Extractor | None]) -> None:
    """Load the backends' weights now; one that fails is left to fail each clip, with its message."""
    for backend in backends:
        try:
            if backend is not None:
                backend.load()
        except Exception:  # noqa: BLE001,S110  (raised again, per clip, where the backend is used)
            pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print_backends()
        return 0
    if not args.out or not (args.inputs or args.file_list):
        print("error: give inputs (files, folders or --file-list) and --out; see --help", file=sys.stderr)
        return 2
    if args.batch_size < 1 or args.decode_workers < 0:
        print("error: --batch_size must be at least 1 and --decode_workers at least 0", file=sys.stderr)
        return 2
    runner = run_here
    if args.ray is not None:
        from .ray_extract import RayUnavailable, check_ray_options, run_on_ray

        try:
            check_ray_options(args)  # before any model is built
        except (RayUnavailable, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        runner = run_on_ray
    run = Extraction(args)
    return run.finish(runner(run, args))


def backends_for(names: dict[str, str], asr: bool, device: str) -> tuple[dict[str, Extractor], Extractor | None]:
    """The backends (modality -> instance) and the speech recogniser (None without ASR) of a run;
    the Ray actors build theirs with this too."""
    exts = {m: create_extractor(b, modality=m, device=device) for m, b in names.items()}
    transcriber = None
    if asr:
        transcriber = exts["audio"] if "audio" in exts and exts["audio"].can_transcribe \
            else create_extractor(DEFAULT_TRANSCRIBER, modality="audio", device=device)
    return exts, transcriber


def fill_empty_text(result: ClipFeatures, exts: dict[str, Extractor]) -> None:
    """Give a clip whose speech held no words the text backend's empty-text vector (MERBench stores zeros)."""
    if "text" in exts and result.empty_speech and result.features.get("text") is None:
        result.features["text"] = exts["text"].extract("")


class Extraction:
    """One run over the clips: the backends, the output folders, what is already done, and the records
    and failures written as clips finish. ``run_here`` (this process) and ``ray_extract.run_on_ray``
    (a Ray cluster) both go through it, so they skip, write and report alike."""

    def __init__(self, args: argparse.Namespace) -> None:
        from tqdm import tqdm

        self.args = args
        self.names = {m: getattr(args, m) for m in MODALITIES if getattr(args, m).lower() != "none"}
        self.exts, self.transcriber = backends_for(self.names, not args.no_asr, args.device)
        self.transcripts = read_transcripts(args.transcripts) if args.transcripts else {}
        self.out = Path(args.out)
        self.dirs = {m: self.out / f"{e.name}-UTT" for m, e in self.exts.items()}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.paths = find_media(args.inputs, args.file_list)
        for folder in (self.out, *self.dirs.values()):
            remove_stale_temps(folder)
        self.records = RunRecords(self.out)
        self.failures: list[tuple[str, str]] = []
        self.done = self.skipped = 0
        self.load_options = {"max_seconds": args.max_seconds, "fps": args.fps, "max_frames": args.max_frames,
                             "max_side": args.max_side}
        self.bar = tqdm(total=len(self.paths), desc="extracting", unit="clip")

    def fail(self, path: Path, error: str) -> None:
        self.failures.append((str(path), error))
        self.bar.update()

    def todo(self) -> Iterator[tuple[str, Path]]:
        """The clips to extract, in order: duplicates, unsupported files and clips already done are
        dealt with here (lazily: the plain run's decoding reads ahead)."""
        seen: dict[str, Path] = {}
        for path in self.paths:
            clip = path.stem
            if clip in seen:
                self.fail(path, f"duplicate clip name {clip!r} (also {seen[clip]}); features are keyed by file stem")
                continue
            seen[clip] = path
            try:
                kind = media_kind(path)
            except Exception as err:  # noqa: BLE001  (report every failure, keep going)
                self.fail(path, describe(err))
                continue
            expected = [m for m in KIND_MODALITIES[kind] if m in self.exts
                        and (m != "text" or clip in self.transcripts or self.transcriber is not None)]
            if not self.args.overwrite and expected and len(expected) == sum(  # checks all, removing corrupt ones
                    usable_feature(self.dirs[m] / f"{clip}.npy", self.exts[m].dim) for m in expected):
                self.skipped += 1
                self.bar.update()
                continue
            yield clip, path

    def keep(self, item: Decoded, result: ClipFeatures, seconds: float) -> None:
        """Write one clip's features, transcript and record (held together against Ctrl-C)."""
        fill_empty_text(result, self.exts)
        timings = {"decode": item.seconds, **result.timings, "total": item.seconds + seconds}
        with sigint_deferred():
            if result.transcript is not None:
                self.records.add_transcript(item.key, result.transcript)
            written = []
            for m, vec in result.features.items():  # None for a modality without a backend
                if vec is not None:
                    write_atomic(self.dirs[m] / f"{item.key}.npy", lambda f, v=vec: np.save(f, v))
                    written.append(m)
            self.records.log({"clip": item.key, "path": str(item.path), "written": written,
                              "transcript": result.transcript, "face_share": round(result.face_share or 0.0, 3),
                              "timings": {k: round(v, 3) for k, v in timings.items()}, "notices": result.notices})
            self.done += 1
            self.bar.update()

    def finish(self, interrupted: bool) -> int:
        """Write ``failures.tsv``, say how it went, and return the exit status."""
        self.bar.close()
        fail_file = self.out / "failures.tsv"
        if self.failures:
            fail_file.write_text("".join(f"{p}\t{e}\n" for p, e in self.failures), encoding="utf-8")
        elif fail_file.exists() and not interrupted:
            fail_file.unlink()
        if interrupted:
            print(f"interrupted: {self.done} extracted and kept, {self.skipped} skipped (already done), "
                  f"{len(self.failures)} failed; rerun the same command to resume", file=sys.stderr)
        else:
            print(f"{self.done} extracted, {self.skipped} skipped (already done), {len(self.failures)} failed; "
                  f"features in {', '.join(str(d) for d in self.dirs.values())}")
        for p, e in self.failures:
            print(f"FAILED {p}: {e}", file=sys.stderr)
        return INTERRUPTED if interrupted else 1 if self.failures else 0


def run_here(run: Extraction, args: argparse.Namespace) -> bool:
    """Extract in this process (``--decode_workers`` decoding ahead); True when Ctrl-C stopped it."""
    exts = run.exts
    try:
        # with workers, the faces are cropped there; in this process featurize_many crops them beside the audio
        with DecodeAhead(run.todo(), args.decode_workers, 2 * args.batch_size, run.load_options, wanted=tuple(exts),
                         faces="video" in exts and args.decode_workers > 0) as decoded:
            if decoded.waiting and args.decode_workers > 0:
                load_weights([*exts.values(), run.transcriber])  # while the workers decode the first clips
            for batch in decoded.batches(args.batch_size):
                for item in batch:
                    if item.error is not None:
                        run.fail(item.path, item.error)
                ready = [item for item in batch if item.error is None]
                start = time.perf_counter()
                results = featurize_many([item.sources for item in ready], exts,
                                         [run.transcripts.get(item.key) for item in ready],
                                         transcriber=run.transcriber)
                seconds = (time.perf_counter() - start) / max(len(ready), 1)
                for item, result in zip(ready, results):
                    if isinstance(result, Exception):
                        run.fail(item.path, describe(result))
                    else:
                        run.keep(item, result, seconds)
    except KeyboardInterrupt:
        return True
    return False


class RunRecords:
    """``extract_log.jsonl`` and ``transcripts.csv`` under ``out``, brought up to date as each clip finishes."""

    def __init__(self, out: Path) -> None:
        self.log_path, self.csv_path = out / "extract_log.jsonl", out / "transcripts.csv"
        self._transcripts: dict[str, str] | None = None

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line and push it to disk."""
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add_transcript(self, clip: str, text: str) -> None:
        """Set the clip's transcript and rewrite the CSV atomically (one row per clip, sorted by name)."""
        if self._transcripts is None:
            self._transcripts = read_transcripts(str(self.csv_path)) if self.csv_path.exists() else {}
        self._transcripts[clip] = text
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(["name", "transcript"])
        writer.writerows(sorted(self._transcripts.items()))
        write_atomic(self.csv_path, lambda f: f.write(buf.getvalue().encode("utf-8")))


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a hidden temporary file in its folder and ``os.replace``: it is whole or untouched."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: Path) -> None:
    """Remove temporary files that a killed run (a process no longer running) left in ``folder``."""
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        pid = tmp.name[:-len(TMP_SUFFIX)].rsplit(".", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def feature_problem(path: Path, dim: int) -> str | None:
    """Why a feature file is unusable (unreadable, not shape (dim,), not finite), or None if it is fine."""
    try:
        vec = np.load(path, allow_pickle=False)
        if not isinstance(vec, np.ndarray):
            return "not a single .npy array"
        if vec.shape != (dim,):
            return f"shape {vec.shape}, expected ({dim},)"
        if not np.isfinite(vec).all():
            return "NaN or inf values"
    except Exception as err:  # noqa: BLE001  (truncated, garbage, object or non-numeric arrays)
        return f"unreadable: {type(err).__name__}: {err}"
    return None


def usable_feature(path: Path, dim: int) -> bool:
    """Whether ``path`` holds a usable feature; a corrupt one is removed (and said so) so the clip is redone."""
    if not path.exists():
        return False
    problem = feature_problem(path, dim)
    if problem is not None:
        from tqdm import tqdm  # writes above the progress bar

        tqdm.write(f"{path} is truncated or corrupt ({problem}): removed, the clip is extracted again", file=sys.stderr)
        path.unlink(missing_ok=True)
    return problem is None


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then deliver it."""
    caught: list[tuple[int, Any]] = []
    deferred = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None
    previous = signal.signal(signal.SIGINT, lambda *sig: caught.append(sig)) if deferred else None
    try:
        yield
    finally:
        if deferred:
            signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(*caught[0])


if __name__ == "__main__":
    sys.exit(main())
