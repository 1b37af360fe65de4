"""V1, the seed's recipe, our V2 and the naive-Bayes baseline on the paired benchmark, RAVDESS and CMU-MOSI.

    python scripts/real_data.py                                   # the full protocol: 5 seeds, 4 datasets
    python scripts/real_data.py --datasets ravdess --seeds 0 1 2  # a part of it (the file says which)

Steps (a finished run with the same command is reused, so an interrupted run resumes):
1. the data: `python -m armer.benchmark build` (the paired benchmark), `python -m armer.datasets
   ravdess|mosi` (MERBench folders of the truly paired sets), into --cache_dir, and the paired
   benchmark with its text replaced by noise (`python -m armer.datasets useless`, NOISE_TEXT);
2. each arm (`ARMS`: V1, `--recipe seed`, V2 at its defaults) and seed with `python -m armer.train`
   (5-fold CV grouped by speaker / actor / video); the naive-Bayes late fusion of per-modality
   logistic regressions (`armer.evaluate.baseline`) on the same folds and test corpora;
3. per run, from its checkpoint: AUROC of separating wrong from right test predictions by the
   fused sigma (weight-averaged u of the present modalities); on the paired benchmark, each
   modality's weight and its score alone across the severity ladder (`armer.evaluate.ladder`;
   from a second build with the ladder when the benchmark was built with --no_ladder);
4. the demo checkpoint (checkpoints/) on examples/astronaut_talking.mp4: each modality's weight
   clean and at its ladder's most severe level;
5. results/real_data.{md,json}: mean +- std over the seeds, the goals of issue #14 checked with
   their numbers. Refuses a working tree with uncommitted changes (the file names the commit it ran
   on) unless --allow_dirty, and then says so in the file.

CMU-MOSI: its text and video features were trained on its own train split, so validation folds
cannot choose anything there; every arm trains a fixed number of epochs and keeps the last one
(`MOSI_FIXED`), and only its test split is reported.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from arms import ARMS, ARM_NAMES as TRAINED_ARM_NAMES  # noqa: E402
from armer.constants import MODALITIES  # noqa: E402
from armer.model.missing import DROP_PATTERNS  # noqa: E402
from report_files import commit_line, committed, generated_line, write_report  # noqa: E402
from run_experiments import BENCHMARK_FEATURE_SCALING, FEATURE_SCALING, ms, run, train_once  # noqa: E402

ARM_NAMES = {**TRAINED_ARM_NAMES, "nb": "naive-Bayes late fusion"}
MOSI_EPOCHS = 30
MOSI_FIXED = ["--epochs", str(MOSI_EPOCHS), "--select_from_epoch", str(MOSI_EPOCHS), "--early_stop", "0",
              "--lr_patience", "0"]
# The paired benchmark with its text replaced by Gaussian noise (`python -m armer.datasets useless`).
NOISE_TEXT = "benchmark_noise_text"
NOISE_FOLDER = "noise-UTT"
# The modality that carries no emotion, where a dataset has one by construction.
USELESS = {"ravdess": "text", NOISE_TEXT: "text"}
SINGLE_DEGRADED = {"audio": "test3", "text": "test4", "video": "test5"}
CONDITIONS = ["full", *DROP_PATTERNS]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--datasets", nargs="+", default=["benchmark", "ravdess", "mosi", NOISE_TEXT],
                   choices=["benchmark", "ravdess", "mosi", NOISE_TEXT])
    p.add_argument("--dataset_seeds", nargs="*", default=[], metavar="DATASET=S,S,...",
                   help="other seeds for one dataset than --seeds (the file says so)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--cache_dir", default=str(Path.home() / ".cache" / "armer"))
    p.add_argument("--runs_dir", default=str(ROOT / "runs" / "real_data"))
    p.add_argument("--out", default=str(ROOT / "results" / "real_data.md"))
    p.add_argument("--ladder_dir", default=None,
                   help="where the severity ladder's corpora come from: default the paired benchmark itself, or, when "
                        "it was built with --no_ladder, CACHE_DIR/benchmark-ladder (built with the ladder; its "
                        "training and clean test pairs must equal the benchmark's); 'none' skips the ladder")
    p.add_argument("--benchmark_runs", default=str(ROOT / "runs" / "experiments"),
                   help="the paired benchmark's runs: scripts/run_experiments.py's --runs_dir")
    p.add_argument("--test_actors", nargs="+", default=["15", "16"], help="RAVDESS test actors")
    p.add_argument("--train_args", default="", help="extra arguments for every armer.train run (quoted)")
    p.add_argument("--build_args", default="", help="extra arguments for armer.benchmark build (quoted), as "
                                                    "scripts/run_experiments.py --build_args")
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--allow_dirty", action="store_true", help="run on uncommitted changes (the file says so)")
    return p.parse_args(argv)


def prepare(args: argparse.Namespace, dataset: str) -> tuple[list[str], list[str]]:
    """The data's `armer.train` flags and the command that wrote it (run unless its output exists)."""
    cache = Path(args.cache_dir)
    if dataset == "benchmark":  # built (or reused) as scripts/run_experiments.py does
        from run_experiments import build_benchmark, parse_args as experiment_args

        out = cache / "benchmark"
        manifest, cmd = build_benchmark(experiment_args(["--bench_dir", str(out), "--data_root", args.data_root,
                                                         f"--build_args={args.build_args}", "--nice", str(args.nice)]))
        folders = manifest["feature_folders"]
        flags = ["--features_root", str(out / "features"), "--label_path", str(out / "label-6way.npz"),
                 *[x for m in MODALITIES for x in (f"--{m}_feature", folders[m])],
                 "--fold_groups", "speaker", "--degraded_views", "0.25", *FEATURE_SCALING[BENCHMARK_FEATURE_SCALING]]
        return flags, cmd
    if dataset == NOISE_TEXT:  # the benchmark's folders, its text swapped for a noise folder beside them
        flags, _ = prepare(args, "benchmark")
        f = flag_values(flags)
        cmd = [sys.executable, "-m", "armer.datasets", "useless", "--features_root", f["--features_root"],
               "--like", f["--text_feature"], "--name", NOISE_FOLDER, "--kind", "noise"]
        if not (Path(f["--features_root"]) / NOISE_FOLDER).is_dir():
            run(cmd, cache / f"{dataset}.log", nice=args.nice)
        return [x if x != f["--text_feature"] else NOISE_FOLDER for x in flags], cmd
    out = cache / dataset
    cmd = [sys.executable, "-m", "armer.datasets", dataset, "--data_root", args.data_root, "--out", str(out)]
    if dataset == "ravdess":
        cmd += ["--test_actors", *args.test_actors]
    manifest = out / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text()).get("command") != cmd[3:]:
        run(cmd, cache / f"{dataset}.convert.log", nice=args.nice)
        written = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**written, "command": cmd[3:]}, indent=1), encoding="utf-8")
    return json.loads(manifest.read_text())["train_flags"], cmd


