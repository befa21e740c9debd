"""Train (and cross-validate) an emotion model: `python -m fer_core.train --config conf/train_default.yaml`.

Data go through the same `preprocess(crops, spec)` as inference; augmentation runs in a
tf.data pipeline on top of it. Checkpoints are written every epoch and a run resumes from
them when started again with the same output directory. A long run spans machines through
one small committed file (`portable_checkpoint`, fer_core.lab.checkpoint): export it with
`--export-checkpoint`; a run whose output directory is empty starts from it.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import shlex
import sys
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from fer_core.lab import checkpoint
from fer_core.config import dataclass_to_dict, load_yaml
from fer_core.errors import ConfigError
from fer_core.lab.data import FaceDataset, load_dataset, stratified_kfold, stratified_split
from fer_core.labels import EMOTIONS
from fer_core.metrics import wilson_interval
from fer_core.models.spec import ModelSpec
from fer_core.preprocess import preprocess, preprocess_frame
from fer_core.quantify import mix_calibration

log = logging.getLogger("fer_core.train")


@dataclass(frozen=True)
class DataConfig:
    path: str
    train_split: str = "Training"  # FER2013 Usage, or "train" for class folders
    val_split: str = ""  # empty: hold out val_fraction of the training split (stratified)
    test_split: str = "PublicTest"  # reported only, never used for model selection
    val_fraction: float = 0.1
    limit: int = 0  # >0: use only this many training rows (smoke runs)


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "vgg"
    name: str = "fer-vgg"
    version: str = "1"
    input_size: int = 48
    channels: int = 1
    scaling: Literal["minus1_1", "unit"] = "minus1_1"
    crop_margin: float = 0.1  # alignment margin used when crops come from a detector
    # >input_size: crop training (Khaireddin & Chen 2021): faces are resized to frame_size, augmented, and
    # the net trains on random input_size crops; validation and single-pass inference use the centre crop,
    # EmotionModel(tta="ten_crop") the centre and corner crops and their mirrors. 0: whole faces.
    frame_size: int = 0
    dropout: float = 0.4
    options: dict = field(default_factory=dict)  # extra architecture kwargs (widths, ...)
    backbone_path: str = ""  # for architecture "transfer"
    init_from: str = ""  # fine-tune: start from this .keras model instead of random weights
    resize_widths: list[int] = field(default_factory=list)  # with a vgg init_from: prune or widen it to these stage widths


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    shift: float = 0.1  # fraction of the side
    rotation_deg: float = 10.0
    zoom: float = 0.1
    brightness: float = 0.2  # +- in the [-1, 1] input range / 2
    contrast: float = 0.2
    erasing_prob: float = 0.25  # random erasing (Zhong et al. 2017)
    # >0: mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself, inputs and
    # targets alike, with one weight ~ Beta(alpha, alpha) per batch. 0: off.
    mixup_alpha: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 40
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    # plateau: ReduceLROnPlateau on validation accuracy (PyTorch's rule, as in Khaireddin & Chen 2021): after
    # more than plateau_patience epochs without a new best, the LR is multiplied by plateau_factor.
    schedule: Literal["cosine", "constant", "plateau"] = "cosine"
    plateau_factor: float = 0.75
    plateau_patience: int = 5
    plateau_min_lr: float = 0.0
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    loss: Literal["crossentropy", "focal"] = "crossentropy"
    focal_gamma: float = 2.0
    class_weighting: Literal["none", "sqrt", "balanced"] = "none"
    early_stopping_patience: int = 0  # 0: off
    freeze_backbone_epochs: int = 0  # fine-tuning: train only the head this many epochs first
    fine_tune_lr_factor: float = 0.1
    mixed_precision: Literal["auto", "off"] = "auto"  # auto: mixed_float16 when a GPU is present
    threads: int = 0  # 0: TensorFlow's default
    # >0: stochastic weight averaging (Izmailov et al. 2018): the mean of the weights after each epoch from
    # this one on, BatchNormalization statistics re-estimated on the training faces; the averaged model
    # replaces the best epoch only if its validation accuracy is higher. Pair it with a constant schedule.
    swa_start_epoch: int = 0

    def __post_init__(self):
        if not 0 <= self.swa_start_epoch <= self.epochs:
            raise ValueError(f"swa_start_epoch: {self.swa_start_epoch} is outside 0..epochs ({self.epochs}); "
                             "0 turns weight averaging off, otherwise start it at or before the last epoch")
        if self.schedule == "plateau" and self.warmup_epochs:
            raise ValueError(f"warmup_epochs: {self.warmup_epochs} with schedule 'plateau'; the plateau schedule "
                             "starts at learning_rate, so set warmup_epochs: 0")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ValueError(f"plateau_factor: {self.plateau_factor} must be in (0, 1) (the LR's multiplier on a plateau)")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (Hinton et al. 2015; "born-again" when the teacher is the student's own start).

    FER2013's labels are noisy (human agreement is about 65%): a trained teacher's probabilities on the
    training faces say which labels are doubtful and which classes a face resembles. The target becomes
    (1 - weight) * one-hot label + weight * teacher probabilities (flip-averaged when tta), computed once
    on the unaugmented training faces. The teacher must not have trained on the validation hold-out,
    or model selection is biased (same data.path, val_fraction and seed as the teacher's run keep it out).
    """

    teacher: str = ""  # registered model name ("fer-vgg@5") or model file; "" turns distillation off
    weight: float = 0.5
    tta: bool = True
    # True: the teacher labels every augmented batch as it is drawn (its target matches the face the student
    # sees, shifted, rotated or erased), at the cost of one or two teacher passes per step; the teacher must
    # take the student's input (same size, channels and scaling). False: once, on the unaugmented faces.
    online: bool = False

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight: {self.weight} is outside 0..1 (the teacher's share of the training target)")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    output_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    cv_folds: int = 0  # >=2: k-fold cross-validation on the training split instead of one run
    seed: int = 0
    # A committed file (e.g. checkpoints/fer-vgg-v6.npz) that carries a long run across machines: written by
    # `python -m fer_core.train --config X --export-checkpoint`, read when output_dir has no checkpoint yet.
    portable_checkpoint: str = ""

    def __post_init__(self):
        if self.distill.teacher and self.cv_folds >= 2:
            raise ValueError("distill.teacher is set with cv_folds: a teacher trained on the training split has seen "
                             "every validation fold, so CV scores would be inflated; run CV without distillation")


def model_spec(cfg: ModelConfig, weights: object = None, mix_calibration: dict | None = None) -> ModelSpec:
    """The ModelSpec a trained model is registered with; also drives preprocessing in training."""
    return ModelSpec(
        name=cfg.name, version=cfg.version, weights=weights, input_size=cfg.input_size,
        channels=cfg.channels, scaling=cfg.scaling, labels=EMOTIONS, crop_margin=cfg.crop_margin,
        frame_size=cfg.frame_size,
        description=f"{cfg.architecture} trained with fer_core.train", mix_calibration=mix_calibration or {},
    )


# ----------------------------------------------------------------------------- data pipeline


def augment_fn(cfg: AugmentConfig, spec: ModelSpec, seed: int):
    """A batch-level augmentation function for tf.data (float inputs in the spec's preprocess range).

    Inputs are at the spec's frame side: geometric and photometric changes act on the whole face, then a
    crop-trained spec takes a random input_size crop, random erasing blanks part of it, and mixup blends.
    """
    import keras
    import tensorflow as tf

    low = -1.0 if spec.scaling == "minus1_1" else 0.0  # the range preprocess() produces
    geometric = []
    if cfg.flip:
        geometric.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation_deg:
        geometric.append(keras.layers.RandomRotation(cfg.rotation_deg / 360.0, fill_mode="reflect", seed=seed + 1))
    if cfg.shift:
        geometric.append(keras.layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="reflect", seed=seed + 2))
    if cfg.zoom:
        geometric.append(keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode="reflect", seed=seed + 3))

    def apply(x, y):
        for layer in geometric:
            x = layer(x, training=True)
        n = tf.shape(x)[0]
        if cfg.contrast:
            c = tf.random.uniform([n, 1, 1, 1], 1 - cfg.contrast, 1 + cfg.contrast)
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            x = (x - mean) * c + mean
        if cfg.brightness:
            x = x + tf.random.uniform([n, 1, 1, 1], -cfg.brightness, cfg.brightness)
        if spec.frame > spec.input_size:
            x = random_crops(x, spec.input_size)
        if cfg.erasing_prob:
            x = _random_erasing(x, cfg.erasing_prob, spec.input_size, low)
        x = tf.clip_by_value(x, low, 1.0)
        if cfg.mixup_alpha:
            x, y = mixup(x, y, cfg.mixup_alpha)
        return x, y

    return apply


