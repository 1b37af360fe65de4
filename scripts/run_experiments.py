"""Every experiment of the paired benchmark, from the data root to results/benchmark.{md,json}.

    python scripts/run_experiments.py --data_root ../shared/data            # the full protocol
    python scripts/run_experiments.py --seeds 0 1 --epochs 30 --no_ablations  # a shorter run (say so)

Steps (each skipped when its output already exists with the same settings, so an interrupted run
resumes; a run is redone when its command, defaults included, has changed):
1. build the benchmark (``python -m armer.benchmark build``) into --bench_dir (outside the repo);
2. train the arms of scripts/arms.py (--arms; V1 ``--model attention_robust``, the seed author's
   recipe ``--model attention_robust_v2 --recipe seed``, V2 ``--model attention_robust_v2``) with
   ``python -m armer.train`` for every seed (5-fold CV, MERBench protocol) into --runs_dir
   (``<arm>-seed<n>``), with ``--fold_groups speaker`` so that the folds hold whole EmoDB speakers
   (random folds put copies of one clip in training and validation and make model selection
   meaningless);
3. score the uncertainty of each run: AUROC of separating wrong from right predictions by the
   fused sigma (fusion-weight-averaged u over the present modalities) and by 1 - top probability,
   and the expected calibration error, on the clean (test1) and the noise (test2) corpus;
4. the ablations of scripts/run_ablation.sh (seed 0), unless --no_ablations;
5. write results/benchmark.json and results/benchmark.md (mean +- std over seeds, the arms side by
   side, the commands beside the numbers) and, unless --no_export, copy the best V2 *by
   validation* (mean best fold emoval, never test) to checkpoints/ with a model card
   (checkpoints/README.md), and the main table into README.md between its benchmark-table markers
   (unless --no_readme).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from arms import ARM_LABELS, ARMS, arms_line  # scripts/arms.py

from armer.constants import MODALITIES
from armer.model.missing import DROP_PATTERNS, MISSING_RATES

CLEAN, NOISE = "test1", "test2"
SINGLE_NOISE = {"audio": "test3", "text": "test4", "video": "test5"}
CONDITIONS = ["full", *DROP_PATTERNS]
RATES = [f"{r:.1f}" for r in MISSING_RATES]
# How the paired benchmark's features go into armer.train, every arm alike ("standardised" is
# armer.train's default, so the seed recipe keeps its own raw features there). Raw features score
# higher on the benchmark's validation folds, V1 more than V2 (V1 92.1 / 78.1 and V2 91.9 / 77.3, all
# modalities / missing-rate mean, against 89.0 / 75.1 and 89.6 / 75.2: results/raw_features_5seeds.md,
# results/v1_raw_features_5seeds.md), but V2's weights follow reliability less on raw features: a
# degraded face's weight falls 64% on validation against 73%, and on the demo clip noise at -5 dB
# changes the speech weight by -37% ± 14 standardised and +6% ± 24 raw (results/demo_weights_by_scaling.md).
FEATURE_SCALING = {"raw": ["--no-normalize"], "standardised": []}
BENCHMARK_FEATURE_SCALING = "standardised"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=os.environ.get("ARMER_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--bench_dir", default=str(Path.home() / ".cache" / "armer" / "benchmark"))
    p.add_argument("--runs_dir", default=str(ROOT / "runs" / "experiments"))
    p.add_argument("--results_dir", default=str(ROOT / "results"))
    p.add_argument("--checkpoint_dir", default=str(ROOT / "checkpoints"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--num_folds", type=int, default=5)
    p.add_argument("--workers", type=int, default=0,
                   help="armer.train --workers (processes the folds are dealt to; 0: one per core)")
    p.add_argument("--fold_groups", default="speaker", choices=["speaker", "clip", "none"],
                   help="cross-validation folds over EmoDB speakers (default), clips, or samples (none: "
                        "MERBench's random folds, which leak copies of a clip into validation)")
    p.add_argument("--build_args", default="", help="extra arguments for armer.benchmark build (quoted)")
    p.add_argument("--degraded_views", type=float, default=0.25,
                   help="armer.train --degraded_views for every run, every arm alike: the probability that a "
                        "training modality is swapped for its degraded view (the builder's training views)")
    p.add_argument("--feature_scaling", default=BENCHMARK_FEATURE_SCALING, choices=list(FEATURE_SCALING),
                   help="the features every arm trains on: standardised with each fold's training statistics (armer.train's "
                        "default; the seed recipe stays raw) or raw (--no-normalize: every arm scores higher on "
                        "validation, V1 most, but V2's weights follow reliability less; docs/training.md)")
    p.add_argument("--train_args", default="", help="extra arguments for every armer.train run (quoted)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS),
                   help="the arms to train and compare (V2 always among them), reported in the order "
                        f"{', '.join(ARMS)}; e.g. --arms v1 v2 for a runs dir from before the seed recipe")
    p.add_argument("--no_ablations", action="store_true")
    p.add_argument("--no_export", action="store_true", help="do not copy the best V2 to --checkpoint_dir")
    p.add_argument("--no_readme", action="store_true", help="do not write the main table into README.md")
    p.add_argument("--nice", type=int, default=10, help="niceness of the child processes")
    args = p.parse_args(argv)
    if "v2" not in args.arms:
        p.error("--arms must include v2 (the checks compare against it and it is the exported model)")
    args.arms = [arm for arm in ARMS if arm in args.arms]
    return args


def run(cmd: list[str], log_path: Path | None = None, env: dict | None = None, nice: int = 10) -> None:
    full = (["nice", "-n", str(nice)] if nice else []) + cmd
    # one BLAS/OpenMP thread per process: on a shared 2-core machine two threads per process made
    # evaluation ~17x slower (spin-waiting threads); armer.train parallelises over folds instead.
    env = dict(env if env is not None else os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as fh:
            proc = subprocess.run(full, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    else:
        proc = subprocess.run(full, cwd=ROOT, env=env, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:] if log_path is not None else ""
        raise SystemExit(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{tail}")
    print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------- steps
def build_benchmark(args) -> tuple[dict, list[str]]:
    bench = Path(args.bench_dir)
    cmd = [sys.executable, "-m", "armer.benchmark", "build", "--data_root", args.data_root, "--out", str(bench),
           *shlex.split(args.build_args)]
    manifest_path = bench / "manifest.json"
    if manifest_path.is_file() and (bench / "label-6way.npz").is_file():
        manifest = json.loads(manifest_path.read_text())
        same = (manifest.get("data_root") == str(Path(args.data_root))
                and manifest.get("command_args") == cmd[3:]
                and "train_faces" in manifest.get("sources", {})  # older builds paired faces differently
                and (manifest.get("train_views") is not None or "--no_train_views" in cmd)
                and (manifest.get("ladder") is not None or "--no_ladder" in cmd))  # older builds had no ladder
        if same:
            print(f"benchmark: reusing {bench}", flush=True)
            return manifest, cmd
    run(cmd, bench.parent / f"{bench.name}.build.log", nice=args.nice)
    manifest = json.loads(manifest_path.read_text())
    manifest["command_args"] = cmd[3:]
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest, cmd


def train_command(args, manifest: dict, arm: str, seed: int, save_root: Path) -> list[str]:
    bench = Path(args.bench_dir)
    f = manifest["feature_folders"]
    return [sys.executable, "-m", "armer.train", "--fold_groups", args.fold_groups,
            "--features_root", str(bench / "features"),
            "--label_path", str(bench / "label-6way.npz"), "--save_root", str(save_root),
            "--audio_feature", f["audio"], "--text_feature", f["text"], "--video_feature", f["video"],
            "--seed", str(seed), "--epochs", str(args.epochs), "--num_folds", str(args.num_folds),
            "--workers", str(args.workers), "--degraded_views", str(args.degraded_views),
            *FEATURE_SCALING[args.feature_scaling], *ARMS[arm], *shlex.split(args.train_args)]  # the arm's flags after the common ones: they win


def train_args(cmd: list[str]) -> dict:
    """The arguments `python -m armer.train` runs `cmd` with: its recipe's defaults applied, as
    armer.train.cli.main does (and records in summary.json)."""
    from armer.config import RECIPES
    from armer.train.cli import build_parser

    parser = build_parser()
    parser.set_defaults(**RECIPES[parser.parse_args(cmd[3:]).recipe])
    return vars(parser.parse_args(cmd[3:]))


def same_training(recorded: dict, wanted: dict) -> bool:
    """Whether a run recorded with the arguments `recorded` trained as `wanted` would: the same
    values, where a setting the run predates counts as the value it then ran with
    (`armer.config.ABSENT_MEANS`), and a setting that changes nothing for either is left out
    (`armer.config.inert_settings`: a new V2-only default does not retrain V1)."""
    from armer.config import ABSENT_MEANS, inert_settings

    recorded, wanted = {**ABSENT_MEANS, **recorded}, {**ABSENT_MEANS, **wanted}
    ignored = inert_settings(recorded) & inert_settings(wanted)
    return ({k: v for k, v in recorded.items() if k not in ignored}
            == {k: v for k, v in wanted.items() if k not in ignored})


def trained_alike(save: Path, cmd: list[str]) -> bool:
    """`save` holds a finished run that trained as the command `cmd` would (`same_training`)."""
    done = save / "summary.json"
    return done.is_file() and same_training(json.loads(done.read_text()).get("args") or {}, train_args(cmd))


def reusable(save: Path, cmd: list[str], bench: Path) -> bool:
    """A finished run of the same training (`trained_alike`, defaults included), newer than the
    benchmark it trained on, whose checkpoint the current model code still loads."""
    if not trained_alike(save, cmd):
        return False
    if (save / "summary.json").stat().st_mtime < (bench / "manifest.json").stat().st_mtime:
        return False
    from armer.checkpoint import CheckpointError, load_checkpoint

    try:
        load_checkpoint(save / "checkpoint")
    except CheckpointError as exc:  # the model code changed since: train again
        print(f"{save}: stale checkpoint ({str(exc)[:120]}...); training again", flush=True)
        return False
    return True


def stamp_commit(save: Path) -> None:
    """Record in a finished run's summary.json the commit it was trained at."""
    from report_files import git_commit

    summary = json.loads((save / "summary.json").read_text())
    (save / "summary.json").write_text(json.dumps({**summary, "commit": git_commit()}, indent=1), encoding="utf-8")


