"""Backend registry: ``register_extractor``, ``list_extractors``, ``create_extractor``.

Backend modules register themselves here (this module imports none of them): their named
backends with ``register_extractor``, and per modality the class that reads any hub id or model
folder with ``register_hub_backend``."""

from __future__ import annotations

import fnmatch
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from armer.constants import MODALITIES
from armer.device import device_name

from .base import Extractor, folder_stem, missing_weights, weights_root

if TYPE_CHECKING:
    from .hf import HFExtractor

# transformers model_type -> modality, for hub ids and folders that are not registered names
AUDIO_MODEL_TYPES = {"hubert", "wav2vec2", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech",
                     "unispeech-sat", "sew", "sew-d"}
VISION_MODEL_TYPES = {"clip"}


@dataclass(frozen=True)
class ExtractorSpec:
    name: str  # MERBench folder stem
    modality: str  # audio | text | video
    factory: Callable[..., Extractor]  # builds the backend (weights still unloaded) from keyword options
    dim: int | None  # output dim when fixed by the name; None when it depends on options
    offline: bool  # True when the weights ship with a pip package or this repository
    description: str


_REGISTRY: dict[str, ExtractorSpec] = {}
_HUB_BACKENDS: dict[str, type[HFExtractor]] = {}  # modality -> class(hub id or folder, **options)
_FILE_BACKENDS: dict[str, Callable[..., Extractor]] = {}  # file suffix -> factory(file path, **options)
_INSTANCES: dict[tuple, Extractor] = {}
_LOCK = threading.RLock()  # re-entrant: a factory may import a module that registers backends
HubBackend = TypeVar("HubBackend", bound="type[HFExtractor]")


def register_extractor(name: str, *, modality: str, dim: int | None = None, offline: bool = False,
                       description: str = "", replace: bool = False,
                       ) -> Callable[[Callable[..., Extractor]], Callable[..., Extractor]]:
    """Decorator registering a backend factory under ``name`` (its MERBench folder stem).

    A name registers once; ``replace=True`` registers it again (a module imported twice, a test
    swapping a backend) and forgets the instances ``create_extractor`` built from the old factory.
    """
    _check_modality(modality)

    def decorator(factory: Callable[..., Extractor]) -> Callable[..., Extractor]:
        with _LOCK:
            if name in _REGISTRY and not replace:
                raise ValueError(f"extractor {name!r} is already registered")
            _REGISTRY[name] = ExtractorSpec(name, modality, factory, dim, offline, description)
            for key in [k for k in _INSTANCES if k[0] == name]:
                del _INSTANCES[key]
        return factory

    return decorator


def register_hub_backend(cls: HubBackend) -> HubBackend:
    """Class decorator: ``cls(hub id or folder, **options)`` reads the models of its ``modality``
    that are not registered names, with MERBench's recipe for that modality."""
    _check_modality(cls.modality)
    if cls.modality in _HUB_BACKENDS:
        raise ValueError(f"the {cls.modality} hub backend is already registered ({_HUB_BACKENDS[cls.modality].__name__})")
    _HUB_BACKENDS[cls.modality] = cls
    return cls


def register_file_backend(suffix: str) -> Callable[[Callable[..., Extractor]], Callable[..., Extractor]]:
    """Decorator: ``factory(file path, **options)`` reads the model files ending in ``suffix``
    (``.gguf``) that ``create_extractor`` is given."""
    def decorator(factory: Callable[..., Extractor]) -> Callable[..., Extractor]:
        _FILE_BACKENDS[suffix.lower()] = factory
        return factory

    return decorator


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")


def list_extractors(modality: str | None = None, pattern: str = "*") -> list[str]:
    """Registered backend names, optionally of one modality and matching a wildcard pattern."""
    if modality is not None:
        _check_modality(modality)
    return sorted(n for n, s in _REGISTRY.items()
                  if (modality is None or s.modality == modality) and fnmatch.fnmatch(n, pattern))


def extractor_spec(name: str) -> ExtractorSpec:
    """The registry entry of a registered name (KeyError listing the valid names otherwise)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown extractor {name!r}; registered: {', '.join(list_extractors())}")
    return _REGISTRY[name]


def create_extractor(name_or_path: str, modality: str | None = None, **kwargs: Any) -> Extractor:
    """One backend instance per name (and options) per process.

    ``name_or_path`` is a registered name (``list_extractors()``), a Hugging Face hub id
    (``org/model``), a local model folder or the name of a folder in ``$ARMER_WEIGHTS``; hub ids
    and folders get MERBench's recipe for their modality, read from the model's config
    (``model_type``) unless ``modality`` is given.
    Weights load lazily on first use. ``device`` (auto, cpu, cuda, cuda:N) is resolved here, so each
    device, however spelt, has one instance; the CPU, the default, is not passed to the factory.
    """
    name_or_path = str(name_or_path)
    if modality is not None:
        _check_modality(modality)
    if "device" in kwargs:
        kwargs["device"] = device_name(kwargs["device"])
        if kwargs["device"] == "cpu":
            del kwargs["device"]
    key = (name_or_path, modality, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    with _LOCK:
        if key not in _INSTANCES:
            ext = _build(name_or_path, modality, kwargs)
            if modality is not None and ext.modality != modality:
                raise ValueError(f"extractor {name_or_path!r} is a {ext.modality} backend, not {modality}")
            _INSTANCES[key] = ext
        return _INSTANCES[key]


def _build(name_or_path: str, modality: str | None, kwargs: dict[str, Any]) -> Extractor:
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path].factory(**kwargs)
    root = weights_root()
    if root is not None and "/" not in name_or_path and (root / name_or_path).is_dir():
        name_or_path = str(root / name_or_path)  # a folder of $ARMER_WEIGHTS named like the backend
    path = Path(name_or_path).expanduser()
    is_path = path.exists() or name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if not is_path and name_or_path.count("/") != 1:
        raise ValueError(
            f"unknown extractor {name_or_path!r}: not a registered name, an existing folder, nor a hub id "
            f"'org/model'. Registered: {', '.join(list_extractors())}")
    if is_path and path.is_file() and path.suffix.lower() in _FILE_BACKENDS:
        return _FILE_BACKENDS[path.suffix.lower()](name_or_path, **kwargs)
    if is_path and not path.is_dir():
        raise missing_weights(folder_stem(name_or_path), name_or_path, FileNotFoundError("no such model folder"))
    if modality is None:
        modality = _modality_of(name_or_path, path)
    return _HUB_BACKENDS[modality](name_or_path, **kwargs)


def _modality_of(name_or_path: str, path: Path) -> str:
    """Modality of a hub id or folder, from the ``model_type`` in its config."""
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"{name_or_path!r} is a folder without config.json; is it a transformers model folder?")
        model_type = json.loads(cfg_file.read_text()).get("model_type", "")
    else:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(name_or_path).model_type
        except (OSError, ValueError) as err:
            raise missing_weights(Path(name_or_path).name, name_or_path, err) from err
    if model_type in AUDIO_MODEL_TYPES:
        return "audio"
    if model_type in VISION_MODEL_TYPES:
        return "video"
    return "text"