def random_crops(x, size: int):
    """One uniformly placed size x size window per face of an (n, F, F, c) batch."""
    import tensorflow as tf

    n, frame = tf.shape(x)[0], tf.shape(x)[1]
    top = tf.random.uniform([n], 0, frame - size + 1, dtype=tf.int32)
    left = tf.random.uniform([n], 0, frame - size + 1, dtype=tf.int32)
    window = tf.range(size)
    x = tf.gather(x, top[:, None] + window[None, :], axis=1, batch_dims=1)
    x = tf.gather(x, left[:, None] + window[None, :], axis=2, batch_dims=1)
    return tf.ensure_shape(x, [None, size, size, x.shape[-1]])


def mixup(x, y, alpha: float):
    """Blend a batch with a shuffled copy of itself: lam*(x, y) + (1-lam)*(x', y'), lam ~ Beta(alpha, alpha)."""
    import tensorflow as tf

    a, b = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
    lam = a / (a + b)
    order = tf.random.shuffle(tf.range(tf.shape(x)[0]))
    mixed_y = lam * y + (1.0 - lam) * tf.gather(y, order)
    return lam * x + (1.0 - lam) * tf.gather(x, order), mixed_y


def _random_erasing(x, prob: float, size: int, low: float = -1.0):
    """Blank one random rectangle (2-20% of the area, aspect 0.3-3.3) per face with probability `prob`."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    area = tf.random.uniform([n], 0.02, 0.2) * size * size
    aspect = tf.exp(tf.random.uniform([n], np.log(0.3), np.log(3.3)))
    h = tf.clip_by_value(tf.sqrt(area * aspect), 1.0, size - 1.0)
    w = tf.clip_by_value(tf.sqrt(area / aspect), 1.0, size - 1.0)
    y0 = tf.random.uniform([n]) * (size - h)
    x0 = tf.random.uniform([n]) * (size - w)
    grid = tf.range(size, dtype=tf.float32)
    in_y = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
    in_x = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
    box = tf.logical_and(in_y[:, :, None], in_x[:, None, :])
    apply = tf.random.uniform([n]) < prob
    mask = tf.logical_and(box, apply[:, None, None])[..., None]
    noise = tf.random.uniform(tf.shape(x), low, 1.0)
    return tf.where(mask, noise, x)


def make_dataset(images: np.ndarray, labels: np.ndarray, spec: ModelSpec, batch_size: int, *,
                 training: bool, augment: AugmentConfig | None = None, seed: int = 0,
                 soft_targets: np.ndarray | None = None, soft_weight: float = 0.0, teacher_fn=None):
    """tf.data over preprocess(images) with one-hot labels; augmented and shuffled when training.

    Training batches of a crop-trained spec start from the whole frame (augment_fn crops them); without
    augmentation, and for validation, the net gets preprocess()'s centre crop, as at inference.
    soft_targets (N, 7), e.g. a teacher's probabilities, are blended into the targets with soft_weight.
    teacher_fn (model-input batch -> (n, 7) EMOTIONS-order probabilities, see online_teacher) instead labels
    each batch after augmentation, blended the same way.
    """
    import tensorflow as tf

    x = preprocess_frame(images, spec) if training and augment is not None else preprocess(images, spec)
    y = np.eye(len(EMOTIONS), dtype=np.float32)[labels]
    if soft_targets is not None and soft_weight:
        if soft_targets.shape != y.shape:
            raise ValueError(f"soft_targets: shape {soft_targets.shape}, expected {y.shape} (one row per face)")
        y = ((1.0 - soft_weight) * y + soft_weight * soft_targets).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    if training and augment is not None:
        ds = ds.map(augment_fn(augment, spec, seed), num_parallel_calls=tf.data.AUTOTUNE)
    if teacher_fn is not None and soft_weight:
        ds = ds.map(lambda xb, yb: (xb, (1.0 - soft_weight) * yb + soft_weight * teacher_fn(xb)))
    return ds.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- model + optimiser


def class_weights(labels: np.ndarray, mode: str) -> np.ndarray:
    """Per-class loss weights, mean 1 over samples; 'sqrt' softens 'balanced' for the rare disgust class."""
    counts = np.bincount(labels, minlength=len(EMOTIONS)).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    if mode == "none":
        w = np.ones(len(EMOTIONS))
    elif mode == "balanced":
        w = counts.sum() / (len(EMOTIONS) * counts)
    elif mode == "sqrt":
        w = np.sqrt(counts.sum() / (len(EMOTIONS) * counts))
    else:
        raise ValueError(f"optim.class_weighting: unknown mode {mode!r}")
    w = w / (w[labels].mean())
    return w.astype(np.float32)


def make_loss(cfg: OptimConfig, weights: np.ndarray):
    """Cross-entropy or focal loss with label smoothing and per-class weights."""
    import tensorflow as tf

    w = tf.constant(weights)
    eps = cfg.label_smoothing
    k = len(EMOTIONS)

    def loss(y_true, y_pred):
        y_pred = tf.clip_by_value(tf.cast(y_pred, tf.float32), 1e-7, 1.0)
        target = y_true * (1.0 - eps) + eps / k
        ce = -target * tf.math.log(y_pred)
        if cfg.loss == "focal":
            ce = ce * tf.pow(1.0 - y_pred, cfg.focal_gamma)
        per_sample = tf.reduce_sum(ce, axis=-1)
        return per_sample * tf.reduce_sum(y_true * w, axis=-1)

    return loss


def make_optimizer(cfg: OptimConfig, steps_per_epoch: int, lr_scale: float = 1.0):
    import keras

    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    peak = cfg.learning_rate * lr_scale
    if cfg.schedule == "cosine":  # "plateau" starts constant; _EpochLog lowers it (PlateauSchedule)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak * 0.1 if warmup else peak, decay_steps=total - warmup, alpha=0.01,
            warmup_target=peak if warmup else None, warmup_steps=warmup,
        )
    else:
        lr = peak
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)


def build_from_config(cfg: TrainConfig):
    """Random-init (or init_from) keras model for the configured architecture."""
    import keras

    from fer_core.lab.architectures import build_model

    if cfg.model.init_from:
        if not Path(cfg.model.init_from).is_file():
            raise ConfigError(f"model.init_from: {cfg.model.init_from} is not a file; train that model first (a config's "
                              "header says how it was made) or point init_from at a .keras model")
        model = keras.models.load_model(cfg.model.init_from, compile=False, safe_mode=True)
        if cfg.model.resize_widths:
            from fer_core.lab.resize import resize_vgg, vgg_widths

            before = model.count_params()
            print(f"resizing {cfg.model.init_from}: widths {vgg_widths(model)} -> {list(cfg.model.resize_widths)}",
                  end="", flush=True)
            model = resize_vgg(model, cfg.model.resize_widths, seed=cfg.seed)
            print(f", {before:,} -> {model.count_params():,} parameters", flush=True)
        return model
    if cfg.model.resize_widths:
        raise ConfigError("model.resize_widths needs model.init_from (the trained vgg net to prune or widen)")
    kwargs = dict(cfg.model.options)
    kwargs.setdefault("dropout", cfg.model.dropout)
    if cfg.model.architecture == "transfer":
        kwargs["backbone_path"] = cfg.model.backbone_path
    shape = (cfg.model.input_size, cfg.model.input_size, cfg.model.channels)
    return build_model(cfg.model.architecture, shape, len(EMOTIONS), **kwargs)


def backbone_of(model):
    """The nested keras.Model a 'transfer' net wraps (None for the plain architectures)."""
    import keras

    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def set_backbone_trainable(model, trainable: bool) -> bool:
    """Freeze/unfreeze a nested backbone (transfer models); returns False when there is none."""
    backbone = backbone_of(model)
    if backbone is None:
        return False
    backbone.trainable = trainable
    return True


def configure_runtime(cfg: OptimConfig, seed: int) -> bool:
    """Seeds, threads and mixed precision; returns True when a GPU is used."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if cfg.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, cfg.threads // 2))
        except RuntimeError:
            pass  # already initialised in this process
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu and cfg.mixed_precision == "auto":
        keras.mixed_precision.set_global_policy("mixed_float16")
    return gpu


