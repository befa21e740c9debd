"""Training, fine-tuning and evaluation on tiny synthetic data (seconds; no ../shared)."""
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from _fer_synthetic import synthetic_faces, write_fer_csv
from fer_core.config import load_dataclass
from fer_core.lab.data import FaceDataset
from fer_core.errors import ConfigError, WeightsError
from fer_core.preprocess import preprocess
from fer_core.lab.batches import make_dataset
from fer_core.lab.config import TrainConfig, model_spec
from fer_core.lab.optim import class_weights
from fer_core.lab.train import train

TINY_MODEL = {"architecture": "vgg", "dropout": 0.0,
              "options": {"widths": [8, 16], "convs_per_stage": 1, "dense": 0, "stage_dropout": 0.0, "bn_momentum": 0.5}}
NO_AUG = {"flip": False, "shift": 0.0, "rotation_deg": 0.0, "zoom": 0.0, "brightness": 0.0, "contrast": 0.0, "erasing_prob": 0.0}


def tiny_config(tmp_path: Path, csv_path: Path, **over) -> TrainConfig:
    raw = {
        "data": {"path": str(csv_path), "val_fraction": 0.2},
        "output_dir": str(tmp_path / "run"),
        "model": dict(TINY_MODEL),
        "augment": dict(NO_AUG),
        "optim": {"epochs": 4, "batch_size": 16, "learning_rate": 0.01, "warmup_epochs": 0, "label_smoothing": 0.0},
        "seed": 1,
    }
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return load_dataclass(TrainConfig, raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    csv_path = write_fer_csv(tmp / "fer.csv", n_per_class=24)
    cfg = tiny_config(tmp, csv_path)
    metrics = train(cfg, command="pytest")
    return cfg, metrics, csv_path


def test_tiny_training_lowers_the_loss_and_learns(trained):
    cfg, metrics, _ = trained
    rows = list(csv.DictReader(open(Path(cfg.output_dir) / "checkpoints" / "history.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == cfg.optim.epochs
    assert losses[-1] < 0.7 * losses[0]
    assert metrics["PublicTest_accuracy"] > 0.5  # chance is 1/7
    # the per-epoch fixed-sample check (inference mode, unaugmented training faces) tracks the same learning
    fit_losses = [float(r["fit_loss"]) for r in rows]
    assert fit_losses[-1] < fit_losses[0] and float(rows[-1]["fit_accuracy"]) > 0.5


def test_fixed_sample_fit_is_accuracy_and_cross_entropy_of_the_model(trained):
    import keras

    from fer_core.lab.measure import fixed_sample_fit

    cfg, _, _ = trained
    model = keras.models.load_model(Path(cfg.output_dir) / "model.keras", compile=False)
    images, labels = synthetic_faces(5, seed=9)
    spec = model_spec(cfg.model)
    got = fixed_sample_fit(model, images, labels, spec)
    probs = np.asarray(model(preprocess(images, spec), training=False))
    assert got["fit_accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())
    assert got["fit_loss"] == pytest.approx(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)).mean(), rel=1e-4)


def test_outputs_spec_sha256_and_card(trained):
    from fer_core.models.registry import spec_from_json
    from fer_core.weights import sha256_file

    cfg, metrics, _ = trained
    out = Path(cfg.output_dir)
    text = (out / "model.spec.json").read_text()
    assert json.loads(text)["weights_sha256"] == sha256_file(out / "model.keras")
    spec = spec_from_json(text)
    assert spec.input_size == 48 and spec.channels == 1 and spec.scaling == "minus1_1"
    card = (out / "model_card.md").read_text()
    assert "python -m fer_core.train" not in card or "pytest" in card
    assert f"{metrics['PublicTest_accuracy']}" in card and "Responsible use" in card
    low, high = (float(v) for v in metrics["PublicTest_accuracy_95ci"].split("-"))
    assert low <= metrics["PublicTest_accuracy"] <= high and f"| PublicTest_accuracy_95ci | {low:.4f}-{high:.4f} |" in card
    assert json.loads((out / "metrics.json").read_text())["PublicTest_accuracy"] == metrics["PublicTest_accuracy"]
    # the mix calibration (fer_core.quantify) is the served model's mean probabilities per class on validation
    from fer_core import create_emotion_model
    from fer_core.quantify import class_conditional_probs
    from fer_core.lab.train import split_data

    _, val, _, _ = split_data(cfg)
    model = create_emotion_model(str(out / "model.keras"))
    np.testing.assert_allclose(spec.mix_matrix(tta=False), class_conditional_probs(model.predict(val.images), val.labels),
                               atol=1e-4)
    model.tta = True
    np.testing.assert_allclose(spec.mix_matrix(tta=True), class_conditional_probs(model.predict(val.images), val.labels),
                               atol=1e-4)
    assert spec.mix_calibration["faces"] == len(val)


def test_save_load_round_trip_gives_identical_outputs(trained):
    import keras

    from fer_core.models import create_emotion_model

    cfg, _, _ = trained
    path = Path(cfg.output_dir) / "model.keras"
    faces, _ = synthetic_faces(3, seed=9)
    in_memory = keras.models.load_model(Path(cfg.output_dir) / "checkpoints" / "best.keras", compile=False)
    expected = np.asarray(in_memory.predict_on_batch(preprocess(faces, model_spec(cfg.model))))
    loaded = create_emotion_model(str(path))
    np.testing.assert_allclose(loaded.predict(faces), expected, rtol=1e-5, atol=1e-6)


def test_corrupted_registered_weights_are_refused(trained, tmp_path):
    from fer_core.weights import WeightSpec, fetch_weights

    cfg, _, _ = trained
    out = Path(cfg.output_dir)
    digest = json.loads((out / "model.spec.json").read_text())["weights_sha256"]
    assert fetch_weights(WeightSpec("tiny", "model.keras", digest, str(out / "model.keras"))).exists()
    bad = tmp_path / "model.keras"
    data = bytearray((out / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=digest):
        fetch_weights(WeightSpec("tiny", "model.keras", digest, str(bad)))


def test_training_and_inference_preprocess_identically(trained):
    """The tensors the model trains on equal what EmotionModel feeds it for the same face."""
    cfg, _, _ = trained
    spec = model_spec(cfg.model)
    faces, labels = synthetic_faces(2, seed=4)
    ds = make_dataset(faces, labels, spec, batch_size=len(faces), training=False)
    (x_train, _), = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(x_train, preprocess(faces, spec))
    # an RGB 96x96 crop (as the aligner produces) goes through the same function to the same shape/range
    rgb = np.repeat(np.kron(faces, np.ones((2, 2), np.uint8))[..., None], 3, axis=-1)
    x_rgb = preprocess(rgb, spec)
    assert x_rgb.shape == x_train.shape and np.abs(x_rgb - x_train).max() < 0.05


def test_resume_continues_from_the_last_checkpoint(trained, capsys):
    cfg, _, _ = trained
    more = replace(cfg, optim=replace(cfg.optim, epochs=cfg.optim.epochs + 1))
    train(more, command="pytest resume")
    printed = capsys.readouterr().out
    assert "resuming from" in printed
    assert "optimizer state (moments, step " in printed and "restored from" in printed
    rows = list(csv.DictReader(open(Path(cfg.output_dir) / "checkpoints" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, more.optim.epochs + 1))
    # each process that trained the run is a slice, kept in the resume state and told by the model card
    slices = json.loads((Path(cfg.output_dir) / "checkpoints" / "state.json").read_text())["slices"]
    assert [(s["first_epoch"], s["last_epoch"]) for s in slices] == [(1, cfg.optim.epochs), (more.optim.epochs,) * 2]
    assert all(s["started"] and s["cpu"] for s in slices)
    assert f"Slices: 2, each resumed from the last checkpoint; epochs 1-{cfg.optim.epochs} (" in \
        (Path(cfg.output_dir) / "model_card.md").read_text()


def test_init_from_fine_tunes_a_trained_model(trained, tmp_path):
    """init_from starts from a model file's weights (how v3 continued v2, and how users fine-tune
    the default on their own faces): one near-zero-LR epoch keeps what it knew, and the card says so."""
    from fer_core.lab.loop import build_from_config

    cfg, metrics, csv_path = trained
    source = str(Path(cfg.output_dir) / "model.keras")
    tuned = tiny_config(tmp_path, csv_path, model={"init_from": source, "version": "2"},
                        optim={"epochs": 1, "learning_rate": 1e-6})
    import keras

    start, original = build_from_config(tuned), keras.models.load_model(source, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(start.get_weights(), original.get_weights()))
    again = train(tuned, command="pytest init_from")
    assert again["PublicTest_accuracy"] >= metrics["PublicTest_accuracy"] - 0.1 > 0.4  # random init after 1 epoch: ~1/7
    assert f"Initialised from `{source}`" in (tmp_path / "run" / "model_card.md").read_text()
    missing = tiny_config(tmp_path, csv_path, model={"init_from": str(tmp_path / "gone.keras")})
    with pytest.raises(ConfigError, match="gone.keras is not a file; train that model first"):
        build_from_config(missing)


def test_init_from_a_whole_face_model_starts_a_crop_trained_run_with_its_weights(trained, tmp_path):
    """A vgg trained on whole 48x48 faces starts a run on smaller crops of them (model.frame_size; issue 25's
    v7): the same weights at the new input size; a net whose weights do not fit is refused."""
    from fer_core.lab.loop import build_from_config

    cfg, _, csv_path = trained
    source = str(Path(cfg.output_dir) / "model.keras")
    size = cfg.model.input_size
    crops = tiny_config(tmp_path, csv_path, model={"init_from": source, "input_size": size - 4, "frame_size": size})
    import keras

    start, original = build_from_config(crops), keras.models.load_model(source, compile=False)
    assert tuple(start.input_shape[1:]) == (size - 4, size - 4, cfg.model.channels)
    assert all(np.array_equal(a, b) for a, b in zip(start.get_weights(), original.get_weights()))
    flat = keras.Sequential([keras.Input((size, size, cfg.model.channels)), keras.layers.Conv2D(4, 3),
                             keras.layers.Flatten(), keras.layers.Dense(7)])  # a head sized by its input
    flat.save(tmp_path / "flat.keras")
    other = tiny_config(tmp_path, csv_path, model={"init_from": str(tmp_path / "flat.keras"), "input_size": size - 4,
                                                   "frame_size": size})
    with pytest.raises(ConfigError, match=r"weights do not fit the same net at the configured input .*set "
                                          "model.input_size to the model's own"):
        build_from_config(other)


def test_compare_pairs_a_candidate_checkpoint_with_the_served_model(trained, tmp_path):
    """fer_core.lab.compare scores a committed portable checkpoint against the default on the same faces:
    McNemar's counts are the two models' disagreements, and the ensemble weight is chosen on validation
    and only applied to the test split."""
    import keras

    from fer_core.lab import checkpoint
    from fer_core.lab.compare import WEIGHTS, compare
    from fer_core.lab.loop import run_identity

    cfg, _, _ = trained
    weights = keras.models.load_model(Path(cfg.output_dir) / "model.keras", compile=False).get_weights()
    source = checkpoint.write(tmp_path / "candidate.npz", weights, weights, {"epoch": 4}, "", run_identity(cfg))
    result = compare(cfg, source, "default", candidate_tta="flip", ensemble=True)
    for split in ("validation", "PublicTest"):
        block = result[split]
        for mode in ("served_single", "served_flip", "candidate_single", "candidate_flip"):
            assert 0.0 <= block[mode]["accuracy"] <= 1.0 and block[mode]["n"] == block["served_single"]["n"]
        paired, n = block["mcnemar"]["single_vs_single"], block["served_single"]["n"]
        gap = round((block["served_single"]["accuracy"] - block["candidate_single"]["accuracy"]) * n)
        assert abs(paired["only_served_right"] - paired["only_candidate_right"] - gap) <= 1  # accuracies are rounded
        assert 0.0 <= paired["p_value"] <= 1.0
        assert block["ensemble"]["served_weight"] in WEIGHTS
    assert "ensemble_curve" in result["validation"] and "ensemble_curve" not in result["PublicTest"]
    best = max(result["validation"]["ensemble_curve"].values())
    assert result["validation"]["ensemble_curve"][str(result["PublicTest"]["ensemble"]["served_weight"])] == best
    # the command's default mode is the one the net can serve: flip for a whole-face net (ten-crop needs crops)
    from fer_core.lab.compare import main

    out = tmp_path / "compare.json"
    assert main(["--config", str(_write_yaml(tmp_path / "c.yaml", cfg)), "--checkpoint", str(source),
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["candidate_tta"] == "flip"


def _candidate_checkpoint(cfg, tmp_path: Path) -> Path:
    """The trained tiny net as a committed portable checkpoint (what compare and ensemble read)."""
    import keras

    from fer_core.lab import checkpoint
    from fer_core.lab.loop import run_identity

    weights = keras.models.load_model(Path(cfg.output_dir) / "model.keras", compile=False).get_weights()
    return checkpoint.write(tmp_path / "candidate.npz", weights, weights, {"epoch": 4}, "", run_identity(cfg))


def test_compare_reads_the_ensemble_the_merged_model_serves_in_both_modes(trained, tmp_path):
    """compare's ensemble figures (flip, and single pass at the same weight) are what the model merged by
    fer_core.lab.ensemble at compare's chosen weight scores on the same validation faces, by another code path."""
    from fer_core.lab.compare import compare
    from fer_core.lab.ensemble import main

    cfg, _, _ = trained
    cfg = replace(cfg, model=replace(cfg.model, crop_margin=0.0))  # v5's framing: members share one face
    source = _candidate_checkpoint(cfg, tmp_path)
    result = compare(cfg, source, "default", candidate_tta="flip", ensemble=True)
    block, n = result["validation"], result["validation"]["served_flip"]["n"]
    w = block["ensemble"]["served_weight"]
    assert block["ensemble_single"]["served_weight"] == w
    paired = block["ensemble_single"]["mcnemar_vs_served_flip"]
    gap = round((block["served_flip"]["accuracy"] - block["ensemble_single"]["accuracy"]) * n)
    assert abs(paired["only_served_right"] - paired["only_candidate_right"] - gap) <= 1
    assert "ensemble_single" in result["PublicTest"]
    out = tmp_path / "ensemble"
    assert main(["--config", str(_write_yaml(tmp_path / "candidate.yaml", cfg)), "--checkpoint", str(source),
                 "--served-weight", str(w), "--out", str(out)]) == 0
    merged = json.loads((out / "metrics.json").read_text())
    assert abs(merged["val_accuracy"] - block["ensemble_single"]["accuracy"]) <= 1.5 / n
    assert abs(merged["val_accuracy_tta"] - block["ensemble"]["accuracy"]) <= 1.5 / n


def test_an_ensemble_is_served_as_one_model_whose_flip_is_the_members_weighted_mean(trained, tmp_path, capsys):
    """fer_core.lab.ensemble merges the default and a candidate into one .keras file with a sidecar: loaded
    by path like any model (BatchNormalization folded), its flip TTA is w x default's flip + (1 - w) x the
    candidate's, it carries its own mix calibration, and the job's single-image CLI scores a photo with it."""
    from fer_core.lab.compare import candidate_model
    from fer_core.lab.ensemble import main
    from fer_core.models.registry import create_emotion_model

    cfg, _, _ = trained
    cfg = replace(cfg, model=replace(cfg.model, crop_margin=0.0))  # v5's framing: members share one face
    source = _candidate_checkpoint(cfg, tmp_path)
    out = tmp_path / "ensemble"
    config = _write_yaml(tmp_path / "candidate.yaml", cfg)
    assert main(["--config", str(config), "--checkpoint", str(source), "--served-weight", "0.7",
                 "--name", "fer-vgg-ensemble", "--version", "t1", "--out", str(out)]) == 0
    served = create_emotion_model(str(out / "model.keras"), tta=True)
    assert served.version == "fer-vgg-ensemble@t1"
    assert served.inference_model is not served.keras_model  # the merged graph folds like any net
    assert set(served.spec.mix_calibration) >= {"single", "tta"}
    assert [m["weight"] for m in served.spec.extra["members"]] == [0.7, 0.3]
    faces = synthetic_faces(6, seed=5)[0]
    v5 = create_emotion_model("default", tta=True)
    tiny, _ = candidate_model(cfg, source)
    expected = 0.7 * v5.predict(faces) + 0.3 * _predict(tiny, faces, model_spec(cfg.model), tta=True)
    np.testing.assert_allclose(served.predict(faces), expected, atol=1e-4)
    assert not np.allclose(expected, v5.predict(faces), atol=1e-3)  # the candidate's share shows
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["val_accuracy_tta"] <= 1.0 and metrics["max_abs_diff_vs_members_flip"] <= 1e-4
    assert "PublicTest" not in (out / "model_card.md").read_text().split("test split")[0]

    from _images import astronaut
    from PIL import Image

    from fer_core.cli import main as cli

    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    capsys.readouterr()  # the build's own report
    assert cli(["predict", str(photo), "--model", str(out / "model.keras"), "--json", "--explain",
                str(tmp_path / "cams")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["status"] == "ok" and len(result[0]["faces"]) == 1
    assert abs(sum(result[0]["faces"][0]["probabilities"].values()) - 1.0) < 1e-3
    assert list((tmp_path / "cams").glob("*_gradcam.png"))  # Grad-CAM reads the merged graph's last convolution


def _predict(model, faces, spec, tta):
    from fer_core.lab.measure import predict_probs

    return predict_probs(model, faces, spec, tta=tta)


def test_an_ensemble_refuses_members_that_see_faces_differently(trained, tmp_path):
    """Members share one preprocessed face: a candidate framed with another crop margin than the default
    is refused before anything is written, naming the field."""
    from fer_core.lab.ensemble import build_ensemble, merge_members

    cfg, _, _ = trained  # crop_margin 0.1; the default's is 0.0
    with pytest.raises(ConfigError, match="crop_margin"):
        build_ensemble(cfg, _candidate_checkpoint(cfg, tmp_path), "default", 0.5, tmp_path / "e", "e", "1")
    assert not (tmp_path / "e").exists()
    with pytest.raises(ConfigError, match="sum to 1"):
        merge_members([object(), object()], [0.5, 0.6])


def test_kfold_cross_validation_reports_mean_and_std(tmp_path):
    from fer_core.lab.train import cross_validate

    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=8, usages=("Training",))
    cfg = tiny_config(tmp_path, csv_path, optim={"epochs": 1}, cv_folds=2, data={"test_split": ""})
    out = cross_validate(cfg)
    assert out["k"] == 2 and len(out["folds"]) == 2
    assert out["mean"] == pytest.approx(np.mean(out["folds"])) and out["std"] == pytest.approx(np.std(out["folds"]))
    assert json.loads((tmp_path / "run" / "cv.json").read_text())["mean"] == out["mean"]


def test_transfer_head_freezes_then_fine_tunes_the_backbone(tmp_path):
    """The transfer path with a tiny backbone: frozen for phase 1, trainable in phase 2."""
    import keras

    from fer_core.lab.loop import backbone_of, fit

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="bb_conv")(inp)
    backbone = keras.Model(inp, x, name="tiny_backbone")
    bb_path = tmp_path / "backbone.keras"
    backbone.save(bb_path)
    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=6, usages=("Training",))
    cfg = tiny_config(tmp_path, csv_path, model={"architecture": "transfer", "backbone_path": str(bb_path), "options": {"dense": 0}},
                      optim={"epochs": 2, "freeze_backbone_epochs": 1}, data={"test_split": ""})
    imgs, labels = synthetic_faces(6)
    data = FaceDataset(imgs, labels)
    before = backbone.get_layer("bb_conv").get_weights()[0].copy()
    fit(cfg, data, data, tmp_path / "ckpt")
    last = keras.models.load_model(tmp_path / "ckpt" / "last.keras", compile=False)  # after phase 2
    after = backbone_of(last).get_layer("bb_conv").get_weights()[0]
    assert not np.allclose(before, after)  # phase 2 trained it
    # phase 1 alone leaves it untouched
    cfg1 = replace(cfg, optim=replace(cfg.optim, epochs=1))
    res1 = fit(cfg1, data, data, tmp_path / "ckpt1")
    np.testing.assert_allclose(backbone_of(res1.model).get_layer("bb_conv").get_weights()[0], before)


def test_class_weights_favour_rare_classes():
    labels = np.repeat(np.arange(7), [100, 10, 100, 100, 100, 100, 100])
    w = class_weights(labels, "balanced")
    assert w[1] > 5 * w[0]
    assert np.mean(w[labels]) == pytest.approx(1.0)
    assert class_weights(labels, "sqrt")[1] < w[1]
    assert np.allclose(class_weights(labels, "none"), 1.0)


def test_focal_loss_trains(tmp_path):
    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=10, usages=("Training",))
    cfg = tiny_config(tmp_path, csv_path, optim={"epochs": 2, "loss": "focal", "class_weighting": "balanced"}, data={"test_split": ""})
    metrics = train(cfg)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="optim.optimizer"):
        load_dataclass(TrainConfig, {"data": {"path": "x"}, "output_dir": "o", "optim": {"optimizer": "rmsprop"}})
    with pytest.raises(ConfigError, match="model.colour"):
        load_dataclass(TrainConfig, {"data": {"path": "x"}, "output_dir": "o", "model": {"colour": 1}})
    with pytest.raises(ConfigError, match=r"optim.*swa_start_epoch: 5 is outside 0..epochs \(4\)"):
        load_dataclass(TrainConfig, {"data": {"path": "x"}, "output_dir": "o", "optim": {"epochs": 4, "swa_start_epoch": 5}})
    from fer_core.lab.architectures import build_model

    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model("alexnet", (48, 48, 1))


def test_cli_reports_bad_rows(tmp_path):
    import subprocess
    import sys

    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=4, usages=("Training",),
                             bad_lines=("3," + " ".join(["1"] * 10) + ",Training",))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{path: {csv_path}, test_split: ''}}\noutput_dir: {tmp_path / 'cli'}\n"
        "model: {architecture: vgg, options: {widths: [4], convs_per_stage: 1, dense: 0}}\n"
        "optim: {epochs: 1, batch_size: 8}\n"
    )
    r = subprocess.run([sys.executable, "-m", "fer_core.train", "--config", str(cfg)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 skipped" in r.stdout and "line 2: 10 pixels, expected 2304" in r.stdout
    assert (tmp_path / "cli" / "model.keras").exists()


@pytest.mark.parametrize("scaling,low", [("minus1_1", -1.0), ("unit", 0.0)])
def test_augmentation_changes_pixels_but_keeps_shape_and_range(scaling, low):
    from fer_core.lab.config import AugmentConfig, ModelConfig

    spec = model_spec(ModelConfig(scaling=scaling))
    faces, labels = synthetic_faces(4, seed=5)
    plain = make_dataset(faces, labels, spec, batch_size=len(faces), training=False)
    aug = make_dataset(faces, labels, spec, batch_size=len(faces), training=True, augment=AugmentConfig(erasing_prob=1.0))
    (x0, _), = list(plain.as_numpy_iterator())
    (x1, y1), = list(aug.as_numpy_iterator())
    assert x1.shape == x0.shape and y1.shape == (len(faces), 7)
    assert x1.min() >= low and x1.max() <= 1.0
    assert np.abs(np.sort(x1.ravel()) - np.sort(x0.ravel())).mean() > 0.01  # not the same pixels, even reordered


def test_evaluate_writes_metrics_report_and_mistakes(trained, tmp_path):
    """`fer_core.evaluate` on the tiny model: metrics.json agrees with an independent recount."""
    import cv2

    from fer_core.lab.data import load_dataset
    from fer_core.lab.evaluate import main as evaluate_main
    from fer_core.labels import EMOTION_INDEX
    from fer_core.models import create_emotion_model

    cfg, _, csv_path = trained
    model_path = str(Path(cfg.output_dir) / "model.keras")
    out = tmp_path / "eval"
    assert evaluate_main(["--model", model_path, "--data", str(csv_path), "--out", str(out),
                          "--compare", model_path, "--mistakes", "5"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    splits, _ = load_dataset(csv_path)
    test = splits["PublicTest"]
    probs = create_emotion_model(model_path).predict(test.images)
    assert result["split"] == "PublicTest" and result["n"] == len(test)
    assert result["accuracy"] == pytest.approx(float((probs.argmax(1) == test.labels).mean()))
    assert np.asarray(result["confusion_matrix"]).sum() == len(test)
    assert result["compare"][0]["accuracy"] == result["accuracy"]  # same model, same data, same run
    # the paired test of a model against itself: no face separates them
    assert result["compare"][0]["vs_main"]["single"] == {"only_main_right": 0, "only_this_right": 0, "p_value": 1.0}
    right = int((probs.argmax(1) == test.labels).sum())
    lo, hi = result["accuracy_ci95"]
    assert lo <= right / len(test) <= hi and 0 < hi - lo < 0.5
    # sentiment: the group of the true emotion vs the group holding the most predicted probability
    group = {"happy": 0, "surprise": 0, "neutral": 1, "angry": 2, "disgust": 2, "fear": 2, "sad": 2}
    to_group = np.zeros((7, 3))
    for name, g in group.items():
        to_group[EMOTION_INDEX[name], g] = 1
    gold = to_group[test.labels].argmax(1)
    assert result["sentiment"]["accuracy"] == pytest.approx(float(((probs @ to_group).argmax(1) == gold).mean()))
    assert result["sentiment"]["labels"] == ["positive", "neutral", "negative"]
    # calibration of the single pass: the bins recount the faces, and ECE is their weighted gap
    cal = result["calibration"]
    conf, right = probs.max(1), probs.argmax(1) == test.labels
    assert sum(b["count"] for b in cal["bins"]) == len(test)
    assert cal["mean_confidence"] == pytest.approx(float(conf.mean()), abs=1e-6)
    assert cal["ece"] == pytest.approx(sum(b["count"] / len(test) * abs(b["accuracy"] - b["confidence"]) for b in cal["bins"]))
    top = max(cal["bins"], key=lambda b: b["high"])
    in_top = conf > top["low"]
    assert top["count"] == int(in_top.sum()) and top["accuracy"] == pytest.approx(float(right[in_top].mean()))
    assert result["calibration_tta"]["accuracy"] == pytest.approx(result["accuracy_tta"])
    # the faces as one campaign: true mix vs the job's estimates (the tiny model has a profile from training)
    from fer_core.quantify import adjusted_mix

    spec = create_emotion_model(model_path).spec
    truth = np.bincount(test.labels, minlength=7) / len(test)
    mix = result["mix"]
    assert mix["true"] == pytest.approx(truth, abs=1e-4)
    assert mix["single"]["counted"]["mix"] == pytest.approx(np.bincount(probs.argmax(1), minlength=7) / len(test), abs=1e-4)
    adjusted = adjusted_mix(probs.mean(0), spec.mix_matrix(tta=False))
    assert mix["single"]["adjusted"]["mix"] == pytest.approx(adjusted, abs=1e-4)
    assert mix["single"]["adjusted"]["mae_points"] == pytest.approx(100 * np.abs(adjusted - truth).mean(), abs=1e-3)
    assert set(mix["tta"]) == {"counted", "mean_probability", "adjusted"}
    html = (out / "report.html").read_text()
    assert "Emotion mix of these faces" in html
    assert "Sentiment read-out" in html and f"{100 * result['accuracy']:.2f}%" in html
    assert "Calibration" in html and f"{cal['ece']:.3f}" in html
    # speed of both passes, each timed after a warm-up, in the comparison table
    assert result["faces_per_s"] > 0 and result["faces_per_s_tta"] > 0
    assert f"<td>{result['faces_per_s']}</td><td>{result['faces_per_s_tta']}</td>" in html
    wrong = int((probs.argmax(1) != test.labels).sum())
    pictures = sorted((out / "misclassified").glob("*.png")) if wrong else []
    assert len(pictures) == min(5, wrong)
    assert all(cv2.imread(str(p)) is not None for p in pictures)
    assert cv2.imread(str(out / "confusion_matrix.png")).shape[2] == 3
    assert evaluate_main(["--model", model_path, "--data", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2


@pytest.mark.slow
@pytest.mark.browser
def test_evaluation_report_draws_in_chromium(trained, tmp_path):
    """report.html opened from disk: the confusion matrix and the reliability diagram draw, nothing errors."""
    from _browser import Chromium, require_browser
    from fer_core.lab.evaluate import main as evaluate_main

    require_browser()
    cfg, _, csv_path = trained
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(Path(cfg.output_dir) / "model.keras"), "--data", str(csv_path),
                          "--out", str(out), "--mistakes", "2"]) == 0
    with Chromium() as chromium:
        page = chromium.new_page()
        try:
            page.goto((out / "report.html").resolve().as_uri())
            drawn = "['cm', 'reliability'].every(id => document.getElementById(id).querySelector('svg.main-svg'))"
            assert page.wait_for(drawn, timeout=30)
            # the diagonal, the single pass and the flip-TTA curve
            assert page.evaluate("document.getElementById('reliability').data.length") == 3
            assert page.evaluate("document.getElementById('reliability').data[1].x.length") == len(
                json.loads((out / "metrics.json").read_text())["calibration"]["bins"])
            titles = page.evaluate("Array.from(document.querySelectorAll('.g-xtitle text, .g-ytitle text'), t => t.textContent)")
            assert {"predicted", "true", "mean confidence in bin", "accuracy in bin"} <= set(titles)
            assert page.console_errors() == []
        finally:
            page.close()


def test_weight_average_is_the_mean_and_survives_a_restart(tmp_path):
    from fer_core.lab.averaging import WeightAverage

    rng = np.random.default_rng(0)
    snaps = [[rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)] for _ in range(4)]
    avg = WeightAverage(tmp_path / "swa.npz")
    for epoch, w in enumerate(snaps[:2], start=3):
        avg.add(w, epoch)
    resumed = WeightAverage(tmp_path / "swa.npz")  # a restarted run reads the saved mean back
    resumed.add(snaps[1], 4)  # the epoch it already holds (crash between saves) is not counted twice
    for epoch, w in enumerate(snaps[2:], start=5):
        resumed.add(w, epoch)
    assert resumed.count == 4 and resumed.last_epoch == 6
    for got, i in zip(resumed.weights(), range(2)):
        np.testing.assert_allclose(got, np.mean([s[i] for s in snaps], axis=0), atol=1e-6)


def test_recalibrated_batch_norm_holds_the_statistics_of_its_inputs():
    """After recalibration each BN's moving mean/variance are the mean over batches of the batch
    moments of the tensor it normalises, whatever values it held before."""
    import keras

    from fer_core.models.spec import ModelSpec
    from fer_core.lab.averaging import _batch_norm_layers, recalibrate_batch_norm

    spec = ModelSpec(name="t", version="1", weights=None, input_size=48, channels=1, scaling="minus1_1")
    inp = keras.Input((48, 48, 1))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inp, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(x)))
    bn = _batch_norm_layers(model)[0]
    bn.moving_mean.assign(np.full(4, 50.0, np.float32))
    faces, _ = synthetic_faces(10, seed=3)  # 70 faces: batches of 32, 32, 6
    assert recalibrate_batch_norm(model, faces, spec, batch=32) == 1
    feats = keras.Model(inp, conv).predict_on_batch(preprocess(faces, spec))
    batches = [feats[i:i + 32] for i in range(0, len(feats), 32)]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-3, atol=1e-5)
    assert bn.momentum == 0.99  # restored


def test_swa_run_averages_epochs_and_serves_the_better_on_validation(tmp_path):
    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=24)
    cfg = tiny_config(tmp_path, csv_path, optim={"epochs": 4, "schedule": "constant", "swa_start_epoch": 2})
    metrics = train(cfg, command="pytest swa")
    ckpt = tmp_path / "run" / "checkpoints"
    with np.load(ckpt / "swa.npz") as f:
        assert int(f["count"]) == 3 and int(f["last_epoch"]) == 4
    rows = list(csv.DictReader(open(ckpt / "history.csv")))
    best_epoch = max(float(r["val_accuracy"]) for r in rows)
    assert 0 <= metrics["swa_val_accuracy"] <= 1
    if metrics["swa_val_accuracy"] > best_epoch:
        assert metrics["selected"] == "swa over epochs 2-4" and metrics["val_accuracy"] == metrics["swa_val_accuracy"]
    else:
        assert metrics["selected"] == f"epoch {metrics['best_epoch']}"
    card = (tmp_path / "run" / "model_card.md").read_text()
    assert f"served: {metrics['selected']}" in card and "weights averaged from epoch 2" in card


