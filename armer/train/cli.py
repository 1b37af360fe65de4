"""Train a model on MERBench-format features with MERBench's protocol.

    python -m armer.train --features_root FEATS --label_path label-6way.npz --save_root runs/v2 \
        --audio_feature chinese-hubert-large-UTT --text_feature Baichuan-13B-Base-UTT \
        --video_feature clip-vit-large-patch14-UTT

5-fold cross-validation on the train corpus (the five fold models train together as one batched
ensemble), the best epoch per fold by emoval, every test corpus scored at each fold's new best
epoch, test predictions averaged over the folds. Writes under --save_root:
`train.log`, `checkpoint/` (model.safetensors + config.json, the five fold models as one
ensemble), `history.json` (per epoch and fold) and `summary.json` (per test corpus and condition:
full, the six drop patterns, the missing-rate sweep and its mean; WAF, accuracy, valence MSE; and
`validation`: each fold's kept model on its own validation samples under the same conditions,
and the spread of its fusion weights).

Bad arguments (settings out of range, fewer samples or groups than folds) exit with status 2, and
a training run that diverges with status 1, each with one `error: ...` line and nothing written
but `train.log`.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from armer.checkpoint import CheckpointInfo, save_checkpoint
from armer.cli import add_settings, settings_from_args, setup_logging
from armer.config import RECIPES, ModelConfig, TrainConfig
from armer.constants import MODALITIES
from armer.data import DataError, has_degraded_views, load_dataset
from armer.device import resolve_device
from armer.evaluate.conditions import evaluate_corpus, markdown_table
from armer.train.folds import validation_folds
from armer.train.loop import TrainingError, train_folds

log = logging.getLogger("armer.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m armer.train", description=__doc__.split("\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--features_root", required=True, help="folder holding <name>-UTT / <name>-FRA feature folders")
    data.add_argument("--label_path", required=True, help="label-6way.npz-style label file (or .json)")
    data.add_argument("--save_root", required=True, help="output folder (log, checkpoint, summary.json)")
    data.add_argument("--audio_feature", default="chinese-hubert-large-UTT", help="audio feature folder")
    data.add_argument("--text_feature", default="Baichuan-13B-Base-UTT", help="text feature folder")
    data.add_argument("--video_feature", default="clip-vit-large-patch14-UTT", help="video feature folder")
    add_settings(parser.add_argument_group("training"), TrainConfig)
    add_settings(parser.add_argument_group("model"), ModelConfig)
    return parser


def extractor_names(feature_names: dict[str, str]) -> dict[str, str]:
    """The extractor behind a MERBench folder is its stem: whisper-base-UTT -> whisper-base."""
    return {m: name.removesuffix("-UTT").removesuffix("-FRA") for m, name in feature_names.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.recipe in RECIPES:  # the recipe's values become the defaults; flags given explicitly still win
        parser.set_defaults(**RECIPES[args.recipe])
        args = parser.parse_args(argv)
    try:  # the settings are checked before anything is loaded or written (the model's dims: placeholders)
        train_config = settings_from_args(TrainConfig, args)
        settings_from_args(ModelConfig, args)
        resolve_device(train_config.device)  # CUDA asked for where torch sees none: an error now, not later
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    save_root = Path(args.save_root)
    try:
        setup_logging(save_root / "train.log")
    except OSError as exc:
        parser.exit(2, f"error: cannot write the log under --save_root {save_root}: {exc}\n")
    started = time.perf_counter()
    names = {"audio": args.audio_feature, "text": args.text_feature, "video": args.video_feature}
    try:
        # Views present but not trained on (--degraded_views 0) are still loaded: validation then
        # reports how the weights respond to them, for comparison with runs that trained on them.
        views = args.degraded_views > 0 or has_degraded_views(args.features_root, names, args.feat_type)
        dataset = load_dataset(args.features_root, args.label_path, names, args.feat_type, degraded_views=views)
    except DataError as exc:
        parser.exit(2, f"error: {exc}\n")
    if "train" not in dataset.corpora:
        parser.exit(2, f"error: {args.label_path} has no train_corpus to train on\n")
    log.info("data: %s; dims %s; classes %s; valence %s", {n: len(c) for n, c in dataset.corpora.items()},
             dataset.dims, dataset.label_names, dataset.has_valence)
    dims = {f"{m}_dim": dim for m, dim in zip(MODALITIES, dataset.dims)}
    try:
        model_config = settings_from_args(ModelConfig, args, **dims, output_dim1=len(dataset.label_names))
        validation_folds(dataset.train.samples, train_config)  # enough samples (or groups) for the folds
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    try:
        result = train_folds(dataset, model_config, train_config)
    except TrainingError as exc:
        parser.exit(1, f"error: {exc}\n")
    info = CheckpointInfo(
        model=model_config, label_names=dataset.label_names, has_valence=dataset.has_valence,
        features={m: {"name": dataset.feature_names[m], "dim": d} for m, d in zip(MODALITIES, dataset.dims)},
        normalization=result.normalization if args.normalize else None,
        extractors=extractor_names(dataset.feature_names),
        training={"features_root": str(args.features_root), "label_path": str(args.label_path),
                  "train_config": asdict(train_config), "workers": result.workers, "best_epochs": result.best_epochs,
                  "best_val_emovals": result.best_emovals},
    )
    save_checkpoint(save_root / "checkpoint", result.ensemble, info)
    results = {name: evaluate_corpus(result.ensemble, corpus, dataset.has_valence, seed=args.seed)
               for name, corpus in dataset.tests.items()}
    summary = {
        "model": args.model, "seed": args.seed, "args": vars(args), "best_epochs": result.best_epochs,
        "best_val_emovals": result.best_emovals, "mean_best_val_emoval": sum(result.best_emovals) / len(result.best_emovals),
        "validation": result.validation,
        "results": results, "seconds": time.perf_counter() - started,
    }
    (save_root / "history.json").write_text(json.dumps(result.history), encoding="utf-8")
    (save_root / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if results:
        (save_root / "summary.md").write_text(markdown_table(results), encoding="utf-8")
        log.info("test results (fold-averaged predictions):\n%s", markdown_table(results))
    log.info("wrote %s in %.1fs", save_root, summary["seconds"])
    return summary