# ----------------------------------------------------------------------------- training


@dataclass
class FitResult:
    model: object
    history: list[dict]
    best_val_accuracy: float  # of the returned model
    best_epoch: int  # best single epoch by validation accuracy
    seconds: float
    selected: str = ""  # "epoch N" or "swa over epochs A-B"
    swa_val_accuracy: float | None = None


class WeightAverage:
    """Running mean of a model's weights, one sample per epoch (SWA).

    Kept in `path` (npz) with the last epoch it includes, so a resumed run neither loses nor
    double-counts an epoch.
    """

    def __init__(self, path: Path):
        self.path, self.count, self.last_epoch = path, 0, 0
        self.mean: list[np.ndarray] | None = None
        if path.exists():
            with np.load(path) as f:
                self.count, self.last_epoch = int(f["count"]), int(f["last_epoch"])
                self.mean = [f[f"w{i}"] for i in range(len(f.files) - 2)]

    def add(self, weights: list[np.ndarray], epoch: int) -> None:
        if epoch <= self.last_epoch:
            return
        self.count += 1
        if self.mean is None:
            self.mean = [np.asarray(w, np.float64).copy() for w in weights]
        else:
            for m, w in zip(self.mean, weights):
                m += (np.asarray(w, np.float64) - m) / self.count
        self.last_epoch = epoch
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, count=self.count, last_epoch=self.last_epoch, **{f"w{i}": m for i, m in enumerate(self.mean)})
        tmp.replace(self.path)

    def weights(self) -> list[np.ndarray]:
        return [m.astype(np.float32) for m in self.mean or []]


