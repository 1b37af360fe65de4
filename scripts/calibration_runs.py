"""V2 variants compared on validation folds: the calibration targets, the heads' own error (the
default) against out-of-fold probes (`--calibration_target out_of_fold`), each at
`--uncertainty_weight` 1, 3 and 10; and V2 at its defaults with one part of the seed's recipe at a
time (`seed_*`: raw features, its optimizer, its schedule, its epoch selection, no degraded views);
V1 with standardised and with raw features (`v1`, `v1_raw_features`); V2 with a higher
modality-dropout rate (`modality_dropout_*`); V2 and V1 with one scale per modality
(`modality_scaling`, `v1_modality_scaling`); V2 with centred raw features (`centered_only`), and
with the feature noise at those features' own scale (`centered_feature_noise`), and raw features with
it (`raw_feature_noise`); V2 with a sharper fusion (`temperature_0.15`); V2
whose fusion weights pass no task-loss gradient to sigma, with out-of-fold targets
(`out_of_fold-calibrated`; at uncertainty weight 30, with T fixed or learned:
`out_of_fold-calibrated-uw30*`); V2 whose u learns only from a training fold held out of the task
loss (`held_out`, and with the fusion as above: `held_out-calibrated-uw30-learned_T`); V2 and V1
without the feature-noise augmentation (`no_modality_noise`, `v1_no_modality_noise`).

    python scripts/calibration_runs.py [--seeds 0] [--variants ...] [--runs_dir runs/calibration] \
        [--build_args=--no_ladder] [--out results/calibration_out_of_fold.md]

Trains (or reuses, when a run with the same arguments is there) V2 with each variant on the paired
benchmark and on RAVDESS (or --datasets; their data prepared as scripts/real_data.py prepares it), records in each
run the commit it trained at, and writes the validation comparison with scripts/compare_runs.py:
each run, and with several seeds the mean ± std over them. Seed 0's runs are in
RUNS_DIR/DATASET/VARIANT, the others' in RUNS_DIR/DATASET/VARIANT-seedN. Refuses to run on
uncommitted changes unless --allow_dirty.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import compare_runs  # noqa: E402
import numpy as np  # noqa: E402
from armer.constants import MODALITIES  # noqa: E402
from arms import ARMS  # noqa: E402
from real_data import NOISE_TEXT, prepare  # noqa: E402
from report_files import committed, generated_line  # noqa: E402
from run_experiments import train_once  # noqa: E402

VARIANTS: dict[str, list[str]] = {  # name (the runs' folder) -> flags; uncertainty weight 1 was the default then
    "head": ["--uncertainty_weight", "1"],
    "out_of_fold": ["--calibration_target", "out_of_fold", "--uncertainty_weight", "1"],
    "head-uncertainty_x3": ["--uncertainty_weight", "3"],
    "head-uncertainty_x10": ["--uncertainty_weight", "10"],
    "out_of_fold-uncertainty_x3": ["--calibration_target", "out_of_fold", "--uncertainty_weight", "3"],
    "out_of_fold-uncertainty_x10": ["--calibration_target", "out_of_fold", "--uncertainty_weight", "10"],
    "defaults": [],
    "seed_raw_features": ["--no-normalize"],
    "seed_optimizer": ["--optimizer", "adamw", "--lr", "5e-4", "--l2", "5e-5"],
    "seed_schedule": ["--lr_patience", "10", "--early_stop", "30"],
    "seed_selection": ["--select_from_epoch", "1"],
    "seed_no_degraded_views": ["--degraded_views", "0"],
    "v1": ["--model", "attention_robust"],  # V1 (after V2's flags: its --model wins), for its feature scaling
    "v1_raw_features": ["--model", "attention_robust", "--no-normalize"],
    "modality_dropout_0.3": ["--modality_dropout", "0.3"],  # V2 trained with more modalities missing
    "modality_dropout_0.5": ["--modality_dropout", "0.5"],
    "modality_scaling": ["--normalize_scope", "modality"],  # one scale per modality, not per dimension
    "v1_modality_scaling": ["--model", "attention_robust", "--normalize_scope", "modality"],
    "centered_only": ["--normalize_scope", "center"],  # raw scales, centred: is the raw features' gain the scale?
    "centered_feature_noise": ["--normalize_scope", "center", "--noise_scale", "feature"],
    "raw_feature_noise": ["--no-normalize", "--noise_scale", "feature"],
    "temperature_0.15": ["--fusion_temperature", "0.15"],  # every weight change 1.67 times as steep in 1/u
    # sigma learns from the calibration term (and the VAE terms), not from the task loss through the weights
    "out_of_fold-calibrated": ["--calibration_target", "out_of_fold", "--calibrated_fusion"],
    "out_of_fold-calibrated-uw30": ["--calibration_target", "out_of_fold", "--calibrated_fusion", "--uncertainty_weight", "30"],
    "out_of_fold-calibrated-uw30-learned_T": ["--calibration_target", "out_of_fold", "--calibrated_fusion",
                                              "--uncertainty_weight", "30", "--learn_temperature"],
    # u learns only from a training fold held out of the task loss: the model's own, unmemorised, errors
    "held_out": ["--calibration_target", "held_out"],
    "held_out-calibrated-uw30-learned_T": ["--calibration_target", "held_out", "--calibrated_fusion",
                                           "--uncertainty_weight", "30", "--learn_temperature"],
    "no_modality_noise": ["--modality_noise", "0"],  # on raw features the N(0, I) noise dwarfs the features
    "v1_no_modality_noise": ["--model", "attention_robust", "--modality_noise", "0"],
}
DATASETS = ("benchmark", "ravdess", NOISE_TEXT)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--cache_dir", default=str(Path.home() / ".cache" / "armer"))
    p.add_argument("--runs_dir", default=str(ROOT / "runs" / "calibration"))
    p.add_argument("--out", default=str(ROOT / "results" / "calibration_out_of_fold.md"))
    p.add_argument("--build_args", default="", help="extra arguments for armer.benchmark build (quoted), as "
                                                    "scripts/run_experiments.py --build_args")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS[:2]), choices=list(DATASETS),
                   help=f"{NOISE_TEXT}: the paired benchmark with its text replaced by noise (scripts/real_data.py)")
    p.add_argument("--test", nargs="*", default=[], metavar="CORPUS",
                   help="also these test corpora's scores (e.g. test1 test2), to read, never to choose by")
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--allow_dirty", action="store_true", help="run on uncommitted changes (the file says so)")
    args = p.parse_args(argv)
    args.test_actors = ["15", "16"]  # RAVDESS's, as scripts/real_data.py's default
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    committed(args.allow_dirty)
    runs, groups = [], {}
    for dataset in args.datasets:
        data_flags, _ = prepare(args, dataset)
        for name in args.variants:
            for seed in args.seeds:
                save = Path(args.runs_dir) / dataset / (name if seed == 0 else f"{name}-seed{seed}")
                cmd = [sys.executable, "-m", "armer.train", *data_flags, *ARMS["v2"], *VARIANTS[name],
                       "--seed", str(seed), "--save_root", str(save)]
                train_once(cmd, save, args.nice, f"{dataset} {name} seed {seed}")
                runs.append(f"{dataset}, {name}{'' if len(args.seeds) == 1 else f', seed {seed}'}={save}")
                groups.setdefault(f"{dataset}, {name}", []).append(save)
    before = seed_means(groups, args.test) if len(args.seeds) > 1 else None
    compare_runs.main([*runs, "--out", args.out, "--test", *args.test], generated=generated_line("calibration_runs.py"),
                      before=before)


def seed_means(groups: dict[str, list[Path]], tests: list[str] = ()) -> list[str]:
    """The table of each dataset and variant's mean ± std over its seeds (and `tests`' scores)."""
    def cell(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * np.mean(values):.{digits}f} ± {scale * np.std(values):.{digits}f}"

    header, rule = compare_runs.test_header(tests)
    lines = ["Mean ± std over the seeds:", "",
             "| variant | full | missing-rate mean | weight audio / text / video | clean -> degraded view, "
             "audio / text / video |" + header, "|---|---|---|---|---|" + rule]
    for label, saves in groups.items():
        summaries = [json.loads((save / "summary.json").read_text()) for save in saves]
        validation = [summary["validation"] for summary in summaries]
        key = compare_runs.metric_key(validation[0])
        degraded = [v.get("degraded") for v in validation]
        cells = [cell([v["full"][key] for v in validation], 100, 1),
                 cell([v["missing_rate"]["mean"][key] for v in validation], 100, 1),
                 " / ".join(cell([v["weight_mean"][m] for v in validation]) for m in MODALITIES),
                 " / ".join(f"{cell([d[m]['weight_clean'] for d in degraded])} -> "
                            f"{cell([d[m]['weight_degraded'] for d in degraded])}" if all(degraded) else "n/a"
                            for m in MODALITIES)]
        for name in tests:
            scores = [summary["results"][name] for summary in summaries if name in (summary.get("results") or {})]
            cells.append(f"{cell([r['full'][key] for r in scores], 100, 1)} / "
                         f"{cell([r['missing_rate']['mean'][key] for r in scores], 100, 1)}" if scores else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, "", "Each run:", ""]


if __name__ == "__main__":
    main()
