"""MERBench's cross-validation protocol, the folds trained together as one batched ensemble.

Each fold's model trains on the other folds' samples; every epoch it is scored on its validation
split, and emoval picks its best epoch among those after the modality-dropout warm-up
(`select_from_epoch`). The best epoch of each fold is kept; together they form the
ensemble whose averaged predictions are the test predictions. Test corpora are scored once, with
the kept models, which gives exactly the scores at each fold's best epoch, the only ones the
protocol reports (`test_every_epoch` also scores them at every epoch, for the log).

Fold models train as the members of one network (`armer.model`: every layer holds E stacked
members and runs as a batched matmul), so a step updates several folds at once: member e sees a
batch of its own fold's training samples, its loss is its own mean, and no parameter is shared.
One step for several folds costs far less than separate small steps, whose time on a CPU goes
mostly to per-operation overhead. The folds are dealt to one worker process per core.

A fold whose loss, weights or validation score turns NaN or infinite stops the training with a
`TrainingError` at the end of that epoch (the other workers stop at the end of theirs): a run
that diverged gives no model.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event

import numpy as np
import torch
import torch.nn.functional as F

from armer.model import losses
from armer.config import ModelConfig, TrainConfig
from armer.constants import FEATURE_KEYS, MODALITIES
from armer.data import Corpus, Dataset
from armer.device import resolve_device
from armer.evaluate.conditions import gather, mean_of, predict, score_conditions, to_batch
from armer.evaluate.metrics import emoval, headline, score
from armer.model.modeling import Ensemble, RobustBase, create_model
from armer.train.folds import validation_folds
from armer.train.probes import fit_probes, fold_of_samples
from armer.train.schedule import MemberSchedule, rescale_step

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training gave no usable model: a fold diverged (a NaN or infinite loss, weight or validation score)."""


class Diverged(Exception):
    """Members of one network diverged; `args[0]`: (fold, epoch, what went non-finite) per member."""

    @property
    def failures(self) -> list[tuple[int, int, str]]:
        return self.args[0]


class _Stopped(Exception):
    """Another worker failed, so this one stopped before its last epoch."""


@dataclass
class TrainResult:
    ensemble: Ensemble  # the best model of each fold
    normalization: list[dict]  # per fold: modality -> {'mean', 'std'}; empty without normalisation
    best_epochs: list[int]
    best_emovals: list[float]
    history: list[dict] = field(default_factory=list)  # per epoch: seconds and one entry per fold
    workers: int = 1
    validation: dict = field(default_factory=dict)  # `validation_robustness` of the kept models


def feature_statistics(corpus: Corpus, scope: str = "dimension") -> dict[str, dict[str, list[float]]]:
    """Per-dimension mean and std over the samples (and frames) where a modality is present; with
    scope "modality" every dimension gets the modality's one std (the root mean square of its
    centred features), so the features keep the relative spread of their dimensions; with scope
    "center" the std is 1 (the features are only centred). 'spread' is each dimension's std after
    that scaling, the scale of `--noise_scale feature`'s training noise."""
    stats = {}
    for name, features, present in zip(MODALITIES, corpus.features, corpus.present.T):
        values = features[present]
        if values.ndim == 3:
            values = values[np.abs(values).max(axis=-1) > 0]
        if len(values) < 2:
            mean, spread = np.zeros(features.shape[-1]), np.ones(features.shape[-1])
        else:
            mean, spread = values.mean(axis=0), values.std(axis=0)
        std = spread
        if scope == "modality":
            std = np.full_like(spread, np.sqrt(np.mean(spread ** 2)))
        elif scope == "center":
            std = np.ones_like(spread)
        std = np.maximum(std, 1e-6)
        stats[name] = {"mean": mean.astype(np.float32).tolist(), "std": std.astype(np.float32).tolist(),
                       "spread": (spread / std).astype(np.float32).tolist()}
    return stats