def test_make_dataset_blends_soft_targets_into_the_labels():
    images, labels = synthetic_faces(2)
    spec = model_spec(tiny_config(Path("."), Path("x.csv")).model)
    soft = np.random.default_rng(0).dirichlet(np.ones(7), len(labels)).astype(np.float32)
    ds = make_dataset(images, labels, spec, 64, training=False, soft_targets=soft, soft_weight=0.25)
    y = np.concatenate([b[1].numpy() for b in ds])
    np.testing.assert_allclose(y, 0.75 * np.eye(7)[labels] + 0.25 * soft, rtol=1e-6)
    with pytest.raises(ValueError, match="soft_targets: shape"):
        make_dataset(images, labels, spec, 64, training=False, soft_targets=soft[:3], soft_weight=0.25)


def test_distillation_trains_towards_the_teachers_targets(tmp_path):
    """With weight 1 the labels are ignored: a 'teacher' that calls every class c class c+1 is what the
    student learns, so the soft targets really drive the gradient."""
    from fer_core.lab.loop import fit

    images, labels = synthetic_faces(24, seed=3)
    shifted = (labels + 1) % 7
    train_set, val_set = FaceDataset(images[::2], labels[::2], "t"), FaceDataset(images[1::2], shifted[1::2], "v")
    cfg = tiny_config(tmp_path, tmp_path / "unused.csv", distill={"teacher": "unused", "weight": 1.0})
    result = fit(cfg, train_set, val_set, tmp_path / "ckpt", soft_targets=np.eye(7, dtype=np.float32)[shifted[::2]])
    spec = model_spec(cfg.model)
    pred = np.asarray(result.model.predict_on_batch(preprocess(images[1::2], spec))).argmax(1)
    assert (pred == shifted[1::2]).mean() > 0.5 > (pred == labels[1::2]).mean()


