"""AttentionRobustV2 and its V1 baseline, built by name from one factory.

Shapes: E ensemble members, B batch, M = 3 modalities (audio, text, video), H hidden_dim, D_m
feature dims, T frames for frame-level features. Both models take MERBench's batch dict
(`audios`, `texts`, `videos`, optional `present` (B, 3) bool) and return a `ModelOutput`;
`ModelOutput.merbench()` is MERBench's `(features, emos_out, vals_out, interloss)`. A network
holds E independent members (see `RobustBase`): the five fold models of cross-validation train
together as one batched network, and predict together as an `Ensemble`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from armer.model import losses
from armer.config import MODALITIES, ModelConfig
from armer.model.missing import mix_with_noise, presence_from_features, sample_feature_noise, sample_modality_dropout

LOGVAR_LIMIT = 8.0  # soft bound on log sigma^2, keeps 1/u finite without cutting gradients


@dataclass
class ModelOutput:
    features: torch.Tensor  # (E, B, H) fused representation
    logits: torch.Tensor  # (E, B, C) emotion logits
    valence: torch.Tensor  # (E, B, output_dim2)
    interloss: torch.Tensor  # () weighted KL + reconstruction + cross-modal KL, summed over members; 0 in eval
    present: torch.Tensor  # (E, B, M) modalities used (after modality dropout in training)
    weights: torch.Tensor  # (E, B, M) fusion weights, exactly 0 for missing modalities
    attention: torch.Tensor  # (E, B, M) attention of the fused query over modality tokens (head mean)
    mu: torch.Tensor | None = None  # (E, B, M, H) posterior means (V2 only)
    sigma: torch.Tensor | None = None  # (E, B, M) u_m = mean sigma over dims; 0 for missing (V2 only)
    loss_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # kl / recon / cross_kl (training only)

    def merbench(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.features, self.logits, self.valence, self.interloss

    def map_tensors(self, per_member) -> "ModelOutput":
        """Apply `per_member` to every per-sample tensor (not to the scalar loss terms)."""
        values = {name: (None if v is None else per_member(v)) for name, v in vars(self).items()
                  if name not in ("interloss", "loss_terms")}
        return ModelOutput(**values, interloss=self.interloss, loss_terms=self.loss_terms)

    def member(self, index: int) -> "ModelOutput":
        """One member's outputs (B, ...); the loss terms stay the network's."""
        return self.map_tensors(lambda v: v[index])

    def average_members(self) -> "ModelOutput":
        """Ensemble outputs (B, ...): mean over members; logits = log of the mean member probabilities."""
        out = self.map_tensors(lambda v: v.float().mean(dim=0) if v.dtype != torch.bool else v[0])
        out.logits = torch.log(torch.softmax(self.logits, dim=-1).mean(dim=0).clamp_min(1e-12))
        return out


class MemberLinear(nn.Module):
    """`members` independent linear layers run as one batched matmul: (E, ..., in) -> (E, ..., out).

    Initialised like `nn.Linear`, each member on its own.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        return torch.baddbmm(self.bias, flat, self.weight).view(*x.shape[:-1], -1)


