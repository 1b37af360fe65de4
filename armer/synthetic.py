"""Synthetic MERBench-format trees with a planted signal, for tests and benchmarks.

Each modality holds `signal * class prototype + N(0, I)`; a modality with no signal is pure noise.
Valence (when asked for) is a fixed value per class plus noise.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from armer.constants import MER2023_LABELS, MODALITIES, UNLABELLED_VALENCE
from armer.data import save_label_file


def write_synthetic_merbench(
    root: str | Path,
    n_train: int = 300,
    n_tests: tuple[int, ...] = (100,),
    dims: tuple[int, int, int] = (16, 24, 12),
    signals: dict[str, float] | None = None,
    num_classes: int = 6,
    with_valence: bool = True,
    missing_rate: float = 0.0,
    feature_names: tuple[str, str, str] = ("synth-audio", "synth-text", "synth-video"),
    seed: int = 0,
    valence_only: bool = False,
) -> dict[str, str]:
    """Write `<root>/features/<name>-UTT/*.npy` and `<root>/label-6way.npz`; return the paths and names.

    `signals`: modality -> prototype scale (default: audio 1.5, the others pure noise).

    `missing_rate`: each modality file of a sample is left out with this probability (never all three).

    `valence_only`: the label file holds only each sample's 'val' (no 'emo'), as MERBench's sentiment
    sets; the planted signal is then the valence (fixed per hidden class).
    """
    signals = {"audio": 1.5} if signals is None else signals
    rng = np.random.default_rng(seed)
    root = Path(root)
    features_root = root / "features"
    folders = [features_root / f"{name}-UTT" for name in feature_names]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    prototypes = [rng.normal(size=(num_classes, dim)).astype(np.float32) for dim in dims]
    class_valence = np.linspace(-1.0, 1.0, num_classes)
    label_names = MER2023_LABELS[:num_classes] if num_classes <= len(MER2023_LABELS) else None
    corpora = {}
    for corpus, size in [("train", n_train)] + [(f"test{i + 1}", n) for i, n in enumerate(n_tests)]:
        entries = {}
        for index in range(size):
            sample = f"{corpus}_{index:05d}"
            label = int(rng.integers(num_classes))
            keep = rng.random(len(MODALITIES)) >= missing_rate
            if not keep.any():
                keep[rng.integers(len(MODALITIES))] = True
            for m, (modality, folder, dim) in enumerate(zip(MODALITIES, folders, dims)):
                noise = rng.normal(size=dim).astype(np.float32)
                value = signals.get(modality, 0.0) * prototypes[m][label] + noise
                if keep[m]:
                    np.save(folder / f"{sample}.npy", value.astype(np.float32))
            valence = float(class_valence[label] + 0.1 * rng.normal()) if with_valence else UNLABELLED_VALENCE
            entries[sample] = {"val": valence} if valence_only else \
                {"emo": label_names[label] if label_names else label, "val": valence}
        corpora[corpus] = entries
    label_path = root / "label-6way.npz"
    save_label_file(label_path, corpora)
    return {
        "features_root": str(features_root),
        "label_path": str(label_path),
        "audio_feature": f"{feature_names[0]}-UTT",
        "text_feature": f"{feature_names[1]}-UTT",
        "video_feature": f"{feature_names[2]}-UTT",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m armer.synthetic",
                                     description="Write a synthetic MERBench-format tree with a planted signal.")
    parser.add_argument("out", help="output folder (features/ and label-6way.npz)")
    parser.add_argument("--n_train", type=int, default=600)
    parser.add_argument("--n_tests", type=int, nargs="+", default=[200, 200])
    parser.add_argument("--dims", type=int, nargs=3, default=[64, 96, 48])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_synthetic_merbench(args.out, n_train=args.n_train, n_tests=tuple(args.n_tests), dims=tuple(args.dims),
                                     signals={"audio": 0.6, "text": 0.4, "video": 0.3}, seed=args.seed)
    print(f"wrote {paths['features_root']} and {paths['label_path']}")


if __name__ == "__main__":
    main()
