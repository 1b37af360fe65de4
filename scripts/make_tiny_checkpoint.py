"""An untrained ARMER checkpoint wired to the offline extractors, for trying and testing the demo.

    python scripts/make_tiny_checkpoint.py OUT_DIR [--fer_dir DIR] [--members 2] [--seed 0]

The model has random weights (its predictions mean nothing) but the real interface: feature
dims and extractor names of ``armer.extractors.DEFAULT_EXTRACTORS``, six emotion labels and valence.
The video dim comes from the FER2013 CNN in ``extractors/weights/fer_cnn``; when those weights are not
there, ``--fer_dir`` writes a randomly initialised FER CNN to use in their place.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from armer.checkpoint import CheckpointInfo, save_checkpoint
from armer.config import ModelConfig
from armer.constants import MODALITIES
from armer.model.modeling import Ensemble, create_model

LABELS = ["neutral", "angry", "happy", "sad", "worried", "surprise"]


def make_random_fer_cnn(directory: str | Path, seed: int = 0) -> Path:
    """A FER2013-CNN folder (config.json + model.safetensors) with random weights."""
    from safetensors.torch import save_file

    from armer.extractors.fer_cnn import FerCNN, FerCNNConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = FerCNNConfig()
    model = FerCNN(config).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    return directory


def make_tiny_checkpoint(out_dir: str | Path, video_dim: int | None = None, members: int = 2, seed: int = 0,
                         model: str = "attention_robust_v2", hidden_dim: int = 32) -> Path:
    """Save an untrained ensemble whose features match the offline extractors."""
    from armer.extractors import DEFAULT_EXTRACTORS, create_extractor

    dims = {m: create_extractor(DEFAULT_EXTRACTORS[m]).dim for m in ("audio", "text")}
    dims["video"] = video_dim if video_dim is not None else create_extractor(DEFAULT_EXTRACTORS["video"]).dim
    config = ModelConfig(model=model, audio_dim=dims["audio"], text_dim=dims["text"], video_dim=dims["video"],
                         output_dim1=len(LABELS), hidden_dim=hidden_dim, num_attention_heads=4, feat_type="utt")
    torch.manual_seed(seed)
    network = create_model(config, members=members).eval()
    info = CheckpointInfo(
        model=config, label_names=list(LABELS), has_valence=True,
        features={m: {"name": f"{DEFAULT_EXTRACTORS[m]}-UTT", "dim": dims[m]} for m in MODALITIES},
        extractors=dict(DEFAULT_EXTRACTORS),
        training={"note": "untrained: random weights from scripts/make_tiny_checkpoint.py, for demo tests only"},
    )
    return save_checkpoint(out_dir, Ensemble(network).eval(), info)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--fer_dir", help="write a random FER CNN here when extractors/weights/fer_cnn is missing")
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    video_dim = None
    if args.fer_dir:
        from armer.extractors.fer_cnn import FerCNNConfig

        make_random_fer_cnn(args.fer_dir, args.seed)
        video_dim = FerCNNConfig().widths[-1]
        print(f"random FER CNN in {args.fer_dir}: pass it with --extractor_path video={args.fer_dir}")
    out = make_tiny_checkpoint(args.out_dir, video_dim, args.members, args.seed)
    print(f"untrained checkpoint written to {out}")


if __name__ == "__main__":
    main()