def train_once(cmd: list[str], save: Path, nice: int, name: str,
               reuse: Callable[[Path, list[str]], bool] = trained_alike) -> Path:
    """Run the `python -m armer.train` command `cmd` into `save` and record its commit there, unless
    `reuse(save, cmd)`: by default, `save` holds a finished run that trained the same way (a changed
    default trains again where it matters); `name` says which run in the log."""
    if reuse(save, cmd):
        print(f"{name}: reusing {save}", flush=True)
        return save
    run(cmd, save.parent / f"{save.name}.log", nice=nice)
    stamp_commit(save)
    return save


def train_run(args, manifest: dict, arm: str, seed: int) -> Path:
    """`arm`'s run with `seed` in --runs_dir: reused when it is there with the same command, else trained."""
    save = Path(args.runs_dir) / f"{arm}-seed{seed}"
    cmd = train_command(args, manifest, arm, seed, save)
    return train_once(cmd, save, args.nice, f"{arm} seed {seed}",
                      reuse=lambda s, c: reusable(s, c, Path(args.bench_dir)))


def train_runs(args, manifest: dict) -> dict[str, dict[int, Path]]:
    runs: dict[str, dict[int, Path]] = {k: {} for k in args.arms}
    for seed in args.seeds:  # seeds outermost: an interrupted run leaves the arms with the same seeds
        for key in args.arms:
            runs[key][seed] = train_run(args, manifest, key, seed)
    return runs


