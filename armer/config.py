"""Settings: each model and training setting declared once, as a dataclass field with its default and help.

`ModelConfig` is what every model in `armer.model` is built from; a checkpoint stores it, so a model
can be rebuilt from the checkpoint alone. `TrainConfig` is how `armer.train` trains it. Each field's
`metadata` (see `setting`) is read by the command-line flags of `python -m armer.train`
(`armer.cli.add_settings`), by the generated settings list `docs/settings.md`
(`python scripts/settings_doc.py`) and by the MERBench installer.

The model defaults are the seed specification's (`../shared/docs/seed-attention-robust-v2.zh.md`);
help texts that start with "Not in the seed" mark the settings added since.
"""
from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, Callable, Iterable

from armer.constants import FEAT_TYPES

MISSING_MODES = ("mask", "zeros")
OPTIMIZERS = ("adam", "adamw")
CALIBRATION_TARGETS = ("head", "out_of_fold", "held_out")
NORMALIZE_SCOPES = ("dimension", "modality", "center")
NOISE_SCALES = ("unit", "feature")

__all__ = ["ABSENT_MEANS", "RECIPES", "ModelConfig", "TrainConfig", "choices_of", "flag_fields", "inert_settings",
           "setting"]

Choices = Iterable[str] | Callable[[], Iterable[str]]


def setting(default: Any, help: str, *, choices: Choices | None = None, from_data: bool = False) -> Any:
    """A settings field: `default` and its `help`, kept in the field's metadata.

    choices: the allowed values, or a function returning them (for registries that import this
    module); from_data: the value comes from the data (feature dims, classes), so it is no flag.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "from_data": from_data})


def flag_fields(cls: type) -> list[Field]:
    """The fields of a settings dataclass that are command-line flags (all but the `from_data` ones)."""
    return [f for f in fields(cls) if not f.metadata["from_data"]]


def choices_of(f: Field) -> tuple[str, ...] | None:
    """A settings field's allowed values, or None when any value of its type goes."""
    choices = f.metadata["choices"]
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _model_names() -> list[str]:
    from armer.model import list_models  # the model registry imports this module

    return list_models()


