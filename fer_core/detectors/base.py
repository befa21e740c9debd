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

__all__ = ["Detector", "DetectorConfig", "Detections", "nms", "resize_for_detection", "refine_windows",
           "REFINE_CONTEXT"]

# The second pass's window reaches this many face sizes beyond a small face on each side: a group photo's
# neighbours stand within a few face widths, at a similar size (bench/bench_detection_pr.py, "group" set).
REFINE_CONTEXT = 3.0
# A second-pass face whose box comes within this many window pixels of a window edge inside the image is
# dropped: it may be cut by the window, and the face it belongs to is the first pass's (or another window's).
_EDGE_PX = 2.0


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
    refine_below_px, refine_scale: a second, finer pass only where it can pay. Where the first pass kept
        a face whose shorter side was below refine_below_px pixels AS DETECTED (after the max_side
        downscale), the detector runs again on a window around it (REFINE_CONTEXT face sizes each side,
        where neighbours of a similar size stand in group photos), enlarged to refine_scale x the first
        pass's scale (at most ``max_side`` on the window's long side). Both passes' faces then go through
        one threshold and one NMS, so a face found twice is kept once. 0 turns it off.
    """

    score_threshold: float = 0.9
    min_face_size: int = 20
    max_side: int = 1024
    nms_iou: float = 0.4
    small_face_px: int = 0
    small_face_threshold: float = 0.5
    refine_below_px: int = 0
    refine_scale: float = 2.0

    def __post_init__(self) -> None:
        checks = {
            "score_threshold": (float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
            "min_face_size": (int, lambda v: v >= 0, "an integer >= 0 (pixels)"),
            "max_side": (int, lambda v: v == 0 or v >= 32, "0 (no downscaling) or an integer >= 32"),
            "nms_iou": (float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
            "small_face_px": (int, lambda v: v >= 0, "an integer >= 0 (pixels; 0 turns the size-dependent "
                                                      "threshold off)"),
            "small_face_threshold": (float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
            "refine_below_px": (int, lambda v: v >= 0, "an integer >= 0 (pixels as detected; 0 turns the "
                                                        "second pass off)"),
            "refine_scale": (float, lambda v: 1.0 < v <= 4.0, "a number in (1, 4] (the second pass's "
                                                               "enlargement over the first)"),
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
        boxes, scores, lms = self._pass(small, scale, (0.0, 0.0))
        if cfg.refine_below_px and len(scores):
            kept = self._keep(boxes, scores, w, h)
            short = np.minimum(boxes[kept, 2] - boxes[kept, 0], boxes[kept, 3] - boxes[kept, 1]) * scale
            trigger = boxes[kept][short < cfg.refine_below_px]
            for (x0, y0, x1, y1), s2 in refine_windows(trigger, (h, w), scale, cfg.refine_scale, cfg.max_side):
                enlarged, s2 = _rescale(np.ascontiguousarray(image[y0:y1, x0:x1]), s2)
                b2, s2_scores, l2 = self._pass(enlarged, s2, (float(x0), float(y0)))
                # a face cut by an inner window edge is a fragment: drop it (see _EDGE_PX)
                m = _EDGE_PX / s2
                inner = (((b2[:, 0] <= x0 + m) & (x0 > 0)) | ((b2[:, 1] <= y0 + m) & (y0 > 0))
                         | ((b2[:, 2] >= x1 - m) & (x1 < w)) | ((b2[:, 3] >= y1 - m) & (y1 < h)))
                boxes = np.concatenate([boxes, b2[~inner]])
                scores = np.concatenate([scores, s2_scores[~inner]])
                lms = np.concatenate([lms, l2[~inner]])
        idx = self._keep(boxes, scores, w, h)
        if idx.size == 0:
            return []
        idx = idx[nms(boxes[idx], scores[idx], cfg.nms_iou)]
        faces = []
        for i in idx:
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            faces.append(Face(box=(x1, y1, x2 - x1, y2 - y1), score=float(scores[i]),
                              landmarks=lms[i].astype(np.float32)))
        return faces

    def _pass(self, image: np.ndarray, scale: float, offset: tuple[float, float]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detect on ``image`` (the original's region at ``offset``, resized by ``scale``): boxes (clipped
        to nothing yet), scores and landmarks in ORIGINAL pixels, as float64."""
        det = self._detect_one(image)
        shift = np.array(offset, np.float64)
        boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4) / scale + np.tile(shift, 2)
        lms = np.asarray(det.landmarks, np.float64).reshape(-1, 5, 2) / scale + shift
        return boxes, np.asarray(det.scores, np.float64).reshape(-1), lms

    def _keep(self, boxes: np.ndarray, scores: np.ndarray, w: int, h: int) -> np.ndarray:
        """Indices of finite faces above their (size-dependent) threshold and min_face_size; clips
        ``boxes`` to the image in place."""
        cfg = self.config
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        boxes[:, [0, 2]] = np.nan_to_num(boxes[:, [0, 2]]).clip(0, w)
        boxes[:, [1, 3]] = np.nan_to_num(boxes[:, [1, 3]]).clip(0, h)
        short = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        threshold = np.where(short < cfg.small_face_px, cfg.small_face_threshold, cfg.score_threshold)
        ok &= (scores >= threshold) & (short >= max(cfg.min_face_size, 1e-6))
        return np.flatnonzero(ok)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r}, config={self.config})"


def refine_windows(boxes: np.ndarray, image_hw: tuple[int, int], scale: float, refine_scale: float,
                   max_side: int) -> list[tuple[tuple[int, int, int, int], float]]:
    """Where a second pass can pay: windows (x0, y0, x1, y1) around ``boxes`` (small faces the first pass
    kept, original pixels) and the scale each is detected at.

    Each window reaches REFINE_CONTEXT face sizes beyond its face on every side; overlapping windows are
    merged. A window is enlarged to ``refine_scale`` x the first pass's ``scale``, but to at most
    ``max_side`` on its long side (0: no cap); one that would gain less than 1.25x over the first pass
    is skipped, as it would find what the first pass found.
    """
    h, w = image_hw
    wins = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        pad = REFINE_CONTEXT * max(x2 - x1, y2 - y1)
        wins.append([max(0.0, x1 - pad), max(0.0, y1 - pad), min(float(w), x2 + pad), min(float(h), y2 + pad)])
    merged = True
    while merged and len(wins) > 1:  # union overlapping windows until none overlap
        merged = False
        for i in range(len(wins)):
            for j in range(i + 1, len(wins)):
                a, b = wins[i], wins[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    wins[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    wins.pop(j)
                    merged = True
                    break
            if merged:
                break
    out = []
    for x0, y0, x1, y1 in wins:
        ix0, iy0, ix1, iy1 = int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))
        long_side = max(ix1 - ix0, iy1 - iy0)
        s2 = scale * refine_scale
        if max_side > 0:
            s2 = min(s2, max_side / long_side)
        if long_side >= 8 and s2 >= 1.25 * scale:
            out.append(((ix0, iy0, ix1, iy1), s2))
    return out


def _rescale(image: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """Resize by about ``factor`` (cubic up, area down); returns the image and the long side's exact factor
    after rounding (as resize_for_detection does)."""
    import cv2

    h, w = image.shape[:2]
    nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
    out = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
    return out, (nw / w if w >= h else nh / h)


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