def flag_values(flags: list[str]) -> dict[str, str | None]:
    """{"--name": value} of `python -m armer.train` flags; None for a flag without one (--no-normalize)."""
    follows = [*flags[1:], None]
    return {x: (None if nxt is None or nxt.startswith("--") else nxt)
            for x, nxt in zip(flags, follows) if x.startswith("--")}


def seeds_of(args: argparse.Namespace, dataset: str) -> list[int]:
    """--seeds, or the dataset's own from --dataset_seeds."""
    for item in args.dataset_seeds:
        name, _, seeds = item.partition("=")
        if name == dataset:
            return [int(x) for x in seeds.split(",") if x]
    return args.seeds


def train(args: argparse.Namespace, dataset: str, flags: list[str], arm: str, seed: int) -> Path:
    if dataset == "benchmark":  # the runs of scripts/run_experiments.py (same commands, same folder)
        return train_benchmark(args, arm, seed)
    save = Path(args.runs_dir) / dataset / f"{arm}-seed{seed}"
    cmd = [sys.executable, "-m", "armer.train", *flags, *ARMS[arm], "--seed", str(seed), "--save_root", str(save),
           *(MOSI_FIXED if dataset == "mosi" else []), *shlex.split(args.train_args)]
    return train_once(cmd, save, args.nice, f"{dataset} {arm} seed {seed}")