def raw_noise_statistics(corpus: Corpus) -> dict[str, dict[str, list[float]]]:
    """Statistics that leave raw features as they are (mean 0, std 1) and give `--noise_scale
    feature` their spread and centre, for `--no-normalize`."""
    stats = feature_statistics(corpus, "center")
    return {name: {"mean": [0.0] * len(s["mean"]), "std": [1.0] * len(s["std"]), "spread": s["spread"],
                   "centre": s["mean"]} for name, s in stats.items()}


def without_views(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its degraded views (the `degraded_*` keys of `to_batch`)."""
    return {k: v for k, v in batch.items() if not k.startswith("degraded_")}


def with_degraded_views(batch: dict[str, torch.Tensor], swap: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch with modality m of sample b replaced by its degraded view where `swap[..., b, m]`
    (and the view exists), without the view keys. `swap` (..., B, 3) bool."""
    swap = swap & batch["present"] & batch["degraded_present"]
    out = without_views(batch)
    for i, key in enumerate(FEATURE_KEYS):
        chosen = swap[..., i].reshape(*swap.shape[:-1], *([1] * (batch[key].dim() - swap.dim() + 1)))
        out[key] = torch.where(chosen, batch[f"degraded_{key}"], batch[key])
    return out


def member_indices(index_sets: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(E, N) sample indices for one epoch: each member's own set in a random order.

    N is the largest set's size; a member with a smaller set continues with the start of its
    order again to fill its row (batches of all members must have the same size).
    """
    length = max(len(s) for s in index_sets)
    return np.stack([np.resize(rng.permutation(s), length) for s in index_sets])


def clip_member_grad_norm_(model: RobustBase, max_norm: float) -> None:
    """Gradient-norm clipping per member: every parameter's dim 0 is the member dim."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = torch.stack([g.flatten(1).pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()  # (E,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def padded_index(index_sets: list[np.ndarray]) -> torch.Tensor:
    """(E, N) indices: each member's set, repeated to the longest set's length (use the first len(set))."""
    return torch.from_numpy(np.stack([np.resize(s, max(len(x) for x in index_sets)) for s in index_sets]))


def score_members(model: RobustBase, data: dict[str, torch.Tensor], index_sets: list[np.ndarray],
                  has_valence: bool) -> list[dict[str, float] | None]:
    """Metrics of member e on its own samples `index_sets[e]` (None if it has none)."""
    predictions = predict(model, data, padded_index(index_sets), check_inputs=False)
    return score_predictions(predictions, data, index_sets, has_valence)


def score_predictions(predictions: dict[str, torch.Tensor], data: dict[str, torch.Tensor],
                      index_sets: list[np.ndarray], has_valence: bool) -> list[dict[str, float] | None]:
    """Metrics of `predict` on `padded_index(index_sets)`: member e on its first len(index_sets[e])
    (None for a member without samples)."""
    results: list[dict[str, float] | None] = []
    for member, chosen in enumerate(index_sets):
        n = len(chosen)
        if n == 0:
            results.append(None)
            continue
        results.append(score(predictions["probs"][member, :n].numpy(), predictions["valence"][member, :n].numpy(),
                             data["emos"][chosen].numpy(), data["vals"][chosen].numpy(), has_valence))
    return results


def score_tests(model: RobustBase, tests: dict[str, dict[str, torch.Tensor]], has_valence: bool
                ) -> dict[str, list[dict[str, float]]]:
    """Every member's metrics on every test corpus."""
    return {name: score_members(model, batch, [np.arange(len(batch["emos"]))] * model.members, has_valence)
            for name, batch in tests.items()}


def validation_robustness(model: RobustBase, data: dict[str, torch.Tensor], val_sets: list[np.ndarray],
                          has_valence: bool, seed: int) -> dict:
    """Each fold's kept model on its own validation samples: all modalities, the six drop patterns,
    the missing-rate sweep (the test protocol's masks, seeded) and `weight_spread`. Out-of-fold
    robustness, so that model variants can be compared without looking at a test split. Metrics
    (WAF, accuracy, valence MSE) averaged over the folds. As on test data, samples a condition leaves
    without any modality are not scored, and a condition that leaves none (a drop pattern keeping
    only a modality the data lacks) is None. With degraded views in `data`, also `degraded_response`."""
    clean = without_views(data)

    def masked(mask: np.ndarray) -> dict[str, float]:
        usable = [s[mask[s].any(axis=1)] for s in val_sets]
        return mean_of(score_members(model, dict(clean, present=torch.from_numpy(mask)), usable, has_valence))

    full = predict(model, clean, padded_index(val_sets), check_inputs=False)  # its weights are reused below
    result = score_conditions(masked, clean["present"].numpy(), seed,
                              full=mean_of(score_predictions(full, clean, val_sets, has_valence)))
    weights = full["weights"]
    result["weight_spread"] = weight_spread(weights, clean["present"], val_sets)
    result["weight_mean"] = weight_spread(weights, clean["present"], val_sets, statistic="mean")
    if "degraded_present" in data:
        result["degraded"] = degraded_response(model, data, val_sets, weights, has_valence)
    return result


def degraded_response(model: RobustBase, data: dict[str, torch.Tensor], val_sets: list[np.ndarray],
                      clean_weights: torch.Tensor, has_valence: bool) -> dict:
    """On the validation samples that have every modality of the data and its degraded view: each
    modality's mean fusion weight clean and with only that modality degraded (`weight_clean`,
    `weight_degraded`, averaged over the folds; None for a modality no sample has), and the metrics
    with every modality degraded (`all`; None without such samples)."""
    index = padded_index(val_sets)
    available = data["present"].any(dim=0)
    usable = (data["present"] & data["degraded_present"])[:, available].all(dim=-1)[index]  # (E, N)
    rows = [usable[e, :len(s)] for e, s in enumerate(val_sets)]

    def mean_weight(weights: torch.Tensor, modality: int) -> float:
        return float(np.mean([weights[e, :len(s)][rows[e], modality].mean() for e, s in enumerate(val_sets)]))

    result: dict = {}
    for i, modality in enumerate(MODALITIES):
        if not available[i] or not usable.any():
            result[modality] = None
            continue
        swap = torch.zeros_like(data["present"])
        swap[:, i] = True
        weights = predict(model, with_degraded_views(data, swap), index, check_inputs=False)["weights"]
        result[modality] = {"weight_clean": mean_weight(clean_weights, i), "weight_degraded": mean_weight(weights, i)}
    every = with_degraded_views(data, torch.ones_like(data["present"]))
    result["all"] = mean_of(score_members(model, every, [s[r.numpy()] for s, r in zip(val_sets, rows)], has_valence)
                            ) if usable.any() else None
    return result


def weight_spread(weights: torch.Tensor, present: torch.Tensor, index_sets: list[np.ndarray],
                  statistic: str = "std") -> dict[str, float | None]:
    """Per modality: the std (or `statistic` "mean") of its fusion weight over each member's samples
    that have every modality of the data, averaged over the members (None for a modality no sample
    has). `weights` (E, N, M) are `predict`'s on `padded_index(index_sets)`; `present` (N_all, M) the
    data's presence. A std near 0 means the weights are a constant per modality: the uncertainty no
    longer tells one sample from another."""
    available = present.any(dim=0)
    complete = present[:, available].all(dim=-1)[padded_index(index_sets)]  # (E, N)
    spreads = [getattr(weights[e, :len(s)][complete[e, :len(s)]], statistic)(dim=0) for e, s in enumerate(index_sets)]
    return {m: float(np.nanmean([x[i] for x in spreads])) if available[i] else None for i, m in enumerate(MODALITIES)}


def diverged_members(model: RobustBase, ce: torch.Tensor, val_emovals: list[float]) -> dict[int, list[str]]:
    """The members whose training went non-finite, each with what did: its summed training
    cross-entropy `ce[e]`, its weights, its validation emoval. The weights are checked by their sum
    per member (NaN and inf carry through it), ten times cheaper than an elementwise check."""
    with torch.no_grad():
        sums = torch.stack([p.flatten(1).sum(dim=1) for p in model.parameters()]).sum(dim=0)  # (E,)
    checks = {"training cross-entropy": torch.isfinite(ce).tolist(), "weights": torch.isfinite(sums).tolist(),
              "validation emoval": [bool(np.isfinite(v)) for v in val_emovals]}
    found: dict[int, list[str]] = {}
    for member in range(model.members):
        bad = [name for name, ok in checks.items() if not ok[member]]
        if bad:
            found[member] = bad
    return found


def describe_divergence(what: list[str], terms: dict[str, float]) -> str:
    """What went non-finite in a member, and which loss terms of the epoch (summed over the
    network's members, so not told apart by fold) did."""
    bad_terms = [name for name, value in terms.items() if not np.isfinite(value)]
    loss = (f"loss terms {', '.join(bad_terms)}" if bad_terms
            else "every loss term finite: an update overflowed the weights or outputs")
    return f"non-finite {', '.join(what)}; {loss}"


def divergence_message(failures: list[tuple[int, int, str]], lr: float) -> str:
    """One line for `Diverged.failures` of every worker: folds grouped by epoch and cause, and a hint."""
    groups: dict[tuple[int, str], list[int]] = {}
    for fold, epoch, what in sorted(failures):
        groups.setdefault((epoch, what), []).append(fold)
    parts = [f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))} at epoch {epoch} ({what})"
             for (epoch, what), folds in sorted(groups.items())]
    return (f"training diverged: {'; '.join(parts)}. Lower --lr (now {lr:g}), and check the features and labels "
            f"for NaN or infinite values; no checkpoint was written")