def uncertainty(args, manifest: dict, save: Path) -> dict:
    """Error AUROC by the fused sigma and by 1 - top probability, and ECE, on the clean and noise corpora."""
    from armer.checkpoint import load_checkpoint
    from armer.data import load_dataset
    from armer.evaluate.conditions import predict, to_batch
    from armer.evaluate.metrics import error_auroc, expected_calibration_error

    model, info = load_checkpoint(save / "checkpoint")
    bench = Path(args.bench_dir)
    names = {m: info.features[m]["name"] for m in MODALITIES}
    ds = load_dataset(bench / "features", bench / "label-6way.npz", names, info.model.feat_type, info.label_names)
    out = {}
    for corpus in (CLEAN, NOISE):
        if corpus not in ds.corpora:
            continue
        c = ds.corpora[corpus]
        pred = {k: v.numpy() for k, v in predict(model, to_batch(c)).items()}
        wrong = pred["probs"].argmax(-1) != c.emotions
        sigma = pred["sigma"]
        fused = (np.nansum(pred["weights"] * np.nan_to_num(sigma), axis=1)
                 if not np.isnan(sigma).all() else None)
        out[corpus] = {
            "auroc_sigma": error_auroc(fused, wrong) if fused is not None else None,
            "auroc_prob": error_auroc(1.0 - pred["probs"].max(-1), wrong),
            "ece": expected_calibration_error(pred["probs"], c.emotions),
            "error_rate": float(wrong.mean()),
        }
    return out


