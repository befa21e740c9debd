"""Grad-CAM: shapes/ranges on the registered model, and localisation on a tiny trained toy model."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.gradcam import explain_faces, find_last_conv_layer, heatmaps, overlay
from fer_core.labels import EMOTION_INDEX
from fer_core.models import EmotionModel, ModelSpec, create_emotion_model
from fer_core.types import Face

keras = pytest.importorskip("keras")

SIZE, PATCH = 32, 6
HAPPY, NEUTRAL = EMOTION_INDEX["happy"], EMOTION_INDEX["neutral"]


def with_patch(rng: np.random.Generator, n: int, where: list[tuple[int, int]] | None = None):
    """Noise images; the ones with a bright square are "happy", the rest "neutral"."""
    x = rng.integers(0, 90, (n, SIZE, SIZE), dtype=np.uint8)
    y = np.full(n, NEUTRAL)
    for i in range(n):
        if where is not None or i % 2 == 0:
            r, c = where[i] if where is not None else rng.integers(0, SIZE - PATCH, 2)
            x[i, r:r + PATCH, c:c + PATCH] = 255
            y[i] = HAPPY
    return x, y


@pytest.fixture(scope="module")
def toy_model() -> EmotionModel:
    """A 2-conv net trained in a few seconds to fire on a bright square anywhere in the image."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    spec = ModelSpec(name="toy", version="0", weights=None, input_size=SIZE, channels=1, scaling="unit")
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    out = keras.layers.Dense(7, activation="softmax")(x)
    km = keras.Model(inp, out)
    km.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    from fer_core.preprocess import preprocess

    xs, ys = with_patch(rng, 384)
    hist = km.fit(preprocess(xs, spec), ys, epochs=8, batch_size=32, verbose=0)
    assert hist.history["accuracy"][-1] > 0.95, "toy model failed to learn; the test would be meaningless"
    return EmotionModel(km, spec)


def test_finds_last_conv_layer(toy_model):
    assert find_last_conv_layer(toy_model.keras_model) == "last_conv"


def test_heatmap_peaks_on_the_discriminative_patch(toy_model):
    where = [(2, 3), (20, 22), (12, 4), (24, 10)]
    crops, _ = with_patch(np.random.default_rng(1), len(where), where)
    assert (toy_model.predict(crops).argmax(axis=1) == HAPPY).all()
    maps = heatmaps(toy_model, crops)  # predicted class = happy
    assert maps.shape == (len(where), SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    for m, (r, c) in zip(maps, where):
        pr, pc = np.unravel_index(np.argmax(m), m.shape)
        assert r - 2 <= pr <= r + PATCH + 1 and c - 2 <= pc <= c + PATCH + 1, (pr, pc, r, c)
        inside = m[r:r + PATCH, c:c + PATCH].mean()
        mask = np.ones_like(m, bool)
        mask[max(r - 3, 0):r + PATCH + 3, max(c - 3, 0):c + PATCH + 3] = False
        assert inside > 3 * m[mask].mean()


def test_explicit_class_and_batching(toy_model):
    crops, _ = with_patch(np.random.default_rng(2), 5, [(4, 4)] * 5)
    a = heatmaps(toy_model, crops, class_index="happy", batch_size=2)
    b = heatmaps(toy_model, crops, class_index=HAPPY)
    np.testing.assert_allclose(a, b, atol=1e-5)
    per_row = heatmaps(toy_model, crops, class_index=["happy"] * 5)
    np.testing.assert_allclose(per_row, b, atol=1e-5)
    assert heatmaps(toy_model, crops[:0]).shape == (0, SIZE, SIZE)
    with pytest.raises(ValueError, match="unknown emotion"):
        heatmaps(toy_model, crops, class_index="joy")


@pytest.fixture(scope="module")
def default_model() -> EmotionModel:
    return create_emotion_model("default")


def test_default_model_heatmaps_and_overlay(default_model):
    model = default_model
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 255, (3, 80, 80, 3), dtype=np.uint8)
    maps = heatmaps(model, crops)
    s = model.spec.input_size
    assert maps.shape == (3, s, s) and np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    ov = overlay(crops[0], maps[0])
    assert ov.shape == (80, 80, 3) and ov.dtype == np.uint8
    grey = overlay(crops[0, ..., 0], np.ones((5, 5), np.float32), alpha=1.0)
    assert grey.shape == (80, 80, 3)
    # alpha=1 with a full-heat map is the jet colour of 1.0: dark red
    assert grey[..., 0].mean() > 100 and grey[..., 2].mean() < 30


