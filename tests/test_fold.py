"""BatchNormalization folding: same outputs as the loaded model, for every registered model and
every training architecture; pairs that must not fold are left alone."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.models import create_emotion_model, list_models
from fer_core.models.fold import fold_batch_norm, foldable_pairs
from fer_core.preprocess import preprocess

keras = pytest.importorskip("keras")


def _inputs(model, n: int = 16, seed: int = 3) -> np.ndarray:
    shape = (n,) + tuple(model.input_shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _randomise_batch_norm(model, seed: int = 0) -> None:
    """Non-trivial moving statistics, as after training (fresh layers are the identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(0, 0.5, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.2, 3, var.shape)])


def _n_batch_norm(model) -> int:
    return sum(type(layer).__name__ == "BatchNormalization" for layer in model.layers)


@pytest.mark.parametrize("name", list_models())
def test_registered_models_fold_to_the_same_outputs(name):
    m = create_emotion_model(name)
    x = preprocess(np.random.default_rng(1).integers(0, 256, (12, 64, 64), dtype=np.uint8), m.spec)
    folded = fold_batch_norm(m.keras_model)
    assert folded is not m.keras_model and foldable_pairs(m.keras_model)
    assert _n_batch_norm(folded) == _n_batch_norm(m.keras_model) - len(foldable_pairs(m.keras_model))
    np.testing.assert_allclose(folded.predict_on_batch(x), m.keras_model.predict_on_batch(x), atol=1e-5)
    # EmotionModel serves the folded copy and keeps the loaded model for Grad-CAM
    assert m._inference_model is not m.keras_model
    np.testing.assert_allclose(m.predict_preprocessed(x), m.keras_model.predict_on_batch(x), atol=1e-5)
    from fer_core.models import EmotionModel

    assert EmotionModel(m.keras_model, m.spec, fold=False)._inference_model is m.keras_model


@pytest.mark.parametrize("architecture", ["vgg", "resnet", "mini_xception"])
def test_every_architecture_folds_to_the_same_outputs(architecture):
    from fer_core.lab.architectures import build_model

    options = {"vgg": {"widths": (8, 16), "convs_per_stage": 2, "dense": 16},
               "resnet": {"widths": (8, 16), "blocks_per_stage": 2},
               "mini_xception": {"widths": (8, 16)}}[architecture]
    model = build_model(architecture, (48, 48, 1), **options)
    _randomise_batch_norm(model)
    folded = fold_batch_norm(model)
    assert _n_batch_norm(model) > 0 and _n_batch_norm(folded) == 0  # each BN follows a linear conv/dense
    x = _inputs(model)
    np.testing.assert_allclose(folded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)


def test_pairs_that_must_not_fold_are_left_alone():
    layers = keras.layers
    inp = keras.Input((16, 16, 3))
    shared = layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared")(inp)  # feeds BN and Add
    a = layers.BatchNormalization(name="bn_shared")(shared)
    b = layers.Add()([a, shared])
    act = layers.Conv2D(4, 3, padding="same", activation="relu", name="with_relu")(b)  # non-linear before BN
    c = layers.BatchNormalization(name="bn_after_relu")(act)
    d = layers.Conv2D(4, 3, padding="same", name="plain")(c)
    e = layers.BatchNormalization(axis=1, name="bn_axis1")(d)  # not the channel axis
    f = layers.Conv2D(4, 1, name="ok")(e)
    g = layers.BatchNormalization(name="bn_ok")(f)
    out = layers.Dense(7, activation="softmax")(layers.GlobalAveragePooling2D()(g))
    model = keras.Model(inp, out)
    _randomise_batch_norm(model)
    assert foldable_pairs(model) == {"ok": "bn_ok"}
    folded = fold_batch_norm(model)
    x = _inputs(model)
    np.testing.assert_allclose(folded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)
    assert _n_batch_norm(folded) == 3


def test_a_fold_that_changes_outputs_serves_the_original(monkeypatch):
    from fer_core.models import fold
    from fer_core.lab.architectures import build_model

    model = build_model("vgg", (48, 48, 1), widths=(8,), convs_per_stage=1, dense=0)
    _randomise_batch_norm(model)
    real = fold._folded_weights
    monkeypatch.setattr(fold, "_folded_weights", lambda p, bn: [w * 1.5 for w in real(p, bn)])
    assert fold_batch_norm(model) is model
