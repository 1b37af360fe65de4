"""MERBench's cross-validation protocol: one model per fold, folds trained in parallel processes.

Each fold trains on the other folds' samples; every epoch it is scored on its validation split
(emoval picks the best epoch) and on every test corpus (logged). The best model of each fold is
kept; together they form the ensemble whose averaged predictions are the test predictions.
On this 2-core CPU small matrix products run best single-threaded, so folds run side by side
in worker processes (one thread each) rather than one after another with two threads.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from armer import losses
from armer.config import MODALITIES, ModelConfig
from armer.data import Corpus, Dataset
from armer.metrics import emoval, score
from armer.model import Ensemble, RobustBase, create_model

log = logging.getLogger(__name__)

EVAL_BATCH = 1024

@dataclass
class TrainConfig:
    epochs: int = 100
    lr: float = 1e-3
    l2: float = 1e-5  # Adam weight decay (MERBench's --l2)
    batch_size: int = 32
    seed: int = 0
    num_folds: int = 5
    normalize: bool = True  # standardise features with each fold's training statistics
    workers: int = 0  # parallel fold processes; 0 = one per CPU core (at most num_folds)


@dataclass
class TrainResult:
    ensemble: Ensemble  # the best model of each fold
    normalization: list[dict]  # per fold: modality -> {'mean', 'std'}
    best_epochs: list[int]
    best_emovals: list[float]
    history: list[dict] = field(default_factory=list)  # one entry per epoch


def fold_indices(num_samples: int, num_folds: int, seed: int) -> list[np.ndarray]:
    """Seeded random split of the training corpus into `num_folds` validation chunks."""
    if num_samples < num_folds:
        raise ValueError(f"{num_samples} training samples cannot be split into {num_folds} folds")
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(chunk) for chunk in np.array_split(order, num_folds)]


def feature_statistics(corpus: Corpus) -> dict[str, dict[str, list[float]]]:
    """Per-dimension mean and std over the samples (and frames) where a modality is present."""
    stats = {}
    for name, features, present in zip(MODALITIES, corpus.features, corpus.present.T):
        values = features[present]
        if values.ndim == 3:
            values = values[np.abs(values).max(axis=-1) > 0]
        if len(values) < 2:
            mean, std = np.zeros(features.shape[-1]), np.ones(features.shape[-1])
        else:
            mean, std = values.mean(axis=0), values.std(axis=0)
        stats[name] = {"mean": mean.astype(np.float32).tolist(), "std": np.maximum(std, 1e-6).astype(np.float32).tolist()}
    return stats


def to_batch(corpus: Corpus, indices: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    idx = slice(None) if indices is None else indices
    return {
        "audios": torch.from_numpy(corpus.features[0][idx]),
        "texts": torch.from_numpy(corpus.features[1][idx]),
        "videos": torch.from_numpy(corpus.features[2][idx]),
        "present": torch.from_numpy(corpus.present[idx]),
        "emos": torch.from_numpy(corpus.emotions[idx]),
        "vals": torch.from_numpy(corpus.valences[idx]),
        "val_labelled": torch.from_numpy(corpus.valence_labelled[idx]),
    }


@dataclass
class FoldResult:
    fold: int
    state: dict[str, torch.Tensor]  # the best epoch's state_dict
    best_epoch: int
    best_emoval: float
    history: list[dict]


def train_one_fold(
    fold: int, dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray,
    stats: dict | None, model_config: ModelConfig, config: TrainConfig, threads: int,
) -> FoldResult:
    """Train one fold's model for `config.epochs` epochs and keep its best epoch by emoval."""
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed * 1000 + fold)
    rng = np.random.default_rng(config.seed * 1000 + fold)
    model = create_model(model_config)
    if stats is not None:
        model.normalizer.set_statistics(stats)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2, fused=True)
    has_valence = dataset.has_valence
    train = to_batch(dataset.train, train_idx)
    val = to_batch(dataset.train, val_idx)
    tests = {name: to_batch(corpus) for name, corpus in dataset.tests.items()}
    best_emoval, best_epoch, best_state, history = -np.inf, 0, None, []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.set_epoch(epoch - 1)
        model.train()
        order = torch.from_numpy(rng.permutation(len(train_idx)))
        total, dropped, seen = 0.0, 0, 0
        for begin in range(0, len(order), config.batch_size):
            index = order[begin:begin + config.batch_size]
            batch = {k: v[index] for k, v in train.items()}
            out = model(batch, check_inputs=False)
            loss = losses.task_loss(out.logits, out.valence, batch["emos"], batch["vals"], batch["val_labelled"])
            loss = loss + out.interloss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if model_config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), model_config.grad_clip)
            optimizer.step()
            total += float(loss.detach()) * len(index)
            dropped += int((batch["present"] & ~out.present).sum())
            seen += int(batch["present"].sum())
        model.eval()
        val_metrics = evaluate_batch(model, val, has_valence)
        value = emoval(val_metrics, has_valence)
        entry = {
            "epoch": epoch, "loss": total / len(order), "dropped_modality_share": dropped / max(seen, 1),
            "val": val_metrics, "val_emoval": value,
            "test": {name: evaluate_batch(model, batch, has_valence) for name, batch in tests.items()},
        }
        if value > best_emoval:
            best_emoval, best_epoch = value, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        entry["seconds"] = time.perf_counter() - start
        history.append(entry)
        tests_text = " ".join(f"{n} waf {m['waf']:.3f}" for n, m in entry["test"].items())
        log.info("fold %d epoch %d/%d loss %.4f val emoval %.4f (best %.4f @%d) %s dropped %.1f%% %.2fs",
                 fold + 1, epoch, config.epochs, entry["loss"], value, best_emoval, best_epoch, tests_text,
                 100 * entry["dropped_modality_share"], entry["seconds"])
    return FoldResult(fold, best_state, best_epoch, float(best_emoval), history)