def test_training_with_a_teacher_model_file_names_it_in_the_card(trained, tmp_path, capsys):
    cfg, _, csv_path = trained
    teacher = str(Path(cfg.output_dir) / "model.keras")
    student = tiny_config(tmp_path, csv_path, optim={"epochs": 1}, distill={"teacher": teacher, "weight": 0.5})
    metrics = train(student, command="pytest distill")
    assert 0 <= metrics["val_accuracy"] <= 1
    assert "target = 0.5 x label + 0.5 x teacher" in capsys.readouterr().out
    assert f"Distilled from `{teacher}` (flip-averaged)" in (tmp_path / "run" / "model_card.md").read_text()


def test_distillation_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"distill.*weight: 1.5 is outside 0..1"):
        load_dataclass(TrainConfig, {"data": {"path": "x"}, "output_dir": "o", "distill": {"weight": 1.5}})
    with pytest.raises(ConfigError, match="distill.teacher is set with cv_folds"):
        load_dataclass(TrainConfig, {"data": {"path": "x"}, "output_dir": "o", "cv_folds": 3, "distill": {"teacher": "fer-vgg@5"}})


def test_online_teacher_labels_each_batch_as_the_model_file_predicts_it(trained):
    """distill.online: the targets of a batch are the blend with the teacher's flip-averaged prediction for
    exactly that batch, through the same preprocessing and label order as create_emotion_model(...).predict."""
    from fer_core.models.registry import create_emotion_model
    from fer_core.lab.config import DistillConfig
    from fer_core.lab.distill import online_teacher

    cfg, _, _ = trained
    teacher = str(Path(cfg.output_dir) / "model.keras")
    spec = model_spec(cfg.model)
    images, labels = synthetic_faces(3, seed=5)
    fn = online_teacher(DistillConfig(teacher=teacher, weight=0.3, online=True), spec)
    ds = make_dataset(images, labels, spec, 8, training=False, soft_weight=0.3, teacher_fn=fn)
    y = np.concatenate([b[1].numpy() for b in ds])
    expected = 0.7 * np.eye(7)[labels] + 0.3 * create_emotion_model(teacher, tta=True).predict(images)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert not np.allclose(y, 0.7 * np.eye(7)[labels] + 0.3 / 7, atol=1e-3)  # the teacher is not uniform