# The runs of scripts/run_ablation.sh (same flags), trained like the main runs (grouped folds).
ABLATIONS = {
    "v2_no_vae": ["--no-use_vae"],
    "v2_no_proxy_attention": ["--no-use_proxy_attention"],
    "v2_no_modality_dropout": ["--modality_dropout", "0"],
    "v2_no_recon": ["--recon_weight", "0"],
    "v2_no_cross_kl": ["--cross_kl_weight", "0"],
    "v2_temperature_0.5": ["--fusion_temperature", "0.5"],
    "v2_temperature_2.0": ["--fusion_temperature", "2.0"],
    "v2_no_expert_fusion": ["--no-expert_fusion"],
    "v2_cross_kl_0.1": ["--cross_kl_weight", "0.1"],
    "v2_no_degraded_views": ["--degraded_views", "0"],
    "v2_calibration_0.3": ["--calibration_weight", "0.3"],
}


def ablations(args, manifest: dict, runs: dict[str, dict[int, Path]]) -> str | None:
    """Seed 0 (the first seed): the arms (the main runs) and V2 with each component switched off."""
    from armer.evaluate.report import ablation_table

    seed = args.seeds[0]
    root = Path(args.runs_dir) / f"ablation-seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    for key in runs:
        link = root / key
        if not link.exists():
            link.symlink_to(runs[key][seed].resolve())
    for name, flags in ABLATIONS.items():
        save = root / name
        cmd = train_command(args, manifest, "v2", seed, save) + flags
        if reusable(save, cmd, Path(args.bench_dir)):
            print(f"ablation {name}: reusing {save}", flush=True)
            continue
        run(cmd, save.parent / f"{save.name}.log", nice=args.nice)
    table = ablation_table(root, [*runs, *ABLATIONS])
    flags = "; ".join(f"{k}: `{' '.join(v)}`" for k, v in ABLATIONS.items())
    (root / "ablation.md").write_text(table, encoding="utf-8")
    return table + f"\nSeed {seed}, the flags of scripts/run_ablation.sh ({flags}), same epochs and folds as above.\n"


# ---------------------------------------------------------------- aggregation
def ms(values: list[float | None]) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}


