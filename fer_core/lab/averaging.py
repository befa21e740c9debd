"""Weight averaging: the running mean of a run's epochs (SWA) and the BatchNormalization re-estimate
that averaged weights (an SWA model or a soup of fine-tuned models, bench/model_soup.py) need.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.models.spec import ModelSpec
from fer_core.preprocess import preprocess


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
