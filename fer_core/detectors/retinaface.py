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

Two engines run the same graph (``engine=``):

* ``tflite`` (the default on CPU): the graph converted once to TensorFlow Lite, run by XNNPACK, whose
  depthwise convolutions are much faster than TensorFlow's. The graph's own rows (within 2e-5,
  tested), so the same faces, at 1.6-1.7x the speed on one thread (``bench/bench_detector.py``). The
  converted model is cached beside the weights (``$FER_CORE_HOME``), keyed by the graph's sha256 and
  the TensorFlow version, so each machine converts once (~5 s).
* ``tf`` (the default when TensorFlow sees a GPU): the pruned graph function itself; it accepts any
  H, W (multiples of 32) without retracing. On 2 CPU cores one 640x480 image takes ~110 ms.

TensorFlow is imported only when a RetinaFaceDetector is created, never at fer_core import.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fer_core.detectors import register_detector
from fer_core.detectors.base import Detections, Detector, DetectorConfig
from fer_core.errors import ConfigError, WeightsError
from fer_core.runtime import filtered_native_logs, import_tensorflow
from fer_core.weights import (
    RETINAFACE_MOBILENET_V2,
    WeightSpec,
    atomic_write,
    read_weight_bytes,
    sha256_bytes,
    weights_home,
)

STRIDE = 32  # the graph's largest feature stride: input sides must be multiples of it
GRAPH_SCORE_FLOOR = 0.5  # the graph's own NMS drops faces scoring below this
ENGINES = ("auto", "tflite", "tf")

GraphRunner = Callable[[np.ndarray], np.ndarray]  # padded float32 (H, W, 3) -> (N, 16) rows

# (sha256, engine) -> (runner, lock): detectors with different configs share one graph per process
_GRAPHS: dict[tuple[str, str], tuple[GraphRunner, threading.Lock]] = {}
_GRAPHS_LOCK = threading.Lock()


