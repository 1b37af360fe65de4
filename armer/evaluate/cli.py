"""Evaluate a checkpoint on MERBench-format data under missing and noisy modalities.

    python -m armer.evaluate --checkpoint runs/v2/checkpoint --features_root FEATS \
        --label_path label-6way.npz --out runs/v2/eval [--device auto|cpu|cuda|cuda:N]

Conditions per corpus: full, the six fixed drop patterns, the missing-rate sweep (r = 0.1..0.7)
and its mean, and Gaussian feature noise on each modality (--noise_levels, in feature stds).
Writes `<out>/results.json` and `<out>/results.md`; prints the Markdown table. Conditions that need
a modality the data lacks altogether are null in JSON, n/a in Markdown. Bad arguments exit with
status 2 and one `error: ...` line.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from armer.checkpoint import CheckpointError, load_checkpoint
from armer.constants import MODALITIES
from armer.data import DataError, load_dataset
from armer.device import add_device_argument
from armer.evaluate.conditions import NOISE_LEVELS, evaluate_corpus, markdown_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m armer.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (or a training --save_root holding checkpoint/)")
    parser.add_argument("--features_root", required=True)
    parser.add_argument("--label_path", required=True)
    parser.add_argument("--corpora", nargs="*", default=None,
                        help="corpora of the label file to score (default: every corpus but train; train if it is the only one)")
    for modality in MODALITIES:
        parser.add_argument(f"--{modality}_feature", default=None, help=f"{modality} feature folder (default: the checkpoint's)")
    parser.add_argument("--noise_levels", type=float, nargs="*", default=list(NOISE_LEVELS),
                        help="Gaussian feature noise levels in feature stds (none: skip)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the missing-rate sweep and the noise")
    parser.add_argument("--out", default=None, help="folder for results.json and results.md")
    add_device_argument(parser)
    return parser


def resolve_checkpoint(path: str) -> Path:
    folder = Path(path)
    return folder / "checkpoint" if (folder / "checkpoint" / "config.json").is_file() else folder


def check_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the parsed arguments, if anything."""
    bad = [level for level in args.noise_levels if not 0.0 <= level < math.inf]
    if bad:
        return f"--noise_levels {' '.join(map(str, bad))}: noise levels are feature stds, finite and >= 0"
    if args.seed < 0:
        return f"--seed {args.seed} must be >= 0"
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        return f"--out {args.out} is a file, not a folder"
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = check_arguments(args)
    if problem:
        parser.exit(2, f"error: {problem}\n")
    try:
        model, info = load_checkpoint(resolve_checkpoint(args.checkpoint), device=args.device)
        names = {m: getattr(args, f"{m}_feature") or info.features[m]["name"] for m in MODALITIES}
        dataset = load_dataset(args.features_root, args.label_path, names, info.model.feat_type, info.label_names)
    except (CheckpointError, DataError) as exc:
        parser.exit(2, f"error: {exc}\n")
    expected = tuple(info.features[m]["dim"] for m in MODALITIES)
    if dataset.dims != expected:
        parser.exit(2, f"error: the data's feature dims {dataset.dims} differ from the checkpoint's {expected}\n")
    corpora = args.corpora or [n for n in dataset.corpora if n != "train"] or list(dataset.corpora)
    unknown = [c for c in corpora if c not in dataset.corpora]
    if unknown:
        parser.exit(2, f"error: corpora {unknown} not in {args.label_path}; available: {sorted(dataset.corpora)}\n")
    results = {
        name: evaluate_corpus(model, dataset.corpora[name], info.has_valence, args.seed, tuple(args.noise_levels))
        for name in corpora
    }
    table = markdown_table(results)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        (out / "results.md").write_text(table, encoding="utf-8")
    sys.stdout.write(table)
    return results