def sample_task_loss(out, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each training sample's cross-entropy (E, B), the epoch's "ce" in the log and history; for a
    model without emotion classes its squared valence error (0 where unlabelled)."""
    if out.logits.shape[-1] == 0:
        return (out.valence[..., 0] - batch["vals"]).pow(2) * batch["val_labelled"].to(out.valence.dtype)
    return F.cross_entropy(out.logits.flatten(0, 1), batch["emos"].flatten(), reduction="none")


def selection_start(config: TrainConfig, model_config: ModelConfig) -> int:
    """The first epoch that can be a fold's best (never later than the last epoch)."""
    start = config.select_from_epoch if config.select_from_epoch > 0 else model_config.modality_dropout_warmup + 1
    return min(start, config.epochs)


@dataclass
class MembersResult:
    """What one worker returns for its share of the folds."""
    folds: list[int]
    state: dict[str, torch.Tensor]  # per-member tensors (E_w, ...): each fold's best epoch
    best_epochs: list[int]
    best_emovals: list[float]
    history: list[dict]  # per epoch: seconds and one entry per fold of this worker


def train_members(
    dataset: Dataset, folds: list[int], train_sets: list[np.ndarray], val_sets: list[np.ndarray],
    stats: list[dict] | None, model_config: ModelConfig, config: TrainConfig, threads: int,
    sample_folds: np.ndarray | None = None, stop: Event | None = None,
) -> MembersResult:
    """Train the models of `folds` as the members of one network; keep each one's best epoch by emoval.

    With `sample_folds` (every training sample's validation fold) the calibration term learns the
    error of out-of-fold probes (`armer.train.probes`), fitted here for these members, or
    (`--calibration_target held_out`) that of the model's own heads on a held-out training fold.

    Raises `Diverged` at the end of an epoch in which a member diverged (`diverged_members`), and
    `_Stopped` at the end of an epoch once `stop` (another worker failed) is set."""
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed * 1000 + folds[0])
    rng = np.random.default_rng(config.seed * 1000 + folds[0])
    members = len(folds)
    device = resolve_device(config.device)
    model = create_model(model_config, members=members).to(device)
    if stats is not None:
        model.normalizer.set_statistics(stats)
    optimizer = make_optimizer(model, config)
    schedule = MemberSchedule(members, config.lr, config.lr_patience, config.early_stop)
    params = [p for p in model.parameters() if p.requires_grad]
    data = to_batch(dataset.train)  # views of the (fork-shared) arrays; batches are gathered per step
    if config.degraded_views > 0 and "degraded_present" not in data:
        raise ValueError("degraded_views > 0 needs the train corpus loaded with its degraded views")
    held_out_folds = None
    if sample_folds is not None:
        if config.calibration_target == "held_out":
            held_out_folds = torch.tensor([held_out_fold(f, config.num_folds) for f in folds], device=device)[:, None]
        else:
            start = time.perf_counter()
            model.calibration_reference = fit_probes(data, sample_folds, folds, config.num_folds, stats,
                                                     model_config.output_dim1).to(device)
            log.info("folds %s: out-of-fold calibration probes fitted in %.1fs",
                     " ".join(str(f + 1) for f in folds), time.perf_counter() - start)
        data["fold"] = torch.from_numpy(sample_folds)
    clean = without_views(data)  # what validation scores
    # What training batches are gathered from: the views only when they are swapped in.
    train_data = data if config.degraded_views > 0 else clean
    tests = {name: to_batch(corpus) for name, corpus in dataset.tests.items()} if config.test_every_epoch else {}
    has_valence = dataset.has_valence
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # on the device
    best_emoval, best_epoch = np.full(members, -np.inf), np.zeros(members, dtype=int)
    history: list[dict] = []
    names = " ".join(str(f + 1) for f in folds)
    first_candidate = selection_start(config, model_config)
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.set_epoch(epoch - 1)
        scales = schedule.scales()
        model.train()
        order = torch.from_numpy(member_indices(train_sets, rng))  # (E, N)
        total, dropped, seen = (torch.zeros(members, device=device) for _ in range(3))
        term_sums = torch.zeros((), device=device)  # the loss terms summed over the epoch's steps, checked once per epoch
        for begin in range(0, order.shape[1], config.batch_size):
            batch = gather(train_data, order[:, begin:begin + config.batch_size])
            if device.type != "cpu":  # the corpus stays in CPU memory; each batch goes to the device
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if config.degraded_views > 0:
                swap = torch.rand(batch["present"].shape, device=device) < config.degraded_views
                batch = with_degraded_views(batch, swap)
            if held_out_folds is not None:
                batch["held_out"] = batch["fold"] == held_out_folds  # (E, B)
            out = model(batch, check_inputs=False)
            task = losses.task_loss(out.logits, out.valence, batch["emos"], batch["vals"], batch["val_labelled"],
                                    batch.get("held_out"))
            loss = task + out.interloss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                clip_member_grad_norm_(model, config.grad_clip)
            if schedule.uniform:
                optimizer.step()
            else:
                before = [p.detach().clone() for p in params]
                optimizer.step()
                rescale_step(params, before, scales)
            with torch.no_grad():
                total += sample_task_loss(out, batch).view(members, -1).sum(dim=1)
                dropped += (batch["present"] & ~out.present).flatten(1).sum(dim=1)
                seen += batch["present"].flatten(1).sum(dim=1)
                term_sums = term_sums + torch.stack([task, *out.loss_terms.values()])
        model.eval()
        val_metrics = score_members(model, clean, val_sets, has_valence)
        values = [emoval(m, has_valence) for m in val_metrics]
        selectable = epoch >= first_candidate
        improved = [i for i, value in enumerate(values)
                    if selectable and value > best_emoval[i] and not schedule.stopped[i]]
        for i in improved:
            best_emoval[i], best_epoch[i] = values[i], epoch
        if improved:
            index = torch.tensor(improved)
            for name, tensor in model.state_dict().items():
                if tensor.dim() > 0:  # per-member tensors; the scalar epoch counter is shared
                    best_state[name][index] = tensor[index]
        test_metrics = score_tests(model, tests, has_valence)
        seconds = time.perf_counter() - start
        history.append({"epoch": epoch, "seconds": seconds, "folds": [
            {"fold": fold + 1, "ce": float(total[i]) / order.shape[1],
             "dropped_modality_share": float(dropped[i] / max(seen[i], 1)), "val": val_metrics[i],
             "val_emoval": values[i], "lr": float(scales[i]) * config.lr, "stopped": bool(schedule.stopped[i]),
             "test": {name: m[i] for name, m in test_metrics.items()}}
            for i, fold in enumerate(folds)
        ]})
        log.info("folds %s epoch %d/%d %.2fs: ce %s val emoval %s best %s @%s dropped %s", names, epoch, config.epochs,
                 seconds, fmt(f["ce"] for f in history[-1]["folds"]), fmt(values), fmt(best_emoval),
                 best_epoch.tolist(), fmt((f["dropped_modality_share"] for f in history[-1]["folds"]), percent=True))
        for name, metrics in test_metrics.items():
            key = headline(metrics[0])
            log.info("  %s %s %s", name, key, fmt(m[key] for m in metrics))
        diverged = diverged_members(model, total, values)
        if diverged:
            terms = dict(zip(["cross-entropy + valence MSE", *out.loss_terms], term_sums.tolist()))
            raise Diverged([(folds[e] + 1, epoch, describe_divergence(what, terms)) for e, what in diverged.items()])
        if stop is not None and stop.is_set():
            raise _Stopped()
        schedule.step(values)
        if schedule.all_stopped:
            log.info("folds %s stopped early (no validation gain for %d epochs) after epoch %d", names,
                     config.early_stop, epoch)
            break
    return MembersResult(list(folds), {k: v.cpu() for k, v in best_state.items()}, best_epoch.tolist(),
                         best_emoval.tolist(), history)