def test_online_teacher_refuses_a_teacher_with_other_input(trained):
    from fer_core.lab.config import DistillConfig
    from fer_core.lab.distill import online_teacher

    cfg, _, _ = trained
    other = replace(model_spec(cfg.model), input_size=64)
    with pytest.raises(ConfigError, match="distill.online: teacher .* takes 48x48x1 .* the student 64x64x1"):
        online_teacher(DistillConfig(teacher=str(Path(cfg.output_dir) / "model.keras"), online=True), other)


def test_model_card_says_when_the_test_split_also_chose_the_model(tmp_path):
    """A refit that validates on the reported split must not claim that split is untouched."""
    from fer_core.lab.config import DataConfig, TrainConfig
    from fer_core.lab.model_card import splits_text

    held_out = splits_text(TrainConfig(data=DataConfig(path="fer.csv", test_split="PublicTest"), output_dir=str(tmp_path)))
    assert "10% of them is held out" in held_out and "reported only; nothing was tuned on it" in held_out
    refit = splits_text(TrainConfig(data=DataConfig(path="fer.csv", val_split="PublicTest", test_split="PublicTest"),
                                   output_dir=str(tmp_path)))
    assert "both the validation and the reported test split" in refit and "optimistic" in refit
    assert "nothing was tuned" not in refit and "held out" not in refit