def _batch_norm_layers(model) -> list:
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_batch_norm_layers(layer))
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def recalibrate_batch_norm(model, images: np.ndarray, spec: ModelSpec, batch: int = 256) -> int:
    """Re-estimate the moving mean/variance of every trainable BatchNormalization over `images`.

    Averaged weights have no statistics of their own; a forward pass in training mode with the
    momentum set to k/(k+1) at batch k makes the moving values the plain mean over all batches
    (as torch.optim.swa_utils.update_bn). Frozen BN layers keep theirs. Returns how many were reset.
    """
    layers = [layer for layer in _batch_norm_layers(model) if layer.trainable]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    try:
        for k, i in enumerate(range(0, len(images), batch) if layers else []):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(preprocess(images[i:i + batch], spec), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)


FIT_SAMPLE = 2048  # training faces in the per-epoch fit check (about 5 s per epoch on 2 cores)


def fixed_sample_fit(model, images: np.ndarray, labels: np.ndarray, spec: ModelSpec) -> dict[str, float]:
    """Accuracy and cross-entropy of `model` (inference mode) on fixed, unaugmented training faces.

    Keras's logged `accuracy`/`loss` are running means in training mode (dropout, batch statistics) on
    augmented batches while the weights move; in long CPU runs here they drifted by ~5 points while
    the checkpoints themselves fitted the training faces equally well (fer-vgg-v5 model card). This
    is the figure that says what the model at the end of the epoch fits.
    """
    probs = predict_probs(model, images, spec)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"fit_accuracy": float((probs.argmax(1) == labels).mean()), "fit_loss": float(-np.log(picked).mean())}


@dataclass
class PlateauSchedule:
    """ReduceLROnPlateau on validation accuracy, PyTorch's rule (mode max, threshold 0, no cooldown).

    An epoch counts as bad unless it beats the best so far; after more than `patience` bad epochs in a
    row the LR is multiplied by `factor` (not below `min_lr`) and the count restarts. Plain data, so
    state.json and the portable checkpoint carry it across resumes.
    """

    lr: float
    factor: float = 0.75
    patience: int = 5
    min_lr: float = 0.0
    best: float = float("-inf")
    bad_epochs: int = 0

    def step(self, val_accuracy: float) -> float:
        """Record one epoch's validation accuracy; returns the LR for the next epoch."""
        if val_accuracy > self.best:
            self.best, self.bad_epochs = val_accuracy, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.lr, self.bad_epochs = max(self.lr * self.factor, self.min_lr), 0
        return self.lr

    def state(self) -> dict:
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs}

    @classmethod
    def for_run(cls, cfg: OptimConfig, saved: dict | None = None) -> "PlateauSchedule":
        """A fresh schedule at cfg.learning_rate, or the one a resumed run saved (its LR, best, count)."""
        schedule = cls(cfg.learning_rate, cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_lr)
        if saved:
            schedule.lr, schedule.best, schedule.bad_epochs = float(saved["lr"]), float(saved["best"]), int(saved["bad_epochs"])
        return schedule


def _save_atomically(model, path: Path) -> None:
    """model.save to a temporary .keras file, then rename: a SIGSTOP or a crash mid-write leaves the old file."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _EpochLog:
    """Keras callback: one progress line per epoch with ETA, appended to history.csv, plus resume state
    (state.json, and the portable checkpoint file next to it); applies the plateau schedule when given."""

    def __new__(cls, *args, **kwargs):
        import keras

        class Impl(keras.callbacks.Callback):
            def __init__(self, out: Path, total_epochs: int, start_epoch: int,
                         average: WeightAverage | None = None, average_from: int = 0,
                         fit_sample: tuple[np.ndarray, np.ndarray, ModelSpec] | None = None,
                         plateau: PlateauSchedule | None = None, identity: dict | None = None):
                super().__init__()
                self.out, self.total, self.t0, self.start = out, total_epochs, time.time(), start_epoch
                self.average, self.average_from, self.fit_sample = average, average_from, fit_sample
                self.plateau, self.identity = plateau, identity or {}
                self.best = -1.0
                self.best_weights: list[np.ndarray] | None = None  # None: on disk (best.keras) only
                state = out / "state.json"
                if state.exists():
                    self.best = json.loads(state.read_text()).get("best_val_accuracy", -1.0)

            def on_train_begin(self, logs=None):
                if self.plateau is not None:  # a resumed run continues at the LR its plateau schedule reached
                    self.model.optimizer.learning_rate.assign(self.plateau.lr)

            def _saved_best_weights(self) -> list[np.ndarray]:
                """The best epoch's weights of a resumed run: from its portable file, else from best.keras."""
                portable = self.out / checkpoint.FILENAME
                if portable.exists():
                    return checkpoint.read(portable)["best"]
                import keras

                return keras.models.load_model(self.out / "best.keras", compile=False, safe_mode=True).get_weights()

            def on_epoch_end(self, epoch, logs=None):
                logs = {k: float(v) for k, v in (logs or {}).items()}
                if self.fit_sample is not None:
                    logs.update(fixed_sample_fit(self.model, *self.fit_sample))
                done = epoch + 1
                rate = (time.time() - self.t0) / max(1, done - self.start)
                eta = rate * (self.total - done)
                lr = float(np.asarray(self.model.optimizer.learning_rate))
                row = {"epoch": done, **logs, "lr": lr, "seconds": round(rate, 1)}
                hist = self.out / "history.csv"
                new = not hist.exists()
                fields = list(row)
                if not new:  # a resumed run keeps the columns its history.csv was started with
                    with open(hist, newline="") as fh:
                        fields = next(csv.reader(fh))
                with open(hist, "a", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=fields, restval="", extrasaction="ignore")
                    if new:
                        w.writeheader()
                    w.writerow(row)
                val = logs.get("val_accuracy", -1.0)
                weights = self.model.get_weights()
                if val > self.best:
                    self.best, self.best_weights = val, weights
                    _save_atomically(self.model, self.out / "best.keras")
                elif self.best_weights is None:
                    self.best_weights = self._saved_best_weights()
                _save_atomically(self.model, self.out / "last.keras")
                if self.average is not None and done >= self.average_from:
                    self.average.add(weights, done)
                state = {"epoch": done, "best_val_accuracy": self.best}
                if self.plateau is not None:
                    self.model.optimizer.learning_rate.assign(self.plateau.step(val))
                    state["plateau"] = self.plateau.state()
                _write_text_atomically(self.out / "state.json", json.dumps(state))
                checkpoint.write(self.out / checkpoint.FILENAME, weights,
                                 weights if self.best_weights is weights else self.best_weights, state,
                                 (self.out / "history.csv").read_text(), self.identity)
                print(
                    f"epoch {done}/{self.total}  loss {logs.get('loss', float('nan')):.4f}  "
                    f"acc {logs.get('accuracy', float('nan')):.4f}  fixed-sample acc {logs.get('fit_accuracy', float('nan')):.4f}  "
                    f"val_acc {val:.4f}  best {self.best:.4f}  lr {lr:.3g}  "
                    f"{rate:.0f}s/epoch  ETA {eta / 60:.1f} min"
                    + (f"  swa {self.average.count}" if self.average is not None and self.average.count else ""),
                    flush=True,
                )

        return Impl(*args, **kwargs)


