"""Detectors on a real face photo: RetinaFace accuracy + box mapping, and one contract for every family."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fer_core.detectors import (
    Detections,
    Detector,
    DetectorConfig,
    create_detector,
    list_detectors,
    register_detector,
)
from fer_core.detectors import _REGISTRY
from fer_core.detectors.retinaface import RetinaFaceDetector, tflite_model
from fer_core.errors import ConfigError, WeightsError
from fer_core.types import Face
from fer_core.weights import RETINAFACE_MOBILENET_V2, read_weight_bytes
from _images import ASTRONAUT_EYES, ASTRONAUT_FACE_XYXY, astronaut, map_box, paste, xywh_to_xyxy

_DETECTORS: dict[str, Detector] = {}


def get_detector(name: str) -> Detector:
    """One instance per family for the whole module (RetinaFace takes seconds to load TF)."""
    if name not in _DETECTORS:
        _DETECTORS[name] = create_detector(name)
    return _DETECTORS[name]


@pytest.fixture(scope="module")
def retina() -> Detector:
    return get_detector("retinaface")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---------------------------------------------------------------- RetinaFace accuracy


def test_astronaut_single_face_box_and_eyes(retina: Detector) -> None:
    faces = retina.detect([astronaut()])[0]
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    np.testing.assert_allclose(xywh_to_xyxy(face.box), ASTRONAUT_FACE_XYXY, atol=12)
    np.testing.assert_allclose(face.landmarks[:2], ASTRONAUT_EYES, atol=5)
    # landmark order: image-left eye, image-right eye, nose, mouth corners (left, right)
    lm = face.landmarks
    assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert lm[0, 1] < lm[2, 1] < lm[3, 1]


@pytest.mark.parametrize(
    "canvas_hw,scale,offset,max_side",
    [
        ((700, 1000), 0.6, (410, 233), 1024),  # smaller face, odd canvas (padding to /32)
        ((1200, 1600), 1.7, (150, 90), 1024),  # default max_side downscales 1600 -> 1024
        ((1500, 2000), 1.0, (1300, 800), 480),  # forced strong downscale, face near the corner
    ],
    ids=["small-offset", "default-downscale", "forced-downscale"],
)
def test_pasted_face_maps_back_to_original_pixels(canvas_hw, scale, offset, max_side) -> None:
    det = create_detector("retinaface", max_side=max_side) if max_side != 1024 else get_detector("retinaface")
    canvas = paste(astronaut(), canvas_hw=canvas_hw, scale=scale, offset_xy=offset)
    faces = det.detect([canvas])[0]
    assert len(faces) == 1
    expected = map_box(ASTRONAUT_FACE_XYXY, scale, offset)
    down = max(canvas_hw) / max_side if max(canvas_hw) > max_side else 1.0
    tol = 12 * scale + 3 * down
    np.testing.assert_allclose(xywh_to_xyxy(faces[0].box), expected, atol=tol)
    eyes = np.asarray(ASTRONAUT_EYES) * scale + np.asarray(offset)
    np.testing.assert_allclose(faces[0].landmarks[:2], eyes, atol=5 * scale + 2 * down)


def test_batch_keeps_order_and_handles_empty(retina: Detector) -> None:
    blank = np.full((240, 320, 3), 200, np.uint8)
    img = astronaut()
    out = retina.detect([blank, img, img[:300, :400]])
    assert [len(f) for f in out] == [0, 1, 1]
    assert retina.detect([]) == []


def test_thresholds_filter(retina: Detector) -> None:
    img = astronaut()
    assert create_detector("retinaface", min_face_size=150, weights_bytes=_graph_bytes()).detect([img]) == [[]]
    # her ~93-px face is under the default small_face_px (96), so the small-face threshold governs it
    assert create_detector("retinaface", score_threshold=1.0, small_face_threshold=1.0,
                           weights_bytes=_graph_bytes()).detect([img]) == [[]]


def _graph_bytes() -> bytes:
    return read_weight_bytes(RETINAFACE_MOBILENET_V2)


def test_weights_bytes_are_verified() -> None:
    data = _graph_bytes()
    det = create_detector("retinaface", weights_bytes=data)
    assert len(det.detect([astronaut()])[0]) == 1
    with pytest.raises(WeightsError, match=RETINAFACE_MOBILENET_V2.sha256):
        create_detector("retinaface", weights_bytes=data[:-10])


def test_rejects_non_rgb_uint8(retina: Detector) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        retina.detect([np.zeros((64, 64), np.uint8)])
    with pytest.raises(ValueError, match="uint8 RGB"):
        retina.detect([np.zeros((64, 64, 3), np.float32)])


# ---------------------------------------------------------------- RetinaFace engines


def _three_face_scene() -> np.ndarray:
    """Three astronauts (one mirrored, one small) on a 640x960 canvas; its sides are not multiples of 32."""
    img = astronaut()
    canvas = paste(img, canvas_hw=(650, 970), scale=0.55, offset_xy=(20, 40))
    canvas[300:300 + 282, 330:330 + 282] = paste(img[:, ::-1], canvas_hw=(282, 282), scale=0.55, offset_xy=(0, 0))
    canvas[60:60 + 154, 700:700 + 154] = paste(img, canvas_hw=(154, 154), scale=0.3, offset_xy=(0, 0))
    return canvas


def test_tflite_engine_gives_the_graphs_own_rows() -> None:
    """The converted graph returns TF's rows exactly (after dropping TFLite's padded NMS slots), so the
    faster engine changes no detection; a blank image gives no rows on either engine."""
    tf_det, tfl_det = (create_detector("retinaface", engine=e) for e in ("tf", "tflite"))
    assert (tf_det.engine, tfl_det.engine) == ("tf", "tflite") and tf_det.version == tfl_det.version
    from fer_core.detectors.retinaface import pad_to_stride

    for image in (_three_face_scene(), astronaut(), np.full((200, 300, 3), 128, np.uint8)):
        padded = pad_to_stride(image)
        want, got = tf_det.run_graph(padded), tfl_det.run_graph(padded)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-5)  # relative coordinates and scores
    faces_tf, faces_tfl = tf_det.detect([_three_face_scene()])[0], tfl_det.detect([_three_face_scene()])[0]
    assert len(faces_tf) == len(faces_tfl) == 3
    for a, b in zip(faces_tf, faces_tfl):
        np.testing.assert_allclose(a.box, b.box, atol=0.05)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
        assert abs(a.score - b.score) < 1e-4


def test_auto_engine_is_tflite_without_a_gpu() -> None:
    import tensorflow as tf

    expected = "tf" if tf.config.get_visible_devices("GPU") else "tflite"
    assert create_detector("retinaface").engine == expected
    with pytest.raises(ConfigError, match="detector.engine.*tflite"):
        create_detector("retinaface", engine="onnx")
    with pytest.raises(ConfigError, match="haar.*does not accept.*engine"):
        create_detector("haar", engine="tf")


def test_auto_engine_falls_back_to_the_tf_graph_when_tflite_fails(monkeypatch) -> None:
    import tensorflow as tf

    import fer_core.detectors.retinaface as rf

    if tf.config.get_visible_devices("GPU"):
        pytest.skip("with a GPU, auto picks the TF graph and never tries TFLite")

    def broken(*args, **kwargs):
        raise RuntimeError("no TFLite converter on this platform")

    monkeypatch.setattr(rf, "tflite_model", broken)
    monkeypatch.setattr(rf, "_GRAPHS", {k: v for k, v in rf._GRAPHS.items() if k[1] != "tflite"})
    with pytest.warns(RuntimeWarning, match="TensorFlow Lite engine failed.*no TFLite converter"):
        det = create_detector("retinaface")
    assert det.engine == "tf" and len(det.detect([astronaut()])[0]) == 1
    with pytest.raises(RuntimeError, match="no TFLite converter"):
        create_detector("retinaface", engine="tflite")  # asked for by name: an error, not a fallback


def test_converted_model_is_cached_and_a_bad_cache_file_is_replaced(tmp_path, monkeypatch) -> None:
    spec = RETINAFACE_MOBILENET_V2
    graph = _graph_bytes()
    first = tflite_model(graph, spec.sha256, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("retinaface-*.tflite")
    assert cached.read_bytes() == first and spec.sha256[:16] in cached.name

    import tensorflow as tf

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the model")

    with monkeypatch.context() as m:
        m.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", no_conversion)
        assert tflite_model(graph, spec.sha256, cache_dir=tmp_path) == first

    cached.write_bytes(first[:1000])  # a truncated file no longer matches the hash in its name
    assert tflite_model(graph, spec.sha256, cache_dir=tmp_path) == first
    assert cached.read_bytes() == first


# ---------------------------------------------------------------- registry


def test_registry_lists_and_rejects_unknown() -> None:
    assert {"retinaface", "haar"} <= set(list_detectors())
    with pytest.raises(ConfigError, match="haar.*retinaface"):
        create_detector("mtcnn")
    with pytest.raises(ConfigError, match="score_thresh"):
        create_detector("haar", score_thresh=0.5)
    with pytest.raises(ConfigError, match="nms_iou"):
        create_detector("haar", nms_iou=0.0)
    assert create_detector("haar", min_face_size=40).config.min_face_size == 40
    assert create_detector("haar").config.score_threshold == 0.0  # family default
    assert DetectorConfig().score_threshold == 0.9


def test_register_detector_decorator() -> None:
    try:

        @register_detector("_whole_image_test")
        class WholeImage(Detector):
            version = "1"

            def _detect_one(self, image: np.ndarray) -> Detections:
                h, w = image.shape[:2]
                return Detections(np.array([[0, 0, w, h]], np.float32), np.array([1.0], np.float32),
                                  np.full((1, 5, 2), np.nan, np.float32))

        assert "_whole_image_test" in list_detectors()
        det = create_detector("_whole_image_test", max_side=100)
        assert det.name == "_whole_image_test"
        (face,) = det.detect([np.zeros((300, 400, 3), np.uint8)])[0]
        np.testing.assert_allclose(face.box, (0, 0, 400, 300), atol=1e-3)  # mapped back from 100 px
    finally:
        _REGISTRY.pop("_whole_image_test", None)


# ---------------------------------------------------------------- contract, every family


@pytest.mark.parametrize("name", list_detectors())
def test_detector_contract(name: str) -> None:
    det = get_detector(name)
    assert det.name == name and isinstance(det.version, str) and det.version
    img = astronaut()
    blank = np.zeros((200, 300, 3), np.uint8)
    tiny = np.full((7, 5, 3), 255, np.uint8)
    results = det.detect([img, blank, tiny])
    assert isinstance(results, list) and len(results) == 3 and all(isinstance(r, list) for r in results)
    assert results[1] == [] and results[2] == []
    assert len(results[0]) >= 1
    scores = [f.score for f in results[0]]
    assert scores == sorted(scores, reverse=True)
    for face in results[0]:
        assert isinstance(face, Face)
        assert len(face.box) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in face.box)
        x, y, w, h = face.box
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512
        assert min(w, h) >= det.config.min_face_size
        assert isinstance(face.score, float) and 0.0 <= face.score <= 1.0
        assert face.landmarks.dtype == np.float32 and face.landmarks.shape == (5, 2)
        lm_finite = np.isfinite(face.landmarks)
        assert lm_finite.all() or not lm_finite.any()  # all known or all NaN
    best = xywh_to_xyxy(results[0][0].box)
    assert iou(best, np.asarray(ASTRONAUT_FACE_XYXY)) > 0.5


# ---------------------------------------------------------------- the detection policy (bench/bench_detection_pr.py)


def test_default_policy_is_the_measured_size_dependent_threshold() -> None:
    cfg = RetinaFaceDetector.default_config
    assert (cfg.score_threshold, cfg.small_face_px, cfg.small_face_threshold) == (0.9, 96, 0.5)
    assert (cfg.max_side, cfg.min_face_size, cfg.nms_iou) == (1024, 20, 0.4)
    assert DetectorConfig().small_face_px == 0  # the generic default stays one flat threshold (Haar's too)
    assert create_detector("haar").config.small_face_px == 0


def _small_lfw_face(index: int = 1, px: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """One of scikit-image's LFW faces (25x25 grey, shipped) enlarged to ``px`` with a mirrored border of
    a third of that for context, on a grey 640x480 photo: a soft, small face like a crowd's. Returns the
    RGB image and the face's box (x1, y1, x2, y2)."""
    import cv2
    from skimage import data

    grey = (np.clip(data.lfw_subset()[index], 0, 1) * 255).astype(np.uint8)
    face = cv2.resize(grey, (px, px), interpolation=cv2.INTER_CUBIC)
    border = px // 3
    face = cv2.copyMakeBorder(face, border, border, border, border, cv2.BORDER_REFLECT_101)
    canvas = np.full((480, 640), 128, np.uint8)
    canvas[100:100 + face.shape[0], 200:200 + face.shape[1]] = face
    x, y = 200 + border, 100 + border
    return np.repeat(canvas[..., None], 3, axis=2), np.array([x, y, x + px, y + px], np.float64)