@torch.no_grad()
def evaluate_batch(model: RobustBase, batch: dict[str, torch.Tensor], has_valence: bool) -> dict[str, float]:
    probs, vals = [], []
    total = len(batch["emos"])
    for start in range(0, total, EVAL_BATCH):
        part = {k: v[start:start + EVAL_BATCH] for k, v in batch.items()}
        out = model(part, check_inputs=False)
        probs.append(torch.softmax(out.logits, dim=-1))
        vals.append(out.valence[:, 0])
    return score(torch.cat(probs).numpy(), torch.cat(vals).numpy(), batch["emos"].numpy(), batch["vals"].numpy(), has_valence)


def worker_count(config: TrainConfig) -> int:
    cores = os.cpu_count() or 1
    requested = config.workers if config.workers > 0 else cores
    return max(1, min(requested, config.num_folds))


def train_folds(dataset: Dataset, model_config: ModelConfig, config: TrainConfig) -> TrainResult:
    """Train one model per fold (MERBench protocol) and keep each fold's best epoch."""
    train = dataset.train
    val_sets = fold_indices(len(train), config.num_folds, config.seed)
    train_sets = [np.setdiff1d(np.arange(len(train)), v) for v in val_sets]
    stats = [feature_statistics(train.subset(t)) if config.normalize else None for t in train_sets]
    workers = worker_count(config)
    # Small matrix products run best single-threaded here; OMP_NUM_THREADS overrides the split.
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or max(1, (os.cpu_count() or 1) // workers)
    jobs = [(fold, dataset, train_sets[fold], val_sets[fold], stats[fold], model_config, config, threads)
            for fold in range(config.num_folds)]
    log.info("training %d folds of %s on %d samples with %d worker(s)", config.num_folds, model_config.model,
             len(train), workers)
    if workers == 1:
        results = [train_one_fold(*job) for job in jobs]
    else:
        # fork shares the loaded features with the workers instead of pickling them.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(train_one_fold, *zip(*jobs)))
    members = []
    for result in results:
        member = create_model(model_config)
        if stats[result.fold] is not None:
            member.normalizer.set_statistics(stats[result.fold])
        member.load_state_dict(result.state)
        members.append(member.eval())
    history = [
        {"epoch": epoch + 1, "folds": [r.history[epoch] for r in results]} for epoch in range(config.epochs)
    ]
    return TrainResult(
        ensemble=Ensemble(members).eval(), normalization=stats,
        best_epochs=[r.best_epoch for r in results], best_emovals=[r.best_emoval for r in results], history=history,
    )
