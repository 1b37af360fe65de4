"""AttentionRobustV2 and its V1 baseline, built by name by `create_model`.

V2, per modality m (audio, text, video), as in docs/model.md:
  1. variational encoder   x_m -> h_m -> mu_m; (h_m, m's own emotion prediction) -> logvar_m;
                           z_m = mu_m + eps * sigma_m in training, mu_m in inference
  2. modality dropout      training only, ramped up over the warm-up epochs (`RobustBase.prepare`)
  3. fusion                u_m = mean sigma_m; w = softmax((1 / u) / T) over the present modalities;
                           proxy = sum_m w_m z_m
  4. proxy attention       query = proxy, keys/values = the tokens z_m, log w added to the logits
  5. heads                 emotion logits and valence from the fused vector (+ the unimodal heads'
                           predictions weighted by w: expert fusion; the valence when output_dim1 = 0)
  6. interloss             KL to N(0, I) + reconstruction of every modality + cross-modal KL
                           (+ the uncertainty calibration term), training only

Shapes: E ensemble members (the cross-validation folds, trained as one network: see
`armer.model.batched`), B batch, M = 3 modalities, H hidden_dim, C classes, D feature dim, T frames
of frame-level features. Both models take MERBench's batch dict (`audios`, `texts`, `videos`,
optional `present` (B, M) bool) and return a `ModelOutput`, whose `merbench()` is MERBench's
`(features, emos_out, vals_out, interloss)`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from armer.config import ModelConfig
from armer.constants import FEATURE_KEYS, MODALITIES, MODEL_CLASSES
from armer.model import batched, losses
from armer.model.missing import mix_with_noise, presence_from_features, sample_feature_noise, sample_modality_dropout

LOGVAR_LIMIT = 8.0  # soft bound on log sigma^2, keeps 1/u finite without cutting gradients
M = len(MODALITIES)


@dataclass
class ModelOutput:
    features: torch.Tensor  # (E, B, H) fused representation
    logits: torch.Tensor  # (E, B, C) emotion logits
    valence: torch.Tensor  # (E, B, output_dim2)
    interloss: torch.Tensor  # () weighted KL + reconstruction + cross-modal KL, summed over E; 0 in eval
    present: torch.Tensor  # (E, B, M) modalities used (after modality dropout in training)
    weights: torch.Tensor  # (E, B, M) fusion weights w, exactly 0 for missing modalities
    attention: torch.Tensor  # (E, B, M) attention of the fused query over modality tokens (head mean)
    mu: torch.Tensor | None = None  # (E, B, M, H) posterior means (V2 only)
    sigma: torch.Tensor | None = None  # (E, B, M) u_m = mean sigma over dims; 0 for missing (V2 only)
    loss_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # kl / recon / cross_kl (training only)

    def merbench(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.features, self.logits, self.valence, self.interloss

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "ModelOutput":
        """Apply `fn` to every per-sample tensor (not to the scalar loss terms)."""
        values = {name: (None if v is None else fn(v)) for name, v in vars(self).items()
                  if name not in ("interloss", "loss_terms")}
        return ModelOutput(**values, interloss=self.interloss, loss_terms=self.loss_terms)


def valid_frames(x: torch.Tensor) -> torch.Tensor:
    """(..., T, D) -> (..., T, 1): 1 for a frame with any non-zero feature, 0 for padding."""
    return (x.abs().amax(dim=-1, keepdim=True) > 0).to(x.dtype)


def mean_over_frames(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(..., T, D) -> (..., D): the mean over the valid frames."""
    return (x * valid).sum(dim=-2) / valid.sum(dim=-2).clamp(min=1.0)


def pool_frames(x: torch.Tensor, sample_rank: int) -> torch.Tensor:
    """(..., T, D) -> (..., D): mean over non-zero frames; utterance vectors (sample_rank 1) pass through."""
    return x if sample_rank == 1 else mean_over_frames(x, valid_frames(x))


