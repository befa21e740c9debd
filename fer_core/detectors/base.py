"""Detector interface, its config, and the post-processing every family shares.

Detectors take RGB uint8 images of any size and return Faces in ORIGINAL pixels. Each family only
implements ``_detect_one`` on a (possibly downscaled) image; scaling back, thresholding, NMS, the
minimum-size filter and clipping happen once here so all families behave alike.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Sequence

import numpy as np

from fer_core.errors import ConfigError
from fer_core.types import Face

__all__ = ["Detector", "DetectorConfig", "Detections", "nms", "resize_for_detection"]


@dataclass(frozen=True)
class DetectorConfig:
    """Options every detector understands.

    score_threshold: keep faces scoring at least this (0..1).
    min_face_size: drop faces whose shorter box side is below this, in ORIGINAL pixels.
    max_side: detect on a copy downscaled so its long side <= max_side (speed, bounded memory);
        boxes are mapped back. 0 disables downscaling.
    nms_iou: suppress a box overlapping a higher-scoring one by more than this IoU.
    small_face_px, small_face_threshold: a face whose shorter box side is below small_face_px ORIGINAL
        pixels must score at least small_face_threshold instead of score_threshold (a size-dependent
        threshold: RetinaFace scores small faces lower). 0 turns it off.
    """

    score_threshold: float = 0.9
    min_face_size: int = 20
    max_side: int = 1024
    nms_iou: float = 0.4
    small_face_px: int = 0
    small_face_threshold: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "score_threshold": (float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
            "min_face_size": (int, lambda v: v >= 0, "an integer >= 0 (pixels)"),
            "max_side": (int, lambda v: v == 0 or v >= 32, "0 (no downscaling) or an integer >= 32"),
            "nms_iou": (float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
            "small_face_px": (int, lambda v: v >= 0, "an integer >= 0 (pixels; 0 turns the size-dependent "
                                                      "threshold off)"),
            "small_face_threshold": (float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
        }
        for key, (kind, ok, what) in checks.items():
            value = getattr(self, key)
            try:
                if isinstance(value, bool) or kind(value) != value:
                    raise ValueError
                valid = ok(kind(value))
            except (TypeError, ValueError):
                valid = False
            if not valid:
                raise ConfigError(f"detector.{key} must be {what}, got {value!r}")
            object.__setattr__(self, key, kind(value))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class Detections:
    """Raw detections of one image in the coordinates of the image given to ``_detect_one``.

    boxes: (N, 4) float x1, y1, x2, y2; scores: (N,); landmarks: (N, 5, 2) (NaN when unknown).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression on x1,y1,x2,y2 boxes; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def resize_for_detection(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the long side is <= max_side (area interpolation); returns (image, scale)."""
    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image, 1.0
    import cv2

    scale = max_side / float(max(h, w))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    # the exact per-axis factors differ slightly after rounding; use the long side's, which max_side fixed
    return small, (nw / w if w >= h else nh / h)


class Detector(abc.ABC):
    """Face detector: ``detect(images) -> one list of Face per image``, boxes in original pixels.

    Subclasses set ``name``/``version``/``default_config`` and implement ``_detect_one``.
    """

    name: ClassVar[str] = ""
    version: str = ""
    default_config: ClassVar[DetectorConfig] = DetectorConfig()
    # constructor options with a fixed set of values, checked when a config is read (before loading)
    option_choices: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config if config is not None else self.default_config

    @abc.abstractmethod
    def _detect_one(self, image: np.ndarray) -> Detections:
        """Detect on one RGB uint8 image (already downscaled); coordinates in that image."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """One list of Faces per image, best score first. Images: (H, W, 3) uint8 RGB, any sizes."""
        return [self._detect_image(_check_image(img, i)) for i, img in enumerate(images)]

    def _detect_image(self, image: np.ndarray) -> list[Face]:
        cfg = self.config
        h, w = image.shape[:2]
        small, scale = resize_for_detection(image, cfg.max_side)
        det = self._detect_one(small)
        if len(det.scores) == 0:
            return []
        boxes = np.asarray(det.boxes, np.float64) / scale
        scores = np.asarray(det.scores, np.float64)
        lms = np.asarray(det.landmarks, np.float64) / scale
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        short = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        threshold = np.where(short < cfg.small_face_px, cfg.small_face_threshold, cfg.score_threshold)
        with np.errstate(invalid="ignore"):  # NaN boxes/scores are already out (ok)
            ok &= (scores >= threshold) & (short >= max(cfg.min_face_size, 1e-6))
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return []
        idx = idx[nms(boxes[idx], scores[idx], cfg.nms_iou)]
        faces = []
        for i in idx:
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            faces.append(Face(box=(x1, y1, x2 - x1, y2 - y1), score=float(scores[i]),
                              landmarks=lms[i].astype(np.float32)))
        return faces

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r}, config={self.config})"


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    """Fail early with a clear message instead of deep inside TF/OpenCV."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"detect(): image {index} must be an (H, W, 3) uint8 RGB array, got {desc}; "
            f"decode it with fer_core.decode.decode_image"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"detect(): image {index} has no pixels {image.shape}")
    return np.ascontiguousarray(image)