def teacher_targets(cfg: DistillConfig, images: np.ndarray) -> np.ndarray:
    """The teacher's (N, 7) EMOTIONS-order probabilities for uint8 faces, through its own preprocessing."""
    from fer_core.models.registry import create_emotion_model

    teacher = create_emotion_model(cfg.teacher, tta=cfg.tta)
    t0 = time.time()
    probs = teacher.predict(images)
    print(f"distillation: {teacher.version}{' with flip TTA' if cfg.tta else ''} labelled {len(images)} training "
          f"faces in {time.time() - t0:.0f}s; target = {1 - cfg.weight:g} x label + {cfg.weight:g} x teacher", flush=True)
    return probs


def online_teacher(cfg: DistillConfig, spec: ModelSpec):
    """A tf function: the student's model-input batch -> the teacher's (n, 7) EMOTIONS-order probabilities."""
    import tensorflow as tf

    from fer_core.models.registry import create_emotion_model

    teacher = create_emotion_model(cfg.teacher)
    t = teacher.spec
    if (t.input_size, t.channels, t.scaling) != (spec.input_size, spec.channels, spec.scaling):
        raise ConfigError(f"distill.online: teacher {teacher.version} takes {t.input_size}x{t.input_size}x{t.channels} "
                          f"scaled {t.scaling!r}, the student {spec.input_size}x{spec.input_size}x{spec.channels} "
                          f"scaled {spec.scaling!r}; use online: false (the teacher then sees its own preprocessing)")
    net = teacher.inference_model
    order = tf.constant(t.emotion_order)

    def probs(x):
        p = net(x, training=False)
        if cfg.tta:
            p = (p + net(tf.reverse(x, axis=[2]), training=False)) / 2.0
        return tf.gather(tf.cast(p, tf.float32), order, axis=1)

    print(f"distillation: {teacher.version}{' with flip TTA' if cfg.tta else ''} labels every augmented batch; "
          f"target = {1 - cfg.weight:g} x label + {cfg.weight:g} x teacher", flush=True)
    return probs


def run_identity(cfg: TrainConfig) -> dict:
    """What a portable checkpoint must agree with to be resumed: the net, the seed and the data split."""
    return {"model": dataclass_to_dict(cfg.model), "seed": cfg.seed,
            "data": {k: getattr(cfg.data, k) for k in ("train_split", "val_split", "val_fraction", "limit")}}


def restore_portable(cfg: TrainConfig, source: Path, ckpt_dir: Path) -> int:
    """Rebuild ckpt_dir (last.keras, best.keras, state.json, history.csv) from a portable checkpoint.

    The net is built from the config and given the file's weights, so the file holds no architecture
    of its own; a file written for another net, seed or split is refused. Returns the epoch it holds.
    """
    if cfg.optim.swa_start_epoch:
        raise ConfigError("portable_checkpoint: the portable file does not carry the SWA running average "
                          "(swa.npz); resume SWA runs on the machine that holds their output_dir")
    saved = checkpoint.read(source)
    mismatched = sorted(k for k, v in run_identity(cfg).items() if saved["identity"].get(k) != v)
    if mismatched:
        raise ConfigError(f"portable_checkpoint: {source} was written by a run with other {', '.join(mismatched)} "
                          f"settings than this config; point portable_checkpoint at this run's own file, or empty it "
                          "to start afresh")
    model = build_from_config(cfg)
    shapes = [list(w.shape) for w in model.get_weights()]
    if shapes != saved["shapes"]:
        raise ConfigError(f"portable_checkpoint: {source} holds weights shaped for another net "
                          f"({len(saved['shapes'])} arrays vs {len(shapes)} here)")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model.set_weights(saved["best"])
    _save_atomically(model, ckpt_dir / "best.keras")
    model.set_weights(saved["last"])
    _save_atomically(model, ckpt_dir / "last.keras")
    (ckpt_dir / "history.csv").write_text(saved["history_csv"])
    (ckpt_dir / checkpoint.FILENAME).write_bytes(Path(source).read_bytes())
    _write_text_atomically(ckpt_dir / "state.json", json.dumps(saved["state"]))  # last: it marks the dir resumable
    return int(saved["state"]["epoch"])


