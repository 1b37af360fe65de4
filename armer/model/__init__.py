"""AttentionRobustV2 and the V1 baseline, built from a ``ModelConfig`` by ``create_model``."""
from armer.model.robust import (
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
