"""AttentionRobustV2 and its V1 baseline, built by name from one factory.

Shapes: B batch, M = 3 modalities (audio, text, video), H hidden_dim, D_m feature dims,
T frames for frame-level features. Both models take MERBench's batch dict
(`audios`, `texts`, `videos`, optional `present` (B, 3) bool) and return a `ModelOutput`;
`ModelOutput.merbench()` is MERBench's `(features, emos_out, vals_out, interloss)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from armer import losses
from armer.config import MODALITIES, ModelConfig
from armer.missing import mix_with_noise, presence_from_features, sample_feature_noise, sample_modality_dropout

LOGVAR_LIMIT = 8.0  # soft bound on log sigma^2, keeps 1/u finite without cutting gradients


@dataclass
class ModelOutput:
    features: torch.Tensor  # (B, H) fused representation
    logits: torch.Tensor  # (B, C) emotion logits
    valence: torch.Tensor  # (B, output_dim2)
    interloss: torch.Tensor  # () weighted KL + reconstruction + cross-modal KL; 0 in eval mode
    present: torch.Tensor  # (B, M) modalities used (after modality dropout in training)
    weights: torch.Tensor  # (B, M) fusion weights, exactly 0 for missing modalities
    attention: torch.Tensor  # (B, M) attention of the fused query over modality tokens (head mean)
    mu: torch.Tensor | None = None  # (B, M, H) posterior means (V2 only)
    sigma: torch.Tensor | None = None  # (B, M) u_m = mean sigma over dims; 0 for missing (V2 only)
    loss_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # kl / recon / cross_kl (training only)

    def merbench(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.features, self.logits, self.valence, self.interloss


class MLPEncoder(nn.Module):
    """MERBench's utterance encoder: (B, D) -> (B, H)."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMEncoder(nn.Module):
    """Frame-level encoder: (B, T, D) -> (B, H), mean of LSTM outputs over non-zero (valid) frames."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, hidden_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        valid = (x.abs().amax(dim=-1) > 0).to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        states, _ = self.lstm(x)  # (B, T, H)
        pooled = (states * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)
        return self.out(pooled)


def pool_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): mean over non-zero frames; (B, D) passes through."""
    if x.dim() == 2:
        return x
    valid = (x.abs().amax(dim=-1) > 0).to(x.dtype).unsqueeze(-1)
    return (x * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)