@dataclass
class ModelConfig:
    model: str = setting("attention_robust_v2", "registry name of the model: attention_robust_v2 (AttentionRobustV2) "
                                                "or attention_robust (the V1 baseline)", choices=_model_names)
    audio_dim: int = setting(1024, "audio feature dim", from_data=True)
    text_dim: int = setting(5120, "text feature dim", from_data=True)
    video_dim: int = setting(768, "video feature dim", from_data=True)
    feat_type: str = setting("utt", "utt: utterance vectors (B, D) from -UTT folders, MLP encoders; frm_align / "
                                    "frm_unalign: frame-level features (B, T, D) from -FRA folders, LSTM encoders",
                             choices=FEAT_TYPES)
    output_dim1: int = setting(6, "number of emotion classes (0: a valence-only dataset, e.g. MERBench's CMU-MOSI, "
                                  "CMU-MOSEI, CH-SIMS)", from_data=True)
    output_dim2: int = setting(1, "valence outputs", from_data=True)
    hidden_dim: int = setting(128, "latent / hidden size of every encoder, attention and head")
    dropout: float = setting(0.35, "dropout rate")
    use_vae: bool = setting(True, "variational encoders (mu, sigma); off: deterministic encoders and equal "
                                  "fusion weights")
    kl_weight: float = setting(0.01, "weight of KL(q(z|x) || N(0, I))")
    recon_weight: float = setting(0.1, "weight of the reconstruction of the complete features from the fused latent")
    # The decoders' output layers are split into blocks of at most recon_dims dims: an unbiased
    # estimate of the same mean squared error at a fraction of the decoder's cost, which at
    # MERBench's 1024 + 5120 + 768 dims is ~40% of a step.
    recon_dims: int = setting(512, "Not in the seed: each training step scores the reconstruction on one random "
                                   "block of at most this many dims per modality (0: all dims every step)")
    cross_kl_weight: float = setting(0.01, "weight of the symmetric KL between the present modalities' posteriors")
    use_proxy_attention: bool = setting(True, "proxy-query attention over the modality tokens; off: the proxy alone")
    # With T = 1 and u between 0.5 and 1, softmax(1/u) cannot give one of three modalities less than
    # about 0.15: a modality that carries nothing kept ~20% of the weight on RAVDESS (its text).
    fusion_temperature: float = setting(0.25, "T in the fusion weights softmax((1/u) / T); the seed's is 1.0, ours "
                                              "0.25, chosen on validation folds (docs/model.md)")
    learn_temperature: bool = setting(False, "Not in the seed: T is a parameter of each fold model, trained by the "
                                             "task loss from --fusion_temperature (with --calibrated_fusion the task "
                                             "then sets how sharp the weights are, and sigma which modality they favour)")
    num_attention_heads: int = setting(4, "heads of the proxy cross-modal attention (must divide hidden_dim)")
    modality_dropout: float = setting(0.15, "probability that a training sample loses one or two modalities")
    modality_dropout_warmup: int = setting(20, "epochs over which modality dropout (and modality_noise) ramps up "
                                               "from 0")
    # The noise teaches sigma to rise on degraded inputs.
    modality_noise: float = setting(0.1, "Not in the seed: probability that a present modality of a training sample "
                                         "is mixed with Gaussian noise (a random share, same scale)")
    # N(0, I) matches standardised features; on centred features with their own scales (text spreads
    # 0.05 per dimension, speech 0.24) it would wipe out the small-scale modalities and barely touch the others.
    noise_scale: str = setting("unit", "Not in the seed: the spread of --modality_noise's Gaussian: unit (N(0, I) "
                                       "on the model's input) or feature (each dimension's training spread on that "
                                       "input, which differs from 1 under --normalize_scope modality or center "
                                       "and with --no-normalize, where it is also mixed in around the training "
                                       "mean; inside MERBench, which keeps no statistics, the same as unit)",
                               choices=NOISE_SCALES)
    # A small head per modality predicts the emotion from its mu, and u = mean sigma regresses how
    # wrong that head is (1 - p(target), detached), so u grows where the modality cannot be trusted.
    # The target is the label in armer.train, the fused prediction inside MERBench (no labels there).
    # Without emotion classes (output_dim1 = 0) the heads predict the valence instead, and u regresses
    # 1 - exp(-(error of that valence)^2), the same 0 (right) .. 1 (far off) scale.
    calibration_weight: float = setting(0.1, "Not in the seed: weight of the uncertainty calibration term (u learns "
                                             "to predict 1 - p(target) of its modality's own head)")
    # 3 against 1 on validation folds, 5 seeds (results/calibration_uncertainty_5seeds.md): accuracy level,
    # RAVDESS's useless text 3.6% of the weight against 6.6%, blurred faces -73% against -52%.
    uncertainty_weight: float = setting(3.0, "Not in the seed: inside the calibration term, the weight of u's "
                                             "regression on its target relative to the unimodal heads' "
                                             "cross-entropy (3, chosen on validation folds; 1 before)")
    # The task loss, through the fusion weights, teaches sigma what helps on the training clips, which
    # the network has memorised: there every modality is right, clean or degraded.
    calibrated_fusion: bool = setting(False, "Not in the seed: the fusion weights do not pass the task loss's "
                                             "gradient to sigma, which then learns from the calibration term "
                                             "and the VAE terms only")
    # The unimodal heads are trained by the calibration term on every sample that has the modality.
    # With modalities missing the prediction then rests on heads that saw every sample of their
    # modality, not only the few that training left unimodal.
    expert_fusion: bool = setting(True, "Not in the seed: the emotion logits also add each present modality's own "
                                        "prediction (its unimodal head), weighted by the fusion weights")
    # The seed (inside MERBench) feeds a missing modality as the zero vector MERBench fills in: it
    # goes through its encoder and gets a fusion weight like any other.
    missing_modality: str = setting("mask", "mask: a missing modality (or one modality dropout removes) gets fusion "
                                            "weight exactly 0; zeros: it is a zero vector fed through its encoder and "
                                            "fused like the others (the seed's recipe)", choices=MISSING_MODES)

    def __post_init__(self) -> None:
        problems = [f"{f.name}={getattr(self, f.name)} must be a finite number" for f in fields(self)
                    if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        for name in ("audio_dim", "text_dim", "video_dim", "hidden_dim", "num_attention_heads"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        if self.output_dim1 < 0 or self.output_dim2 < 0:
            problems.append(f"output_dim1={self.output_dim1} and output_dim2={self.output_dim2} must be >= 0")
        elif self.output_dim1 == 0 and self.output_dim2 == 0:
            problems.append("output_dim1=0 (no emotion classes) needs the valence head: output_dim2 must be positive")
        if self.missing_modality not in MISSING_MODES:
            problems.append(f"missing_modality={self.missing_modality!r} must be one of {MISSING_MODES}")
        if self.noise_scale not in NOISE_SCALES:
            problems.append(f"noise_scale={self.noise_scale!r} must be one of {NOISE_SCALES}")
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
        for name in ("kl_weight", "recon_weight", "cross_kl_weight", "calibration_weight", "uncertainty_weight"):
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


@dataclass
class TrainConfig:
    recipe: str = setting("armer", "armer: this project's training and model defaults; seed: the seed author's "
                                   "recipe (docs/training.md): every 'Not in the seed' addition off, a missing "
                                   "modality fed as zeros, AdamW lr 5e-4 / l2 5e-5, the learning rate halved after "
                                   "10 epochs without a better validation score, early stopping after 30, raw "
                                   "features, the best epoch from epoch 1. Flags given explicitly still win",
                          choices=lambda: tuple(RECIPES))
    epochs: int = setting(100, "training epochs")
    optimizer: str = setting("adam", "adam (weight decay added to the gradient, MERBench's) or adamw (decoupled "
                                     "weight decay, the seed's)", choices=OPTIMIZERS)
    lr: float = setting(1e-3, "learning rate")
    l2: float = setting(1e-5, "weight decay (MERBench's --l2)")
    # torch's ReduceLROnPlateau(mode='max', factor=0.5, min_lr=1e-6) per fold, on its validation emoval.
    lr_patience: int = setting(0, "halve a fold's learning rate (down to 1e-6) after this many epochs without a "
                                  "better validation emoval (0: a constant learning rate)")
    early_stop: int = setting(0, "stop a fold after this many epochs without a validation emoval 0.001 above its "
                                 "best (0: train every epoch)")
    batch_size: int = setting(32, "training samples per step, per fold")
    seed: int = setting(0, "random seed: the folds, the initialisation, the batches, modality dropout and the "
                           "missing-rate sweeps")
    num_folds: int = setting(5, "cross-validation folds, one ensemble member each")
    fold_groups: str = setting("none", "keep the samples of one group in one fold: none (random folds); clip or "
                                       "speaker of <corpus>-<clip>-<copy> sample names; regex:PATTERN, the group is "
                                       "the first capture group of PATTERN in the sample name")
    # Before the warm-up ends the training recipe is not complete, and an early epoch that never saw
    # modality dropout can win on full-modality validation data.
    select_from_epoch: int = setting(0, "first epoch that can be a fold's best (0: the first after "
                                        "--modality_dropout_warmup; 1: every epoch, as MERBench)")
    test_every_epoch: bool = setting(False, "also score the test corpora at every epoch, for the log (otherwise "
                                            "once, with each fold's best epoch)")
    workers: int = setting(0, "processes the folds are dealt to, each training its folds as one batched network "
                              "(0: one per core, at most num_folds)")
    threads: int = setting(0, "torch threads per worker (0: the cores divided among the workers)")
    degraded_views: float = setting(0.0, "probability that a present modality of a training sample is swapped for "
                                         "its degraded view at each step (needs <feature folder>-DEGRADED, as "
                                         "armer.benchmark builds; 0: never)")
    # The heads' own error on a training sample is that of a network that memorised it
    # (results/calibration_targets.md); armer/train/probes.py has the cross-fitting.
    calibration_target: str = setting("head", "what V2's calibration term teaches u to predict: head (the error of "
                                              "the modality's own head on the training sample) or out_of_fold (the "
                                              "error of linear probes that never saw the sample, cross-fitted on the "
                                              "fold's other training folds) or held_out (the error of the "
                                              "model's own heads on one training fold held out of the task "
                                              "loss and the heads' training, the only samples u learns from)",
                                      choices=CALIBRATION_TARGETS)
    normalize: bool = setting(True, "standardise the features with each fold's training statistics")
    normalize_scope: str = setting("dimension", "what --normalize scales to unit variance: every feature "
                                               "dimension, or each modality as a whole (one scale per "
                                               "modality: its dimensions keep their relative spread); center: "
                                               "no scaling, the features only centred (each modality keeps its "
                                               "raw scale)",
                                   choices=NORMALIZE_SCOPES)
    grad_clip: float = setting(-1.0, "max gradient norm of each fold's model (<= 0: no clipping, MERBench's -1)")
    device: str = setting("cpu", "where the folds train: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda "
                                 "or cuda:N; on CUDA the folds train in one process, as one batched network")

    def __post_init__(self) -> None:
        problems = []
        for name, least in (("epochs", 1), ("batch_size", 1), ("num_folds", 2), ("seed", 0), ("select_from_epoch", 0),
                            ("workers", 0), ("threads", 0), ("lr_patience", 0), ("early_stop", 0)):
            if getattr(self, name) < least:
                problems.append(f"{name}={getattr(self, name)} must be >= {least}")
        if not 0.0 < self.lr < math.inf:  # also refuses NaN
            problems.append(f"lr={self.lr} must be a positive finite number")
        if not 0.0 <= self.l2 < math.inf:
            problems.append(f"l2={self.l2} must be a finite number >= 0")
        if self.recipe not in RECIPES:
            problems.append(f"recipe={self.recipe!r} must be one of {tuple(RECIPES)}")
        if self.calibration_target not in CALIBRATION_TARGETS:
            problems.append(f"calibration_target={self.calibration_target!r} must be one of {CALIBRATION_TARGETS}")
        elif self.calibration_target != "head" and self.num_folds < 3:
            problems.append(f"calibration_target={self.calibration_target!r} needs num_folds >= 3 (each member's "
                            f"training folds are split further), not {self.num_folds}")
        if self.normalize_scope not in NORMALIZE_SCOPES:
            problems.append(f"normalize_scope={self.normalize_scope!r} must be one of {NORMALIZE_SCOPES}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r} must be one of {OPTIMIZERS}")
        if not 0.0 <= self.degraded_views <= 1.0:
            problems.append(f"degraded_views={self.degraded_views} must be in [0, 1]")
        if not math.isfinite(self.grad_clip):
            problems.append(f"grad_clip={self.grad_clip} must be finite (<= 0: no clipping)")
        from armer.device import DeviceError, parse_device
        from armer.train.folds import check_fold_groups  # the folds belong to training, not to the settings

        try:
            parse_device(self.device)
        except DeviceError as exc:
            problems.append(str(exc))

        fold_problem = check_fold_groups(self.fold_groups)
        if fold_problem:
            problems.append(f"fold_groups={self.fold_groups!r} {fold_problem}")
        if problems:
            raise ValueError("Invalid TrainConfig: " + "; ".join(problems))


# A recipe is a set of defaults for the settings above (`python -m armer.train --recipe NAME`):
# flags given explicitly override them. `seed` is how the seed's author trains AttentionRobustV2
# (../shared/docs/seed-training-recipe.md), with every addition of this project switched off.
RECIPES: dict[str, dict[str, Any]] = {
    "armer": {},
    "seed": {
        "optimizer": "adamw", "lr": 5e-4, "l2": 5e-5, "lr_patience": 10, "early_stop": 30, "normalize": False,
        "select_from_epoch": 1, "epochs": 100, "batch_size": 32,
        "modality_noise": 0.0, "calibration_weight": 0.0, "expert_fusion": False, "recon_dims": 0,
        "missing_modality": "zeros", "fusion_temperature": 1.0,
    },
}


# Settings added after some checkpoints and runs were made: a checkpoint config or a run's recorded
# arguments without the key ran with this value (scripts/run_experiments.py reuses such a run only
# where that is today's value or changes nothing).
ABSENT_MEANS: dict[str, Any] = {"expert_fusion": False, "uncertainty_weight": 1.0, "calibration_target": "head",
                                "normalize_scope": "dimension", "calibrated_fusion": False,
                                "learn_temperature": False, "noise_scale": "unit"}
# What only V2 reads: V1 (attention_robust) trains and predicts the same whatever their values.
V2_ONLY = ("use_vae", "kl_weight", "recon_weight", "recon_dims", "cross_kl_weight", "use_proxy_attention",
           "fusion_temperature", "num_attention_heads", "calibration_weight", "uncertainty_weight", "expert_fusion",
           "calibrated_fusion", "learn_temperature", "calibration_target")
CALIBRATION_ONLY = ("uncertainty_weight", "calibration_target")


def inert_settings(values: dict[str, Any]) -> set[str]:
    """The settings among `values` (model and training settings by name) that change nothing given
    the others: V2's own ones for V1, the calibration term's when its weight is 0, the scaling's scope
    without scaling, the noise's scale without noise. Two runs that differ only there train alike
    (scripts/run_experiments.py reuses one for the other)."""
    inert: set[str] = set()
    if values.get("model") == "attention_robust":
        inert.update(V2_ONLY)
    if values.get("calibration_weight") == 0:
        inert.update(CALIBRATION_ONLY)
    if values.get("normalize") is False:
        inert.add("normalize_scope")
    if values.get("modality_noise") == 0:
        inert.add("noise_scale")
    return inert & set(values)