@pytest.mark.parametrize("name", ["fer-mini-xception", "default"])
def test_registered_models_heatmaps_match_an_eager_gradient(name):
    """Grad-CAM's compiled gradient equals the plain eager computation. mini-Xception ends in a 7-filter
    convolution after the target map: computing its gradient eagerly (filter gradient included) crashed
    the process in oneDNN on an AVX-512 CPU, so there the reference takes the map as a watched input of
    the layers after it, which needs no filter gradient."""
    import cv2
    import tensorflow as tf

    from fer_core.gradcam import _grad_model
    from fer_core.preprocess import preprocess

    model = create_emotion_model(name)
    crops = np.random.default_rng(5).integers(0, 255, (4, 80, 80, 3), dtype=np.uint8)
    maps = heatmaps(model, crops)
    s = model.spec.input_size
    assert maps.shape == (4, s, s) and np.isfinite(maps).all() and maps.max() == pytest.approx(1.0)
    grad_model, _ = _grad_model(model, None)
    x = tf.convert_to_tensor(preprocess(crops, model.spec))
    fmap, out = grad_model(x, training=False)
    km = model.keras_model
    names = [layer.name for layer in km.layers]
    start = names.index(grad_model.outputs[0]._keras_history.operation.name) + 1
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        h = fmap
        for layer in km.layers[start:]:
            h = layer(h, training=False)
        picked = tf.gather(h, np.argmax(out.numpy(), axis=1), axis=1, batch_dims=1)
        score = tf.math.log(picked + 1e-7)
    np.testing.assert_allclose(h.numpy(), out.numpy(), atol=1e-5)  # the layers after the map are a chain
    grads = tape.gradient(score, fmap).numpy()
    cams = np.maximum((grads.mean(axis=(1, 2), keepdims=True) * fmap.numpy()).sum(-1), 0.0)
    for cam, got in zip(cams, maps):
        ref = cv2.resize(cam.astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(got, ref / ref.max(), atol=1e-4)


def test_explain_faces_on_a_photo(default_model):
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    lms = np.array([[197, 98], [243, 97], [222, 121], [201, 150], [239, 149]], np.float32)
    face = Face(box=(170.0, 50.0, 100.0, 130.0), score=0.99, landmarks=lms)
    out = explain_faces(image, [face, face], default_model, size=96)
    assert len(out) == 2 and out[0].shape == (96, 96, 3) and out[0].dtype == np.uint8
    assert explain_faces(image, [], default_model) == []


def _wrap(km, size: int) -> EmotionModel:
    return EmotionModel(km, ModelSpec(name=km.name, version="0", weights=None, input_size=size))


def test_target_layer_skips_trailing_pooling_and_dropout():
    inp = keras.Input((24, 24, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.Activation("relu", name="relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.SpatialDropout2D(0.1, name="drop")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    km = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(x))
    assert find_last_conv_layer(km) == "relu"
    maps = heatmaps(_wrap(km, 24), np.random.default_rng(0).integers(0, 255, (2, 24, 24), dtype=np.uint8),
                    layer_name="conv")
    assert maps.shape == (2, 24, 24)


def test_nested_backbone_model(tmp_path):
    """A backbone Model used as one layer (the transfer-learning case), loaded from disk."""
    bi = keras.Input((16, 16, 3))
    bx = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(bi)
    keras.Model(bi, bx, name="backbone").save(tmp_path / "bb.keras")
    backbone = keras.models.load_model(tmp_path / "bb.keras", compile=False)
    inp = keras.Input((16, 16, 1))
    x = backbone(keras.layers.Concatenate()([inp, inp, inp]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    km = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(x))
    assert find_last_conv_layer(km) == "backbone"
    maps = heatmaps(_wrap(km, 16), np.random.default_rng(0).integers(0, 255, (3, 16, 16), dtype=np.uint8))
    assert maps.shape == (3, 16, 16) and np.isfinite(maps).all() and maps.max() <= 1.0


def test_crop_trained_model_maps_sit_where_its_centre_crop_came_from(toy_model):
    """A crop-trained spec (frame_size) sees the centre crop; its maps are drawn on the whole face."""
    frame = SIZE + 8
    spec = ModelSpec(name="toy-crops", version="0", weights=None, input_size=SIZE, frame_size=frame, channels=1,
                     scaling="unit")
    cropped = EmotionModel(toy_model.keras_model, spec)
    where = [(6, 8), (26, 24)]  # frame coordinates, inside the centre crop [4, 36)
    rng = np.random.default_rng(2)
    faces = rng.integers(0, 90, (len(where), frame, frame), dtype=np.uint8)
    for face, (r, c) in zip(faces, where):
        face[r:r + PATCH, c:c + PATCH] = 255
    maps = heatmaps(cropped, faces)
    assert maps.shape == (len(where), frame, frame)
    assert maps[:, :4].max() == maps[:, -4:].max() == maps[:, :, :4].max() == maps[:, :, -4:].max() == 0.0
    for m, (r, c) in zip(maps, where):
        pr, pc = np.unravel_index(np.argmax(m), m.shape)
        assert r - 2 <= pr <= r + PATCH + 1 and c - 2 <= pc <= c + PATCH + 1, (pr, pc, r, c)