def test_shipped_training_configs_load():
    """Every conf/experiments/train_*.yaml is a strict TrainConfig, and a shipped model it starts from is in the repo."""
    from fer_core.config import load_yaml

    repo = Path(__file__).resolve().parents[1]
    configs = sorted((repo / "conf" / "experiments").glob("train_*.yaml"))
    assert any(p.name == "train_default.yaml" for p in configs)
    for path in configs:
        cfg = load_yaml(path, TrainConfig)
        assert cfg.data.test_split in ("PublicTest", ""), f"{path.name}: only PublicTest may be reported"
        init = cfg.model.init_from
        if init.startswith("fer_core/"):
            assert (repo / init).is_file(), f"{path.name}: model.init_from {init} is not shipped"


# ----------------------------------------------------------------------------- long runs (issue 25)


def test_plateau_schedule_lowers_the_lr_after_more_than_patience_bad_epochs():
    """PyTorch's ReduceLROnPlateau rule (Khaireddin & Chen's recipe): `patience` bad epochs are tolerated, the next cuts."""
    from fer_core.lab.config import OptimConfig
    from fer_core.lab.optim import PlateauSchedule

    schedule = PlateauSchedule.for_run(OptimConfig(schedule="plateau", warmup_epochs=0, learning_rate=0.01,
                                                   plateau_factor=0.5, plateau_patience=2, plateau_min_lr=0.002))
    # patience 2: the 3rd bad epoch in a row cuts the LR and restarts the count; a new best restarts it too
    vals = (0.5, 0.6, 0.6, 0.55, 0.59, 0.58, 0.57, 0.61, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4)
    #       new  new  bad  bad   cut   bad   bad   new   bad  bad  cut  bad  bad  cut (to the 0.002 floor)
    lrs = [schedule.step(v) for v in vals]
    assert lrs == [0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005, 0.0025, 0.0025, 0.0025, 0.002]
    resumed = PlateauSchedule.for_run(OptimConfig(schedule="plateau", warmup_epochs=0), schedule.state())
    assert (resumed.lr, resumed.best, resumed.bad_epochs) == (0.002, 0.61, 0)
    with pytest.raises(ValueError, match="set warmup_epochs: 0"):
        OptimConfig(schedule="plateau", warmup_epochs=2)