class FeatureNormalizer(nn.Module):
    """Per-dimension standardisation with training statistics (identity until set).

    Buffers are not persistent: the statistics live in the checkpoint's config.json.
    """

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        for modality, dim in zip(MODALITIES, dims):
            self.register_buffer(f"{modality}_mean", torch.zeros(dim), persistent=False)
            self.register_buffer(f"{modality}_std", torch.ones(dim), persistent=False)

    def set_statistics(self, stats: dict[str, dict[str, list[float]]]) -> None:
        for modality in MODALITIES:
            mean = torch.as_tensor(stats[modality]["mean"], dtype=torch.float32)
            std = torch.as_tensor(stats[modality]["std"], dtype=torch.float32)
            getattr(self, f"{modality}_mean").copy_(mean)
            getattr(self, f"{modality}_std").copy_(std)

    def forward(self, index: int, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        modality = MODALITIES[index]
        normed = (x - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")
        keep = present.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)
        if x.dim() == 3:  # padded frames stay zero
            keep = keep * (x.abs().amax(dim=-1, keepdim=True) > 0).to(x.dtype)
        return normed * keep


class RobustBase(nn.Module):
    """What V1 and V2 share: inputs, presence, modality dropout with warm-up, encoders, heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dims, hidden = config.input_dims, config.hidden_dim
        encoder = MLPEncoder if config.feat_type == "utt" else LSTMEncoder
        self.normalizer = FeatureNormalizer(dims)
        self.encoders = nn.ModuleList(encoder(dim, hidden, config.dropout) for dim in dims)
        self.emotion_head = nn.Linear(hidden, config.output_dim1)
        self.valence_head = nn.Linear(hidden, config.output_dim2)
        # Epochs completed; drives the modality-dropout warm-up. A buffer so it is saved and vmappable.
        self.register_buffer("epoch", torch.zeros((), dtype=torch.float32))

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(float(epoch))

    def warmup_ramp(self) -> torch.Tensor:
        """0 -> 1 over the warm-up epochs; scales modality dropout and modality noise."""
        warmup = self.config.modality_dropout_warmup
        return torch.clamp(self.epoch / warmup, max=1.0) if warmup > 0 else torch.ones_like(self.epoch)

    def prepare(self, batch: dict, check_inputs: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Features, data presence (B, M) and the presence used after modality dropout."""
        features = [batch["audios"], batch["texts"], batch["videos"]]
        present = batch.get("present")
        present = presence_from_features(features) if present is None else present.to(torch.bool)
        if check_inputs:
            self._check(features, present)
        used = present
        if self.training and self.config.modality_dropout > 0:
            used = sample_modality_dropout(present, self.config.modality_dropout * self.warmup_ramp())
        normed = [self.normalizer(i, x, used[:, i]) for i, x in enumerate(features)]
        if self.training and self.config.modality_noise > 0:
            alpha = sample_feature_noise(used, self.config.modality_noise * self.warmup_ramp())  # (B, M)
            normed = [mix_with_noise(x, alpha[:, i]) for i, x in enumerate(normed)]
        return normed, present, used

    def _check(self, features: list[torch.Tensor], present: torch.Tensor) -> None:
        expected_rank = 2 if self.config.feat_type == "utt" else 3
        for modality, x, dim in zip(MODALITIES, features, self.config.input_dims):
            if x.dim() != expected_rank or x.shape[-1] != dim:
                raise ValueError(
                    f"{modality} features have shape {tuple(x.shape)}; this model expects "
                    f"{'(B, D)' if expected_rank == 2 else '(B, T, D)'} with D={dim} (feat_type={self.config.feat_type})"
                )
        if present.shape != (features[0].shape[0], len(MODALITIES)):
            raise ValueError(f"present mask has shape {tuple(present.shape)}; expected (B, 3)")
        empty = (~present.any(dim=-1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"samples {empty[:10]} have no modality present; at least one of audio/text/video is needed")

    def encode(self, normed: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([enc(x) for enc, x in zip(self.encoders, normed)], dim=1)  # (B, M, H)


class AttentionRobust(RobustBase):
    """V1 baseline: deterministic encoders and MERBench's attention fusion over the hidden vectors."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        hidden = config.hidden_dim
        self.attention_mlp = MLPEncoder(hidden * len(MODALITIES), hidden, config.dropout)
        self.fc_att = nn.Linear(hidden, len(MODALITIES))

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        normed, _, used = self.prepare(batch, check_inputs)
        hidden = self.encode(normed) * used.unsqueeze(-1).to(normed[0].dtype)  # (B, M, H)
        scores = self.fc_att(self.attention_mlp(hidden.flatten(1)))  # (B, M)
        weights = torch.softmax(scores.masked_fill(~used, float("-inf")), dim=-1)
        fused = (weights.unsqueeze(-1) * hidden).sum(dim=1)  # (B, H)
        zero = fused.new_zeros(())
        return ModelOutput(
            features=fused, logits=self.emotion_head(fused), valence=self.valence_head(fused),
            interloss=zero, present=used, weights=weights, attention=weights,
        )


class AttentionRobustV2(RobustBase):
    """Variational encoders, uncertainty-weighted fusion and proxy cross-modal attention."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        hidden, heads = config.hidden_dim, config.num_attention_heads
        self.mu_heads = nn.ModuleList(nn.Linear(hidden, hidden) for _ in MODALITIES)
        # Each modality's own emotion prediction from mu (trained by the calibration term); the
        # log-variance head sees it, because how sure a modality is on its own is the clearest sign
        # of a degraded input, and not a linear function of the hidden state.
        self.unimodal_heads = nn.ModuleList(nn.Linear(hidden, config.output_dim1) for _ in MODALITIES)
        self.logvar_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden + config.output_dim1, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
            for _ in MODALITIES
        )
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim)) for dim in config.input_dims
        )
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(2 * hidden, hidden))
        self.ffn_norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(config.dropout)
        self.heads = heads

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        cfg = self.config
        normed, data_present, used = self.prepare(batch, check_inputs)
        hidden = self.encode(normed)  # (B, M, H)
        mu = torch.stack([head(hidden[:, i]) for i, head in enumerate(self.mu_heads)], dim=1)  # (B, M, H)
        unimodal = torch.stack([head(mu[:, i]) for i, head in enumerate(self.unimodal_heads)], dim=1)  # (B, M, C)
        if cfg.use_vae:
            evidence = torch.cat([hidden, torch.softmax(unimodal, dim=-1)], dim=-1)  # (B, M, H + C)
            raw = torch.stack([head(evidence[:, i]) for i, head in enumerate(self.logvar_heads)], dim=1)
            logvar = LOGVAR_LIMIT * torch.tanh(raw / LOGVAR_LIMIT)
            sigma = torch.exp(0.5 * logvar)  # (B, M, H)
            z = mu + torch.randn_like(mu) * sigma if self.training else mu
            uncertainty = sigma.mean(dim=-1)  # (B, M) u_m
            scores = (1.0 / uncertainty) / cfg.fusion_temperature
        else:
            logvar, z, uncertainty = torch.zeros_like(mu), mu, None
            scores = torch.zeros_like(mu[..., 0])  # equal weights over the present modalities
        scores = scores.masked_fill(~used, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, M), exactly 0 where missing
        log_weights = torch.log_softmax(scores, dim=-1)
        tokens = z * used.unsqueeze(-1).to(z.dtype)  # (B, M, H)
        proxy = (weights.unsqueeze(-1) * tokens).sum(dim=1)  # (B, H)

        if cfg.use_proxy_attention:
            fused, attention = self.proxy_attention(proxy, tokens, log_weights)
        else:
            fused, attention = proxy, weights

        logits = self.emotion_head(fused)
        # The regularisers only shape training; at inference they would cost a decoder pass for nothing.
        terms = {}
        if self.training:
            terms = self.interloss_terms(mu, logvar, proxy, data_present, used, batch)
            if uncertainty is not None and cfg.calibration_weight > 0:
                if "emos" in batch:
                    target = F.one_hot(batch["emos"], cfg.output_dim1).to(logits.dtype)
                else:
                    target = torch.softmax(logits.detach(), dim=-1)
                terms["calibration"] = losses.uncertainty_calibration(unimodal, uncertainty, target, used)
        interloss = sum((getattr(cfg, f"{name}_weight") * value for name, value in terms.items()), mu.new_zeros(()))
        sigma_out = None if uncertainty is None else uncertainty * used.to(uncertainty.dtype)
        return ModelOutput(
            features=fused, logits=logits, valence=self.valence_head(fused),
            interloss=interloss, present=used, weights=weights, attention=attention,
            mu=mu, sigma=sigma_out, loss_terms=terms,
        )

    def proxy_attention(self, proxy: torch.Tensor, tokens: torch.Tensor, log_weights: torch.Tensor):
        """Query = proxy, keys/values = modality tokens; log w biases the logits, missing -> -inf."""
        batch, num_tokens, hidden = tokens.shape
        head_dim = hidden // self.heads
        q = self.query(proxy).view(batch, self.heads, 1, head_dim)  # (B, h, 1, d)
        k = self.key(tokens).view(batch, num_tokens, self.heads, head_dim).transpose(1, 2)  # (B, h, M, d)
        v = self.value(tokens).view(batch, num_tokens, self.heads, head_dim).transpose(1, 2)  # (B, h, M, d)
        logits = (q @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(head_dim) + log_weights.unsqueeze(1)  # (B, h, M)
        attention = torch.softmax(logits, dim=-1)
        attended = (attention.unsqueeze(-1) * v).sum(dim=2).reshape(batch, hidden)  # (B, H)
        h = self.attn_norm(proxy + self.drop(self.attn_out(attended)))
        h = self.ffn_norm(h + self.drop(self.ffn(h)))
        return h, attention.mean(dim=1)

    def interloss_terms(self, mu, logvar, proxy, data_present, used, batch) -> dict[str, torch.Tensor]:
        """KL to the prior and cross-modal KL over the used modalities; reconstruction of every
        modality the data has (including the ones modality dropout removed) from the fused latent."""
        zero = mu.new_zeros(())
        cfg = self.config
        kl = losses.kl_to_prior(mu, logvar, used) if cfg.use_vae and cfg.kl_weight > 0 else zero
        cross = losses.cross_modal_kl(mu, logvar, used) if cfg.use_vae and cfg.cross_kl_weight > 0 else zero
        recon = zero
        if cfg.recon_weight > 0:
            raw = [batch["audios"], batch["texts"], batch["videos"]]
            targets = [pool_frames(self.normalizer(i, x, data_present[:, i])) for i, x in enumerate(raw)]
            predictions = [decoder(proxy) for decoder in self.decoders]
            recon = losses.reconstruction(predictions, targets, data_present)
        return {"kl": kl, "recon": recon, "cross_kl": cross}


MODELS: dict[str, type[RobustBase]] = {
    "attention_robust_v2": AttentionRobustV2,
    "attention_robust": AttentionRobust,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(config: ModelConfig) -> RobustBase:
    """Build a model by `config.model` name."""
    if config.model not in MODELS:
        raise ValueError(f"Unknown model {config.model!r}; available: {list_models()}")
    return MODELS[config.model](config)


class Ensemble(nn.Module):
    """Members of the same architecture (e.g. the best model of each CV fold); outputs averaged.

    The ensemble's logits are the log of the mean member probabilities.
    """

    def __init__(self, members: list[RobustBase]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        outputs = [member(batch, check_inputs=check_inputs) for member in self.members]

        def mean(name: str) -> torch.Tensor | None:
            values = [getattr(o, name) for o in outputs]
            return None if values[0] is None else torch.stack(values).mean(dim=0)

        probs = torch.stack([torch.softmax(o.logits, dim=-1) for o in outputs]).mean(dim=0)
        return ModelOutput(
            features=mean("features"), logits=torch.log(probs.clamp_min(1e-12)), valence=mean("valence"),
            interloss=mean("interloss"), present=outputs[0].present, weights=mean("weights"),
            attention=mean("attention"), mu=mean("mu"), sigma=mean("sigma"),
            loss_terms={k: torch.stack([o.loss_terms[k] for o in outputs]).mean() for k in outputs[0].loss_terms},
        )