class FeatureNormalizer(nn.Module):
    """Per-dimension standardisation with each member's training statistics (identity until set).

    Buffers (E, D) are not persistent: `armer.checkpoint` saves the statistics under its own names.
    """

    def __init__(self, E: int, dims: tuple[int, ...]):
        super().__init__()
        for modality, dim in zip(MODALITIES, dims):
            self.register_buffer(f"{modality}_mean", torch.zeros(E, dim), persistent=False)
            self.register_buffer(f"{modality}_std", torch.ones(E, dim), persistent=False)
            self.register_buffer(f"{modality}_spread", torch.ones(E, dim), persistent=False)
            self.register_buffer(f"{modality}_centre", torch.zeros(E, dim), persistent=False)

    def set_statistics(self, stats: list[dict[str, dict[str, list[float]]]]) -> None:
        """One {modality: {'mean', 'std'}} per member, and for training's noise the optional 'spread'
        (each dimension's standard deviation after the scaling: 1 when standardised per dimension)
        and 'centre' (its mean after the scaling: 0 unless the features are kept raw)."""
        for modality in MODALITIES:
            mean = torch.as_tensor([s[modality]["mean"] for s in stats], dtype=torch.float32)
            std = torch.as_tensor([s[modality]["std"] for s in stats], dtype=torch.float32)
            getattr(self, f"{modality}_mean").copy_(mean)
            getattr(self, f"{modality}_std").copy_(std)
            for key in ("spread", "centre"):
                if all(key in s[modality] for s in stats):
                    values = torch.as_tensor([s[modality][key] for s in stats], dtype=torch.float32)
                    getattr(self, f"{modality}_{key}").copy_(values)

    def noise_scale(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, D) each: each dimension's training standard deviation and mean on the scale `forward`
        returns."""
        modality = MODALITIES[index]
        return getattr(self, f"{modality}_spread"), getattr(self, f"{modality}_centre")

    def forward(self, index: int, x: torch.Tensor, present: torch.Tensor, dims: slice = slice(None)) -> torch.Tensor:
        """x (E, B, D) or (E, B, T, D); present (E, B); only the feature dims `dims` are returned."""
        modality = MODALITIES[index]
        part = x[..., dims]
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (part.shape[-1],)
        mean, std = getattr(self, f"{modality}_mean")[:, dims], getattr(self, f"{modality}_std")[:, dims]
        normed = (part - mean.reshape(shape)) / std.reshape(shape)
        keep = present.reshape(present.shape + (1,) * (x.dim() - 2)).to(x.dtype)
        if x.dim() == 4:  # padded frames stay zero
            keep = keep * valid_frames(x)
        return normed * keep


class MLPEncoder(nn.Module):
    """MERBench's utterance encoder: (E, B, D) -> (E, B, H)."""

    def __init__(self, E: int, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            batched.Linear(E, in_dim, hidden_dim), nn.ReLU(), batched.Dropout(dropout),
            batched.Linear(E, hidden_dim, hidden_dim), nn.ReLU(), batched.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMEncoder(nn.Module):
    """Frame-level encoder: (E, B, T, D) -> (E, B, H), mean of LSTM outputs over non-zero frames."""

    def __init__(self, E: int, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.lstm = batched.LSTM(E, in_dim, hidden_dim)
        self.out = nn.Sequential(batched.Dropout(dropout), batched.Linear(E, hidden_dim, hidden_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = self.lstm(x)  # (E, B, T, H)
        return self.out(mean_over_frames(states, valid_frames(x)))


class Decoder(nn.Module):
    """Latent (E, B, H) -> features (E, B, D), the output layer split into blocks of <= `block_dims` dims.

    A training step scores one random block (an unbiased estimate of the mean squared error over
    all dims); only that block's weights get gradients, so the step skips most of the largest
    layer's forward, backward and optimizer update. `block_dims` 0: one block of every dim.
    """

    def __init__(self, E: int, hidden_dim: int, dim: int, block_dims: int):
        super().__init__()
        num_blocks = -(-dim // block_dims) if block_dims > 0 else 1
        edges = [round(i * dim / num_blocks) for i in range(num_blocks + 1)]
        self.bounds = list(zip(edges[:-1], edges[1:]))
        self.body = nn.Sequential(batched.Linear(E, hidden_dim, hidden_dim), nn.ReLU())
        self.blocks = nn.ModuleList(batched.Linear(E, hidden_dim, end - start) for start, end in self.bounds)

    def block_slice(self, block: int) -> slice:
        return slice(*self.bounds[block])

    def forward(self, latent: torch.Tensor, block: int) -> torch.Tensor:
        """The reconstruction of the dims `block_slice(block)`."""
        return self.blocks[block](self.body(latent))


class RobustBase(nn.Module):
    """What V1 and V2 share: inputs, presence, modality dropout with warm-up, encoders, heads.

    A network holds `members` = E independent models (the folds in training, the fold ensemble
    in prediction). Inputs (B, D) / (B, T, D) are shared along E; inputs (E, B, ...) give each
    member its own batch. Outputs are (E, B, ...), or (B, ...) when E = 1 and inputs are shared.
    """

    def __init__(self, config: ModelConfig, members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError(f"members={members} must be >= 1")
        self.config, self.members = config, members
        self.sample_rank = 1 if config.feat_type == "utt" else 2
        E, H = members, config.hidden_dim
        encoder = MLPEncoder if config.feat_type == "utt" else LSTMEncoder
        self.normalizer = FeatureNormalizer(E, config.input_dims)
        self.encoders = nn.ModuleList(encoder(E, dim, H, config.dropout) for dim in config.input_dims)
        self.emotion_head = batched.Linear(E, H, config.output_dim1)
        self.valence_head = batched.Linear(E, H, config.output_dim2)
        # Epochs completed; drives the modality-dropout warm-up. A buffer so it is saved with the model.
        self.register_buffer("epoch", torch.zeros((), dtype=torch.float32))

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(float(epoch))

    def warmup_ramp(self) -> torch.Tensor:
        """0 -> 1 over the warm-up epochs; scales modality dropout and modality noise."""
        warmup = self.config.modality_dropout_warmup
        return torch.clamp(self.epoch / warmup, max=1.0) if warmup > 0 else torch.ones_like(self.epoch)

    def prepare(self, batch: dict, check_inputs: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor, bool]:
        """Normalised model inputs (E, B, ...), the raw features (E, B, ...), data presence
        (E, B, M), the presence used after modality dropout (all True with `missing_modality`
        zeros: the absent inputs are zero vectors), and whether the inputs were shared."""
        features = [batch[key] for key in FEATURE_KEYS]
        present = batch.get("present")
        present = presence_from_features(features, self.sample_rank) if present is None else present.to(torch.bool)
        if check_inputs:
            self._check(features, present)
        shared = features[0].dim() == self.sample_rank + 1
        if shared:
            features = [x.unsqueeze(0).expand(self.members, *x.shape) for x in features]
            present = present.unsqueeze(0).expand(self.members, *present.shape)
        used = present
        if self.training and self.config.modality_dropout > 0:
            used = sample_modality_dropout(present, self.config.modality_dropout * self.warmup_ramp())
        normed = [self.normalizer(i, x, used[..., i]) for i, x in enumerate(features)]
        if self.training and self.config.modality_noise > 0:
            alpha = sample_feature_noise(used, self.config.modality_noise * self.warmup_ramp())  # (E, B, M)
            own_scale = self.config.noise_scale == "feature"
            normed = [mix_with_noise(x, alpha[..., i], self.normalizer.noise_scale(i) if own_scale else None)
                      for i, x in enumerate(normed)]
        if self.config.missing_modality == "zeros":  # the seed's: absent inputs are zeros, fused like the others
            used = torch.ones_like(used)
        return normed, features, present, used, shared

    def _check(self, features: list[torch.Tensor], present: torch.Tensor) -> None:
        rank = self.sample_rank
        layout = "(B, D) or (E, B, D)" if rank == 1 else "(B, T, D) or (E, B, T, D)"
        for modality, x, dim in zip(MODALITIES, features, self.config.input_dims):
            if x.dim() not in (rank + 1, rank + 2) or x.shape[-1] != dim or x.dim() != features[0].dim():
                raise ValueError(
                    f"{modality} features have shape {tuple(x.shape)}; this model expects {layout} with D={dim} "
                    f"(feat_type={self.config.feat_type}), the same layout for every modality"
                )
        if features[0].dim() == rank + 2 and features[0].shape[0] != self.members:
            raise ValueError(f"inputs have {features[0].shape[0]} members; this model has {self.members}")
        expected = features[0].shape[: features[0].dim() - rank] + (M,)
        if present.shape != expected:
            raise ValueError(f"present mask has shape {tuple(present.shape)}; expected {tuple(expected)}")
        empty = [i[0] if len(i) == 1 else tuple(i) for i in (~present.any(dim=-1)).nonzero().tolist()]
        if empty:
            raise ValueError(f"samples {empty[:10]} have no modality present; at least one of audio/text/video is needed")

    def encode(self, normed: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([enc(x) for enc, x in zip(self.encoders, normed)], dim=-2)  # (E, B, M, H)

    def finish(self, out: ModelOutput, shared: bool) -> ModelOutput:
        """Drop the E dim when E = 1 and the inputs were shared."""
        return out.map_tensors(lambda v: v[0]) if shared and self.members == 1 else out


class AttentionRobust(RobustBase):
    """V1 baseline: deterministic encoders and MERBench's attention fusion over the hidden vectors."""

    def __init__(self, config: ModelConfig, members: int = 1):
        super().__init__(config, members)
        E, H = members, config.hidden_dim
        self.attention_mlp = MLPEncoder(E, H * M, H, config.dropout)
        self.fc_att = batched.Linear(E, H, M)

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        normed, _, _, used, shared = self.prepare(batch, check_inputs)
        hidden = self.encode(normed) * used.unsqueeze(-1).to(normed[0].dtype)  # (E, B, M, H)
        scores = self.fc_att(self.attention_mlp(hidden.flatten(-2)))  # (E, B, M)
        w = torch.softmax(scores.masked_fill(~used, float("-inf")), dim=-1)  # (E, B, M)
        fused = (w.unsqueeze(-1) * hidden).sum(dim=-2)  # (E, B, H)
        out = ModelOutput(
            features=fused, logits=self.emotion_head(fused), valence=self.valence_head(fused),
            interloss=fused.new_zeros(()), present=used, weights=w, attention=w,
        )
        return self.finish(out, shared)


class AttentionRobustV2(RobustBase):
    """Variational encoders, uncertainty-weighted fusion and proxy cross-modal attention."""

    def __init__(self, config: ModelConfig, members: int = 1):
        super().__init__(config, members)
        E, H = members, config.hidden_dim
        # Without emotion classes (output_dim1 = 0: MERBench's sentiment sets) the unimodal heads
        # predict the valence, and calibration and expert fusion use that prediction instead.
        self.valence_only = config.output_dim1 == 0
        C = config.output_dim2 if self.valence_only else config.output_dim1
        self.mu_heads = batched.ModalityLinear(E, M, H, H)
        # Each modality's own emotion prediction from mu (trained by the calibration term); the
        # log-variance head sees it, because how sure a modality is on its own is the clearest sign
        # of a degraded input, and not a linear function of the hidden state.
        self.unimodal_heads = batched.ModalityLinear(E, M, H, C)
        self.logvar_heads = nn.Sequential(batched.ModalityLinear(E, M, H + C, H), nn.Tanh(),
                                          batched.ModalityLinear(E, M, H, H))
        self.decoders = nn.ModuleList(Decoder(E, H, dim, config.recon_dims) for dim in config.input_dims)
        self.query, self.key, self.value = batched.Linear(E, H, H), batched.Linear(E, H, H), batched.Linear(E, H, H)
        self.attn_out = batched.Linear(E, H, H)
        self.attn_norm = batched.LayerNorm(E, H)
        self.ffn = nn.Sequential(batched.Linear(E, H, 2 * H), nn.ReLU(), batched.Dropout(config.dropout),
                                 batched.Linear(E, 2 * H, H))
        self.ffn_norm = batched.LayerNorm(E, H)
        self.drop = batched.Dropout(config.dropout)
        self.num_heads = config.num_attention_heads
        if config.learn_temperature:  # log T per member, (E, 1, 1) to broadcast over (E, B, M)
            self.log_temperature = nn.Parameter(torch.full((E, 1, 1), math.log(config.fusion_temperature)))
        # Training only, not saved: predictors that never saw a training sample, whose error on it the
        # calibration term teaches u (`armer.train.probes`); None: the unimodal heads' own error.
        self.calibration_reference: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor] | None = None

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        cfg = self.config
        normed, raw, data_present, used, shared = self.prepare(batch, check_inputs)  # 2. modality dropout
        # 1. variational encoders
        hidden = self.encode(normed)  # (E, B, M, H)
        mu = self.mu_heads(hidden)  # (E, B, M, H)
        unimodal = self.unimodal_heads(mu)  # (E, B, M, C); valence-only: (E, B, M, output_dim2)
        if cfg.use_vae:
            own = unimodal if self.valence_only else torch.softmax(unimodal, dim=-1)
            evidence = torch.cat([hidden, own], dim=-1)  # (E, B, M, H + C)
            logvar = LOGVAR_LIMIT * torch.tanh(self.logvar_heads(evidence) / LOGVAR_LIMIT)
            sigma = torch.exp(0.5 * logvar)  # (E, B, M, H)
            z = mu + torch.randn_like(mu) * sigma if self.training else mu
            u = sigma.mean(dim=-1)  # (E, B, M)
            trusted = u.detach() if self.training and cfg.calibrated_fusion else u
            scores = (1.0 / trusted) / self.temperature()
        else:
            logvar, z, u = torch.zeros_like(mu), mu, None
            scores = torch.zeros_like(mu[..., 0])  # equal weights over the present modalities
        # 3. uncertainty-weighted fusion over the modalities present
        scores = scores.masked_fill(~used, float("-inf"))
        w = torch.softmax(scores, dim=-1)  # (E, B, M), exactly 0 where missing
        log_w = torch.log_softmax(scores, dim=-1)
        tokens = z * used.unsqueeze(-1).to(z.dtype)  # (E, B, M, H)
        proxy = (w.unsqueeze(-1) * tokens).sum(dim=-2)  # (E, B, H)
        # 4. proxy cross-modal attention
        if cfg.use_proxy_attention:
            fused, attention = self.proxy_attention(proxy, tokens, log_w)
        else:
            fused, attention = proxy, w
        # 5. heads
        logits, valence = self.emotion_head(fused), self.valence_head(fused)  # (E, B, C), (E, B, output_dim2)
        if cfg.expert_fusion:
            experts = (w.unsqueeze(-1) * unimodal).sum(dim=-2)
            if self.valence_only:
                valence = valence + experts
            else:
                logits = logits + experts
        # 6. interloss: the regularisers only shape training; at inference they would cost a decoder pass.
        terms = {}
        if self.training:
            terms = self.interloss_terms(mu, logvar, proxy, raw, data_present, used)
            if u is not None and cfg.calibration_weight > 0:
                reference = (self.calibration_reference(normed, batch["fold"])
                             if self.calibration_reference is not None and "fold" in batch else None)
                terms["calibration"] = (
                    self.valence_calibration(batch, unimodal, u, valence, used, reference) if self.valence_only
                    else self.emotion_calibration(batch, unimodal, u, logits, used, reference))
        interloss = sum((getattr(cfg, f"{name}_weight") * value for name, value in terms.items()), mu.new_zeros(()))
        out = ModelOutput(
            features=fused, logits=logits, valence=valence,
            interloss=interloss, present=used, weights=w, attention=attention,
            mu=mu, sigma=None if u is None else u * used.to(u.dtype), loss_terms=terms,
        )
        return self.finish(out, shared)

    def temperature(self) -> torch.Tensor | float:
        """T of the fusion weights: learned per member, (E, 1, 1) (`learn_temperature`), else the configured one."""
        return self.log_temperature.exp() if self.config.learn_temperature else self.config.fusion_temperature

    def emotion_calibration(self, batch: dict, unimodal: torch.Tensor, u: torch.Tensor, logits: torch.Tensor,
                            used: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The calibration term against the emotion label (the fused prediction without labels);
        `reference` (E, B, M, C): the probabilities whose error u learns, if not the heads'."""
        if "emos" in batch:
            target = F.one_hot(batch["emos"], self.config.output_dim1).to(logits.dtype).expand_as(logits)
        else:
            target = torch.softmax(logits.detach(), dim=-1)
        return losses.uncertainty_calibration(unimodal, u, target, used, reference, self.config.uncertainty_weight,
                                              batch.get("held_out"))

    def valence_calibration(self, batch: dict, unimodal: torch.Tensor, u: torch.Tensor, valence: torch.Tensor,
                            used: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The calibration term of a valence-only model: against the valence label where a sample has
        one, else (unlabelled, or inside MERBench) against the fused valence; `reference` as in
        `emotion_calibration`."""
        target = valence.detach()
        if "vals" in batch:
            labelled = batch["val_labelled"] if "val_labelled" in batch else torch.ones_like(batch["vals"], dtype=torch.bool)
            label = batch["vals"].to(valence.dtype).unsqueeze(-1).expand_as(target)
            target = torch.where(labelled.unsqueeze(-1).expand_as(target), label, target)
        return losses.valence_calibration(unimodal, u, target, used, reference, self.config.uncertainty_weight,
                                          batch.get("held_out"))

    def proxy_attention(self, proxy: torch.Tensor, tokens: torch.Tensor, log_w: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query = proxy, keys/values = modality tokens; log w biases the logits, missing -> -inf.

        Returns the fused vector (E, B, H) and the attention over the tokens (E, B, M), head mean.
        """
        E, B, M, H = tokens.shape
        nh, hs = self.num_heads, H // self.num_heads
        q = self.query(proxy).view(E, B, nh, 1, hs)  # (E, B, nh, 1, hs)
        k = self.key(tokens).view(E, B, M, nh, hs).transpose(-2, -3)  # (E, B, nh, M, hs)
        v = self.value(tokens).view(E, B, M, nh, hs).transpose(-2, -3)  # (E, B, nh, M, hs)
        att = (q @ k.transpose(-1, -2)).squeeze(-2) / math.sqrt(hs) + log_w.unsqueeze(-2)  # (E, B, nh, M)
        att = torch.softmax(att, dim=-1)
        y = (att.unsqueeze(-1) * v).sum(dim=-2).reshape(E, B, H)  # (E, B, H)
        h = self.attn_norm(proxy + self.drop(self.attn_out(y)))
        h = self.ffn_norm(h + self.drop(self.ffn(h)))
        return h, att.mean(dim=-2)

    def recon_block(self, modality: int, decoder: Decoder) -> int:
        """The output block of ``decoder`` scored this step (``recon_dims``): one at random."""
        return int(torch.randint(len(decoder.blocks), ()))

    def interloss_terms(self, mu: torch.Tensor, logvar: torch.Tensor, proxy: torch.Tensor, raw: list[torch.Tensor],
                        data_present: torch.Tensor, used: torch.Tensor) -> dict[str, torch.Tensor]:
        """KL to the prior and cross-modal KL over the used modalities; reconstruction of every
        modality the data has (including the ones modality dropout removed) from the fused latent."""
        zero = mu.new_zeros(())
        cfg = self.config
        kl = losses.kl_to_prior(mu, logvar, used) if cfg.use_vae and cfg.kl_weight > 0 else zero
        cross = losses.cross_modal_kl(mu, logvar, used) if cfg.use_vae and cfg.cross_kl_weight > 0 else zero
        recon = zero
        if cfg.recon_weight > 0:
            predictions, targets = [], []
            for i, (x, decoder) in enumerate(zip(raw, self.decoders)):
                block = self.recon_block(i, decoder)
                target = self.normalizer(i, x, data_present[..., i], decoder.block_slice(block))
                predictions.append(decoder(proxy, block))
                targets.append(pool_frames(target, self.sample_rank))
            recon = losses.reconstruction(predictions, targets, data_present)
        return {"kl": kl, "recon": recon, "cross_kl": cross}


MODELS: dict[str, type[RobustBase]] = {name: globals()[cls] for name, cls in MODEL_CLASSES.items()}


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(config: ModelConfig, members: int = 1) -> RobustBase:
    """Build a model by `config.model` name, with `members` independent members (the E dim)."""
    if config.model not in MODELS:
        raise ValueError(f"Unknown model {config.model!r}; available: {list_models()}")
    return MODELS[config.model](config, members)


class Ensemble(nn.Module):
    """A network's members (e.g. the best model of each CV fold) as one model: their outputs
    averaged, the logits as the log of the mean member probabilities."""

    def __init__(self, network: RobustBase):
        super().__init__()
        self.network = network
        self.config = network.config

    @property
    def num_members(self) -> int:
        return self.network.members

    def member_outputs(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        """Every member's outputs (E, B, ...) for inputs shared by all members."""
        out = self.network(batch, check_inputs=check_inputs)
        return out if self.network.members > 1 else out.map_tensors(lambda v: v.unsqueeze(0))

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        out = self.member_outputs(batch, check_inputs)
        # presence (bool) is the same along E for shared inputs: one copy stands for all
        mean = out.map_tensors(lambda v: v.float().mean(dim=0) if v.dtype != torch.bool else v[0])
        mean.logits = torch.log(torch.softmax(out.logits, dim=-1).mean(dim=0).clamp_min(1e-12))
        return mean