def test_random_crops_are_windows_of_each_frame_at_varying_places():
    import tensorflow as tf

    from fer_core.lab.batches import random_crops

    frames = np.random.default_rng(0).uniform(-1, 1, (64, 12, 12, 1)).astype(np.float32)
    crops = random_crops(tf.constant(frames), 8).numpy()
    assert crops.shape == (64, 8, 8, 1)
    places = set()
    for frame, crop in zip(frames, crops):
        found = [(t, l) for t in range(5) for l in range(5) if np.array_equal(frame[t:t + 8, l:l + 8], crop)]
        assert len(found) == 1
        places.add(found[0])
    assert len(places) > 10  # 25 possible offsets, drawn per face


def test_mixup_blends_inputs_and_targets_with_the_same_weight():
    import tensorflow as tf

    from fer_core.lab.batches import mixup

    x = np.random.default_rng(1).uniform(-1, 1, (7, 4, 4, 1)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)  # face i has class i, so the target says who was mixed with whom
    mixed_x, mixed_y = (t.numpy() for t in mixup(tf.constant(x), tf.constant(y), alpha=1.0))
    np.testing.assert_allclose(mixed_y.sum(1), 1.0, rtol=1e-6)
    # row i is lam * face i + (1 - lam) * its partner, so y[i, i] is lam wherever the partner is another face
    lams = [mixed_y[i, i] for i in range(7) if mixed_y[i, i] < 1 - 1e-6]
    assert lams and np.allclose(lams, lams[0], atol=1e-6)  # one weight for the whole batch
    for i in range(7):
        others = np.delete(np.arange(7), i)
        partner = i if mixed_y[i, i] >= 1 - 1e-6 else int(others[np.argmax(mixed_y[i, others])])
        lam = mixed_y[i, i] if partner != i else 1.0
        np.testing.assert_allclose(mixed_x[i], lam * x[i] + (1 - lam) * x[partner], atol=1e-5)
    assert not np.allclose(mixed_x, x)