def fit(cfg: TrainConfig, train: FaceDataset, val: FaceDataset, ckpt_dir: Path,
        soft_targets: np.ndarray | None = None, portable: Path | None = None) -> FitResult:
    """Train one model with checkpoints in ckpt_dir; resumes from ckpt_dir/last.keras if present.

    soft_targets: the teacher's probabilities for ``train`` (see DistillConfig), or None.
    portable: a portable checkpoint file (fer_core.lab.checkpoint) to start from when ckpt_dir has none.
    """
    import keras

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    configure_runtime(cfg.optim, cfg.seed)
    spec = model_spec(cfg.model)
    o = cfg.optim
    state_file = ckpt_dir / "state.json"
    if portable is not None and portable.is_file() and not (ckpt_dir / "last.keras").exists():
        epoch = restore_portable(cfg, portable, ckpt_dir)
        print(f"restored {ckpt_dir} from the portable checkpoint {portable} (epoch {epoch})", flush=True)
    start_epoch = 0
    saved_state: dict = {}
    t0 = time.time()
    if (ckpt_dir / "last.keras").exists() and state_file.exists():
        saved_state = json.loads(state_file.read_text())
        start_epoch = saved_state["epoch"]
        print(f"resuming from {ckpt_dir / 'last.keras'} after epoch {start_epoch}", flush=True)
        model = keras.models.load_model(ckpt_dir / "last.keras", compile=False, safe_mode=True)
    else:
        model = build_from_config(cfg)
    teacher_fn = online_teacher(cfg.distill, spec) if cfg.distill.teacher and cfg.distill.online else None
    # a resumed process draws new shuffles and augmentations instead of replaying those of epoch 1
    train_ds = make_dataset(train.images, train.labels, spec, o.batch_size, training=True, augment=cfg.augment,
                            seed=cfg.seed + start_epoch, soft_targets=soft_targets, soft_weight=cfg.distill.weight,
                            teacher_fn=teacher_fn)
    val_ds = make_dataset(val.images, val.labels, spec, 256, training=False)
    steps = len(train) // o.batch_size
    loss = make_loss(o, class_weights(train.labels, o.class_weighting))
    average = WeightAverage(ckpt_dir / "swa.npz") if o.swa_start_epoch else None
    plateau = PlateauSchedule.for_run(o, saved_state.get("plateau")) if o.schedule == "plateau" else None
    sample = np.random.default_rng(cfg.seed).permutation(len(train))[:FIT_SAMPLE]
    fit_sample = (train.images[sample], train.labels[sample], spec)
    callbacks = [_EpochLog(ckpt_dir, o.epochs, start_epoch, average, o.swa_start_epoch, fit_sample,
                           plateau, run_identity(cfg))]
    if o.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=o.early_stopping_patience, mode="max"))

    phases: list[tuple[int, int, bool, float]] = []  # (from_epoch, to_epoch, backbone_trainable, lr_scale)
    if o.freeze_backbone_epochs and set_backbone_trainable(model, False):
        phases.append((0, o.freeze_backbone_epochs, False, 1.0))
        phases.append((o.freeze_backbone_epochs, o.epochs, True, o.fine_tune_lr_factor))
    else:
        phases.append((0, o.epochs, True, 1.0))
    for first, last, trainable, lr_scale in phases:
        if last <= start_epoch:
            continue
        set_backbone_trainable(model, trainable)
        optimizer = make_optimizer(o, steps, lr_scale)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
        if start_epoch > first:  # resumed mid-phase: move the LR schedule to where it was
            optimizer.iterations.assign((start_epoch - first) * steps)
        model.fit(train_ds, validation_data=val_ds, epochs=last, initial_epoch=max(first, start_epoch),
                  callbacks=callbacks, verbose=0)
        start_epoch = last
    state = json.loads(state_file.read_text())
    history = list(csv.DictReader(open(ckpt_dir / "history.csv")))
    best_epoch = max(history, key=lambda r: float(r.get("val_accuracy", -1)))["epoch"] if history else 0
    best = keras.models.load_model(ckpt_dir / "best.keras", compile=False, safe_mode=True)
    result = FitResult(best, history, float(state["best_val_accuracy"]), int(best_epoch), time.time() - t0,
                       selected=f"epoch {best_epoch}")
    if average is not None and average.count:
        swa = model  # the last epoch is saved in last.keras; its in-memory copy now takes the average
        swa.set_weights(average.weights())
        recalibrate_batch_norm(swa, train.images, spec)
        swa.save(ckpt_dir / "swa.keras")
        result.swa_val_accuracy = accuracy(swa, val, spec)
        span = f"{average.last_epoch - average.count + 1}-{average.last_epoch}"
        print(f"swa over epochs {span}: val_acc {result.swa_val_accuracy:.4f} "
              f"(best epoch {best_epoch}: {result.best_val_accuracy:.4f})", flush=True)
        if result.swa_val_accuracy > result.best_val_accuracy:
            result.model, result.best_val_accuracy, result.selected = swa, result.swa_val_accuracy, f"swa over epochs {span}"
    return result


def accuracy(model, dataset: FaceDataset, spec: ModelSpec, tta: bool | str = False) -> float:
    """Top-1 accuracy through the same preprocessing (optionally with TTA: True/"flip", "ten_crop", ...)."""
    probs = predict_probs(model, dataset.images, spec, tta=tta)
    return float((probs.argmax(1) == dataset.labels).mean())


def predict_probs(model, images: np.ndarray, spec: ModelSpec, tta: bool | str = False, batch: int = 512) -> np.ndarray:
    """(N, 7) probabilities of a keras model through EmotionModel's own views (the served TTA, exactly)."""
    from fer_core.models.emotion import EmotionModel

    return EmotionModel(model, spec, tta=tta, batch_size=batch, fold=False).predict(images)


