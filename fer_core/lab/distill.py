"""Knowledge distillation: a trained teacher's probabilities as part of the training target (see DistillConfig)."""
from __future__ import annotations

import time

import numpy as np

from fer_core.errors import ConfigError
from fer_core.lab.config import DistillConfig
from fer_core.models.spec import ModelSpec


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
