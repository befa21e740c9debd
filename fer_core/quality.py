"""Face quality: how readable a detected face is, from what the pipeline already has (the aligned crop
and the 5 landmarks), so campaign figures can count reliable faces apart from doubtful ones.

Measures (one per face):
* ``face_px``: the box's short side in original pixels (a small face is upscaled to the model's input);
* ``sharpness``: variance of the Laplacian of the grey crop at 48 px over the crop's own variance, so
  it measures lost detail, not contrast (a dark face is not "blurred" too);
* ``brightness``: mean grey level (0-255) of the crop's central 60%, the face itself;
* ``yaw`` / ``pitch`` (degrees, None without landmarks, e.g. Haar): an UNCALIBRATED heuristic from the
  landmarks. yaw = asin of the nose's offset from the eye midpoint along the eye line, in half
  inter-ocular distances; pitch = asin of the nose's offset along the eye-to-mouth axis from its frontal
  position (FRONTAL_NOSE of the way down), in units of that position. No labelled head-pose set could
  be had offline, so only the arithmetic is tested (2-D warps of known landmarks).

``quality`` is the first rule a face fails, in this order: ``small``, ``blurred``, ``dark``, ``turned``,
else ``good``. The default cut-offs come from bench/bench_face_quality.py (a model-accuracy curve on
degraded faces of a split carved from Training; see QualityOptions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fer_core.errors import ConfigError
from fer_core.types import Face

__all__ = ["QUALITY_LABELS", "QualityOptions", "FaceQuality", "face_quality", "sharpness", "brightness",
           "head_pose", "MEASURE_SIDE"]

QUALITY_LABELS: tuple[str, ...] = ("good", "small", "blurred", "dark", "turned")
MEASURE_SIDE = 48
"""Crops are measured at this side, whatever the model's input size, so the cut-offs mean one thing."""
FRONTAL_NOSE = 0.5
"""How far down from the eye midpoint to the mouth midpoint a frontal face's nose tip lies (heuristic)."""


@dataclass(frozen=True)
class QualityOptions:
    """``quality:`` section of the pipeline config: the cut-offs of the flags (a face below a minimum or
    above a maximum is flagged).

    min_face_px, min_sharpness, min_brightness: chosen by bench/bench_face_quality.py (2026-12-02, the
    default model with TTA, on its Training hold-out): below each, the model's accuracy on degraded faces
    falls more than 5 points under the undegraded faces' 67.2% (README "Face quality"). max_yaw and
    max_pitch: an uncalibrated heuristic (no labelled head-pose set offline), set where the nose is most
    of the way to one eye (45 degrees: 0.71 half inter-ocular distances) or far above/below its frontal place.
    """

    min_face_px: float = 32.0
    min_sharpness: float = 0.84
    min_brightness: float = 63.0
    max_yaw: float = 45.0
    max_pitch: float = 40.0

    def __post_init__(self) -> None:
        for key in ("min_face_px", "min_sharpness", "min_brightness", "max_yaw", "max_pitch"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{key}: must be a number >= 0, got {value!r}")


@dataclass(frozen=True)
class FaceQuality:
    """The measures of one face and its flag (one of QUALITY_LABELS)."""

    face_px: float
    sharpness: float
    brightness: float
    yaw: float | None
    pitch: float | None
    quality: str


def _grey48(crops: np.ndarray) -> np.ndarray:
    """uint8 crops (N,H,W[,C]) -> float32 (N, 48, 48) grey."""
    import cv2

    from fer_core.preprocess import to_grey

    grey = to_grey(np.asarray(crops, np.uint8))
    if grey.shape[1:] != (MEASURE_SIDE, MEASURE_SIDE):
        grey = np.stack([cv2.resize(g, (MEASURE_SIDE, MEASURE_SIDE), interpolation=cv2.INTER_AREA) for g in grey]) \
            if len(grey) else np.zeros((0, MEASURE_SIDE, MEASURE_SIDE), np.uint8)
    return grey.astype(np.float32)


def sharpness(crops: np.ndarray) -> np.ndarray:
    """(N,) variance of the Laplacian over the variance of the crop (grey, 48 px); 0 for a flat crop."""
    import cv2

    grey = _grey48(crops)
    out = np.zeros(len(grey), np.float64)
    for i, g in enumerate(grey):
        var = float(g.var())
        if var > 1e-6:
            out[i] = float(cv2.Laplacian(g, cv2.CV_32F, ksize=3).var()) / var
    return out


def brightness(crops: np.ndarray) -> np.ndarray:
    """(N,) mean grey level (0-255) of each crop's central 60%."""
    grey = _grey48(crops)
    lo, hi = int(MEASURE_SIDE * 0.2), int(MEASURE_SIDE * 0.8)
    return grey[:, lo:hi, lo:hi].mean(axis=(1, 2)).astype(np.float64) if len(grey) else np.zeros(0)


def head_pose(landmarks: np.ndarray | None) -> tuple[float | None, float | None]:
    """(yaw, pitch) in degrees from the 5 landmarks (see the module doc); (None, None) when unknown."""
    if landmarks is None:
        return None, None
    lm = np.asarray(landmarks, np.float64).reshape(-1, 2)
    if lm.shape[0] < 5 or not np.isfinite(lm).all():
        return None, None
    right_eye, left_eye, nose, mouth_r, mouth_l = lm[:5]
    eyes = (right_eye + left_eye) / 2
    mouth = (mouth_r + mouth_l) / 2
    across = left_eye - right_eye
    half_iod = np.linalg.norm(across) / 2
    down = mouth - eyes
    depth = np.linalg.norm(down)
    if half_iod < 1e-6 or depth < 1e-6:
        return None, None
    u, v = across / (2 * half_iod), down / depth
    yaw = math.degrees(math.asin(float(np.clip(np.dot(nose - eyes, u) / half_iod, -1, 1))))
    along = float(np.dot(nose - eyes, v)) / depth
    pitch = math.degrees(math.asin(float(np.clip((along - FRONTAL_NOSE) / FRONTAL_NOSE, -1, 1))))
    return yaw, pitch


def face_quality(crops: np.ndarray, faces: Sequence[Face], opts: QualityOptions | None = None) -> list[FaceQuality]:
    """One FaceQuality per face, from its aligned crop (uint8, any size, grey or RGB) and its landmarks."""
    opts = opts or QualityOptions()
    sharp, bright = sharpness(crops), brightness(crops)
    out = []
    for face, s, b in zip(faces, sharp, bright):
        px = float(min(face.box[2], face.box[3]))
        yaw, pitch = head_pose(face.landmarks)
        if px < opts.min_face_px:
            label = "small"
        elif s < opts.min_sharpness:
            label = "blurred"
        elif b < opts.min_brightness:
            label = "dark"
        elif (yaw is not None and abs(yaw) > opts.max_yaw) or (pitch is not None and abs(pitch) > opts.max_pitch):
            label = "turned"
        else:
            label = "good"
        out.append(FaceQuality(px, float(s), float(b), yaw, pitch, label))
    return out
