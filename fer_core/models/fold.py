"""Fold inference-mode BatchNormalization into the convolution or dense layer before it.

At inference a BatchNormalization layer is a fixed per-channel affine map, y = x * scale + shift,
so it can be merged into the kernel and bias of the layer that produces x. The folded network
computes the same function with one memory pass fewer per block. Measured on the 2-core CPU,
batch 256 (`bench/bench_inference.py` prints folded vs unfolded, interleaved in one run):
see the README's throughput figures.

Conditions, checked per pair (anything else is left as it is):
  * the BatchNormalization reads the output of a Conv2D, SeparableConv2D, DepthwiseConv2D or Dense
    layer with a linear activation, and that output feeds nothing else;
  * it normalises the last (channels) axis;
  * both are layers of the top-level functional or sequential model (nested models untouched).
The folded model is a separate copy (the original keeps its layers, so Grad-CAM can still read
their outputs) and is for inference only: never train or save it. `fold_batch_norm` checks that both models give the same
outputs on a random batch and returns the original when they do not.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["fold_batch_norm", "foldable_pairs"]

log = logging.getLogger(__name__)
FOLDABLE = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense")
TOLERANCE = 1e-4


def foldable_pairs(model: Any) -> dict[str, str]:
    """{producer layer name: BatchNormalization layer name} for every pair that can be folded."""
    pairs: dict[str, str] = {}
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ != "BatchNormalization":
            continue
        try:
            history = getattr(layer.input, "_keras_history", None)
        except (AttributeError, ValueError):  # a layer called more than once has no single input
            continue
        source = history[0] if history else None
        if source is None or type(source).__name__ not in FOLDABLE or len(source._outbound_nodes) != 1:
            continue
        if source.get_config().get("activation", "linear") != "linear":
            continue
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        pairs[source.name] = layer.name
    return pairs


def _folded_weights(producer: Any, bn: Any) -> list[np.ndarray]:
    """The producer's weights with the BatchNormalization's scale and shift merged in (bias added)."""
    scale = (bn.gamma.numpy() if bn.scale else 1.0) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    shift = (bn.beta.numpy() if bn.center else 0.0) - bn.moving_mean.numpy() * scale
    weights = producer.get_weights()
    bias = (weights[-1] * scale if producer.use_bias else 0.0) + shift
    kind = type(producer).__name__
    if kind == "SeparableConv2D":  # the pointwise kernel makes the output channels
        return [weights[0], weights[1] * scale, bias]
    if kind == "DepthwiseConv2D":  # kernel (h, w, in, multiplier) -> output channel in*multiplier
        k = weights[0]
        return [k * scale.reshape(k.shape[2], k.shape[3]), bias]
    return [weights[0] * scale, bias]


def fold_batch_norm(model: Any, seed: int = 0) -> Any:
    """An inference copy of ``model`` with BatchNormalization folded in, or ``model`` itself when
    nothing folds or the check on a random batch fails."""
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    import keras

    class PassThrough(keras.layers.Layer):
        """Stands in for a folded BatchNormalization."""

        def call(self, inputs, training=None, mask=None):
            return inputs

    folded_bns = set(pairs.values())

    def clone(layer):
        if layer.name in pairs:
            return type(layer).from_config({**layer.get_config(), "use_bias": True})
        if layer.name in folded_bns:
            return PassThrough(name=layer.name)
        return type(layer).from_config(layer.get_config())  # a copy: sharing would give the original's
        # layers a second inbound node, and Grad-CAM reads their outputs

    try:
        folded = keras.models.clone_model(model, clone_function=clone)
        for layer in model.layers:
            if layer.name in pairs:
                folded.get_layer(layer.name).set_weights(_folded_weights(layer, model.get_layer(pairs[layer.name])))
            elif layer.name not in folded_bns and layer.weights:
                folded.get_layer(layer.name).set_weights(layer.get_weights())
        shape = (8,) + tuple(d or 1 for d in model.input_shape[1:])
        x = np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)
        diff = float(np.abs(np.asarray(model.predict_on_batch(x)) - np.asarray(folded.predict_on_batch(x))).max())
    except Exception as e:  # an exotic graph clone_model cannot rebuild: serve the original
        log.info("BatchNormalization folding skipped for %s: %s: %s", model.name, type(e).__name__, e)
        return model
    if diff > TOLERANCE:
        log.warning("BatchNormalization folding changed %s's outputs by %.2g; serving the original", model.name, diff)
        return model
    return folded
