"""Loss, optimiser and learning-rate schedules of a training run (cosine with warmup, constant, plateau)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_core.lab.config import OptimConfig
from fer_core.labels import EMOTIONS


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


def make_optimizer(cfg: OptimConfig, steps_per_epoch: int, lr_scale: float = 1.0, start_step: int = 0):
    """The run's optimizer. ``start_step``: where a resumed phase's LR schedule continues, for an optimizer
    that counts its own steps from 0 (fer_core.lab.loop.resume_optimizer says when)."""
    import keras

    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    peak = cfg.learning_rate * lr_scale
    if cfg.schedule == "cosine":  # "plateau" starts constant; EpochLog lowers it (PlateauSchedule)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak * 0.1 if warmup else peak, decay_steps=total - warmup, alpha=0.01,
            warmup_target=peak if warmup else None, warmup_steps=warmup,
        )
        if start_step:
            lr = offset_schedule(lr, start_step)
    else:
        lr = peak
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)


def offset_schedule(schedule, offset: int):
    """``schedule`` read ``offset`` steps on: the LR of step ``offset + k`` at the optimizer's own step k."""
    import keras

    class OffsetSchedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return schedule(step + offset)

        def get_config(self):
            return {"schedule": keras.saving.serialize_keras_object(schedule), "offset": offset}

    return OffsetSchedule()


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