def resolve_engine(engine: str) -> str:
    """"auto" -> "tf" when TensorFlow sees a GPU (the graph runs there), else "tflite"."""
    if engine not in ENGINES:
        raise ConfigError(f"detector.engine: expected one of {list(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    tf = import_tensorflow()

    return "tf" if tf.config.get_visible_devices("GPU") else "tflite"


def _shared_runner(graph_bytes: bytes, sha256: str, engine: str) -> tuple[GraphRunner, threading.Lock]:
    with _GRAPHS_LOCK:
        if (sha256, engine) not in _GRAPHS:
            import_tensorflow()
            with filtered_native_logs():  # TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate"
                _GRAPHS[(sha256, engine)] = (_load_runner(graph_bytes, sha256, engine), threading.Lock())
        return _GRAPHS[(sha256, engine)]


def _load_runner(graph_bytes: bytes, sha256: str, engine: str) -> GraphRunner:
    """The graph on ``engine``, called once (warmed up)."""
    if engine == "tflite":
        runner: GraphRunner = TFLiteGraph(tflite_model(graph_bytes, sha256))
    else:
        runner = _tf_runner(load_graph_function(graph_bytes))
    runner(np.zeros((64, 64, 3), np.float32))  # the first call optimises the graph (~2 s): pay it at load
    return runner


def _tf_runner(fn: Any) -> GraphRunner:
    import tensorflow as tf

    return lambda padded: np.asarray(fn(tf.constant(padded[None])), np.float32).reshape(-1, 16)


def tflite_model(graph_bytes: bytes, sha256: str, cache_dir: Path | None = None) -> bytes:
    """The graph as a TensorFlow Lite flatbuffer, converted once per graph and TF version (the graph
    bytes are parsed only on a cache miss).

    Cached as ``retinaface-<graph sha>-tf<version>-<own sha>.tflite`` in ``cache_dir`` (default
    ``weights_home()``); a cached file whose bytes do not match its name is converted again. An
    unwritable cache only costs the conversion on every load.
    """
    import tensorflow as tf

    cache_dir = weights_home() if cache_dir is None else cache_dir
    prefix = f"retinaface-{sha256[:16]}-tf{tf.__version__}-"
    for path in sorted(cache_dir.glob(prefix + "*.tflite")):
        data = path.read_bytes()
        if sha256_bytes(data)[:16] == path.stem[len(prefix):]:
            return data
    fn = load_graph_function(graph_bytes)
    dynamic = tf.function(lambda x: fn(x), input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
    data = tf.lite.TFLiteConverter.from_concrete_functions([dynamic.get_concrete_function()], dynamic).convert()
    try:
        atomic_write(cache_dir / f"{prefix}{sha256_bytes(data)[:16]}.tflite", data)
    except OSError as e:
        warnings.warn(f"cannot cache the converted RetinaFace model in {cache_dir} ({e}); it will be converted "
                      f"again at every load. Set FER_CORE_HOME to a writable directory.", stacklevel=2)
    return data


class TFLiteGraph:
    """The converted graph in a TensorFlow Lite interpreter (XNNPACK), resized when the input size changes.

    TFLite's non-max suppression returns a fixed-size output padded with copies of one low-scoring
    anchor where TensorFlow's returns only the kept faces; dropping rows under the graph's own score
    floor gives back exactly TensorFlow's rows. Not thread-safe: callers hold the detector's lock.
    """

    def __init__(self, model: bytes, threads: int | None = None) -> None:
        import tensorflow as tf

        if threads is None:  # follow the process's TF setting (the job sets 1 thread per Spark worker);
            # TF's 0 means all cores, where TFLite's default would be one thread
            threads = tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))
        interpreter_cls = getattr(getattr(tf, "lite", None), "Interpreter", None)
        if interpreter_cls is None:
            try:
                from ai_edge_litert.interpreter import Interpreter as interpreter_cls  # TF's successor
            except ImportError as e:
                raise ConfigError(
                    "detector.engine 'tflite' needs tf.lite.Interpreter, which this TensorFlow lacks; "
                    "pip install ai-edge-litert, or set detector.engine: tf"
                ) from e
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice, once per process
            self._interpreter = interpreter_cls(model_content=model, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None

    def __call__(self, padded: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(padded[None], np.float32)
        if x.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, x.shape)
            self._interpreter.allocate_tensors()
            self._shape = x.shape
        self._interpreter.set_tensor(self._input, x)
        self._interpreter.invoke()
        rows = self._interpreter.get_tensor(self._output).reshape(-1, 16)
        return rows[rows[:, 15] >= GRAPH_SCORE_FLOOR]


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

    # Chosen from bench/bench_detection_pr.py's curve (README "Detection policy"): faces under 96 px keep
    # RetinaFace's own floor (0.5), larger ones need 0.9. Below 0.9 the extra false positives were all
    # large boxes (pets, textures), while true faces under ~100 px often score 0.5-0.9: the rule found the
    # most faces with no more false positives per image than the old flat 0.9.
    default_config = DetectorConfig(score_threshold=0.9, min_face_size=20, max_side=1024, nms_iou=0.4,
                                    small_face_px=96, small_face_threshold=GRAPH_SCORE_FLOOR)
    option_choices = {"engine": ENGINES}

    def __init__(self, config: DetectorConfig | None = None, *, weights_bytes: bytes | None = None,
                 weights: WeightSpec = RETINAFACE_MOBILENET_V2, engine: str = "auto") -> None:
        """weights_bytes: the GraphDef bytes (e.g. a Spark broadcast value); else fetched from ``weights``.
        engine: "tflite", "tf", or "auto" (tf when TensorFlow sees a GPU, else tflite, falling back to tf
        with a warning where TFLite fails to load); see the module doc."""
        super().__init__(config)
        self.engine = resolve_engine(engine)
        if weights_bytes is not None:
            weights_bytes = bytes(weights_bytes)
            actual = sha256_bytes(weights_bytes)
            if actual != weights.sha256:
                raise WeightsError(
                    f"weights_bytes given to RetinaFaceDetector have sha256 {actual}, expected "
                    f"{weights.sha256} ({weights.name}); broadcast fer_core.weights.read_weight_bytes(spec)"
                )
        elif (weights.sha256, self.engine) not in _GRAPHS:
            weights_bytes = read_weight_bytes(weights)
        try:
            self._run, self._lock = _shared_runner(weights_bytes or b"", weights.sha256, self.engine)
        except WeightsError:
            raise
        except Exception as e:  # a platform without a working TFLite converter or interpreter
            if engine != "auto" or self.engine != "tflite":
                raise
            warnings.warn(f"RetinaFace: the TensorFlow Lite engine failed to load ({type(e).__name__}: {e}); "
                          "running the TensorFlow graph instead, which is slower on CPU. Set detector.engine: tf "
                          "to skip the attempt, or tflite to make it an error.", RuntimeWarning, stacklevel=2)
            self.engine = "tf"
            self._run, self._lock = _shared_runner(weights_bytes or b"", weights.sha256, self.engine)
        self.version = f"{weights.name}-{weights.sha256[:12]}"

    def run_graph(self, padded: np.ndarray) -> np.ndarray:
        """Run the raw graph on one padded float32 (H, W, 3) image -> (N, 16) float32 rows."""
        with self._lock:
            return self._run(padded)

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
