"""CLI: ``python -m armer.benchmark build|info``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from armer.benchmark.build import (
    TRAIN_FACES,
    BuildOptions,
    build,
    default_cache_dir,
    resolve_test_speakers,
)
from armer.benchmark.sources import (
    SourceError,
    data_root,
    read_emodb,
    read_fer,
    read_meld,
    speakers,
)
from armer.device import add_device_argument


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m armer.benchmark",
                                     description="The paired EmoDB + FER2013 + MELD emotion benchmark.")
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="pair, extract features, write MERBench folders + label-6way.npz")
    i = commands.add_parser("info", help="what a data root holds (speakers, usages, CSV files) and the split")
    for p in (b, i):
        p.add_argument("--data_root", default=None, help="data root (default: $ARMER_DATA)")
        p.add_argument("--test_speakers", nargs="+", default=None,
                       help="EmoDB test speakers, or 'all' (default: one male and one female speaker; every "
                            "speaker when the root holds no training material)")
    b.add_argument("--out", required=True, help="output folder: features/<extractor>-UTT/, label-6way.npz, manifest.json")
    b.add_argument("--seed", type=int, default=0, help="seed of the pairing and the degradations")
    b.add_argument("--k_train", type=int, default=8, help="pairs per training clip")
    b.add_argument("--k_test", type=int, default=4, help="pairs per test clip")
    b.add_argument("--audio_extractor", default=None, help="audio backend (default: armer.extractors.DEFAULT_EXTRACTORS)")
    b.add_argument("--text_extractor", default=None, help="text backend")
    b.add_argument("--video_extractor", default=None, help="video backend")
    b.add_argument("--cache_dir", default=None, help=f"feature cache (default: {default_cache_dir()})")
    b.add_argument("--no_noise", action="store_true", help="skip the degraded test corpora (test2..test5)")
    b.add_argument("--no_ladder", action="store_true",
                   help="skip the severity ladder (ladder_<modality>_<parameter>_<level>: one modality degraded at "
                        "one fixed level; speech at 20/10/5/0/-5 dB SNR costs 5 more audio extractions per test clip)")
    b.add_argument("--no_train_views", action="store_true",
                   help="skip the degraded training views (<feature folder>-DEGRADED, for armer.train --degraded_views)")
    b.add_argument("--train_word_drop", type=float, nargs=2, default=list(BuildOptions.train_word_drop),
                   metavar=("LOW", "HIGH"), help="range of the word drop-out rate of the degraded training views' text "
                                                 "(drawn per text; the ladder's test levels reach 0.9)")
    b.add_argument("--train_faces", default="auto", choices=TRAIN_FACES,
                   help="FER2013 Training images the training pairs use: auto = the fer2013-cnn backend's held-out "
                        "split when it extracts the video (it has seen the others), else all; heldout; all")
    b.add_argument("--extractor_module", action="append", default=[],
                   help="import this module first (one that registers extra backends with "
                        "armer.extractors.register_extractor); may be repeated")
    add_device_argument(b)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        root = data_root(args.data_root)
        if args.command == "info":
            clips, fer, meld = read_emodb(root), read_fer(root), read_meld(root)
            test = resolve_test_speakers(args.test_speakers, clips, fer, meld)
            info = {"data_root": str(root), "speakers": speakers(clips), "test_speakers": test,
                    "fer_usages": fer.usage_names, "meld_csv": sorted({u.key.rsplit("-", 2)[0] for u in meld}),
                    "clips": len(clips), "fer_images": len(fer.labels), "meld_rows": len(meld)}
            print(json.dumps(info, indent=1))
            return info
        import importlib

        from armer.extractors import DEFAULT_EXTRACTORS

        for module in args.extractor_module:
            importlib.import_module(module)

        chosen = {m: getattr(args, f"{m}_extractor") or DEFAULT_EXTRACTORS[m] for m in ("audio", "text", "video")}
        options = build_options(parser, args, root, chosen)
        manifest = build(options, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except SourceError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(json.dumps({k: manifest[k] for k in ("extractors", "feature_folders", "corpora")}, indent=1))
    return manifest


def build_options(parser: argparse.ArgumentParser, args: argparse.Namespace, root: Path, extractors: dict[str, str]
                  ) -> BuildOptions:
    """The build's options from the command line; a bad value is a usage error."""
    try:
        return BuildOptions(data_root=root, out=Path(args.out), seed=args.seed, k_train=args.k_train,
                            k_test=args.k_test, test_speakers=args.test_speakers, extractors=extractors,
                            cache_dir=Path(args.cache_dir) if args.cache_dir else None, noise=not args.no_noise,
                            train_views=not args.no_train_views, ladder=not args.no_ladder,
                            train_faces=args.train_faces, train_word_drop=tuple(args.train_word_drop),
                            device=args.device)
    except ValueError as exc:
        parser.error(f"--{exc}")


if __name__ == "__main__":
    main()
