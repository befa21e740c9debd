"""Training and validation batches: tf.data over the shared `preprocess`, with augmentation on top.

Augmentation acts on float batches in the spec's preprocess range, after the same preprocessing
inference uses, so a trained net never sees faces prepared any other way.
"""
from __future__ import annotations

import numpy as np

from fer_core.lab.config import AugmentConfig
from fer_core.labels import EMOTIONS
from fer_core.models.spec import ModelSpec
from fer_core.preprocess import preprocess, preprocess_frame


def augment_fn(cfg: AugmentConfig, spec: ModelSpec, seed: int):
    """A batch-level augmentation function for tf.data (float inputs in the spec's preprocess range).

    Inputs are at the spec's frame side: geometric and photometric changes act on the whole face, then a
    crop-trained spec takes a random input_size crop, random erasing blanks part of it, and mixup blends.
    """
    import keras
    import tensorflow as tf

    low = -1.0 if spec.scaling == "minus1_1" else 0.0  # the range preprocess() produces
    geometric = []
    f32 = {"dtype": "float32"}  # under any training policy: faces are augmented at full precision
    if cfg.flip:
        geometric.append(keras.layers.RandomFlip("horizontal", seed=seed, **f32))
    if cfg.rotation_deg:
        geometric.append(keras.layers.RandomRotation(cfg.rotation_deg / 360.0, fill_mode="reflect", seed=seed + 1, **f32))
    if cfg.shift:
        geometric.append(keras.layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="reflect", seed=seed + 2, **f32))
    if cfg.zoom:
        geometric.append(keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode="reflect", seed=seed + 3, **f32))

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
