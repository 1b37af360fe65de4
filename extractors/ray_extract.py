"""``python -m armer.extractors ... --ray [ADDRESS]``: the extraction CLI's run on a Ray cluster, with Ray Data.

    the clips to extract (``Extraction.todo``: finished ones skipped, corrupt ones removed)
      -> ray.data.from_items: a block per clip (up to MAX_BLOCKS clips)
      -> map(decode_row): Ray tasks decode each clip and crop its faces (``prefetch.decode``, as the
         plain run's decode workers do)
      -> map_batches(Featurizer): a pool of Ray actors, each holding the run's models (loaded once, on a
         GPU when the actor has one), runs ``featurize_many`` on ``--batch_size`` clips at a time
      -> iter_rows, in this process: ``Extraction.keep`` / ``fail`` write the features, records and
         failures exactly as a plain run does (records in the order the clips finish)

One actor pool holds every backend rather than one pool per backend: the text backend reads the
transcript that the recogniser makes of the same clip, so the models of a clip run together, and
``featurize_many`` over all of them is the plain run's own computation (the same features). Only
this process writes; the workers read the clips, so the clips (and, from a checkout, the checkout)
must be at the same paths on every node. A clip whose decoding task or actor crashes three times
is listed as a failure (with the other clips of its block or batch), and the run goes on.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .featurize import featurize_many
from .prefetch import Decoded, decode, describe

if TYPE_CHECKING:
    from .__main__ import Extraction

INSTALL = "pip install 'armer[ray]'"
NO_RESULT = "Ray returned no result for this clip: its task or actor failed (Ray's log says why)"
CRASH_RETRIES = 2  # a clip that keeps crashing its task or actor process fails (Ray Data would retry it forever)
MAX_BLOCKS = 10_000  # a block per clip up to this many clips, then several clips a block


class RayUnavailable(RuntimeError):
    """``--ray`` without Ray Data installed."""


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, imported only for ``--ray`` (Ray is an optional extra)."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RayUnavailable(f"--ray needs Ray Data, which is not installed here ({err}); {INSTALL}") from err
    return ray


def check_ray_options(args: argparse.Namespace) -> None:
    """Ray importable and the --ray_* values sane, before any model is built (RayUnavailable, ValueError)."""
    import_ray()
    if args.ray_actors is not None and args.ray_actors < 1:
        raise ValueError("--ray_actors must be at least 1")
    if args.ray_gpus is not None and args.ray_gpus < 0:
        raise ValueError("--ray_gpus must be at least 0")


def actor_plan(cluster: dict[str, float], args: argparse.Namespace) -> tuple[float, int]:
    """(GPUs per model actor, most actors) for a cluster's resources (``ray.cluster_resources()``)."""
    gpus_total, cpus_total = cluster.get("GPU", 0.0), cluster.get("CPU", 1.0)
    gpus = args.ray_gpus if args.ray_gpus is not None else 1.0 if gpus_total and args.device != "cpu" else 0.0
    if args.ray_actors is not None:
        return gpus, args.ray_actors
    if gpus:
        return gpus, max(1, int(gpus_total // gpus))
    return gpus, max(1, int(cpus_total // 2))  # the other half of the CPUs decode


def decode_row(row: dict[str, Any], load_options: dict[str, Any], wanted: tuple[str, ...], faces: bool
               ) -> dict[str, Any]:
    """A Ray task: decode one clip (``prefetch.decode``); its ``Sources`` pickled, or its failure."""
    import cv2

    cv2.setNumThreads(1)  # the tasks are the parallelism
    sources, error, seconds = decode(Path(row["path"]), load_options, wanted, faces)
    return {**row, "sources": b"" if sources is None else pickle.dumps(sources, protocol=5),
            "error": error or "", "decode_seconds": seconds}


class Featurizer:
    """A Ray actor holding the run's backends, built and loaded once (``backends_for``), on the GPU
    when Ray gave the actor one: ``featurize_many`` on a batch of decoded clips."""

    def __init__(self, names: dict[str, str], asr: bool) -> None:
        import ray

        from .__main__ import backends_for, load_weights

        self.device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPUs
        self.exts, self.transcriber = backends_for(names, asr, self.device)
        load_weights([*self.exts.values(), self.transcriber])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .__main__ import fill_empty_text

        errors = [str(e) for e in batch["error"]]
        ready = [i for i, e in enumerate(errors) if not e]
        start = time.perf_counter()
        results = featurize_many([pickle.loads(batch["sources"][i]) for i in ready], self.exts,
                                 [batch["transcript"][i] or None for i in ready], transcriber=self.transcriber)
        seconds = (time.perf_counter() - start) / max(len(ready), 1)
        kept = [b""] * len(errors)
        for i, result in zip(ready, results):
            if isinstance(result, Exception):
                errors[i] = describe(result)
            else:
                fill_empty_text(result, self.exts)  # here, where the text model is loaded
                kept[i] = pickle.dumps(result, protocol=5)
        return {"key": batch["key"], "path": batch["path"], "decode_seconds": batch["decode_seconds"],
                "error": np.array(errors, dtype=object), "result": np.array(kept, dtype=object),
                "seconds": np.full(len(errors), seconds)}


def run_on_ray(run: Extraction, args: argparse.Namespace) -> bool:
    """Extract ``run``'s clips on Ray (joined, or started and stopped here); True when Ctrl-C stopped it."""
    from .__main__ import LOCAL_RAY

    ray = import_ray()
    started = False
    try:
        items = [{"key": clip, "path": str(path), "transcript": run.transcripts.get(clip) or ""}
                 for clip, path in run.todo()]
        if not items:
            return False
        started = not ray.is_initialized()
        if started:
            ray.init(address=None if args.ray == LOCAL_RAY else args.ray, logging_level=logging.WARNING)
        gpus, actors = actor_plan(ray.cluster_resources(), args)
        if gpus and not ray.cluster_resources().get("GPU"):
            print(f"warning: --ray_gpus {gpus:g} but the cluster has no GPU now: the actors wait for one",
                  file=sys.stderr)
        finished: set[str] = set()
        for row in pipeline(ray, items, run, args, gpus, actors).iter_rows():
            finished.add(row["key"])
            item = Decoded(row["key"], Path(row["path"]), None, row["error"] or None, float(row["decode_seconds"]))
            if item.error is not None:
                run.fail(item.path, item.error)
            else:
                run.keep(item, pickle.loads(row["result"]), float(row["seconds"]))
        for item in items:
            if item["key"] not in finished:
                run.fail(Path(item["path"]), NO_RESULT)
        return False
    except KeyboardInterrupt:
        return True
    finally:
        if started:
            ray.shutdown()


def pipeline(ray: Any, items: list[dict[str, Any]], run: Extraction, args: argparse.Namespace, gpus: float,
             actors: int) -> Any:
    """The Ray Data dataset: the clips decoded by tasks, then featurized by the actor pool."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI has its own
    ctx.max_errored_blocks = -1  # a failed clip is listed (NO_RESULT), not the end of the run
    wanted = tuple(run.exts)
    # a clip per block (up to MAX_BLOCKS): a decoding crash takes its block's clips with it
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
    with warnings.catch_warnings():  # Ray Data has no named parameters for the retries (ray_remote_args)
        warnings.simplefilter("ignore")
        ds = ds.map(decode_row, fn_args=(run.load_options, wanted, "video" in wanted), num_cpus=1,
                    max_retries=CRASH_RETRIES)
        return ds.map_batches(Featurizer, fn_constructor_args=(run.names, not args.no_asr),
                              batch_size=args.batch_size, batch_format="numpy", num_cpus=1, num_gpus=gpus or None,
                              compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                              max_task_retries=CRASH_RETRIES)
