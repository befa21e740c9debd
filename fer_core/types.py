"""Plain data types passed between stages. Numpy in, numpy out; nothing here knows Spark."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the original (decoded, EXIF-rotated) image.

    box: (x, y, w, h), top-left corner plus size.
    landmarks: float32 array (5, 2) of (x, y): right eye, left eye, nose, right and left
    mouth corner, in the order RetinaFace returns them (image-left eye first).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(default_factory=lambda: np.full((5, 2), np.nan, np.float32))

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])


@dataclass
class FaceResult:
    """A face with its classification: what the CLI prints and the faces table stores."""

    face: Face
    probabilities: np.ndarray  # (7,) float32, EMOTIONS order, sums to 1
    emotion: str
    sentiment: str  # positive | negative | neutral
    valence: float  # in [-1, 1]
    quality: Any = None  # fer_core.quality.FaceQuality: how readable the face is (None if not measured)


@dataclass
class ImageResult:
    """Everything known about one input image after the pipeline ran."""

    status: str  # one of errors.IMAGE_STATUSES
    error: str | None = None
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] = field(default_factory=list)