def test_crop_trained_model_centre_crops_and_reports_ten_crop(tmp_path):
    """frame_size > input_size: random crops in training, the centre crop for validation and single-pass
    inference, ten-crop in the metrics; the registered spec carries the frame so EmotionModel can crop."""
    from fer_core import create_emotion_model
    from fer_core.lab.train import split_data

    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=24)
    cfg = tiny_config(tmp_path, csv_path, model={"input_size": 40, "frame_size": 48},
                      augment={"erasing_prob": 0.2, "mixup_alpha": 0.2}, optim={"epochs": 6})
    metrics = train(cfg, command="pytest crops")
    assert metrics["PublicTest_accuracy"] > 0.4 and 0.0 <= metrics["PublicTest_accuracy_ten_crop"] <= 1.0
    out = Path(cfg.output_dir)
    model = create_emotion_model(str(out / "model.keras"), tta="ten_crop")
    assert model.spec.frame_size == 48 and model.spec.input_shape == (40, 40, 1) and model.views == 10
    _, val, test, _ = split_data(cfg)
    assert val.images.shape[1:3] == (48, 48)  # loaded at the frame size; the net never sees 48x48
    got = float((model.predict(test.images).argmax(1) == test.labels).mean())
    assert got == pytest.approx(metrics["PublicTest_accuracy_ten_crop"], abs=1e-4)
    model.tta = False
    assert float((model.predict(val.images).argmax(1) == val.labels).mean()) == pytest.approx(metrics["val_accuracy"], abs=1e-4)
    assert "random crops of faces resized to 48x48" in (out / "model_card.md").read_text()
    # the product's path: a pipeline config names the file and the mode; a whole-face model refuses corners
    from fer_core.config import load_dataclass
    from fer_core.pipeline import FacePipeline, InferenceConfig

    ten = load_dataclass(InferenceConfig, {"detector": {"name": "haar"},
                                           "model": {"name": str(out / "model.keras"), "tta": "ten_crop"}})
    pipe = FacePipeline.from_config(ten)
    assert pipe.model.views == 10 and "+tta:ten_crop/haar@" in pipe.scoring_id
    with pytest.raises(ConfigError, match="view 'tl' needs a crop-trained model"):
        FacePipeline.from_config(load_dataclass(InferenceConfig, {"detector": {"name": "haar"},
                                                                  "model": {"tta": "ten_crop"}}))


def _write_yaml(path: Path, cfg) -> Path:
    import yaml

    from fer_core.config import dataclass_to_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclass_to_dict(cfg)))
    return path


def _compile_adamw(model, offset: int, steps_per_epoch: int = 5) -> None:
    """The compile_at(offset) of fer_core.lab.loop.resume_optimizer: the lab's AdamW on a cosine schedule."""
    from fer_core.lab.config import OptimConfig
    from fer_core.lab.optim import make_optimizer

    optim = OptimConfig(epochs=4, warmup_epochs=0, learning_rate=0.01, weight_decay=1e-4)
    model.compile(optimizer=make_optimizer(optim, steps_per_epoch, start_step=offset), loss="categorical_crossentropy")


def test_a_resumed_run_continues_its_optimizer_where_the_last_slice_left_it(tmp_path):
    """The resumed slice takes the very step the uninterrupted run takes (AdamW's moments and step count come
    back from last.keras). From a weights-only file, a fresh optimizer's first step stays within the LR
    (Adam's bias correction), where zero moments at the moved step made it about 3x the LR (v8's dips)."""
    import keras

    from fer_core.lab.callbacks import save_atomically
    from fer_core.lab.loop import resume_optimizer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 16), 3)
    inputs = keras.Input((6,))
    run = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(5)(inputs)))
    _compile_adamw(run, 0)
    for _ in range(7):
        run.train_on_batch(x, y)
    save_atomically(run, tmp_path / "last.keras")

    resumed = keras.models.load_model(tmp_path / "last.keras", compile=False)
    said = resume_optimizer(resumed, tmp_path / "last.keras", 7, lambda k: _compile_adamw(resumed, k))
    assert said.startswith("optimizer state (moments, step 7) restored")
    for a, b in zip(run.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    run.train_on_batch(x, y)
    resumed.train_on_batch(x, y)
    for a, b in zip(run.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    # a last.keras rebuilt from a portable checkpoint (weights only, no optimizer), resumed deep in a long
    # schedule (step 5000 of 8000) where Adam's bias correction is spent, as at v8's resumes
    bare = keras.models.clone_model(run)
    bare.set_weights(run.get_weights())
    save_atomically(bare, tmp_path / "bare.keras")
    fresh = keras.models.load_model(tmp_path / "bare.keras", compile=False)
    said = resume_optimizer(fresh, tmp_path / "bare.keras", 5000, lambda k: _compile_adamw(fresh, k, 2000))
    assert "holds no optimizer state for step 5000" in said
    assert int(fresh.optimizer.iterations) == 0
    lr = float(np.asarray(fresh.optimizer.learning_rate))
    _compile_adamw(bare, 0, 2000)
    bare.optimizer.iterations.assign(5000)
    assert lr == pytest.approx(float(np.asarray(bare.optimizer.learning_rate)), rel=1e-6)  # the schedule at 5000

    def first_step(model) -> float:
        before = model.get_weights()
        model.train_on_batch(x, y)
        return max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), before))

    assert 0.5 * lr < first_step(fresh) <= 1.05 * lr
    assert first_step(bare) > 2.5 * lr  # zero moments at the moved step: what resuming did before
    # the slice after it finds the fresh optimizer's own count (1) and its offset (5000) in last.keras
    save_atomically(fresh, tmp_path / "bare.keras")
    after = keras.models.load_model(tmp_path / "bare.keras", compile=False)
    said = resume_optimizer(after, tmp_path / "bare.keras", 5001, lambda k: _compile_adamw(after, k, 2000))
    assert said.startswith("optimizer state (moments, step 5001) restored")
    assert float(np.asarray(after.optimizer.learning_rate)) == pytest.approx(
        float(np.asarray(fresh.optimizer.learning_rate)), rel=1e-6)
    for a, b in zip(fresh.optimizer.variables, after.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_moved_config_with_the_same_content_resumes_its_run(tmp_path, capsys):
    """Resuming compares the run's state, not the config file's path: the same config moved (conf/train_*.yaml
    to conf/experiments/, issue 22) continues the run in its output_dir after its last epoch."""
    from fer_core.lab.train import main

    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=24)
    cfg = tiny_config(tmp_path, csv_path, optim={"epochs": 2})
    old = _write_yaml(tmp_path / "conf" / "train_tiny.yaml", cfg)
    assert main(["--config", str(old)]) == 0
    moved = tmp_path / "conf" / "experiments" / old.name
    moved.parent.mkdir()
    old.rename(moved)
    capsys.readouterr()
    assert main(["--config", str(moved), "--epochs", "3"]) == 0
    ckpt = Path(cfg.output_dir) / "checkpoints"
    assert f"resuming from {ckpt / 'last.keras'} after epoch 2" in capsys.readouterr().out
    assert [int(r["epoch"]) for r in csv.DictReader(open(ckpt / "history.csv"))] == [1, 2, 3]