def test_a_small_face_the_old_flat_threshold_dropped_is_found_now(retina: Detector) -> None:
    """A soft 40-px face scores between the graph's floor and 0.9 (0.65 on TFLite): the old default (one
    flat 0.9) dropped it; the size-dependent default keeps it, boxed where it is."""
    image, box = _small_lfw_face()
    old = create_detector("retinaface", score_threshold=0.9, small_face_px=0)
    assert old.detect([image]) == [[]]
    (face,) = retina.detect([image])[0]
    assert 0.5 <= face.score < 0.9 and min(face.box[2:]) < 96
    assert iou(xywh_to_xyxy(face.box), box) > 0.3  # the benchmark's rule; the crop is tighter than a box


def test_size_dependent_threshold_applies_below_small_face_px_only() -> None:
    """The astronaut's face box is ~93 px on its shorter side: the small-face threshold governs it only
    when small_face_px is above that, and score_threshold governs it otherwise."""
    img = astronaut()
    graph = _graph_bytes()

    def found(**cfg) -> int:
        return len(create_detector("retinaface", weights_bytes=graph, **cfg).detect([img])[0])

    assert found(score_threshold=1.0, small_face_px=200, small_face_threshold=0.5) == 1  # small rule: kept
    assert found(score_threshold=1.0, small_face_px=60, small_face_threshold=0.5) == 0  # large: 1.0 drops it
    assert found(score_threshold=0.5, small_face_px=200, small_face_threshold=1.0) == 0  # small rule drops it
    assert found(score_threshold=0.5, small_face_px=0, small_face_threshold=1.0) == 1  # 0: off


@pytest.mark.parametrize("key,value", [("small_face_px", -1), ("small_face_px", 1.5), ("small_face_px", True),
                                       ("small_face_threshold", 1.5), ("small_face_threshold", "low")])
def test_policy_options_are_validated_naming_the_key(key, value) -> None:
    with pytest.raises(ConfigError, match=rf"detector\.{key} must be"):
        create_detector("retinaface", **{key: value})
    from fer_core.config import load_dataclass
    from fer_core.pipeline_config import InferenceConfig

    with pytest.raises(ConfigError, match=rf"detector\.{key}"):  # when a config file is read, before loading
        load_dataclass(InferenceConfig, {"detector": {key: value}})
