"""Command-line flags shared by the training and evaluation entry points (MERBench's names)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from armer.config import FEAT_TYPES, ModelConfig
from armer.model.robust import list_models

MODEL_FLAGS = {  # flag -> help; defaults come from ModelConfig
    "hidden_dim": "hidden / latent size",
    "dropout": "dropout rate",
    "use_vae": "variational encoders (off: deterministic, equal fusion weights)",
    "kl_weight": "weight of KL(q(z|x) || N(0, I))",
    "recon_weight": "weight of the reconstruction of the complete features",
    "recon_dims": "reconstruction scored each step on one random block of at most this many dims per modality (0: all dims)",
    "cross_kl_weight": "weight of the symmetric KL between present modalities",
    "use_proxy_attention": "proxy-query attention over the modality tokens (off: the proxy alone)",
    "fusion_temperature": "T in softmax((1/u) / T)",
    "num_attention_heads": "attention heads",
    "modality_dropout": "probability that a training sample loses one or two modalities",
    "modality_dropout_warmup": "epochs over which modality dropout and noise ramp up from 0",
    "modality_noise": "probability that a present modality is corrupted with Gaussian noise in training",
    "calibration_weight": "weight of the uncertainty calibration term",
    "expert_fusion": "add each present modality's own prediction to the logits, weighted by its fusion weight",
    "grad_clip": "max gradient norm (<= 0: no clipping)",
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ModelConfig()
    parser.add_argument("--model", default=defaults.model, choices=list_models(), help="model name")
    parser.add_argument("--feat_type", default=defaults.feat_type, choices=FEAT_TYPES,
                        help="utt: utterance vectors (-UTT folders); frm_*: frame-level (-FRA folders)")
    for name, help_text in MODEL_FLAGS.items():
        default = getattr(defaults, name)
        if isinstance(default, bool):
            parser.add_argument(f"--{name}", default=default, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(f"--{name}", type=type(default), default=default, help=f"{help_text} (default {default})")


def model_config_from_args(args: argparse.Namespace, dims: tuple[int, int, int], num_classes: int) -> ModelConfig:
    values = {name: getattr(args, name) for name in MODEL_FLAGS}
    return ModelConfig(
        model=args.model, feat_type=args.feat_type, audio_dim=dims[0], text_dim=dims[1], video_dim=dims[2],
        output_dim1=num_classes, output_dim2=1, **values,
    )


def setup_logging(log_file: Path | None = None) -> None:
    """INFO to stderr (and to `log_file` when given), one line per message."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)
