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
    frame_ms: int | None = None  # video: the sampled frame's time from the stream's start; None for photos
    track_id: int | None = None  # video: the track (one person across frames, 0, 1, ...); None for photos
    quality: Any = None  # fer_core.quality.FaceQuality: how readable the face is (None if not measured)


@dataclass
class ImageResult:
    """Everything known about one input image (a photo, or a video post) after the pipeline ran.

    A video is one ImageResult: width/height are its display size, ``faces`` holds one FaceResult per
    face per sampled frame (with frame_ms and track_id), n_frames the frames scored.
    """

    status: str  # one of errors.IMAGE_STATUSES
    error: str | None = None
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] = field(default_factory=list)
    media_type: str = "image"  # image | video
    duration_s: float | None = None  # video: the duration its header declares (None: photo, or not declared)
    n_frames: int | None = None  # frames scored: 1 for a decoded photo, the sampled frames of a video