def aggregate(runs: dict[str, dict[int, Path]], unc: dict[str, dict[int, dict]]) -> dict:
    agg: dict = {}
    for key, seeds in runs.items():
        summaries = {s: json.loads((p / "summary.json").read_text()) for s, p in seeds.items()}
        res = {s: summ["results"] for s, summ in summaries.items()}
        corpora = list(next(iter(res.values())))
        model: dict = {"seeds": sorted(seeds), "val_emoval": ms([summ["mean_best_val_emoval"] for summ in summaries.values()]),
                       "val_emoval_per_seed": {s: summ["mean_best_val_emoval"] for s, summ in summaries.items()},
                       "validation": {cond: ms([summ["validation"][cond]["waf"] for summ in summaries.values()
                                                if "validation" in summ]) for cond in CONDITIONS},
                       "corpora": {}}
        model["validation"]["missing_rate_mean"] = ms([summ["validation"]["missing_rate"]["mean"]["waf"]
                                                      for summ in summaries.values() if "validation" in summ])
        model["validation_weight_spread"] = {m: ms([summ["validation"]["weight_spread"][m] for summ in summaries.values()
                                                    if "weight_spread" in summ.get("validation", {})]) for m in MODALITIES}
        degraded = [summ["validation"]["degraded"] for summ in summaries.values() if "degraded" in summ.get("validation", {})]
        model["validation_degraded"] = {
            **{m: {k: ms([d[m][k] for d in degraded]) for k in ("weight_clean", "weight_degraded")} for m in MODALITIES},
            "all_waf": ms([d["all"]["waf"] for d in degraded])} if degraded else None
        for corpus in corpora:
            rows = {}
            for cond in CONDITIONS:
                rows[cond] = {m: ms([r[corpus][cond][m] for r in res.values()]) for m in ("waf", "acc")}
            for rate in [*RATES, "mean"]:
                rows[f"missing_rate_{rate}"] = {m: ms([r[corpus]["missing_rate"][rate][m] for r in res.values()])
                                                for m in ("waf", "acc")}
            rows["weights_full"] = {m: ms([r[corpus]["full"]["weights"][m] for r in res.values()]) for m in MODALITIES}
            rows["sigma_full"] = {m: ms([r[corpus]["full"]["sigma"][m] for r in res.values()]) for m in MODALITIES}
            model["corpora"][corpus] = rows
        model["uncertainty"] = {
            corpus: {k: ms([u[corpus][k] for u in unc[key].values() if corpus in u])
                     for k in ("auroc_sigma", "auroc_prob", "ece", "error_rate")}
            for corpus in (CLEAN, NOISE) if any(corpus in u for u in unc[key].values())}
        agg[key] = model
    return agg


