"""The shared base of the Hugging Face backends: a transformers model and its preprocessor,
read from a hub id, a local folder or ``$ARMER_WEIGHTS/<name>``. Each modality's subclass
(audio.py, text.py, visual.py) adds only its recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from armer.device import DeviceSpec

from .base import Extractor, folder_stem, missing_weights, resolve_source


def model_config(source: str, name: str, local_files_only: bool = False) -> dict[str, Any]:
    """A transformers model's config as a dict, read without loading the weights."""
    cfg_file = Path(source).expanduser() / "config.json"
    if cfg_file.is_file():
        return json.loads(cfg_file.read_text())
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, local_files_only=local_files_only).to_dict()
    except (OSError, ValueError) as err:
        raise missing_weights(name, source, err) from err


class HFExtractor(Extractor):
    """A transformers model (``model_class``) and its preprocessor (``processor_class``), loaded
    in float32 for inference; the output dim is the model's hidden size unless given.

    ``model`` is a hub id or folder; ``name`` the MERBench folder stem (default: its last path
    component); ``path`` a local copy that overrides ``model``; ``dim`` the known output dim;
    ``device`` where the model runs; ``half`` float16 autocast on CUDA (default: the subclass's
    ``half``). Subclasses take their recipe's options and pass these on as ``**options``.
    """

    processor_class: str  # transformers class that loads ``self.processor`` (feature extractor, tokenizer, ...)
    model_class = "AutoModel"  # transformers class that loads ``self.model``

    def __init__(self, model: str, *, name: str | None = None, dim: int | None = None, path: str | None = None,
                 local_files_only: bool = False, device: DeviceSpec = "cpu", half: bool | None = None) -> None:
        super().__init__(device)
        if half is not None:
            self.half = half
        self.name = name or folder_stem(model)
        self.source = resolve_source(self.name, model, path)
        # a fixed dim saves a hub lookup; a local folder's own config is authoritative
        self._dim = None if Path(self.source).expanduser().is_dir() else dim
        self.local_files_only = local_files_only

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._config_dim(model_config(self.source, self.name, self.local_files_only))
        return self._dim

    def _config_dim(self, cfg: dict[str, Any]) -> int:
        """Output dim from the model's config: its hidden size (a multimodal model's text width)."""
        for scope in (cfg, cfg.get("text_config") or {}):
            for key in ("hidden_size", "d_model", "n_embd"):
                if key in scope:
                    return int(scope[key])
        raise ValueError(f"backend {self.name!r}: no hidden size in the config of {self.source!r}; pass dim=")

    def _hub_options(self) -> dict[str, Any]:
        """Options of the processor's and model's ``from_pretrained``."""
        return {"local_files_only": self.local_files_only}

    def _load(self) -> None:
        import torch
        import transformers

        opts = self._hub_options()
        try:
            self.processor = getattr(transformers, self.processor_class).from_pretrained(self.source, **opts)
            self.model = getattr(transformers, self.model_class).from_pretrained(
                self.source, dtype=torch.float32, **opts).eval()
        except (OSError, ValueError) as err:
            raise missing_weights(self.name, self.source, err) from err
        self.model.to(self.device)  # weights stay float32; ``autocast()`` runs a half backend in float16
