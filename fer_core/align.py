"""Face alignment: level the eyes, square crop with margin around the box centre, resize.

Shared by training-time evaluation and inference, so a face is cut out the same way everywhere.
Each face is ONE cv2.warpAffine (rotation + crop + scale in a single matrix): fast, and the pixels
are interpolated once. For strong downscaling (crop side > 2x the output) the warp renders at an
integer multiple k of ``size`` and a k x k box average (INTER_AREA) finishes, which avoids the
aliasing a single bilinear warp would produce.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from fer_core.types import Face

__all__ = ["align_faces", "alignment_matrix", "transform_points"]

_BORDERS = ("edge", "black")


def _eye_angle(landmarks: np.ndarray | None) -> float:
    """Angle in degrees of the line from the image-left eye to the image-right eye; 0 if unknown."""
    if landmarks is None:
        return 0.0
    lm = np.asarray(landmarks, np.float64).reshape(-1, 2)
    if lm.shape[0] < 2 or not np.isfinite(lm[:2]).all():
        return 0.0
    (x0, y0), (x1, y1) = lm[0], lm[1]
    if x0 == x1 and y0 == y1:
        return 0.0
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def alignment_matrix(face: Face, *, size: int, margin: float) -> np.ndarray:
    """2x3 affine mapping original-image pixel coordinates to the aligned ``size`` x ``size`` crop.

    The crop is a square of side max(w, h) * (1 + margin) centred on the box centre, rotated about
    that centre so the eye landmarks (if finite) are level. Pixel centres are at integer coordinates.
    """
    x, y, w, h = (float(v) for v in face.box)
    side = max(w, h, 1.0) * (1.0 + margin)
    scale = size / side
    theta = math.radians(_eye_angle(face.landmarks))
    a, b = scale * math.cos(theta), scale * math.sin(theta)
    # continuous box centre -> pixel-index coordinates (pixel i covers [i, i+1))
    cx, cy = x + w / 2.0 - 0.5, y + h / 2.0 - 0.5
    tx, ty = size / 2.0 - 0.5, size / 2.0 - 0.5
    # dst = S * R(-theta) * (src - c) + t   (R(-theta) undoes the eye tilt)
    return np.array(
        [[a, b, tx - a * cx - b * cy],
         [-b, a, ty + b * cx - a * cy]],
        dtype=np.float64,
    )


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points (e.g. landmarks into the aligned crop)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def align_faces(image: np.ndarray, faces: Sequence[Face], *, size: int, margin: float,
                border: str = "edge") -> np.ndarray:
    """Cut out each face as an eye-levelled square crop -> (N, size, size, 3) uint8.

    image: (H, W, 3) uint8 RGB, the decoded original the face boxes refer to.
    margin: extra context around the box, as a fraction of max(w, h) (0.1 = 10 % wider).
    border: where the crop leaves the image, "edge" repeats the border pixels, "black" pads with 0.
    """
    import cv2

    if size <= 0:
        raise ValueError(f"align_faces: size must be a positive number of pixels, got {size}")
    if margin <= -1.0:
        raise ValueError(f"align_faces: margin must be > -1 (a fraction of the box side), got {margin}")
    if border not in _BORDERS:
        raise ValueError(f"align_faces: border must be one of {_BORDERS}, got {border!r}")
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"align_faces: image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    out = np.zeros((len(faces), size, size, 3), np.uint8)
    border_mode = cv2.BORDER_REPLICATE if border == "edge" else cv2.BORDER_CONSTANT
    for i, face in enumerate(faces):
        side = max(float(face.box[2]), float(face.box[3]), 1.0) * (1.0 + margin)
        k = max(1, int(side // (2 * size)))  # render at k*size, then a k x k box average
        m = alignment_matrix(face, size=size * k, margin=margin)
        crop = cv2.warpAffine(image, m, (size * k, size * k), flags=cv2.INTER_LINEAR,
                              borderMode=border_mode, borderValue=0)
        if k > 1:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = crop
    return out
