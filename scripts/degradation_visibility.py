"""Can a model see that a modality is degraded, and how much worse is that modality then? On the
paired benchmark's training views, validation folds only.

    python scripts/degradation_visibility.py [--bench_dir ~/.cache/armer/benchmark] [--seeds 0] \
        [--runs LABEL=RUN_DIR ...]

V2's sigma can only rise on a degraded input that looks different from a clean one, and its fusion
weight should only fall as far as the modality's own reliability does. Per modality, on the train
corpus's clean features and their degraded views (`armer.benchmark build`: speech + white noise at
-5 to 10 dB SNR, faces blurred x2-x6, 10-50 % word drop-out), with the speaker-grouped folds of
`armer.train` (out of fold, each fold scored by models fitted on the others), this script fits
standardised logistic regressions:

- a detector, clean against degraded: its ROC AUC says how visible the degradation is (0.5: not at all);
- an emotion probe on clean and degraded views together (as V2 trains): its weighted F1 and its mean
  error 1 - p(true class) on the clean and on the degraded views;
- the fall of the modality's fusion weight that a sigma equal to that mean error would give (V2's
  weights softmax(1 / (u T)) with the default T, for a modality with a small share of the weight:
  exp((1 / u_degraded - 1 / u_clean) / T) - 1); a reference for the size of the fall, not a bound.

With --runs (V2 runs of `armer.train` on this benchmark), also how each run responds on each fold
model's own validation speakers when one modality is swapped for its degraded view: the modality's
u (mean sigma), the error 1 - p(true class) of its unimodal head, and its fusion weight.

Writes results/degradation_visibility.md (and .json). The test corpora are never read.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armer.checkpoint import load_checkpoint  # noqa: E402
from armer.config import ModelConfig, TrainConfig  # noqa: E402
from armer.constants import MODALITIES  # noqa: E402
from armer.data import load_dataset  # noqa: E402
from armer.evaluate.conditions import gather, to_batch  # noqa: E402
from armer.train.folds import validation_folds  # noqa: E402
from armer.train.loop import padded_index, with_degraded_views  # noqa: E402
from armer.train.probes import fold_of_samples  # noqa: E402
from missing_modality_ceiling import waf  # noqa: E402  (scripts/)
from report_files import generated_line, git_commit, recorded_folds, write_report  # noqa: E402

C = 0.1  # logistic regressions' inverse regularisation, fixed (not tuned)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench_dir", default=str(Path.home() / ".cache" / "armer" / "benchmark"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="the fold seeds (armer.train --seed; on the paired benchmark every seed gives the same "
                        "speaker-grouped folds: its 6 training speakers have distinct sizes)")
    p.add_argument("--runs", nargs="*", default=[], metavar="LABEL=RUN_DIR",
                   help="V2 runs of armer.train on this benchmark (with its degraded views), by label")
    p.add_argument("--out", default=str(ROOT / "results" / "degradation_visibility.md"))
    return p.parse_args(argv)


def out_of_fold(x: np.ndarray, y: np.ndarray, fold: np.ndarray, num_folds: int) -> np.ndarray:
    """Probabilities (N, classes) of each row from a logistic regression fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    probs = np.zeros((len(y), int(y.max()) + 1))
    for f in range(num_folds):
        fit, held = fold != f, fold == f
        scaler = StandardScaler().fit(x[fit])
        clf = LogisticRegression(C=C, max_iter=3000).fit(scaler.transform(x[fit]), y[fit])
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(scaler.transform(x[held]))
    return probs


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))], np.r_[positive, negative]))


def modality_row(clean: np.ndarray, degraded: np.ndarray, labels: np.ndarray, fold: np.ndarray, num_folds: int,
                 temperature: float) -> dict[str, float]:
    n = len(labels)
    both, both_fold = np.concatenate([clean, degraded]), np.r_[fold, fold]
    is_degraded = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    detect = out_of_fold(both, is_degraded, both_fold, num_folds)[:, 1]
    emotion = out_of_fold(both, np.r_[labels, labels], both_fold, num_folds)
    p_true = emotion[np.arange(2 * n), np.r_[labels, labels]]
    u_clean, u_degraded = float(np.mean(1 - p_true[:n])), float(np.mean(1 - p_true[n:]))
    return {
        "detector_auroc": auroc(detect[n:], detect[:n]),
        "waf_clean": waf(emotion[:n], labels), "waf_degraded": waf(emotion[n:], labels),
        "error_clean": u_clean, "error_degraded": u_degraded,
        "weight_change": float(np.exp((1 / u_degraded - 1 / u_clean) / temperature) - 1),
    }


