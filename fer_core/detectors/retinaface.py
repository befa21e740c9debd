"""RetinaFace (MobileNetV2) from the frozen TF GraphDef shipped in the ``retinaface`` 1.1.1 wheel.

Only the graph bytes are used (``fer_core.weights.RETINAFACE_MOBILENET_V2``); the package's own
Python code pins TF 2.5 and is never imported. The graph (verified empirically, see tests):

* input ``x:0``: float32 (1, H, W, 3), RGB, raw 0..255 (normalisation is inside the graph),
  H and W multiples of 32 (we zero-pad bottom/right);
* output ``Identity:0``: (N, 16) rows: x1, y1, x2, y2, 5 landmarks (x, y), landmark flag, score,
  coordinates relative to the PADDED input; landmark order: image-left eye, image-right eye, nose,
  image-left and image-right mouth corner. Anchor decoding and NMS are inside the graph (it keeps
  scores >= 0.5 and suppresses at IoU 0.4), so score_threshold < 0.5 or nms_iou > 0.4 change nothing.
* RGB beats BGR on the astronaut photo at every scale (0.99997 vs 0.99994 at 512 px, 0.98 vs no
  detection at 96 px), and 0..1 inputs find nothing: the graph wants raw 0..255 RGB.

Speed (2 shared CPU cores, TF 2.21): one 640x480 image ~125 ms uncontended (~8 images/s), ~3 images/s
while the cores are busy. Wrapping the pruned function in tf.function made no difference, so we call
it directly; it accepts any H, W (multiples of 32) without retracing.

TensorFlow is imported only when a RetinaFaceDetector is created, never at fer_core import.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fer_core.detectors import register_detector
from fer_core.detectors.base import Detections, Detector, DetectorConfig
from fer_core.errors import WeightsError
from fer_core.weights import RETINAFACE_MOBILENET_V2, WeightSpec, read_weight_bytes, sha256_bytes

STRIDE = 32  # the graph's largest feature stride: input sides must be multiples of it

# sha256 -> (loaded graph function, lock): detectors with different configs share one graph per process
_GRAPHS: dict[str, tuple[Any, threading.Lock]] = {}
_GRAPHS_LOCK = threading.Lock()


def _shared_graph(graph_bytes: bytes, sha256: str) -> tuple[Any, threading.Lock]:
    with _GRAPHS_LOCK:
        if sha256 not in _GRAPHS:
            fn = load_graph_function(graph_bytes)
            import tensorflow as tf

            fn(tf.zeros((1, 64, 64, 3), tf.float32))  # the first call optimises the graph (~2 s): pay it at load
            _GRAPHS[sha256] = (fn, threading.Lock())
        return _GRAPHS[sha256]


def load_graph_function(graph_bytes: bytes) -> Any:
    """Frozen GraphDef bytes -> a TF ConcreteFunction mapping x:0 (1,H,W,3) to Identity:0 (N,16)."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(graph_bytes)
    except Exception as e:  # protobuf DecodeError
        raise WeightsError(
            f"RetinaFace weights are not a valid TF GraphDef ({e}); pass the bytes of "
            f"{RETINAFACE_MOBILENET_V2.filename} (sha256 {RETINAFACE_MOBILENET_V2.sha256})"
        ) from e

    def _import() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    graph = wrapped.graph
    return wrapped.prune(graph.as_graph_element("x:0"), graph.as_graph_element("Identity:0"))


def pad_to_stride(image: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Zero-pad bottom/right so H and W are multiples of ``stride``; returns float32 (H', W', 3)."""
    h, w = image.shape[:2]
    ph, pw = -h % stride, -w % stride
    out = np.zeros((h + ph, w + pw, 3), np.float32)
    out[:h, :w] = image
    return out


@register_detector("retinaface")
class RetinaFaceDetector(Detector):
    """RetinaFace-MobileNetV2: boxes, 5 landmarks and a calibrated-ish score per face."""

    default_config = DetectorConfig(score_threshold=0.9, min_face_size=20, max_side=1024, nms_iou=0.4)

    def __init__(self, config: DetectorConfig | None = None, *, weights_bytes: bytes | None = None,
                 weights: WeightSpec = RETINAFACE_MOBILENET_V2) -> None:
        """weights_bytes: the GraphDef bytes (e.g. a Spark broadcast value); else fetched from ``weights``."""
        super().__init__(config)
        if weights_bytes is not None:
            weights_bytes = bytes(weights_bytes)
            actual = sha256_bytes(weights_bytes)
            if actual != weights.sha256:
                raise WeightsError(
                    f"weights_bytes given to RetinaFaceDetector have sha256 {actual}, expected "
                    f"{weights.sha256} ({weights.name}); broadcast fer_core.weights.read_weight_bytes(spec)"
                )
        elif weights.sha256 not in _GRAPHS:
            weights_bytes = read_weight_bytes(weights)
        self._fn, self._lock = _shared_graph(weights_bytes or b"", weights.sha256)
        self.version = f"{weights.name}-{weights.sha256[:12]}"

    def run_graph(self, padded: np.ndarray) -> np.ndarray:
        """Run the raw graph on one padded float32 (H, W, 3) image -> (N, 16) float32 rows."""
        import tensorflow as tf

        with self._lock:
            out = self._fn(tf.constant(padded[None]))
        return np.asarray(out, np.float32).reshape(-1, 16)

    def _detect_one(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        padded = pad_to_stride(image)
        rows = self.run_graph(padded)
        if rows.size == 0:
            return Detections.empty()
        ph, pw = padded.shape[:2]
        xy = rows[:, :14].reshape(-1, 7, 2) * np.array([pw, ph], np.float32)
        boxes = xy[:, :2].reshape(-1, 4)
        landmarks = xy[:, 2:]
        return Detections(boxes, rows[:, 15], landmarks)
