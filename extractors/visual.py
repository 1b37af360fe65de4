"""Visual backends on face crops, averaged over frames: CLIP through open_clip or transformers
(MERBench profile) and the FER2013 face-expression CNN this project trains (offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from armer.device import DeviceSpec

from .base import Extractor, MissingWeightsError, missing_weights, weights_root
from .hf import HFExtractor
from .registry import register_extractor, register_hub_backend

if TYPE_CHECKING:
    import torch

    from .fer_cnn import FerCNNConfig

FER_CNN_DIR = Path(__file__).resolve().parent / "weights" / "fer_cnn"  # package data
OPEN_CLIP_DIMS = {"ViT-L-14": 768, "ViT-B-16": 512, "ViT-B-32": 512}  # embed_dim without importing open_clip


class FramePooled:
    """A video backend whose feature is the mean of its frames' features (``_frame_features``:
    (N, D) tensor, in passes of at most ``batch_size`` frames). ``extract_batch`` runs the frames of
    all its clips through those passes together and pools each clip's rows."""

    batch_size: int

    def _frame_features(self, frames: list[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    def _extract(self, frames: list[np.ndarray]) -> np.ndarray:
        return self._frame_features(frames).mean(dim=0).cpu().numpy()

    def _extract_batch(self, clips: list[list[np.ndarray]]) -> list[np.ndarray]:
        feats = self._frame_features([f for clip in clips for f in clip])
        ends = np.cumsum([len(clip) for clip in clips])
        return [feats[end - len(clip):end].mean(dim=0).cpu().numpy() for clip, end in zip(clips, ends)]


class OpenCLIPExtractor(FramePooled, Extractor):
    """Projected CLIP image features (``encode_image``) through open_clip, mean over frames; under
    float16 autocast on CUDA (``half=False``: float32)."""

    modality = "video"

    def __init__(self, model_name: str = "ViT-L-14", pretrained: str | None = "openai", *,
                 name: str = "clip-vit-large-patch14", dim: int | None = None, batch_size: int = 16,
                 device: DeviceSpec = "cpu", half: bool = True) -> None:
        super().__init__(device)
        self.half = half
        self.name = name
        self.model_name = model_name
        self.pretrained = pretrained  # an open_clip tag ("openai") or a checkpoint file
        self._dim = dim
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        if self._dim is None and self.model_name in OPEN_CLIP_DIMS:
            self._dim = OPEN_CLIP_DIMS[self.model_name]
        if self._dim is None:
            import open_clip

            cfg = open_clip.get_model_config(self.model_name)
            if cfg is None:
                raise ValueError(f"backend {self.name!r}: unknown open_clip model {self.model_name!r}; "
                                 f"known: {', '.join(open_clip.list_models())}")
            self._dim = int(cfg["embed_dim"])
        return self._dim

    def _weights(self) -> str | None:
        """The checkpoint file in ``$ARMER_WEIGHTS/<name>/`` when there is one, else the tag."""
        root = weights_root()
        if root is not None and self.pretrained and not os.path.isfile(self.pretrained):
            for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                if (root / self.name / fname).is_file():
                    return str(root / self.name / fname)
        return self.pretrained

    def _load(self) -> None:
        import open_clip

        weights = self._weights()
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=weights, device=self.device_name)
        except (OSError, RuntimeError, ValueError) as err:
            raise missing_weights(self.name, f"open_clip {self.model_name}/{weights}", err, (
                f"Download the open_clip checkpoint on a machine with hub access (for ViT-L-14/openai: "
                f"hf-hub:timm/vit_large_patch14_clip_224.openai, file open_clip_model.safetensors), then pass "
                f"pretrained=<file>, or put it in $ARMER_WEIGHTS/{self.name}/; a transformers CLIP folder works "
                f"too: create_extractor(<folder>).")) from err
        self.model.eval()

    def _frame_features(self, frames: list[np.ndarray]) -> torch.Tensor:
        import torch
        from PIL import Image

        feats = []
        with torch.inference_mode(), self.autocast():
            for i in range(0, len(frames), self.batch_size):
                batch = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames[i:i + self.batch_size]])
                feats.append(self.model.encode_image(batch.to(self.device)).float())  # (b, D)
        return torch.cat(feats)


register_extractor("clip-vit-large-patch14", modality="video", dim=768,
                   description="MERBench video: CLIP ViT-L/14 (OpenAI weights) through open_clip")(OpenCLIPExtractor)


