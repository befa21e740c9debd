"""OpenCV Haar frontal-face cascade: a light fallback detector (no TensorFlow, no weight download).

Scores: ``detectMultiScale3(..., outputRejectLevels=True)`` returns each box's final-stage weight
(its margin above the last stage's threshold); we map it through a logistic, score = 1 / (1 + exp(-w)),
so scores lie in (0, 1) and rank boxes, but they are NOT calibrated like RetinaFace's. The default
score_threshold is therefore 0.0: the cascade's own stages + minNeighbors grouping already decide.
Landmarks: the cascade gives none, so they are NaN (5, 2); ``align_faces`` then skips rotation.
Frontal, upright faces only; expect misses on profiles and tilted heads.
"""
from __future__ import annotations

import threading

import numpy as np

from fer_core.detectors import register_detector
from fer_core.detectors.base import Detections, Detector, DetectorConfig
from fer_core.errors import WeightsError

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@register_detector("haar")
class HaarDetector(Detector):
    """Viola-Jones cascade on the histogram-equalised grey image."""

    default_config = DetectorConfig(score_threshold=0.0, min_face_size=20, max_side=1024, nms_iou=0.4)

    def __init__(self, config: DetectorConfig | None = None, *, scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> None:
        super().__init__(config)
        import cv2

        path = cv2.data.haarcascades + CASCADE_FILE
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise WeightsError(
                f"OpenCV Haar cascade {path} could not be loaded; install opencv-python-headless<5 "
                f"(5.x ships no cascades)"
            )
        self._cascade = cascade
        self._lock = threading.Lock()  # CascadeClassifier is not documented as thread-safe
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.version = f"opencv-{cv2.__version__}-{CASCADE_FILE.removesuffix('.xml')}"

    def _detect_one(self, image: np.ndarray) -> Detections:
        import cv2

        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        # no minSize: the cascade window is already 24 px; min_face_size is applied in original pixels later
        with self._lock:
            rects, _levels, weights = self._cascade.detectMultiScale3(
                grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, outputRejectLevels=True,
            )
        if len(rects) == 0:
            return Detections.empty()
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        w = np.asarray(weights, np.float64).reshape(-1)
        scores = (1.0 / (1.0 + np.exp(-w))).astype(np.float32)
        landmarks = np.full((len(boxes), 5, 2), np.nan, np.float32)
        return Detections(boxes, scores, landmarks)