def fmt(x: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    return f"{scale * x['mean']:.{digits}f} ± {scale * x['std']:.{digits}f}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


# The checks: V2 minus each other arm, weighted F1 on the clean test pairs, at least this many points.
CRITERIA = {"full": ("all modalities", -0.5), "missing_rate_mean": ("mean of the missing-rate sweep", 2.0)}


def checks(agg: dict) -> list[str]:
    c2 = agg["v2"]["corpora"]
    lines = []
    for other in [key for key in agg if key != "v2"]:
        for cond, (what, least) in CRITERIA.items():
            d = 100 * (c2[CLEAN][cond]["waf"]["mean"] - agg[other]["corpora"][CLEAN][cond]["waf"]["mean"])
            lines.append(f"- V2 - {ARM_LABELS[other]}, weighted F1, {what} (clean test): {d:+.2f} points "
                         f"(criterion: >= {least:+g}) -> **{'met' if d >= least else 'NOT met'}**")
    for m, corpus in SINGLE_NOISE.items():
        if corpus in c2:
            before, after = c2[CLEAN]["weights_full"][m]["mean"], c2[corpus]["weights_full"][m]["mean"]
            lines.append(f"- V2 mean fusion weight on {m}: clean {before:.4f} -> {m} noised {after:.4f} "
                         f"-> **{'falls' if after < before else 'does NOT fall'}**")
    return lines


MAIN_COLUMNS = [("waf", CLEAN, "WAF (clean)"), ("acc", CLEAN, "ACC (clean)"), ("waf", NOISE, "WAF (noise)")]


def main_table(agg: dict) -> list[str]:
    columns = [(key, metric, corpus, f"{ARM_LABELS[key]} {name}") for metric, corpus, name in MAIN_COLUMNS for key in agg]
    rows = []
    for cond in CONDITIONS + [f"missing_rate_{r}" for r in RATES] + ["missing_rate_mean"]:
        label = cond.replace("missing_rate_", "missing r=") if cond != "missing_rate_mean" else "**missing-rate mean**"
        rows.append([label, *(fmt(agg[key]["corpora"][corpus][cond][metric]) if corpus in agg[key]["corpora"] else "n/a"
                              for key, metric, corpus, _ in columns)])
    return table(["condition", *(head for *_, head in columns)], rows)


README_START, README_END = "<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->"


def update_readme(readme: Path, agg: dict, meta: dict) -> None:
    """Replace the text between the README's benchmark-table markers with the generated table."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        print(f"{readme}: no {README_START} / {README_END} markers; README not updated", flush=True)
        return
    block = [README_START,
             f"<!-- generated by scripts/run_experiments.py on {meta['date']} (git {meta['git']}); do not edit by hand -->",
             "", f"`{meta['command']}`: {arms_line(agg)}; {len(agg['v2']['seeds'])} seeds each, {meta['epochs']} epochs, "
             f"{meta['num_folds']}-fold CV grouped by speaker; mean ± std in percent. Clean = test1, "
             "noise = test2 (every modality degraded).", "", *main_table(agg), "", *checks(agg), "", README_END]
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + "\n".join(block) + tail, encoding="utf-8")


def markdown(agg: dict, meta: dict, ablation_md: str | None) -> str:
    seeds = agg["v2"]["seeds"]
    labels = {key: ARM_LABELS[key] for key in agg}
    L = ["# Paired emotion benchmark: " + " versus ".join(labels.values()), "",
         f"Generated by `scripts/run_experiments.py` on {meta['date']} (git {meta['git']}); do not edit by hand.", "",
         "Command:", "", "```", meta["command"], "```", "",
         (f"Benchmark: `{meta['build_command']}` -> {meta['corpora_sizes']} (extractors {meta['extractors']}; "
         f"test speakers {meta['test_speakers']})."), "",
         (f"Each run: `{meta['train_command']}`, each arm with its own flags in place of `--model "
          f"attention_robust_v2` ({arms_line(agg)}), seeds {seeds}, "
         f"{meta['epochs']} epochs, {meta['num_folds']}-fold CV, test predictions averaged over the folds."), "",
         ("Numbers: mean ± std over the seeds, in percent. test1 = clean test pairs, test2 = every modality "
         "degraded (speech + noise at 5-10 dB SNR, faces blurred x2/x4, 30 % word drop-out)."), "",
         "## Checks", "", *checks(agg), "",
         "## Main table (weighted F1 / accuracy)", "", *main_table(agg)]
    corpora = [(CLEAN, "clean"), (NOISE, "all noised")] + [(c, f"{m} noised") for m, c in SINGLE_NOISE.items()]

    def per_corpus(field: str, keys) -> list[list[str]]:
        return [[labels[key], label, *(fmt(agg[key]["corpora"][corpus][field][m], 1, 3) for m in MODALITIES)]
                for key in keys for corpus, label in corpora if corpus in agg[key]["corpora"]]

    with_sigma = [key for key in agg if any(agg[key]["corpora"][CLEAN]["sigma_full"].values())]
    L += ["", "## Mean fusion weight per modality, all modalities present", "",
          "Over the test samples; 'X noised' = the corpus where only X is degraded (test3/test4/test5).", "",
          *table(["model", "corpus", *MODALITIES], per_corpus("weights_full", agg)),
          "", "Sigma (u, mean over dims) per modality, the arms that have one:", "",
          *table(["model", "corpus", *MODALITIES], per_corpus("sigma_full", with_sigma))]
    L += ["", "## Uncertainty versus errors (all modalities present)", "",
          ("AUROC of separating wrong from right predictions (0.5 = no information) by the fused sigma "
          "(sum of fusion weight x u over the present modalities; not V1, which has no sigma) and by 1 - top "
          "probability; ECE of the top probability (10 bins)."), "",
          *table(["model", "corpus", "AUROC fused sigma", "AUROC 1 - p_max", "ECE", "error rate"],
                 [[labels[key], corpus, *(fmt(u[k], 1, 3) for k in ("auroc_sigma", "auroc_prob", "ece", "error_rate"))]
                  for key in agg for corpus, u in agg[key]["uncertainty"].items()])]
    L += ["", "## Validation (model selection)", "",
          ("Mean best fold emoval (validation weighted F1): "
           + ", ".join(f"{labels[key]} {fmt(agg[key]['val_emoval'])}" for key in agg)
           + f". Demo checkpoint: {meta.get('exported') or 'not exported'}."), "",
          ("Each fold's kept model on its own validation samples (speakers it never trained on), weighted F1 "
          "averaged over the folds; the same drop patterns and missing-rate sweep as on test. These are the "
          "numbers model variants were compared by."), "",
          *table(["condition", *labels.values()],
                 [["**missing-rate mean**" if cond == "missing_rate_mean" else cond,
                   *(fmt(agg[key]["validation"][cond]) for key in agg)] for cond in [*CONDITIONS, "missing_rate_mean"]])]
    L += ["", ("Spread of the fusion weights: the std over validation samples (all modalities present) of each "
               "modality's weight, averaged over the folds; near 0 = one constant weight per modality."), "",
          *table(["model", *MODALITIES], [[labels[key], *(fmt(agg[key]["validation_weight_spread"][m], 1, 3)
                                                          for m in MODALITIES)] for key in agg])]
    degraded = {key: agg[key]["validation_degraded"] for key in agg if agg[key]["validation_degraded"]}
    if degraded:
        L += ["", ("Degraded validation inputs (the builder's training views of the validation samples, never the "
                   "test's): each modality's mean fusion weight clean -> with only that modality degraded, and "
                   "the weighted F1 with every modality degraded."), "",
              *table(["model", *MODALITIES, "WAF, all degraded"],
                     [[labels[key], *(f"{d[m]['weight_clean']['mean']:.3f} -> {d[m]['weight_degraded']['mean']:.3f}"
                                      for m in MODALITIES), fmt(d["all_waf"])] for key, d in degraded.items()])]
    L.append("")
    L += ["## Ablations (scripts/run_ablation.sh's runs)", "",
          ablation_md if ablation_md else "Not run yet (`--no_ablations`, or still running when this file was written).", ""]
    return "\n".join(L)


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def export_checkpoint(args, agg: dict, runs: dict, md_table: str, meta: dict) -> str:
    per_seed = agg["v2"]["val_emoval_per_seed"]
    best = max(per_seed, key=lambda s: (per_seed[s], -s))
    src = runs["v2"][best] / "checkpoint"
    dst = Path(args.checkpoint_dir)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy2(src / name, dst / name)
    from model_card import model_card  # scripts/model_card.py

    (dst / "README.md").write_text(model_card(meta, agg, best, per_seed[best], md_table), encoding="utf-8")
    return f"V2 seed {best} (validation emoval {per_seed[best]:.4f}) -> {dst}"


def main(argv=None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    manifest, build_cmd = build_benchmark(args)
    runs = train_runs(args, manifest)
    unc = {key: {s: uncertainty(args, manifest, p) for s, p in seeds.items()} for key, seeds in runs.items()}
    agg = aggregate(runs, unc)
    example = train_command(args, manifest, "v2", 0, Path(args.runs_dir) / "v2-seed0")
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git": git_rev(),
        "command": shlex.join(["python", "scripts/run_experiments.py", *(argv if argv is not None else sys.argv[1:])]),
        "build_command": shlex.join(["python", *build_cmd[1:]]),
        "train_command": shlex.join(["python", *example[1:]]),
        "epochs": args.epochs, "num_folds": args.num_folds, "extractors": manifest["extractors"],
        "degraded_views": args.degraded_views,
        "test_speakers": manifest["sources"]["test_speakers"],
        "corpora_sizes": {c: v["n"] for c, v in manifest["corpora"].items()},
        "manifest_sources": manifest["sources"],
    }
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)

    def write(ablation_md: str | None) -> str:
        md = markdown(agg, meta, ablation_md)
        if not args.no_export:
            meta["exported"] = export_checkpoint(args, agg, runs, md, meta)
            md = markdown(agg, meta, ablation_md)
        (results_dir / "benchmark.md").write_text(md, encoding="utf-8")
        payload = {"meta": meta, "aggregate": agg, "ablations": ablation_md,
                   "uncertainty_per_run": {k: {str(s): u for s, u in v.items()} for k, v in unc.items()},
                   "runs": {k: {str(s): str(p) for s, p in v.items()} for k, v in runs.items()},
                   "seconds": round(time.perf_counter() - t0, 1)}
        (results_dir / "benchmark.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
        if not args.no_readme:
            update_readme(ROOT / "README.md", agg, meta)
        return md

    md = write(None)  # the main results first; the ablations take as long again
    if not args.no_ablations:
        md = write(ablations(args, manifest, runs))
    print(md)


if __name__ == "__main__":
    main()
