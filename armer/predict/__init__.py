"""A clip in, the emotion out: ``Predictor`` (a checkpoint and its extractors, loaded once) and
``python -m armer.predict`` (``cli``)."""
from armer.predict.predictor import DEFAULT_CHECKPOINT, Degrade, InferenceError, Prediction, Predictor

__all__ = ["DEFAULT_CHECKPOINT", "Degrade", "InferenceError", "Prediction", "Predictor"]