def train_benchmark(args: argparse.Namespace, arm: str, seed: int) -> Path:
    """The paired benchmark's run of `arm` and `seed` as scripts/run_experiments.py trains it (at its
    defaults), reused from its --runs_dir when it is there."""
    from run_experiments import parse_args as experiment_args, train_run

    options = experiment_args(["--bench_dir", str(Path(args.cache_dir) / "benchmark"), "--data_root", args.data_root,
                               f"--build_args={args.build_args}", f"--train_args={args.train_args}",
                               "--runs_dir", args.benchmark_runs, "--nice", str(args.nice)])
    return train_run(options, json.loads((Path(options.bench_dir) / "manifest.json").read_text()), arm, seed)


def load(flags: list[str]):
    from armer.data import load_dataset

    f = flag_values(flags)
    return load_dataset(f["--features_root"], f["--label_path"], {m: f[f"--{m}_feature"] for m in MODALITIES})


def baseline(args: argparse.Namespace, dataset: str, flags: list[str], data, seed: int) -> dict:
    from armer.config import TrainConfig
    from armer.evaluate.baseline import evaluate_baseline

    path = Path(args.runs_dir) / dataset / f"nb-seed{seed}.json"
    if path.is_file() and json.loads(path.read_text()).get("flags") == flags:
        return json.loads(path.read_text())
    f = flag_values(flags)
    result = {"flags": flags, **evaluate_baseline(data, TrainConfig(seed=seed, fold_groups=f["--fold_groups"]))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result), encoding="utf-8")
    return result


def sigma_auroc(save: Path, data) -> float | None:
    """AUROC of the fused sigma for the wrong predictions on test1 (None for V1, which has no sigma;
    for a valence-only model, wrong = the sign of the valence)."""
    from armer.checkpoint import load_checkpoint
    from armer.evaluate.conditions import predict, to_batch
    from armer.evaluate.metrics import error_auroc

    model, info = load_checkpoint(save / "checkpoint")
    corpus = data.tests["test1"]
    out = {k: v.numpy() for k, v in predict(model, to_batch(corpus)).items()}
    if np.isnan(out["sigma"]).all():
        return None
    fused = np.nansum(out["weights"] * np.nan_to_num(out["sigma"]), axis=1)
    if info.label_names:
        wrong = out["probs"].argmax(-1) != corpus.emotions
    else:
        wrong = (out["valence"] >= 0) != (corpus.valences >= 0)
    return error_auroc(fused, wrong)