# Bins of each modality's view level (its degradation parameter in the build manifest), for the
# validation response by level: [low, high) ranges, or the blur factors themselves.
LEVEL_BINS = {"audio": ("snr_db", [(-5, 0), (0, 5), (5, 10.01)]),
              "text": ("word_drop", [(0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.01)]),
              "video": ("blur", [(f, f + 1) for f in (2, 3, 4, 6)])}
SOURCE_KEYS = {"audio": "emodb", "text": "meld", "video": "fer_index"}


def view_levels(manifest: dict, samples: list[str]) -> dict[str, np.ndarray]:
    """Per modality, each training sample's degraded-view level from the build manifest (NaN if unknown)."""
    views = (manifest.get("train_views") or {}).get("degradations", {})
    levels = {}
    for modality, (parameter, _) in LEVEL_BINS.items():
        drawn = views.get(modality, {})
        levels[modality] = np.array([drawn.get(str(manifest["pairs"].get(s, {}).get(SOURCE_KEYS[modality])), {})
                                     .get(parameter, np.nan) for s in samples], dtype=float)
    return levels


@torch.no_grad()
def run_response(run: Path, train, data: dict[str, torch.Tensor], levels: dict[str, np.ndarray]) -> dict:
    """Per modality, on each member's own validation fold: u, the unimodal head's error 1 - p(true)
    and the fusion weight, clean -> with that modality swapped for its degraded view; the same by
    level of the view (`LEVEL_BINS`); and the head's error on the members' training samples."""
    model, info = load_checkpoint(run / "checkpoint")
    network = model.network.eval()
    if info.model.model != "attention_robust_v2":
        raise SystemExit(f"{run}: a V2 run is needed (attention_robust_v2), not {info.model.model}")
    val_sets = recorded_folds(run, train.samples)
    train_sets = [np.setdiff1d(np.arange(len(train)), rows) for rows in val_sets]

    def per_sample(batch: dict[str, torch.Tensor], i: int, sets: list[np.ndarray]) -> dict[str, np.ndarray]:
        """rows (K,): each member's samples; u, head error and weight of modality i on them."""
        index = padded_index(sets)
        own = torch.zeros(index.shape, dtype=torch.bool)
        for e, rows in enumerate(sets):
            own[e, :len(rows)] = True
        out = network(gather(batch, index), check_inputs=False)
        head = torch.softmax(network.unimodal_heads(out.mu)[..., i, :], dim=-1)
        error = 1 - head.gather(-1, data["emos"][index].unsqueeze(-1)).squeeze(-1)
        return {"rows": index[own].numpy(), "u": out.sigma[..., i][own].numpy(),
                "head_error": error[own].numpy(), "weight": out.weights[..., i][own].numpy()}

    result = {}
    for i, modality in enumerate(MODALITIES):
        swap = torch.zeros_like(data["present"])
        swap[:, i] = True
        degraded = with_degraded_views(data, swap)
        views = {"clean": per_sample(data, i, val_sets), "degraded": per_sample(degraded, i, val_sets)}
        r = {f"{name}_{view}": float(values[name].mean()) for view, values in views.items()
             for name in ("u", "head_error", "weight")}
        r.update({f"train_head_error_{view}": float(per_sample(batch, i, train_sets)["head_error"].mean())
                  for view, batch in (("clean", data), ("degraded", degraded))})
        level = levels[modality][views["clean"]["rows"]]
        r["by_level"] = {}
        for low, high in LEVEL_BINS[modality][1]:
            chosen = (level >= low) & (level < high)
            if chosen.any():
                r["by_level"][f"{low:g}-{high:.4g}"] = {"n": int(chosen.sum()), **{
                    f"{name}_{view}": float(values[name][chosen].mean()) for view, values in views.items()
                    for name in ("head_error", "weight")}}
        result[modality] = r
    return result


