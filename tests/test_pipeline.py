"""FacePipeline end to end on a real photo, with bad rows in the same batch."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from fer_core.errors import ConfigError
from fer_core.labels import EMOTIONS
from fer_core.pipeline import FacePipeline, InferenceConfig, image_probabilities, image_summary
from fer_core.sentiment import SentimentConfig, score_sentiment
from fer_core.types import Face, FaceResult, ImageResult

skimage_data = pytest.importorskip("skimage.data")
Image = pytest.importorskip("PIL.Image")


def encode(rgb: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.from_config(InferenceConfig())


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # 512x512 RGB, one face


class CountingModel:
    """Wraps the real EmotionModel to count predict calls (the batching contract)."""

    def __init__(self, model):
        self.inner, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, crops):
        self.calls.append(len(crops))
        return self.inner.predict(crops)


def test_batch_with_good_and_bad_rows(pipeline, astronaut):
    too_big = encode(np.zeros((600, 600, 3), np.uint8), "PNG")  # 360k px, a few KB of PNG
    small = FacePipeline(pipeline.detector, pipeline.model, max_pixels=300_000)  # astronaut: 262k px
    blank = np.full((200, 300, 3), 127, np.uint8)
    batch = [encode(astronaut), None, b"", b"this is not an image", encode(astronaut)[:200], encode(blank), too_big]
    results = small.score_images(batch)
    statuses = [r.status for r in results]
    assert statuses == ["ok", "empty", "empty", "decode_error", "decode_error", "no_face", "too_large"]
    ok = results[0]
    assert (ok.width, ok.height) == (512, 512) and ok.error is None
    assert len(ok.faces) == 1
    face = ok.faces[0]
    x, y, w, h = face.face.box
    assert 150 < x + w / 2 < 260 and 50 < y + h / 2 < 160, face.face.box  # her face, upper middle
    assert face.face.score > 0.9
    assert face.probabilities.shape == (7,) and abs(float(face.probabilities.sum()) - 1) < 1e-4
    assert face.emotion == EMOTIONS[int(np.argmax(face.probabilities))]
    assert face.sentiment in ("positive", "neutral", "negative") and -1 <= face.valence <= 1
    for r in results[1:5] + results[6:]:
        assert r.error and not r.faces
    assert results[5].error is None and results[5].width == 300


def test_all_faces_of_a_batch_are_classified_in_one_call(pipeline, astronaut):
    counting = CountingModel(pipeline.model)
    p = FacePipeline(pipeline.detector, counting)
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    results = p.score_images([encode(astronaut), b"junk", encode(flipped)])
    assert [r.status for r in results] == ["ok", "decode_error", "ok"]
    assert counting.calls == [2]


class FailsOnShape:
    """The real detector, except that it raises on images of one shape (a detector bug on one image)."""

    def __init__(self, detector, shape):
        self.inner, self.shape, self.version = detector, shape, detector.version

    def detect(self, images):
        if any(im.shape == self.shape for im in images):
            raise RuntimeError("detector bug")
        return self.inner.detect(images)


def test_a_detector_failure_only_fails_its_image(pipeline, astronaut):
    blank = np.full((200, 300, 3), 127, np.uint8)
    p = FacePipeline(FailsOnShape(pipeline.detector, blank.shape), pipeline.model)
    results = p.score_images([encode(blank, "PNG"), encode(astronaut)])
    assert [r.status for r in results] == ["decode_error", "ok"]
    assert "face detection failed" in results[0].error and "detector bug" in results[0].error
    assert len(results[1].faces) == 1


def test_stages_compose_like_score_images(pipeline, astronaut):
    data = encode(astronaut, "PNG")
    [image] = pipeline.decode([data])
    [faces] = pipeline.detect([image])
    crops = pipeline.align(image, faces)
    spec = pipeline.model.spec
    assert crops.shape == (len(faces), spec.input_size, spec.input_size, 3) and crops.dtype == np.uint8
    probs = pipeline.classify(crops)
    valence, labels = pipeline.sentiment(probs)
    [result] = pipeline.score_images([data])
    np.testing.assert_allclose(result.faces[0].probabilities, probs[0], atol=1e-5)
    assert result.faces[0].sentiment == labels[0]
    assert pipeline.versions["model_version"] == pipeline.model.version


def test_empty_batch(pipeline):
    assert pipeline.score_images([]) == []


def _face_result(box, probs) -> FaceResult:
    p = np.asarray(probs, np.float32)
    v, s = score_sentiment(p[None])
    return FaceResult(Face(box=box, score=0.99), p, EMOTIONS[int(np.argmax(p))], s[0], float(v[0]))


def test_image_probabilities_are_face_area_weighted():
    happy = np.eye(7, dtype=np.float32)[3]
    sad = np.eye(7, dtype=np.float32)[4]
    result = ImageResult(status="ok", faces=[_face_result((0, 0, 30, 30), happy), _face_result((0, 0, 10, 10), sad)])
    probs = image_probabilities(result)
    np.testing.assert_allclose(probs, 0.9 * happy + 0.1 * sad, atol=1e-6)
    row = image_summary(result, SentimentConfig())
    assert row["n_faces"] == 2 and row["dominant_emotion"] == "happy"
    assert row["p_happy"] == pytest.approx(0.9) and row["p_sad"] == pytest.approx(0.1)
    assert row["valence"] == pytest.approx(0.9 - 0.08) and row["sentiment"] == "positive"
    # the image valence equals the area-weighted mean of the face valences
    assert row["valence"] == pytest.approx((900 * 1.0 + 100 * -0.8) / 1000)


def test_image_summary_without_faces():
    row = image_summary(ImageResult(status="no_face"))
    assert row["n_faces"] == 0 and row["dominant_emotion"] is None and row["p_happy"] is None
    assert image_probabilities([]) is None


def test_configure_tensorflow_validates_and_is_idempotent(pipeline):
    from fer_core.runtime import configure_tensorflow

    with pytest.raises(ConfigError, match=r"runtime\.device"):
        configure_tensorflow("tpu")
    with pytest.raises(ConfigError, match=r"runtime\.intra_threads"):
        configure_tensorflow("cpu", intra_threads=-1)
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(ConfigError, match="no GPU"):
            configure_tensorflow("gpu")
    used = configure_tensorflow()  # "auto", as the pipeline fixture already applied it
    assert used in ("cpu", "gpu") and configure_tensorflow() == used


@pytest.mark.parametrize("first, env, warned", [
    ("tensorflow", None, True),  # too late to turn oneDNN on: say so
    ("fer_core", None, False),  # fer_core turns it on before TensorFlow loads
    ("tensorflow", "0", False),  # the caller chose; nothing to warn about
])
def test_importing_tensorflow_before_fer_core_warns_about_onednn(first, env, warned):
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env is not None:
        environ["TF_ENABLE_ONEDNN_OPTS"] = env
    second = "fer_core" if first == "tensorflow" else "tensorflow"
    code = (f"import os, warnings; warnings.simplefilter('always'); import {first}; import {second}; "
            "print('onednn=' + os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    run = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert ("could not turn on oneDNN" in run.stderr) is warned
    assert f"onednn={env or '1'}" in run.stdout


def test_from_config_fails_fast_on_unknown_model():
    from fer_core.pipeline import ModelOptions

    with pytest.raises(ConfigError, match="unknown emotion model 'nope'"):
        FacePipeline.from_config(InferenceConfig(model=ModelOptions(name="nope")), configure_runtime=False)