def ladder_corpora(args: argparse.Namespace, flags: list[str], data) -> tuple[dict | None, list[str] | None]:
    """The severity ladder's corpora (modality -> level -> corpus) with the clean test corpus under
    None, and the build command they come from; (None, None) with --ladder_dir none."""
    from armer.evaluate.ladder import group_ladder
    from run_experiments import build_benchmark, parse_args as experiment_args

    if args.ladder_dir == "none":
        return None, None
    bench = Path(args.cache_dir) / "benchmark"
    if args.ladder_dir is None and json.loads((bench / "manifest.json").read_text()).get("ladder"):
        source, cmd = data, None
    else:
        out = Path(args.ladder_dir or Path(args.cache_dir) / "benchmark-ladder")
        build_args = shlex.join(x for x in shlex.split(args.build_args) if x != "--no_ladder")
        _, cmd = build_benchmark(experiment_args(["--bench_dir", str(out), "--data_root", args.data_root,
                                                  f"--build_args={build_args}", "--nice", str(args.nice)]))
        f = flag_values(flags)
        source = load(["--features_root", str(out / "features"), "--label_path", str(out / "label-6way.npz"),
                       *[x for m in MODALITIES for x in (f"--{m}_feature", f[f"--{m}_feature"])]])
        for name in ("train", "test1"):  # the runs trained on the benchmark: the ladder's build must match it
            a, b = data.corpora[name], source.corpora[name]
            if a.samples != b.samples or not all(np.array_equal(x, y) for x, y in zip(a.features, b.features)):
                raise SystemExit(f"{out}: its {name} pairs differ from {bench}'s; build both with the same options")
    ladder = group_ladder(source.corpora)
    return ({**ladder, None: source.corpora["test1"]} if ladder else None), cmd


def ladder_of(save: Path, ladder: dict) -> dict[str, list[dict]]:
    """`armer.evaluate.ladder.ladder_points` of one run's checkpoint, as JSON."""
    from dataclasses import asdict

    from armer.checkpoint import load_checkpoint
    from armer.evaluate.ladder import ladder_points

    model, info = load_checkpoint(save / "checkpoint")
    levels = {m: v for m, v in ladder.items() if m is not None}
    points = ladder_points(model, ladder[None], levels, info.has_valence)
    return {m: [asdict(p) for p in ps] for m, ps in points.items()}


DEMO_CLIP = ROOT / "examples" / "astronaut_talking.mp4"
# Each modality's most severe ladder level, as `armer.predict` flags (Degrade fields).
SEVERE = {"audio": {"snr_db": -5.0}, "text": {"word_drop": 0.9}, "video": {"blur": 8}}


def demo_weights(checkpoint: Path) -> dict[str, tuple[float, float]]:
    """modality -> (its fusion weight on the example clip clean, with only it at its ladder's most
    severe level), as `python -m armer.predict CLIP --<flag> <level>` gives with `checkpoint`."""
    from armer.predict.predictor import Degrade, Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    clean = predictor.predict(video=DEMO_CLIP).weights
    return {m: (clean[m], predictor.predict(video=DEMO_CLIP, degrade=Degrade(**level)).weights[m])
            for m, level in SEVERE.items()}


def demo_check(checkpoint: Path) -> list[str]:
    """The shipped demo checkpoint on the example clip: each modality's weight clean and with only it
    degraded at its ladder's most severe level."""
    lines = [f"Demo checkpoint (`{checkpoint.relative_to(ROOT)}`) on `{DEMO_CLIP.relative_to(ROOT)}`: each modality's "
             "fusion weight clean and with only that modality at its ladder's most severe level "
             "(`python -m armer.predict CLIP --<flag> <level>`):", "",
             "| flag | weight clean | weight degraded | change |", "|---|---|---|---|"]
    changes = {}
    for m, (clean, degraded) in demo_weights(checkpoint).items():
        changes[m] = degraded / clean - 1.0
        flag = " ".join(f"--{k} {v:g}" for k, v in SEVERE[m].items())
        lines.append(f"| `{flag}` ({m}) | {clean:.3f} | {degraded:.3f} | {100 * changes[m]:+.0f}% |")
    met = changes["audio"] <= -0.30
    lines += ["", f"- the demo checkpoint lowers the audio weight by 30%+ at {SEVERE['audio']['snr_db']:g} dB SNR: "
                  f"{100 * changes['audio']:+.0f}% -> **{'met' if met else 'NOT met'}**", ""]
    return lines


def metric_of(dataset: str) -> str:
    return "acc2" if dataset == "mosi" else "waf"