def split_data(cfg: TrainConfig) -> tuple[FaceDataset, FaceDataset, FaceDataset | None, str]:
    """(train, val, test|None, report) from the configured source; val is held out of train when not given."""
    splits, report = load_dataset(cfg.data.path, model_spec(cfg.model).frame)
    if cfg.data.train_split not in splits:
        raise ValueError(f"data.train_split: {cfg.data.train_split!r} not in {cfg.data.path} (found {sorted(splits)})")
    train = splits[cfg.data.train_split]
    if cfg.data.limit:
        keep, _ = stratified_split(train.labels, 1 - cfg.data.limit / len(train), cfg.seed)
        train = train.subset(keep[: cfg.data.limit])
    if cfg.data.val_split:
        val = splits[cfg.data.val_split]
    else:
        keep, held = stratified_split(train.labels, cfg.data.val_fraction, cfg.seed)
        train, val = train.subset(keep, f"{train.name}[train]"), train.subset(held, f"{train.name}[val]")
    test = splits.get(cfg.data.test_split) if cfg.data.test_split else None
    if len(val) == 0 or len(train) == 0:
        raise ValueError(f"{cfg.data.path}: {len(train)} training and {len(val)} validation faces; "
                         "add data or raise data.val_fraction (model selection needs a validation set)")
    return train, val, test, report.summary()


def write_outputs(cfg: TrainConfig, result: FitResult, metrics: dict, command: str,
                  mix_calibration: dict | None = None) -> Path:
    """model.keras + model.spec.json (with sha256 and the mix calibration) + metrics.json + model_card.md."""
    from fer_core.models.registry import spec_to_json
    from fer_core.weights import WeightSpec, sha256_file

    out = Path(cfg.output_dir)
    model_path = out / "model.keras"
    result.model.save(model_path)
    digest = sha256_file(model_path)
    spec = model_spec(cfg.model, WeightSpec(name=cfg.model.name, filename=model_path.name, sha256=digest,
                                            source=str(model_path.name)), mix_calibration)
    (out / "model.spec.json").write_text(spec_to_json(spec))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "model_card.md").write_text(model_card(cfg, result, metrics, command, digest))
    return model_path


def splits_text(cfg: TrainConfig) -> str:
    """The model card's account of which rows trained, selected and tested the model (no split is hidden)."""
    d = cfg.data
    if d.val_split:
        lines = [f"- Source: `{d.path}`. Training rows: `{d.train_split}`, all of them; the `{d.val_split}` split is the "
                 "validation set for model selection (by validation accuracy)."]
    else:
        lines = [f"- Source: `{d.path}`. Training rows: `{d.train_split}`; a stratified {d.val_fraction:.0%} of them is held "
                 "out for model selection (by validation accuracy)."]
    if d.test_split and d.test_split == d.val_split:
        lines.append(f"- `{d.test_split}` is both the validation and the reported test split: it chose the served weights, "
                     "so its accuracy below is optimistic. Judge this model on data it never saw.")
    elif d.test_split:
        lines.append(f"- `{d.test_split}` is reported only; nothing was tuned on it.")
    lines.append("- Splits not named here (e.g. FER2013's PrivateTest) were not read.")
    return "\n".join(lines)


def model_card(cfg: TrainConfig, result: FitResult, metrics: dict, command: str, digest: str) -> str:
    import tensorflow as tf

    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, (dict, list)))
    swa_line = (f" (weights averaged from epoch {cfg.optim.swa_start_epoch} on, BatchNormalization re-estimated;"
                f" validation {result.swa_val_accuracy:.4f})" if result.swa_val_accuracy is not None else "")
    init_line = (f"- Initialised from `{cfg.model.init_from}` (architecture and dropout are that file's).\n"
                 if cfg.model.init_from else "")
    if cfg.distill.teacher:
        init_line += (f"- Distilled from `{cfg.distill.teacher}`{' (flip-averaged)' if cfg.distill.tta else ''}: training target "
                      f"{1 - cfg.distill.weight:g} x label + {cfg.distill.weight:g} x the teacher's probabilities"
                      f"{' on each augmented batch' if cfg.distill.online else ''}.\n")
    m, o = cfg.model, cfg.optim
    crop_line = (f" (random crops of faces resized to {m.frame_size}x{m.frame_size} in training; the centre crop single "
                 "pass, tta 'ten_crop' the centre and corner crops and their mirrors)" if m.frame_size > m.input_size else "")
    schedule_line = (f"plateau (x{o.plateau_factor} after more than {o.plateau_patience} epochs without a better "
                     "validation accuracy)" if o.schedule == "plateau" else o.schedule)
    return f"""# Model card: {cfg.model.name} v{cfg.model.version}

Facial-expression classifier over the 7 FER2013 classes ({", ".join(EMOTIONS)}), trained with `fer_core.train`.

## Command
```
{command}
```

## Data and splits
{splits_text(cfg)}

## Training
- Architecture: `{cfg.model.architecture}` {cfg.model.options}, dropout {cfg.model.dropout}, input {cfg.model.input_size}x{cfg.model.input_size}x{cfg.model.channels}{crop_line}, scaling `{cfg.model.scaling}`.
{init_line}- Optimiser: {cfg.optim.optimizer}, lr {cfg.optim.learning_rate}, {schedule_line} schedule, warmup {cfg.optim.warmup_epochs} epochs,
  weight decay {cfg.optim.weight_decay}, label smoothing {cfg.optim.label_smoothing}, loss {cfg.optim.loss}, class weighting {cfg.optim.class_weighting}.
- Augmentation: {dataclass_to_dict(cfg.augment)}.
- Epochs: {len(result.history)} run, best epoch {result.best_epoch}, served: {result.selected}{swa_line}; wall time {result.seconds / 60:.1f} min (this invocation).
- Hardware: {platform.processor() or platform.machine()}, {__import__("os").cpu_count()} CPU cores, GPU: {bool(tf.config.list_physical_devices("GPU"))}; TensorFlow {tf.__version__}.
- sha256 of model.keras: `{digest}`

## Metrics
| metric | value |
|---|---|
{rows}

## Weaknesses
- FER2013 faces are 48x48 grey, mostly frontal web images; accuracy drops on profiles, occlusion, low light
  and on crops framed differently from FER2013 (see the end-to-end gap in the README).
- `disgust` has 436 training images; its recall is the lowest of the classes.
- FER2013 labels are noisy (human agreement is about 65%); demographic balance is unknown.

## Responsible use
The model estimates a facial *expression* from pixels, not a person's internal emotional state. Use it for
aggregate trends over many faces, never to make decisions about individuals. Faces are personal data:
keep crops and tables access-controlled and delete them when the analysis is done.
"""