def test_portable_checkpoint_carries_a_run_across_machines(tmp_path, capsys):
    """Train 2 epochs, export the one committed file, wipe the output dir (a fresh clone), train on:
    the run restores epoch 2's weights and plateau state from the file and trains exactly one more epoch."""
    import keras

    from fer_core.lab.loop import run_identity
    from fer_core.lab.train import main

    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=24)
    committed = tmp_path / "repo" / "checkpoints" / "tiny.npz"
    cfg = tiny_config(tmp_path, csv_path, portable_checkpoint=str(committed),
                      optim={"epochs": 2, "optimizer": "sgd", "schedule": "plateau", "plateau_patience": 0,
                             "plateau_factor": 0.5, "weight_decay": 1e-4})
    config = _write_yaml(tmp_path / "run.yaml", cfg)
    assert main(["--config", str(config)]) == 0
    ckpt = Path(cfg.output_dir) / "checkpoints"
    before = keras.models.load_model(ckpt / "last.keras", compile=False)
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 2 and state["plateau"]["lr"] in (0.01, 0.005)  # epoch 2 improved or not
    assert main(["--config", str(config), "--export-checkpoint"]) == 0
    assert "exported epoch 2" in capsys.readouterr().out
    assert committed.stat().st_size < 200_000  # tiny net; fer-vgg's is a few MB (float16)

    import shutil

    shutil.rmtree(cfg.output_dir)
    assert main(["--config", str(config), "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"restored {ckpt} from the portable checkpoint {committed} (epoch 2)" in printed
    assert "holds no optimizer state for step" in printed  # weights only: a fresh optimizer rebuilds its moments
    assert "resuming from" in printed and "after epoch 2" in printed
    rows = list(csv.DictReader(open(ckpt / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["lr"]) == pytest.approx(state["plateau"]["lr"])  # the LR the plateau schedule had reached
    # the weights continued from epoch 2 (float16 in the file), not from a new random init
    images, _ = synthetic_faces(4, seed=5)
    spec = model_spec(cfg.model)
    x = preprocess(images, spec)
    from fer_core.lab.checkpoint import read

    saved = read(committed)
    epoch2 = keras.models.clone_model(before)
    epoch2.set_weights(saved["last"])
    np.testing.assert_allclose(epoch2.predict_on_batch(x), before.predict_on_batch(x), atol=2e-2)
    after = keras.models.load_model(ckpt / "last.keras", compile=False)

    def kernel_distance(weights):  # convolution kernels only: BatchNormalization statistics move anyway
        return sum(float(np.square(a - b).sum()) for a, b in zip(weights, saved["last"]) if a.ndim == 4)

    moved, fresh = kernel_distance(after.get_weights()), kernel_distance(keras.models.clone_model(before).get_weights())
    assert 0 < moved < 0.1 * fresh  # epoch 3 trained on from epoch 2's kernels
    # a file from another run (here: another seed, so another validation split) is refused, not resumed
    shutil.rmtree(cfg.output_dir)
    other = _write_yaml(tmp_path / "other.yaml", replace(cfg, seed=cfg.seed + 1))
    with pytest.raises(ConfigError, match="other seed settings"):
        main(["--config", str(other)])
    assert saved["identity"] == run_identity(cfg)


def _layer_policies(model) -> set[str]:
    return {layer.dtype_policy.name for layer in model.layers if hasattr(layer, "dtype_policy")}


def test_a_bfloat16_run_trains_in_bfloat16_and_serves_float32(tmp_path):
    """optim.mixed_precision bfloat16 (2x faster on AVX512_BF16 CPUs, bench/bench_train_precision.py): the
    checkpoints compute in bfloat16, the model written for serving is the same weights in float32 layers, and
    a resumed run trains on in the precision its config now names."""
    import keras

    from fer_core.lab.loop import with_policy
    from fer_core.lab.train import main

    csv_path = write_fer_csv(tmp_path / "fer.csv", n_per_class=24)
    cfg = tiny_config(tmp_path, csv_path, optim={"epochs": 3, "mixed_precision": "bfloat16"})
    config = _write_yaml(tmp_path / "run.yaml", cfg)
    assert main(["--config", str(config)]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"  # the process after fit infers in float32
    ckpt = Path(cfg.output_dir) / "checkpoints"
    trained_in = keras.models.load_model(ckpt / "best.keras", compile=False)
    assert "mixed_bfloat16" in _layer_policies(trained_in)
    assert trained_in.get_layer("probabilities").dtype_policy.name == "float32"
    served = keras.models.load_model(Path(cfg.output_dir) / "model.keras", compile=False)
    assert _layer_policies(served) == {"float32"}
    images, _ = synthetic_faces(16, seed=5)
    x = preprocess(images, model_spec(cfg.model))
    bf16, f32 = trained_in.predict_on_batch(x), served.predict_on_batch(x)
    assert bf16.dtype == f32.dtype == np.float32
    np.testing.assert_allclose(f32, with_policy(trained_in).predict_on_batch(x), atol=1e-6)
    assert np.abs(bf16 - f32).max() < 0.05 and (bf16.argmax(1) == f32.argmax(1)).mean() >= 0.9
    metrics = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
    from fer_core.lab.measure import accuracy
    from fer_core.lab.train import split_data

    _, val, _, _ = split_data(cfg)
    assert metrics["val_accuracy"] == round(accuracy(served, val, model_spec(cfg.model)), 4)  # measured in float32

    # the next slice in float32: it resumes epoch 3's weights in float32 layers
    f32_cfg = _write_yaml(tmp_path / "run32.yaml", replace(cfg, optim=replace(cfg.optim, epochs=4, mixed_precision="off")))
    assert main(["--config", str(f32_cfg)]) == 0
    assert _layer_policies(keras.models.load_model(ckpt / "last.keras", compile=False)) == {"float32"}
    assert [int(r["epoch"]) for r in csv.DictReader(open(ckpt / "history.csv"))] == [1, 2, 3, 4]