class ModalityLinear(nn.Module):
    """A separate linear layer per member and modality: (E, B, M, in) -> (E, B, M, out), one batched matmul."""

    def __init__(self, members: int, modalities: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(members, modalities, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, modalities, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch, modalities, in_dim = x.shape
        flat = x.transpose(1, 2).reshape(members * modalities, batch, in_dim)
        out = torch.baddbmm(self.bias.flatten(0, 1), flat, self.weight.flatten(0, 1))
        return out.view(members, modalities, batch, -1).transpose(1, 2).contiguous()  # strided tensors slow later ops


class MemberLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine transform per member; x (E, B, H)."""

    def __init__(self, members: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class Dropout(nn.Module):
    """Inverted dropout, as `nn.Dropout`, with the mask drawn from uniforms: on CPU torch's
    `bernoulli_` takes about twice as long at these sizes, and training calls dropout 9 times a step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class MLPEncoder(nn.Module):
    """MERBench's utterance encoder: (E, B, D) -> (E, B, H)."""

    def __init__(self, members: int, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            MemberLinear(members, in_dim, hidden_dim), nn.ReLU(), Dropout(dropout),
            MemberLinear(members, hidden_dim, hidden_dim), nn.ReLU(), Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMEncoder(nn.Module):
    """Frame-level encoder: (E, B, T, D) -> (E, B, H), mean of LSTM outputs over non-zero frames.

    The members' LSTM weights are stacked parameters (E, ...) run one member at a time through
    a weightless `nn.LSTM` template (`torch.func.functional_call`).
    """

    def __init__(self, members: int, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        template = nn.LSTM(in_dim, hidden_dim, batch_first=True)
        self.lstm = nn.ParameterDict({
            name: nn.Parameter(torch.stack([torch.empty_like(p).uniform_(-1 / math.sqrt(hidden_dim), 1 / math.sqrt(hidden_dim))
                                            for _ in range(members)]))
            for name, p in template.named_parameters()
        })
        self._template = [template.requires_grad_(False)]  # a list: not a registered submodule
        self.out = nn.Sequential(Dropout(dropout), MemberLinear(members, hidden_dim, hidden_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        valid = (x.abs().amax(dim=-1) > 0).to(x.dtype).unsqueeze(-1)  # (E, B, T, 1)
        template = self._template[0]
        states = torch.stack([
            torch.func.functional_call(template, {name: p[member] for name, p in self.lstm.items()}, (x[member],))[0]
            for member in range(x.shape[0])
        ])  # (E, B, T, H)
        pooled = (states * valid).sum(dim=-2) / valid.sum(dim=-2).clamp(min=1.0)
        return self.out(pooled)


def pool_frames(x: torch.Tensor, sample_rank: int) -> torch.Tensor:
    """(..., T, D) -> (..., D): mean over non-zero frames; utterance vectors pass through."""
    if sample_rank == 1:
        return x
    valid = (x.abs().amax(dim=-1) > 0).to(x.dtype).unsqueeze(-1)
    return (x * valid).sum(dim=-2) / valid.sum(dim=-2).clamp(min=1.0)


class FeatureNormalizer(nn.Module):
    """Per-dimension standardisation with each member's training statistics (identity until set).

    Buffers (E, D) are not persistent: the statistics live in the checkpoint's config.json.
    """

    def __init__(self, members: int, dims: tuple[int, ...]):
        super().__init__()
        for modality, dim in zip(MODALITIES, dims):
            self.register_buffer(f"{modality}_mean", torch.zeros(members, dim), persistent=False)
            self.register_buffer(f"{modality}_std", torch.ones(members, dim), persistent=False)

    def set_statistics(self, stats: list[dict[str, dict[str, list[float]]]]) -> None:
        """One {modality: {'mean', 'std'}} per member."""
        for modality in MODALITIES:
            mean = torch.as_tensor([s[modality]["mean"] for s in stats], dtype=torch.float32)
            std = torch.as_tensor([s[modality]["std"] for s in stats], dtype=torch.float32)
            getattr(self, f"{modality}_mean").copy_(mean)
            getattr(self, f"{modality}_std").copy_(std)

    def forward(self, index: int, x: torch.Tensor, present: torch.Tensor, dims: slice = slice(None)) -> torch.Tensor:
        """x (E, B, D) or (E, B, T, D); present (E, B); only the feature dims `dims` are returned."""
        modality = MODALITIES[index]
        part = x[..., dims]
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (part.shape[-1],)
        mean, std = getattr(self, f"{modality}_mean")[:, dims], getattr(self, f"{modality}_std")[:, dims]
        normed = (part - mean.reshape(shape)) / std.reshape(shape)
        keep = present.reshape(present.shape + (1,) * (x.dim() - 2)).to(x.dtype)
        if x.dim() == 4:  # padded frames stay zero
            keep = keep * (x.abs().amax(dim=-1, keepdim=True) > 0).to(x.dtype)
        return normed * keep


class RobustBase(nn.Module):
    """What V1 and V2 share: inputs, presence, modality dropout with warm-up, encoders, heads.

    One network holds `members` independent models (E; one per cross-validation fold when
    training, the fold ensemble when predicting) whose layers run as batched matmuls. Inputs
    (B, D) / (B, T, D) are shared by every member; inputs with a leading member dim (E, B, ...)
    give each member its own batch. Outputs have the leading member dim, except that a
    one-member model given inputs without it returns plain (B, ...) outputs.
    """

    def __init__(self, config: ModelConfig, members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError(f"members={members} must be >= 1")
        self.config, self.members = config, members
        self.sample_rank = 1 if config.feat_type == "utt" else 2
        dims, hidden = config.input_dims, config.hidden_dim
        encoder = MLPEncoder if config.feat_type == "utt" else LSTMEncoder
        self.normalizer = FeatureNormalizer(members, dims)
        self.encoders = nn.ModuleList(encoder(members, dim, hidden, config.dropout) for dim in dims)
        self.emotion_head = MemberLinear(members, hidden, config.output_dim1)
        self.valence_head = MemberLinear(members, hidden, config.output_dim2)
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
        (E, B, M), the presence used after modality dropout, and whether the inputs came without
        a member dim."""
        features = [batch["audios"], batch["texts"], batch["videos"]]
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
            normed = [mix_with_noise(x, alpha[..., i]) for i, x in enumerate(normed)]
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
        expected = features[0].shape[: features[0].dim() - rank] + (len(MODALITIES),)
        if present.shape != expected:
            raise ValueError(f"present mask has shape {tuple(present.shape)}; expected {tuple(expected)}")
        empty = [i[0] if len(i) == 1 else tuple(i) for i in (~present.any(dim=-1)).nonzero().tolist()]
        if empty:
            raise ValueError(f"samples {empty[:10]} have no modality present; at least one of audio/text/video is needed")

    def encode(self, normed: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([enc(x) for enc, x in zip(self.encoders, normed)], dim=-2)  # (E, B, M, H)

    def finish(self, out: ModelOutput, shared: bool) -> ModelOutput:
        """Drop the member dim of a one-member model given inputs without one."""
        return out.member(0) if shared and self.members == 1 else out


class AttentionRobust(RobustBase):
    """V1 baseline: deterministic encoders and MERBench's attention fusion over the hidden vectors."""

    def __init__(self, config: ModelConfig, members: int = 1):
        super().__init__(config, members)
        hidden = config.hidden_dim
        self.attention_mlp = MLPEncoder(members, hidden * len(MODALITIES), hidden, config.dropout)
        self.fc_att = MemberLinear(members, hidden, len(MODALITIES))

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        normed, _, _, used, shared = self.prepare(batch, check_inputs)
        hidden = self.encode(normed) * used.unsqueeze(-1).to(normed[0].dtype)  # (E, B, M, H)
        scores = self.fc_att(self.attention_mlp(hidden.flatten(-2)))  # (E, B, M)
        weights = torch.softmax(scores.masked_fill(~used, float("-inf")), dim=-1)
        fused = (weights.unsqueeze(-1) * hidden).sum(dim=-2)  # (E, B, H)
        out = ModelOutput(
            features=fused, logits=self.emotion_head(fused), valence=self.valence_head(fused),
            interloss=fused.new_zeros(()), present=used, weights=weights, attention=weights,
        )
        return self.finish(out, shared)


class AttentionRobustV2(RobustBase):
    """Variational encoders, uncertainty-weighted fusion and proxy cross-modal attention."""

    def __init__(self, config: ModelConfig, members: int = 1):
        super().__init__(config, members)
        hidden, heads, classes = config.hidden_dim, config.num_attention_heads, config.output_dim1

        def linear(in_dim: int, out_dim: int) -> MemberLinear:
            return MemberLinear(members, in_dim, out_dim)

        def per_modality(in_dim: int, out_dim: int) -> ModalityLinear:
            return ModalityLinear(members, len(MODALITIES), in_dim, out_dim)

        self.mu_heads = per_modality(hidden, hidden)
        # Each modality's own emotion prediction from mu (trained by the calibration term); the
        # log-variance head sees it, because how sure a modality is on its own is the clearest sign
        # of a degraded input, and not a linear function of the hidden state.
        self.unimodal_heads = per_modality(hidden, classes)
        self.logvar_heads = nn.Sequential(per_modality(hidden + classes, hidden), nn.Tanh(), per_modality(hidden, hidden))
        self.decoders = nn.ModuleList(Decoder(members, hidden, dim, config.recon_dims) for dim in config.input_dims)
        self.query, self.key, self.value = linear(hidden, hidden), linear(hidden, hidden), linear(hidden, hidden)
        self.attn_out = linear(hidden, hidden)
        self.attn_norm = MemberLayerNorm(members, hidden)
        self.ffn = nn.Sequential(linear(hidden, 2 * hidden), nn.ReLU(), Dropout(config.dropout), linear(2 * hidden, hidden))
        self.ffn_norm = MemberLayerNorm(members, hidden)
        self.drop = Dropout(config.dropout)
        self.heads = heads

    def forward(self, batch: dict, check_inputs: bool = True) -> ModelOutput:
        cfg = self.config
        normed, raw, data_present, used, shared = self.prepare(batch, check_inputs)
        hidden = self.encode(normed)  # (E, B, M, H)
        mu = self.mu_heads(hidden)  # (E, B, M, H)
        unimodal = self.unimodal_heads(mu)  # (E, B, M, C)
        if cfg.use_vae:
            evidence = torch.cat([hidden, torch.softmax(unimodal, dim=-1)], dim=-1)  # (E, B, M, H + C)
            logvar = LOGVAR_LIMIT * torch.tanh(self.logvar_heads(evidence) / LOGVAR_LIMIT)
            sigma = torch.exp(0.5 * logvar)  # (E, B, M, H)
            z = mu + torch.randn_like(mu) * sigma if self.training else mu
            uncertainty = sigma.mean(dim=-1)  # (E, B, M) u_m
            scores = (1.0 / uncertainty) / cfg.fusion_temperature
        else:
            logvar, z, uncertainty = torch.zeros_like(mu), mu, None
            scores = torch.zeros_like(mu[..., 0])  # equal weights over the present modalities
        scores = scores.masked_fill(~used, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (E, B, M), exactly 0 where missing
        log_weights = torch.log_softmax(scores, dim=-1)
        tokens = z * used.unsqueeze(-1).to(z.dtype)  # (E, B, M, H)
        proxy = (weights.unsqueeze(-1) * tokens).sum(dim=-2)  # (E, B, H)

        if cfg.use_proxy_attention:
            fused, attention = self.proxy_attention(proxy, tokens, log_weights)
        else:
            fused, attention = proxy, weights

        logits = self.emotion_head(fused)
        if cfg.expert_fusion:
            logits = logits + (weights.unsqueeze(-1) * unimodal).sum(dim=-2)
        # The regularisers only shape training; at inference they would cost a decoder pass for nothing.
        terms = {}
        if self.training:
            terms = self.interloss_terms(mu, logvar, proxy, raw, data_present, used)
            if uncertainty is not None and cfg.calibration_weight > 0:
                if "emos" in batch:
                    target = F.one_hot(batch["emos"], cfg.output_dim1).to(logits.dtype).expand_as(logits)
                else:
                    target = torch.softmax(logits.detach(), dim=-1)
                terms["calibration"] = losses.uncertainty_calibration(unimodal, uncertainty, target, used)
        interloss = sum((getattr(cfg, f"{name}_weight") * value for name, value in terms.items()), mu.new_zeros(()))
        sigma_out = None if uncertainty is None else uncertainty * used.to(uncertainty.dtype)
        out = ModelOutput(
            features=fused, logits=logits, valence=self.valence_head(fused),
            interloss=interloss, present=used, weights=weights, attention=attention,
            mu=mu, sigma=sigma_out, loss_terms=terms,
        )
        return self.finish(out, shared)

    def proxy_attention(self, proxy: torch.Tensor, tokens: torch.Tensor, log_weights: torch.Tensor):
        """Query = proxy, keys/values = modality tokens; log w biases the logits, missing -> -inf."""
        *lead, num_tokens, hidden = tokens.shape
        head_dim = hidden // self.heads
        q = self.query(proxy).view(*lead, self.heads, 1, head_dim)  # (E, B, h, 1, d)
        k = self.key(tokens).view(*lead, num_tokens, self.heads, head_dim).transpose(-2, -3)  # (E, B, h, M, d)
        v = self.value(tokens).view(*lead, num_tokens, self.heads, head_dim).transpose(-2, -3)  # (E, B, h, M, d)
        logits = (q @ k.transpose(-1, -2)).squeeze(-2) / math.sqrt(head_dim) + log_weights.unsqueeze(-2)  # (E, B, h, M)
        attention = torch.softmax(logits, dim=-1)
        attended = (attention.unsqueeze(-1) * v).sum(dim=-2).reshape(*lead, hidden)  # (E, B, H)
        h = self.attn_norm(proxy + self.drop(self.attn_out(attended)))
        h = self.ffn_norm(h + self.drop(self.ffn(h)))
        return h, attention.mean(dim=-2)

    def interloss_terms(self, mu, logvar, proxy, raw, data_present, used) -> dict[str, torch.Tensor]:
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
                block = int(torch.randint(len(decoder.blocks), ()))
                target = self.normalizer(i, x, data_present[..., i], decoder.block_slice(block))
                predictions.append(decoder(proxy, block))
                targets.append(pool_frames(target, self.sample_rank))
            recon = losses.reconstruction(predictions, targets, data_present)
        return {"kl": kl, "recon": recon, "cross_kl": cross}


class Decoder(nn.Module):
    """Latent (E, B, H) -> features (E, B, D), the output layer split into blocks of <= `block_dims` dims.

    A training step scores one random block (an unbiased estimate of the mean squared error over
    all dims); only that block's weights get gradients, so the step skips most of the largest
    layer's forward, backward and optimizer update. `block_dims` 0: one block of every dim.
    """

    def __init__(self, members: int, hidden_dim: int, dim: int, block_dims: int):
        super().__init__()
        num_blocks = -(-dim // block_dims) if block_dims > 0 else 1
        edges = [round(i * dim / num_blocks) for i in range(num_blocks + 1)]
        self.bounds = list(zip(edges[:-1], edges[1:]))
        self.body = nn.Sequential(MemberLinear(members, hidden_dim, hidden_dim), nn.ReLU())
        self.blocks = nn.ModuleList(MemberLinear(members, hidden_dim, end - start) for start, end in self.bounds)

    def block_slice(self, block: int) -> slice:
        return slice(*self.bounds[block])

    def forward(self, latent: torch.Tensor, block: int) -> torch.Tensor:
        """The reconstruction of the dims `block_slice(block)`."""
        return self.blocks[block](self.body(latent))


MODELS: dict[str, type[RobustBase]] = {
    "attention_robust_v2": AttentionRobustV2,
    "attention_robust": AttentionRobust,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(config: ModelConfig, members: int = 1) -> RobustBase:
    """Build a model by `config.model` name, with `members` independent members."""
    if config.model not in MODELS:
        raise ValueError(f"Unknown model {config.model!r}; available: {list_models()}")
    return MODELS[config.model](config, members)


class Ensemble(nn.Module):
    """A network's members (e.g. the best model of each CV fold) as one model: outputs averaged.

    The ensemble's logits are the log of the mean member probabilities.
    """

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
        return self.member_outputs(batch, check_inputs).average_members()
