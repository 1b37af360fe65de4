"""Shared fixtures: small synthetic MERBench trees and tiny model configs."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from armer.config import ModelConfig
from armer.data import load_dataset
from armer.synthetic import write_synthetic_merbench

DIMS = (16, 24, 12)
SENTENCE = "I am so happy to see you today, this is wonderful news."  # spoken in the extractor tests' clips


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """SENTENCE spoken by espeak-ng, 16 kHz mono float32."""
    from armer.extractors.samples import synthesize_speech

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install -y espeak-ng)")
    return synthesize_speech(SENTENCE)


def tiny_config(model: str = "attention_robust_v2", feat_type: str = "utt", **overrides) -> ModelConfig:
    values = dict(model=model, audio_dim=DIMS[0], text_dim=DIMS[1], video_dim=DIMS[2], output_dim1=6,
                  hidden_dim=16, num_attention_heads=4, feat_type=feat_type)
    values.update(overrides)
    return ModelConfig(**values)


def feature_names(paths: dict) -> dict[str, str]:
    return {"audio": paths["audio_feature"], "text": paths["text_feature"], "video": paths["video_feature"]}


@pytest.fixture(scope="session")
def planted_tree(tmp_path_factory):
    """Audio carries the label strongly, text weakly, video is pure noise."""
    root = tmp_path_factory.mktemp("planted")
    paths = write_synthetic_merbench(root, n_train=1200, n_tests=(300,), dims=DIMS,
                                     signals={"audio": 1.5, "text": 0.7}, seed=0)
    return paths, load_dataset(paths["features_root"], paths["label_path"], feature_names(paths))


@pytest.fixture()
def tiny_tree(tmp_path):
    """A small tree with two test corpora and some missing feature files."""
    return write_synthetic_merbench(tmp_path, n_train=60, n_tests=(30, 20), dims=DIMS, missing_rate=0.2, seed=1)
