"""Do the fusion weights follow reliability? The paired benchmark's severity ladder (issue #14).

The ladder's corpora (`python -m armer.benchmark build`, `ladder_<modality>_<parameter>_<level>`)
are the clean test pairs with one modality degraded at one fixed level. For each modality and
level (the clean test corpus is the first point) two numbers: the modality's mean fusion weight
with every modality present, and the score of the model with that modality alone (its
reliability as this model sees it). The goals: across a modality's points the two have a rank
correlation of 0.8 or more, and wherever the modality alone loses `min_loss` (10 points) of its
clean score, its weight is down by `min_fall` (30%, relative) or more.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from armer.benchmark.build import parse_ladder_corpus
from armer.constants import MODALITIES
from armer.data import Corpus
from armer.evaluate.conditions import evaluate_mask, to_batch
from armer.evaluate.metrics import headline
from armer.model import Ensemble
from armer.model.missing import pattern_mask

# Ladder level order, mild to severe: speech SNR falls, blur and word drop-out grow.
SEVERITY_SIGN = {"audio": -1.0, "text": 1.0, "video": 1.0}
MIN_LOSS = 0.10
MIN_FALL = 0.30


@dataclass(frozen=True)
class LadderPoint:
    """One level of one modality (`level` None: the clean corpus)."""

    level: float | None
    weight: float  # the modality's mean fusion weight, every modality present
    alone: float  # the score (WAF, or the valence-only headline metric) with that modality alone


def ladder_point(model: Ensemble, corpus: Corpus, modality: str, level: float | None, has_valence: bool) -> LadderPoint:
    data, present = to_batch(corpus), corpus.present
    full = evaluate_mask(model, data, present, has_valence)
    keep = tuple(m == modality for m in MODALITIES)
    alone = evaluate_mask(model, data, pattern_mask(present, keep), has_valence)
    weight = full["weights"][modality]
    if weight is None:
        raise ValueError(f"{corpus.name}: the model gives {modality} no weight (a model without fusion weights?)")
    return LadderPoint(level, weight, alone[headline(alone)])


def group_ladder(corpora: dict[str, Corpus]) -> dict[str, dict[float, Corpus]]:
    """The severity ladder among `corpora` (by name): modality -> level -> corpus; {} if it has none."""
    ladder: dict[str, dict[float, Corpus]] = {}
    for name, corpus in corpora.items():
        parsed = parse_ladder_corpus(name)
        if parsed is not None:
            ladder.setdefault(parsed[0], {})[parsed[1]] = corpus
    return ladder


def mild_to_severe(modality: str, levels) -> list[float]:
    """A modality's ladder levels, mildest first."""
    return sorted(levels, key=lambda v: SEVERITY_SIGN[modality] * v)


def ladder_points(model: Ensemble, clean: Corpus, ladder: dict[str, dict[float, Corpus]], has_valence: bool
                  ) -> dict[str, list[LadderPoint]]:
    """Per modality in `ladder` (modality -> level -> corpus): the clean point, then each level from
    mild to severe."""
    return {m: [ladder_point(model, clean, m, None, has_valence)]
               + [ladder_point(model, levels[v], m, v, has_valence) for v in mild_to_severe(m, levels)]
            for m, levels in ladder.items()}


def ladder_verdict(points: list[LadderPoint], min_loss: float = MIN_LOSS, min_fall: float = MIN_FALL) -> dict:
    """The rank correlation of weight and alone-score over the points, and each level's loss of the
    alone-score and relative fall of the weight against the clean point (`falls_enough` None where
    the modality alone loses less than `min_loss`: no fall is asked for there)."""
    weights = np.array([p.weight for p in points])
    alone = np.array([p.alone for p in points])
    rho = float(spearmanr(weights, alone).statistic) if len(points) > 2 and np.ptp(weights) and np.ptp(alone) else None
    clean = points[0]
    levels = []
    for p in points[1:]:
        loss, fall = clean.alone - p.alone, 1.0 - p.weight / clean.weight
        levels.append({"level": p.level, "loss": loss, "fall": fall,
                       "falls_enough": (fall >= min_fall) if loss >= min_loss else None})
    return {"rank_correlation": rho, "levels": levels,
            "falls_met": all(x["falls_enough"] is not False for x in levels)}