def arm_summary(dataset: str, results: list[dict], key: str) -> dict[str, Any]:
    """mean +- std over seeds of every condition (validation and test1), the weights and sigma AUROC."""
    def over(get) -> dict | None:
        values = []
        for r in results:
            try:
                values.append(get(r))
            except (KeyError, TypeError):
                values.append(None)
        return ms(values)

    out: dict[str, Any] = {"validation": {}, "test1": {}, "weights": {}, "validation_weights": {}}
    for cond in CONDITIONS:
        out["validation"][cond] = over(lambda r: r["validation"][cond][key])
        out["test1"][cond] = over(lambda r: r["results"]["test1"][cond][key])
    for part in ("validation", "test1"):
        get = (lambda r: r["validation"]) if part == "validation" else (lambda r: r["results"]["test1"])
        out[part]["missing_rate"] = {rate: over(lambda r, rate=rate: get(r)["missing_rate"][rate][key])
                                     for rate in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "mean")}
    corpora = ["test1", *SINGLE_DEGRADED.values(), "test2"] if dataset == "benchmark" else ["test1"]
    for corpus in corpora:
        out["weights"][corpus] = {m: over(lambda r, c=corpus, m=m: r["results"][c]["full"]["weights"][m])
                                  for m in MODALITIES}
    out["validation_weights"] = {m: over(lambda r, m=m: r["validation"]["weight_mean"][m]) for m in MODALITIES}
    out["validation_degraded"] = {m: {k: over(lambda r, m=m, k=k: r["validation"]["degraded"][m][k])
                                      for k in ("weight_clean", "weight_degraded")} for m in MODALITIES}
    out["sigma_auroc"] = over(lambda r: r["sigma_auroc"])
    if all("ladder" in r for r in results):
        first = results[0]["ladder"]
        out["ladder"] = {m: [{"level": p["level"], **{k: over(lambda r, m=m, i=i, k=k: r["ladder"][m][i][k])
                                                       for k in ("weight", "alone")}}
                             for i, p in enumerate(points)] for m, points in first.items()}
    return out


LADDER_UNITS = {"audio": "speech SNR, dB", "text": "word drop-out", "video": "face blur factor"}


def mean_verdict(points: list[dict]) -> dict:
    """`armer.evaluate.ladder.ladder_verdict` of one arm's ladder points, averaged over the seeds."""
    from armer.evaluate.ladder import LadderPoint, ladder_verdict

    return ladder_verdict([LadderPoint(p["level"], p["weight"]["mean"], p["alone"]["mean"]) for p in points])


def ladder_tables(summary: dict[str, dict], arms: list[str], cmd: list[str] | None) -> list[str]:
    """Per modality: its mean weight (every modality present) and its score alone, clean and at each
    ladder level, per arm, and the rank correlation of the two over the points (of the seed means)."""
    arms = [a for a in arms if "ladder" in summary[a]]
    if not arms:
        return []
    source = f"`{shlex.join(['python', *cmd[1:]])}` (the same training and clean test pairs)" if cmd else "this build"
    lines = ["Severity ladder: the clean test pairs with one modality degraded at one level, from " + source
             + ". Each cell: the modality's mean fusion weight with every modality present / weighted F1 % of "
             "the model with that modality alone (mean over the seeds); last column: the rank correlation of "
             "the two over the clean point and the levels (goal: 0.8 or more), and at each level where the modality "
             "alone loses 10+ points, its weight's relative change (goal: -30% or lower).", ""]
    for m, points in summary[arms[0]]["ladder"].items():
        levels = ["clean", *(f"{p['level']:g}" for p in points[1:])]
        lines += [f"**{m}** ({LADDER_UNITS[m]}):", "", "| arm | " + " | ".join(levels) + " | rank corr. | weight change where alone -10+ |",
                  "|---" * (len(levels) + 3) + "|"]
        for arm in arms:
            pts = summary[arm]["ladder"][m]
            verdict = mean_verdict(pts)
            rho = verdict["rank_correlation"]
            falls = ", ".join(f"{x['level']:g}: {-100 * x['fall']:+.0f}%" for x in verdict["levels"]
                              if x["falls_enough"] is not None) or "none asked"
            lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(f"{p['weight']['mean']:.3f} / {100 * p['alone']['mean']:.1f}"
                                                             for p in pts)
                         + f" | {'n/a' if rho is None else f'{rho:.2f}'} | {falls} |")
        lines.append("")
    return lines


