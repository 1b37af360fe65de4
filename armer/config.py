"""Model configuration: the one dataclass every model in `armer.model` is built from.

The defaults are the seed specification's (`../shared/docs/seed-attention-robust-v2.zh.md`).
A checkpoint stores this config, so a model can be rebuilt from the checkpoint alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MODALITIES = ("audio", "text", "video")
FEAT_TYPES = ("utt", "frm_align", "frm_unalign")


@dataclass
class ModelConfig:
    model: str = "attention_robust_v2"  # registry name: attention_robust_v2 | attention_robust
    audio_dim: int = 1024  # input feature dims, one per modality
    text_dim: int = 5120
    video_dim: int = 768
    feat_type: str = "utt"  # utt: (B, D) vectors -> MLP encoders; frm_*: (B, T, D) -> LSTM encoders
    output_dim1: int = 6  # number of emotion classes
    output_dim2: int = 1  # valence outputs
    hidden_dim: int = 128  # latent / hidden size of every encoder, attention and head
    dropout: float = 0.35
    use_vae: bool = True  # variational encoders (mu, sigma); False: deterministic, equal fusion
    kl_weight: float = 0.01  # KL(q(z|x) || N(0, I))
    recon_weight: float = 0.1  # reconstruction of the complete features from the fused latent
    # Not in the seed: the decoders' output layers are split into blocks of at most this many dims
    # and each training step scores the reconstruction on one random block per modality (0: all
    # dims every step). An unbiased estimate of the same mean squared error at a fraction of the
    # decoder's cost, which at MERBench's 1024 + 5120 + 768 dims is ~40% of a step.
    recon_dims: int = 512
    cross_kl_weight: float = 0.01  # symmetric KL between the present modalities' posteriors
    use_proxy_attention: bool = True  # proxy-query attention over modality tokens; False: proxy only
    fusion_temperature: float = 1.0  # T in softmax((1/u) / T)
    num_attention_heads: int = 4
    modality_dropout: float = 0.15  # probability a training sample loses one or two modalities
    modality_dropout_warmup: int = 20  # epochs over which that probability (and modality_noise) ramps up from 0
    # Not in the seed: probability that a present modality of a training sample is mixed with
    # Gaussian noise (a random share, same scale). It teaches sigma to rise on degraded inputs.
    modality_noise: float = 0.1
    # Not in the seed: weight of the uncertainty calibration term. Each modality predicts the fused
    # (detached) emotion distribution from mu with its logits divided by u = mean sigma, so u must
    # grow where that modality cannot be trusted. Label-free, so it works inside MERBench too.
    calibration_weight: float = 0.1
    # Not in the seed: the emotion logits also add each present modality's own prediction (its
    # unimodal head, trained by the calibration term on every sample that has the modality),
    # weighted by the fusion weights w. With modalities missing the prediction then rests on heads
    # that saw every sample of their modality, not only the few that training left unimodal.
    expert_fusion: bool = True
    grad_clip: float = -1.0  # max gradient norm; <= 0 disables clipping (MERBench convention)

    def __post_init__(self) -> None:
        problems = []
        for name in ("audio_dim", "text_dim", "video_dim", "output_dim1", "hidden_dim", "num_attention_heads"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        if self.feat_type not in FEAT_TYPES:
            problems.append(f"feat_type={self.feat_type!r} must be one of {FEAT_TYPES}")
        if self.hidden_dim % max(1, self.num_attention_heads):
            problems.append(
                f"hidden_dim={self.hidden_dim} must be divisible by num_attention_heads={self.num_attention_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must be in [0, 1)")
        if not 0.0 <= self.modality_dropout <= 1.0:
            problems.append(f"modality_dropout={self.modality_dropout} must be in [0, 1]")
        if not 0.0 <= self.modality_noise <= 1.0:
            problems.append(f"modality_noise={self.modality_noise} must be in [0, 1]")
        if self.recon_dims < 0:
            problems.append(f"recon_dims={self.recon_dims} must be >= 0 (0: every dim)")
        if self.modality_dropout_warmup < 0:
            problems.append(f"modality_dropout_warmup={self.modality_dropout_warmup} must be >= 0")
        if self.fusion_temperature <= 0:
            problems.append(f"fusion_temperature={self.fusion_temperature} must be > 0")
        for name in ("kl_weight", "recon_weight", "cross_kl_weight", "calibration_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if problems:
            raise ValueError("Invalid ModelConfig: " + "; ".join(problems))

    @property
    def input_dims(self) -> tuple[int, int, int]:
        return (self.audio_dim, self.text_dim, self.video_dim)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)
