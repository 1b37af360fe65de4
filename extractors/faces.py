"""Main-face crops with OpenCV's bundled Haar cascade (ships with opencv-python, works offline)."""

from __future__ import annotations

import threading

import cv2
import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 480  # frames are searched at most this large; boxes are mapped back to full size

_detector: cv2.CascadeClassifier | None = None
_load_lock = threading.Lock()
_detect_lock = threading.Lock()  # CascadeClassifier is not safe to share between threads


def _cascade() -> cv2.CascadeClassifier:
    global _detector
    with _load_lock:
        if _detector is None:
            path = cv2.data.haarcascades + CASCADE
            detector = cv2.CascadeClassifier(path)
            if detector.empty():
                raise RuntimeError(f"OpenCV face cascade not found at {path}; reinstall opencv-python-headless")
            _detector = detector
    return _detector


def detect_main_face(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the largest frontal face in an RGB frame, or None."""
    h, w = frame.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(0.08 * min(gray.shape)))
    detector = _cascade()
    with _detect_lock:
        boxes = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(boxes) == 0:
        return None
    x, y, bw, bh = max(boxes, key=lambda b: b[2] * b[3])
    return tuple(int(round(v / scale)) for v in (x, y, bw, bh))


def crop_square(frame: np.ndarray, box: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """A square crop around ``box`` grown by ``margin`` of its size on each side, clipped to the frame."""
    h, w = frame.shape[:2]
    x, y, bw, bh = box
    side = int(round(max(bw, bh) * (1 + 2 * margin)))
    cx, cy = x + bw / 2, y + bh / 2
    x0 = int(round(min(max(cx - side / 2, 0), max(w - side, 0))))
    y0 = int(round(min(max(cy - side / 2, 0), max(h - side, 0))))
    return np.ascontiguousarray(frame[y0:y0 + side, x0:x0 + side])


def crop_faces(frames: list[np.ndarray], margin: float = 0.15) -> tuple[list[np.ndarray], float]:
    """Crop the main face of every frame.

    A frame without a detected face is kept whole. Returns the crops (one per frame) and
    the share of frames in which a face was found (0.0 for no frames).
    """
    crops, found = [], 0
    for frame in frames:
        box = detect_main_face(frame)
        if box is None:
            crops.append(frame)
        else:
            crops.append(crop_square(frame, box, margin))
            found += 1
    return crops, (found / len(frames) if frames else 0.0)