def ladder_goals(summary: dict[str, dict]) -> list[str]:
    """The ladder's goals for V2: per modality, the rank correlation and the falls where it loses 10+ points alone."""
    from armer.evaluate.ladder import MIN_FALL, MIN_LOSS

    lines = []
    for m, pts in summary.get("v2", {}).get("ladder", {}).items():
        verdict = mean_verdict(pts)
        rho = verdict["rank_correlation"]
        lines.append(f"- V2 {m}: rank correlation of its weight and its score alone over the ladder "
                     f"{'n/a' if rho is None else f'{rho:.2f}'} (goal 0.8) -> "
                     f"**{'met' if rho is not None and rho >= 0.8 else 'NOT met'}**")
        asked = [x for x in verdict["levels"] if x["falls_enough"] is not None]
        detail = "; ".join(f"{x['level']:g}: alone -{100 * x['loss']:.0f} points, weight {100 * -x['fall']:+.0f}%"
                           for x in asked)
        lines.append(f"- V2 {m}: where it alone loses {100 * MIN_LOSS:.0f}+ points, its weight falls "
                     f"{100 * MIN_FALL:.0f}%+: " + (f"{detail} -> **{'met' if verdict['falls_met'] else 'NOT met'}**"
                                                     if asked else "no level costs it that much"))
    return lines


def fmt(x: dict | None, scale: float = 100.0) -> str:
    """mean ± std: percent with one decimal (scale 100), or a weight / AUROC with three (scale 1)."""
    digits = 1 if scale == 100.0 else 3
    return "n/a" if x is None else f"{scale * x['mean']:.{digits}f} ± {scale * x['std']:.{digits}f}"


