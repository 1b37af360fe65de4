"""Names every part of ARMER shares, defined once."""
from __future__ import annotations

MODALITIES = ("audio", "text", "video")  # the order of every per-modality tuple, tensor dim and mask column
FEATURE_KEYS = ("audios", "texts", "videos")  # MERBench's batch keys of the modalities, in MODALITIES order
FEAT_TYPES = ("utt", "frm_align", "frm_unalign")  # utt: (D,) vectors; frm_*: (T, D) frame sequences
UNLABELLED_VALENCE = -10.0  # MERBench's valence of a sample without a valence label
MER2023_LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")  # MERBench's class order
EVAL_BATCH = 512  # samples per forward pass when scoring
# Every model: registry name (`--model`, MERBench's MODEL_MAP key) -> class name, the same in
# armer.model and in armer.merbench.adapter (names only: the MERBench installer runs without torch).
MODEL_CLASSES = {"attention_robust_v2": "AttentionRobustV2", "attention_robust": "AttentionRobust"}
