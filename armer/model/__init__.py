"""AttentionRobustV2 and the V1 baseline, built from a ``ModelConfig`` by ``create_model``.

    modeling   the two models, their output and the fold ensemble (the method, step by step)
    batched    the layers that hold one copy of their weights per ensemble member (the E dim)
    losses     the interloss terms and the task loss
    missing    presence masks, modality dropout and the missing-modality conditions
"""
from armer.model.modeling import (
    AttentionRobust,
    AttentionRobustV2,
    Ensemble,
    ModelOutput,
    RobustBase,
    create_model,
    list_models,
)

__all__ = ["AttentionRobust", "AttentionRobustV2", "Ensemble", "ModelOutput", "RobustBase", "create_model",
           "list_models"]