def tables(dataset: str, summary: dict[str, dict], arms: list[str]) -> list[str]:
    key = metric_of(dataset)
    name = {"waf": "weighted F1 %", "acc2": "binary accuracy %"}[key]
    cols = [*CONDITIONS, "missing-rate mean"]
    lines = []
    parts = ["test1"] if dataset == "mosi" else ["validation", "test1"]
    for part in parts:
        title = "validation folds (out-of-fold)" if part == "validation" else "test"
        lines += [f"**{title}**, {name}:", "", "| arm | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for arm in arms:
            s = summary[arm][part]
            lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(fmt(s[c]) for c in CONDITIONS)
                         + f" | {fmt(s['missing_rate']['mean'])} |")
        lines.append("")
    lines += ["Missing-rate sweep on test (r = 0.1 .. 0.7):", "",
              "| arm | " + " | ".join(f"r={r}" for r in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")) + " |",
              "|---" * 8 + "|"]
    for arm in arms:
        sweep = summary[arm]["test1"]["missing_rate"]
        lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(fmt(sweep[r]) for r in
                                                            ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")) + " |")
    lines += ["", "Mean fusion weight of each modality, all modalities present (test; validation folds), and "
              "sigma-versus-error AUROC on test:", "",
              "| arm | test audio / text / video | validation audio / text / video | sigma AUROC |", "|---|---|---|---|"]
    for arm in arms:
        if arm == "nb":
            continue
        s = summary[arm]
        test_w = " / ".join(fmt(s["weights"]["test1"][m], 1.0) if s["weights"]["test1"][m] else "n/a"
                            for m in MODALITIES).replace(" ± ", "±")
        val_w = " / ".join(fmt(s["validation_weights"][m], 1.0) for m in MODALITIES).replace(" ± ", "±")
        lines.append(f"| {ARM_NAMES[arm]} | {test_w} | {val_w} | {fmt(s['sigma_auroc'], 1.0)} |")
    lines.append("")
    if dataset == "benchmark":
        lines += ["Each modality's mean weight on the clean test pairs and with only that modality degraded "
                  "(test3 speech, test4 text, test5 face), and on validation with its degraded view:", "",
                  "| arm | " + " | ".join(f"{m} clean -> degraded (test) | {m} (validation)" for m in MODALITIES) + " |",
                  "|---" * 7 + "|"]
        for arm in [a for a in arms if a != "nb"]:
            s = summary[arm]
            cells = []
            for m, corpus in SINGLE_DEGRADED.items():
                clean, degraded = s["weights"]["test1"][m], s["weights"][corpus][m]
                vd = s["validation_degraded"][m]
                cells.append(f"{fmt(clean, 1.0)} -> {fmt(degraded, 1.0)}")
                cells.append(f"{fmt(vd['weight_clean'], 1.0)} -> {fmt(vd['weight_degraded'], 1.0)}")
            lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def goals(dataset: str, summary: dict[str, dict], arms: list[str]) -> list[str]:
    """Issue #14's goals that these runs measure, each with its numbers and met / NOT met."""
    part = "test1" if dataset == "mosi" else "validation"
    lines = []
    if "v2" not in arms:
        return lines

    def mean(arm: str, cond: str) -> float | None:
        value = summary[arm][part]["missing_rate"]["mean"] if cond == "mr" else summary[arm][part][cond]
        return None if value is None else 100 * value["mean"]

    best = max((a for a in arms if mean(a, "full") is not None), key=lambda a: mean(a, "full"))
    gap = mean("v2", "full") - mean(best, "full")
    lines.append(f"- V2 with all modalities within 0.5 points of the best arm ({ARM_NAMES[best]}, {part}): "
                 f"{gap:+.1f} -> **{'met' if gap >= -0.5 else 'NOT met'}**")
    for other, margin in (("v1", 2.0), ("seed", 2.0), ("nb", 2.0)):
        if other in arms and mean(other, "mr") is not None:
            d = mean("v2", "mr") - mean(other, "mr")
            lines.append(f"- V2 missing-rate mean at least {margin:g} points above {ARM_NAMES[other]} ({part}): "
                         f"{d:+.1f} -> **{'met' if d >= margin else 'NOT met'}**")
    if dataset in USELESS:
        m = USELESS[dataset]
        w = summary["v2"]["weights"]["test1"][m]
        vw = summary["v2"]["validation_weights"][m]
        ok = w is not None and w["mean"] <= 0.05 and vw is not None and vw["mean"] <= 0.05
        lines.append(f"- the {m} modality carries no emotion here: V2 gives it at most 5% of the weight: test "
                     f"{100 * w['mean']:.1f}%, validation {100 * vw['mean']:.1f}% -> **{'met' if ok else 'NOT met'}**")
    if dataset == "benchmark":
        for m, corpus in SINGLE_DEGRADED.items():
            clean, degraded = summary["v2"]["weights"]["test1"][m], summary["v2"]["weights"][corpus][m]
            if clean and degraded:
                drop = 100 * (1 - degraded["mean"] / clean["mean"])
                lines.append(f"- V2 {m} weight clean -> {m} degraded ({corpus}): {clean['mean']:.3f} -> "
                             f"{degraded['mean']:.3f} ({'falls' if drop > 0 else 'rises'} {abs(drop):.0f}%; the "
                             f"goal where the modality alone loses 10+ points: a fall of 30%+)")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    commit = committed(args.allow_dirty)
    started = time.perf_counter()
    report: dict[str, Any] = {"commit": commit, "seeds": args.seeds, "dataset_seeds": args.dataset_seeds,
                              "datasets": {}}
    lines = ["# V1, the seed's recipe, V2 and a naive-Bayes baseline on paired data", "",
             generated_line("real_data.py"), "", commit_line(commit), "",
             f"Seeds {args.seeds}; mean ± std over the seeds. Arms: " + "; ".join(
                 f"{ARM_NAMES[a]}: `{' '.join(ARMS[a])}`" for a in args.arms) + "; naive-Bayes late fusion of "
             "per-modality logistic regressions (`armer/evaluate/baseline.py`). Choices are made on validation "
             "folds only.", ""]
    for dataset in args.datasets:
        flags, prepare_cmd = prepare(args, dataset)
        runs = {arm: {} for arm in args.arms}
        own_seeds = seeds_of(args, dataset)
        for seed in own_seeds:  # seeds outermost: an interrupted run leaves the arms with the same seeds
            for arm in args.arms:
                runs[arm][seed] = train(args, dataset, flags, arm, seed)
        results = {arm: [] for arm in [*args.arms, "nb"]}
        data = load(flags)  # once per dataset: every run's sigma AUROC and the baseline read it
        ladder, ladder_cmd = ladder_corpora(args, flags, data) if dataset == "benchmark" else (None, None)
        for arm, seeds in runs.items():
            for seed, save in seeds.items():
                summary = json.loads((save / "summary.json").read_text())
                summary["sigma_auroc"] = sigma_auroc(save, data)
                if ladder is not None:
                    summary["ladder"] = ladder_of(save, ladder)
                results[arm].append(summary)
        results["nb"] = [baseline(args, dataset, flags, data, seed) for seed in own_seeds]
        arms = [*args.arms, "nb"]
        summary = {arm: arm_summary(dataset, results[arm], metric_of(dataset)) for arm in arms}
        example = shlex.join(["python", "-m", "armer.train", *flags, *ARMS["v2"], "--seed", "0", "--save_root", "RUN",
                              *(MOSI_FIXED if dataset == "mosi" else [])])
        trained_at = sorted({r.get("commit", "unknown") for arm in args.arms for r in results[arm]})
        report["datasets"][dataset] = {"prepare": prepare_cmd[1:], "train_flags": flags, "summary": summary,
                                       "ladder_build": ladder_cmd[1:] if ladder_cmd else None,
                                       "trained_at": trained_at}
        lines += [f"## {dataset}", "", f"Data: `{shlex.join(['python', *prepare_cmd[1:]])}`; training: `{example}` "
                  f"plus each arm's flags. Runs trained at commit(s) {', '.join(f'`{c}`' for c in trained_at)}.", ""]
        if own_seeds != args.seeds:
            lines += [f"Seeds {own_seeds} here (--dataset_seeds), not {args.seeds}.", ""]
        if dataset == NOISE_TEXT:
            lines += ["The paired benchmark above with its text features replaced by Gaussian noise (a vector per "
                      "sample, in training, validation and test alike): the text carries nothing, and V2 should "
                      "give it almost no weight.", ""]
        if dataset == "mosi":
            lines += [f"CMU-MOSI's text and video features were trained on its train split, so validation folds "
                      f"overrate them and cannot choose anything: a fixed recipe (`{' '.join(MOSI_FIXED)}`, the last "
                      "epoch kept), test split only. Shape reference, other features (GCNet's), from ComP (AAAI-26) "
                      "Table 2 as quoted in ../shared/data/README.md: binary accuracy GCNet 80.95 / 64.79 and MoMKE "
                      "86.74 / 70.58 at missing rate 0.1 / 0.7.", ""]
        lines += tables(dataset, summary, arms)
        lines += ladder_tables(summary, arms, ladder_cmd)
        lines += ["Goals:", "", *goals(dataset, summary, arms), *ladder_goals(summary), ""]
    if "benchmark" in args.datasets:
        lines += ["## The demo checkpoint", "", *demo_check(ROOT / "checkpoints")]
    report["seconds"] = round(time.perf_counter() - started)
    write_report(args.out, lines, report)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