@register_hub_backend
class HFCLIPExtractor(FramePooled, HFExtractor):
    """Projected CLIP image features (``get_image_features``) of a transformers CLIP, mean over
    frames; under float16 autocast on CUDA (``half=False``: float32)."""

    modality = "video"
    processor_class = "AutoImageProcessor"
    model_class = "CLIPModel"
    half = True

    def __init__(self, model: str, *, batch_size: int = 16, **options: Any) -> None:
        super().__init__(model, **options)
        self.batch_size = batch_size

    def _config_dim(self, cfg: dict[str, Any]) -> int:
        return int(cfg["projection_dim"])

    def _frame_features(self, frames: list[np.ndarray]) -> torch.Tensor:
        import torch

        feats = []
        with torch.inference_mode(), self.autocast():
            for i in range(0, len(frames), self.batch_size):
                pixels = self.processor(images=frames[i:i + self.batch_size], return_tensors="pt")["pixel_values"]
                out = self.model.get_image_features(pixel_values=pixels.to(self.device))
                feats.append((out if isinstance(out, torch.Tensor) else out.pooler_output).float())  # (b, D)
        return torch.cat(feats)


class FerCNNExtractor(FramePooled, Extractor):
    """The FER2013 face-expression CNN (extractors/weights/fer_cnn): pooled last-stage activations of
    each 48x48 grayscale face and its mirror image, mean over frames (float32 on any device);
    ``batch_size`` faces a pass, of one clip or (``extract_batch``) many."""

    name = "fer2013-cnn"
    modality = "video"

    def __init__(self, path: str | os.PathLike | None = None, device: DeviceSpec = "cpu",
                 batch_size: int = 256) -> None:
        super().__init__(device)
        self.path = Path(path) if path else FER_CNN_DIR
        self._config = None
        self.batch_size = batch_size  # faces per forward pass

    def _missing(self, err: BaseException) -> MissingWeightsError:
        return missing_weights(self.name, str(self.path), err, (
            "The weights ship in this repository (extractors/weights/fer_cnn/); rebuild them with "
            "`python scripts/train_fer_cnn.py --data <root with fer2013/fer2013.npz>` or pass path=<folder>."))

    @property
    def config(self) -> "FerCNNConfig":
        """The checkpoint's config.json (read without loading the weights)."""
        if self._config is None:
            from .fer_cnn import FerCNNConfig

            try:
                self._config = FerCNNConfig.from_json(self.path / "config.json")
            except OSError as err:
                raise self._missing(err) from err
        return self._config

    @property
    def dim(self) -> int:
        try:  # plain JSON: no torch import just to learn the dim
            return int(json.loads((self.path / "config.json").read_text())["widths"][-1])
        except OSError as err:
            raise self._missing(err) from err

    def _load(self) -> None:
        from safetensors.torch import load_file

        from .fer_cnn import FerCNN

        self.model = FerCNN(self.config).to(self.device)
        try:
            self.model.load_state_dict(load_file(str(self.path / "model.safetensors"), device=self.device_name))
        except OSError as err:
            raise self._missing(err) from err
        self.model.eval()

    def preprocess(self, frames: list[np.ndarray]) -> "torch.Tensor":
        """RGB crops -> (N, 1, S, S) normalised grayscale tensor, as in training."""
        import cv2
        import torch

        cfg = self.config
        gray = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
                         for f in frames])  # (N, 48, 48)
        o = (48 - cfg.image_size) // 2
        gray = gray[:, o:o + cfg.image_size, o:o + cfg.image_size]
        x = torch.from_numpy(gray).float().div(255).unsqueeze(1)
        return (x - cfg.mean) / cfg.std

    def _frame_features(self, frames: list[np.ndarray]) -> torch.Tensor:
        import torch

        feats = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.batch_size):
                x = self.preprocess(frames[i:i + self.batch_size]).to(self.device)
                feats.append((self.model.features(x) + self.model.features(x.flip(-1))) / 2)  # (b, D)
        return torch.cat(feats)

    def predict_proba(self, frames: list[np.ndarray]) -> dict[str, float]:
        """FER2013 class probabilities, averaged over frames and mirror images."""
        import torch

        frames = self._validate(frames)
        self.load()
        x = self.preprocess(frames).to(self.device)
        with torch.inference_mode():
            p = (self.model(x).softmax(-1) + self.model(x.flip(-1)).softmax(-1)).mean(dim=0) / 2
        return dict(zip(self.config.classes, p.tolist(), strict=True))


register_extractor("fer2013-cnn", modality="video", dim=None, offline=True,
                   description="face-expression CNN trained on FER2013 by scripts/train_fer_cnn.py "
                               "(weights in extractors/weights/fer_cnn)")(FerCNNExtractor)
