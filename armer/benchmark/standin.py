"""A stand-in face backend, ``face-hog`` (HOG descriptor of the 48x48 grayscale face, no weights).

Only for building the benchmark while the project's FER2013 CNN (``fer2013-cnn``, weights in
extractors/weights/fer_cnn) is not available: ``python -m armer.benchmark build --extractor_module
armer.benchmark.standin --video_extractor face-hog ...``. The demo does not register it, so a
checkpoint trained on it is not a demo checkpoint.
"""
from __future__ import annotations

import numpy as np

from armer.extractors.base import Extractor
from armer.extractors.registry import register_extractor


class FaceHOGExtractor(Extractor):
    name = "face-hog"
    modality = "video"

    def __init__(self) -> None:
        super().__init__()
        self._hog = None

    @property
    def dim(self) -> int:
        return 900  # 5 x 5 blocks of 2 x 2 cells of 8 px, 9 orientation bins

    def _load(self) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor((48, 48), (16, 16), (8, 8), (8, 8), 9)

    def _extract(self, frames: list[np.ndarray]) -> np.ndarray:
        import cv2

        feats = [self._hog.compute(cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (48, 48),
                                              interpolation=cv2.INTER_AREA)).reshape(-1) for f in frames]
        return np.mean(feats, axis=0)


# replace=True: running this module a second time (a reload, an import under another name) is harmless
register_extractor(FaceHOGExtractor.name, modality="video", dim=900, offline=True, replace=True,
                   description="stand-in: HOG of the 48x48 grayscale face (no weights)")(FaceHOGExtractor)