def mean_of(results: list[dict]) -> dict:
    """The element-wise mean of nested dicts of numbers (runs of one label)."""
    first = results[0]
    if isinstance(first, dict):
        return {k: mean_of([r[k] for r in results]) for k in first if all(k in r for r in results)}
    return float(np.mean(results))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = Path(args.bench_dir)
    manifest = json.loads((bench / "manifest.json").read_text())
    train = load_dataset(bench / "features", bench / "label-6way.npz", manifest["feature_folders"],
                         degraded_views=True).train
    temperature = ModelConfig().fusion_temperature
    per_seed = []
    for seed in args.seeds:
        config = TrainConfig(seed=seed, fold_groups="speaker")
        fold = fold_of_samples(validation_folds(train.samples, config), len(train))
        rows = {}
        for i, modality in enumerate(MODALITIES):
            keep = train.present[:, i] & train.degraded_present[:, i]
            rows[modality] = modality_row(train.features[i][keep], train.degraded[i][keep], train.emotions[keep],
                                          fold[keep], config.num_folds, temperature)
        per_seed.append(rows)
        print(f"seed {seed} done", flush=True)

    def cell(modality: str, key: str, percent: bool = True, signed: bool = False) -> str:
        values = np.array([s[modality][key] for s in per_seed]) * (100 if percent else 1)
        form = "+.0f" if signed else (".1f" if percent else ".3f")
        spread = f" ± {np.std(values):{'.1f' if percent else '.3f'}}" if len(per_seed) > 1 else ""
        return f"{np.mean(values):{form}}{spread}"

    lines = ["# How visible each modality's degradation is, and what it costs the modality alone (validation folds)", "",
             generated_line(Path(__file__).name), "", f"Commit: `{git_commit()}`.", "",
             f"Benchmark `{args.bench_dir}`, train corpus and its degraded training views ({len(train)} pairs); "
             f"speaker-grouped folds of seed(s) {args.seeds} (mean ± std where several); standardised logistic "
             f"regressions with C = {C}, each view scored out of fold. Fusion temperature T = {temperature:g} "
             "(V2's default). Last column: exp((1 / u_degraded - 1 / u_clean) / T) - 1 with u the probe's mean error, "
             "the fall of a modality's fusion weight when it has a small share of it (a dominant modality's "
             "weight falls less).", "",
             "| modality | detector AUROC, clean vs degraded | probe WAF clean -> degraded (%) | probe error 1 - p(true) "
             "clean -> degraded | weight change if u = that error |", "|---|---|---|---|---|"]
    for modality in MODALITIES:
        lines.append(f"| {modality} | {cell(modality, 'detector_auroc', percent=False)} | "
                     f"{cell(modality, 'waf_clean')} -> {cell(modality, 'waf_degraded')} | "
                     f"{cell(modality, 'error_clean', percent=False)} -> {cell(modality, 'error_degraded', percent=False)} | "
                     f"{cell(modality, 'weight_change', signed=True)} % |")
    runs: dict[str, list[dict]] = {}
    labelled = [tuple(item.split("=", 1)) for item in args.runs]
    if labelled:
        torch.set_num_threads(1)
        data, levels = to_batch(train), view_levels(manifest, train.samples)
        for label, path in labelled:
            runs.setdefault(label, []).append(run_response(Path(path), train, data, levels))
        means = {label: mean_of(results) for label, results in runs.items()}
        lines += ["", "How V2 runs respond on each fold model's own validation speakers, one modality swapped for its "
                  "degraded view (clean -> degraded), mean over the runs of a label: u = the modality's mean sigma; "
                  "head error = 1 - p(true class) of its unimodal head, on the validation speakers and on the fold "
                  "model's own training samples (where u learns); w = its fusion weight.", "",
                  "| runs | modality | u | head error | head error on its training samples | w |",
                  "|---|---|---|---|---|---|"]
        for label, result in means.items():
            for modality, r in result.items():
                lines.append(f"| {label} ({len(runs[label])}) | {modality} | " + " | ".join(
                    f"{r[name + '_clean']:.3f} -> {r[name + '_degraded']:.3f}"
                    for name in ("u", "head_error", "train_head_error", "weight")) + " |")
        lines += ["", "The same by the level of the degraded view (its " + ", ".join(
                      f"{m} {parameter}" for m, (parameter, _) in LEVEL_BINS.items()) + " as the build drew it):", "",
                  "| runs | modality | level | samples | head error | w | w change |", "|---|---|---|---|---|---|---|"]
        for label, result in means.items():
            for modality, r in result.items():
                for level, b in r["by_level"].items():
                    lines.append(f"| {label} | {modality} | {level} | {b['n']:.0f} | {b['head_error_clean']:.3f} -> "
                                 f"{b['head_error_degraded']:.3f} | {b['weight_clean']:.3f} -> {b['weight_degraded']:.3f} | "
                                 f"{100 * (b['weight_degraded'] / b['weight_clean'] - 1):+.0f}% |")
        lines += ["", "Runs: " + "; ".join(f"{label}: `{path}`" for label, path in labelled) + "."]
    lines.append("")
    write_report(args.out, lines, {"seeds": args.seeds, "C": C, "temperature": temperature, "per_seed": per_seed,
                                   "runs": runs})


if __name__ == "__main__":
    main()