def cross_validate(cfg: TrainConfig) -> dict:
    """k-fold CV on the training split: validation accuracy per fold and mean +- std."""
    train, val, _, report = split_data(cfg)
    pool = FaceDataset(np.concatenate([train.images, val.images]), np.concatenate([train.labels, val.labels]), "cv")
    scores = []
    for f, (tr, va) in enumerate(stratified_kfold(pool.labels, cfg.cv_folds, cfg.seed)):
        print(f"fold {f + 1}/{cfg.cv_folds}: {len(tr)} train, {len(va)} val", flush=True)
        res = fit(cfg, pool.subset(tr), pool.subset(va), Path(cfg.output_dir) / f"fold{f + 1}")
        scores.append(res.best_val_accuracy)
    out = {"folds": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores)), "k": cfg.cv_folds}
    Path(cfg.output_dir, "cv.json").write_text(json.dumps(out, indent=2))
    print(f"{cfg.cv_folds}-fold CV accuracy: {out['mean']:.4f} +- {out['std']:.4f}", flush=True)
    return out


def train(cfg: TrainConfig, command: str = "") -> dict:
    """One training run: fit on train, select on val, report val and test; writes the outputs."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(dataclass_to_dict(cfg), indent=2))
    train_set, val_set, test_set, report = split_data(cfg)
    print(report, flush=True)
    print(f"train {len(train_set)}  val {len(val_set)}  test {len(test_set) if test_set is not None else 0}", flush=True)
    soft = teacher_targets(cfg.distill, train_set.images) if cfg.distill.teacher and not cfg.distill.online else None
    result = fit(cfg, train_set, val_set, out / "checkpoints", soft_targets=soft,
                 portable=Path(cfg.portable_checkpoint) if cfg.portable_checkpoint else None)
    spec = model_spec(cfg.model)
    val_probs = predict_probs(result.model, val_set.images, spec)
    metrics: dict = {
        "val_accuracy": round(float((val_probs.argmax(1) == val_set.labels).mean()), 4),
        "best_epoch": result.best_epoch,
        "selected": result.selected,
        "epochs": len(result.history),
        "n_train": len(train_set),
        "n_val": len(val_set),
    }
    if result.swa_val_accuracy is not None:
        metrics["swa_val_accuracy"] = round(result.swa_val_accuracy, 4)
    metrics["val_accuracy_tta"] = round(accuracy(result.model, val_set, spec, tta=True), 4)
    if spec.frame > spec.input_size:
        metrics["val_accuracy_ten_crop"] = round(accuracy(result.model, val_set, spec, "ten_crop"), 4)
    if test_set is not None:
        test_accuracy = accuracy(result.model, test_set, spec)
        metrics[f"{cfg.data.test_split}_accuracy"] = round(test_accuracy, 4)
        low, high = wilson_interval(round(test_accuracy * len(test_set)), len(test_set))
        metrics[f"{cfg.data.test_split}_accuracy_95ci"] = f"{low:.4f}-{high:.4f}"  # Wilson: how far the figure may be noise
        metrics[f"{cfg.data.test_split}_accuracy_tta"] = round(accuracy(result.model, test_set, spec, tta=True), 4)
        if spec.frame > spec.input_size:
            metrics[f"{cfg.data.test_split}_accuracy_ten_crop"] = round(accuracy(result.model, test_set, spec, "ten_crop"), 4)
        metrics["n_test"] = len(test_set)
    try:  # the job's confusion-adjusted campaign mix (fer_core.quantify) needs this profile
        calibration = mix_calibration(val_probs, predict_probs(result.model, val_set.images, spec, tta=True),
                                      val_set.labels, source=f"{val_set.name} ({len(val_set)} faces)")
    except ValueError as e:
        calibration = None
        print(f"mix calibration skipped ({e}); campaigns scored with this model get no adjusted mix", flush=True)
    write_outputs(cfg, result, metrics, command, calibration)
    print(json.dumps(metrics, indent=2), flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fer_core.train", description=__doc__)
    p.add_argument("--config", required=True, help="YAML file matching fer_core.train.TrainConfig")
    p.add_argument("--data", help="override data.path (FER2013 CSV or class-folder root)")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--epochs", type=int, help="override optim.epochs")
    p.add_argument("--cv-folds", type=int, help="override cv_folds (>=2 runs k-fold CV)")
    p.add_argument("--export-checkpoint", action="store_true",
                   help="copy the run's latest epoch (output_dir/checkpoints/portable.npz) to the config's "
                        "portable_checkpoint file, to be committed, and exit; safe while the run trains")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_yaml(args.config, TrainConfig)
    if args.data:
        cfg = replace(cfg, data=replace(cfg.data, path=args.data))
    if args.output_dir:
        cfg = replace(cfg, output_dir=args.output_dir)
    if args.epochs:
        cfg = replace(cfg, optim=replace(cfg.optim, epochs=args.epochs))
    if args.cv_folds:
        cfg = replace(cfg, cv_folds=args.cv_folds)
    command = "python -m fer_core.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.export_checkpoint:
        if not cfg.portable_checkpoint:
            raise ConfigError(f"{args.config}: portable_checkpoint is not set; name the committed file "
                              "(e.g. checkpoints/<run>.npz) in the config to export to it")
        done = checkpoint.export(Path(cfg.output_dir) / "checkpoints" / checkpoint.FILENAME, Path(cfg.portable_checkpoint))
        print(f"exported epoch {done['epoch']} (best validation {done['best_val_accuracy']:.4f}) to {done['path']}: "
              f"{done['bytes'] / 1e6:.2f} MB", flush=True)
        return 0
    if cfg.cv_folds >= 2:
        cross_validate(cfg)
    else:
        train(cfg, command)
    return 0