_FORK_SHARED: dict = {}  # the dataset and the stop event, inherited by the forked workers


def _train_members_in_worker(*args) -> MembersResult:
    stop = _FORK_SHARED["stop"]
    try:
        return train_members(_FORK_SHARED["dataset"], *args, stop=stop)
    except BaseException:
        stop.set()  # the other workers stop at the end of their epoch
        raise


def run_shares(dataset: Dataset, jobs: list[tuple], workers: int) -> list[MembersResult]:
    """`train_members` of each job, in `workers` forked processes (in this one for a single worker).

    A worker that fails stops the others at the end of their epoch; the folds that diverged in any
    worker are reported together, as one `Diverged`."""
    if workers == 1:
        return [train_members(dataset, *jobs[0])]
    # Pool arguments are pickled, so the features reach the forked workers through a module
    # global instead: one copy in memory, shared copy-on-write.
    context = multiprocessing.get_context("fork")
    _FORK_SHARED.update(dataset=dataset, stop=context.Event())
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_train_members_in_worker, *job) for job in jobs]
            wait(futures)
    finally:
        _FORK_SHARED.clear()
    errors = [f.exception() for f in futures if f.exception() is not None]
    diverged = [failure for e in errors if isinstance(e, Diverged) for failure in e.failures]
    if diverged:
        raise Diverged(diverged)
    for error in errors:
        if not isinstance(error, _Stopped):
            raise error
    return [f.result() for f in futures]


