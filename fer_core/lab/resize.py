"""Resizing a trained `vgg` net to other stage widths: pruning (narrower) and Net2WiderNet (wider).

Why: a copy with other widths that starts from what the trained net learned, instead of random weights.
- Narrower (network slimming, Liu et al. 2017): the classifier's cost is its convolutions and flip TTA
  doubles it; a pruned copy trained on keeps most of the accuracy at a fraction of the cost.
- Wider (Net2WiderNet, Chen et al. 2016): more capacity without starting over; the wider copy computes
  the same function as the trained net, so training on starts from its accuracy.

Which channels, per conv-BN pair:
- narrower: the output channels whose BatchNormalization scale |gamma| is largest (a channel with a
  small scale contributes little after normalisation). This changes the function: a starting point for
  training, not a served model.
- wider: every channel is kept and randomly chosen ones are copied (kernel and BN). The next layer
  reads a copied channel through several inputs whose weights are the original's split in random
  shares that sum to one, so the output is unchanged while the copies get different gradients (equal
  halves would keep them identical for ever).
The next layer (or the head's dense layer) reads the matching input channels.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fer_core.errors import ConfigError

__all__ = ["resize_vgg", "vgg_widths"]


def vgg_widths(model: Any) -> list[int]:
    """Stage widths of a `vgg` net built by fer_core.lab.architectures (from its layer names)."""
    return [int(convs[0].filters) for convs in _vgg_stages(model)]


def _vgg_stages(model: Any) -> list[list[Any]]:
    """The conv layers of a `vgg` net per stage, found by their names s{stage}c{conv}_conv."""
    stages: list[list[Any]] = []
    while (conv := _layer(model, f"s{len(stages)}c0_conv")) is not None:
        convs = [conv]
        while (nxt := _layer(model, f"s{len(stages)}c{len(convs)}_conv")) is not None:
            convs.append(nxt)
        stages.append(convs)
    return stages


def _layer(model: Any, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _pick_channels(gamma: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Old channel index of every new channel: the `width` strongest when narrowing, else all of them
    followed by random copies."""
    if width <= len(gamma):
        return np.sort(np.argsort(-np.abs(gamma), kind="stable")[:width])
    return np.concatenate([np.arange(len(gamma)), rng.choice(len(gamma), width - len(gamma))])


def _input_shares(source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Weight share of every new input channel: random positive shares summing to 1 over the copies of
    one old channel (1 for a channel that was not copied)."""
    shares = rng.uniform(0.5, 1.5, len(source))
    totals = np.bincount(source, weights=shares, minlength=int(source.max()) + 1)
    return shares / totals[source]


def resize_vgg(model: Any, widths: Sequence[int], seed: int = 0) -> Any:
    """A new `vgg` keras.Model with `widths` channels per stage, weights taken from `model`'s channels.

    `model` must be a `vgg` net from this package's registry (layers s{stage}c{conv}_conv/_bn and
    head_dense). A stage may get narrower or wider independently; dropout rates and the head's size are kept.
    When no width shrinks, the new net computes the same function (up to float rounding).
    """
    from fer_core.lab.architectures import build_model

    old = vgg_widths(model)
    convs = len(_vgg_stages(model)[0]) if old else 0
    if not old or _layer(model, "logits") is None:
        raise ConfigError("model.resize_widths: the init_from model is not a fer_core `vgg` net (no s0c0_conv / logits "
                          "layers); resizing supports only that architecture")
    widths = [int(w) for w in widths]
    if len(widths) != len(old) or any(w < 1 for w in widths):
        raise ConfigError(f"model.resize_widths: {widths} must give one positive width per stage ({len(old)} stages; "
                          f"the model's own are {old})")
    rng = np.random.default_rng(seed)
    dense = _layer(model, "head_dense")
    stage_drop = _layer(model, "s0_drop")
    resized = build_model("vgg", tuple(model.input_shape[1:]), int(_layer(model, "logits").units), widths=widths,
                          convs_per_stage=convs, dropout=float(_layer(model, "head_dropout").rate),
                          stage_dropout=float(stage_drop.rate) if stage_drop is not None else 0.0,
                          dense=int(dense.units) if dense is not None else 0)

    source_in = np.arange(model.input_shape[-1])  # old channel feeding each new input channel
    shares_in = np.ones(len(source_in))
    for s, width in enumerate(widths):
        for c in range(convs):
            name = f"s{s}c{c}"
            bn = model.get_layer(f"{name}_bn").get_weights()  # gamma, beta, moving mean, moving variance
            source_out = _pick_channels(bn[0], width, rng)
            (kernel,) = model.get_layer(f"{name}_conv").get_weights()
            kernel = kernel[:, :, source_in] * shares_in[:, None]
            resized.get_layer(f"{name}_conv").set_weights([kernel[..., source_out]])
            resized.get_layer(f"{name}_bn").set_weights([w[source_out] for w in bn])
            source_in, shares_in = source_out, _input_shares(source_out, rng)
    head = dense if dense is not None else model.get_layer("logits")
    kernel, *bias = head.get_weights()
    resized.get_layer(head.name).set_weights([kernel[source_in] * shares_in[:, None], *bias])
    if dense is not None:
        resized.get_layer("head_bn").set_weights(model.get_layer("head_bn").get_weights())
        resized.get_layer("logits").set_weights(model.get_layer("logits").get_weights())
    return resized