def worker_count(config: TrainConfig) -> int:
    """Worker processes: one per core by default, never more than there are folds; one on CUDA (a
    forked process cannot use CUDA, and a GPU runs all the folds' batched layers at once)."""
    if resolve_device(config.device).type != "cpu":
        return 1
    requested = config.workers if config.workers > 0 else (os.cpu_count() or 1)
    return max(1, min(requested, config.num_folds))


def train_folds(dataset: Dataset, model_config: ModelConfig, config: TrainConfig) -> TrainResult:
    """Train one model per fold (MERBench protocol) and keep each fold's best epoch.

    The folds are dealt to `worker_count` processes (3 + 2 for five folds on two cores); each
    trains its folds as the members of one network, single-threaded. On a small CPU that beats
    one process with all five members on two threads: the batched matmuls and the elementwise
    work split poorly over threads at these sizes, while separate processes do not wait on each other.
    """
    train = dataset.train
    val_sets = validation_folds(train.samples, config)
    train_sets = [np.setdiff1d(np.arange(len(train)), v) for v in val_sets]
    if config.normalize:
        stats = [feature_statistics(train.subset(t), config.normalize_scope) for t in train_sets]
    elif model_config.noise_scale == "feature" and model_config.modality_noise > 0:
        stats = [raw_noise_statistics(train.subset(t)) for t in train_sets]
    else:
        stats = None
    sample_folds = fold_of_samples(val_sets, len(train)) if splits_training_folds(model_config, config) else None
    workers = worker_count(config)
    threads = config.threads or max(1, (os.cpu_count() or 1) // workers)
    shares = [share.tolist() for share in np.array_split(np.arange(config.num_folds), workers)]
    jobs = [(share, [train_sets[f] for f in share], [val_sets[f] for f in share],
             [stats[f] for f in share] if stats else None, model_config, config, threads, sample_folds)
            for share in shares]
    log.info("training %d folds of %s on %d samples (fold training sets %s): %d worker(s) with folds %s, %d thread(s) each",
             config.num_folds, model_config.model, len(train), [len(t) for t in train_sets], workers,
             [[f + 1 for f in share] for share in shares], threads)
    absent = [m for m, has in zip(MODALITIES, train.present.any(axis=0)) if not has]
    if absent:
        log.warning("no training sample has %s: the model trains with it missing and never learns it, so score it "
                    "on data without it", " or ".join(absent))
    try:
        parts = run_shares(dataset, jobs, workers)
    except Diverged as exc:
        raise TrainingError(divergence_message(exc.failures, config.lr)) from None
    network = create_model(model_config, members=config.num_folds)
    if stats is not None:
        network.normalizer.set_statistics(stats)
    network.load_state_dict({name: torch.cat([p.state[name] for p in parts]) if value.dim() else value
                             for name, value in network.state_dict().items()})
    network.to(resolve_device(config.device)).eval()
    best_epochs = [e for p in parts for e in p.best_epochs]
    history = merged_history(parts)
    # Each fold's test scores at its best epoch are those of its kept model: scored once, here.
    for name, metrics in score_tests(network, {n: to_batch(c) for n, c in dataset.tests.items()},
                                     dataset.has_valence).items():
        for fold, value in enumerate(metrics):
            history[best_epochs[fold] - 1]["folds"][fold]["test"][name] = value
        key = headline(metrics[0])
        log.info("%s %s per fold at its best epoch %s", name, key, fmt(m[key] for m in metrics))
    validation = validation_robustness(network, to_batch(train), val_sets, dataset.has_valence, config.seed)
    key = headline(validation["full"])
    log.info("validation (out-of-fold, kept models) %s: full %.4f, missing-rate mean %.4f",
             key, validation["full"][key], validation["missing_rate"]["mean"][key])
    return TrainResult(
        ensemble=Ensemble(network).eval(), normalization=stats or [], best_epochs=best_epochs,
        best_emovals=[v for p in parts for v in p.best_emovals], history=history, workers=workers,
        validation=validation,
    )


def splits_training_folds(model_config: ModelConfig, config: TrainConfig) -> bool:
    """Whether the calibration term's targets need each training sample's fold (out-of-fold probes or a
    held-out fold): asked for, and the model has a calibration term."""
    return (config.calibration_target != "head" and model_config.model == "attention_robust_v2"
            and model_config.use_vae and model_config.calibration_weight > 0)


def held_out_fold(member: int, num_folds: int) -> int:
    """The training fold of `member` (its validation fold) that only u learns from (`held_out`): the next one."""
    return (member + 1) % num_folds


def make_optimizer(model: RobustBase, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (weight decay added to the gradient, MERBench's) or AdamW (decoupled, the seed's)."""
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=config.lr, weight_decay=config.l2, fused=True)


def merged_history(parts: list[MembersResult]) -> list[dict]:
    """The workers' histories as one: per epoch, the longest of the workers' epoch times and an entry
    per fold, `{"fold": n, "stopped": True}` for a fold whose worker had stopped early by then."""
    history = []
    for epoch in range(max(len(p.history) for p in parts)):
        entries = [p.history[epoch]["folds"] if epoch < len(p.history)
                   else [{"fold": fold + 1, "stopped": True} for fold in p.folds] for p in parts]
        history.append({"epoch": epoch + 1, "seconds": max(p.history[epoch]["seconds"] for p in parts
                                                          if epoch < len(p.history)),
                        "folds": [f for folds in entries for f in folds]})
    return history


def fmt(values, percent: bool = False) -> str:
    values = list(values)
    return "[" + " ".join(f"{100 * v:.1f}%" if percent else f"{v:.4f}" for v in values) + "]"
