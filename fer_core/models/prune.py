"""Channel pruning of a trained `vgg` net into a narrower one (network slimming, Liu et al. 2017).

Why: the classifier's cost is its convolutions, and flip TTA doubles it. A narrower copy of a trained
net, started from the channels that matter and then trained on (usually distilled from the wide net),
keeps most of what the wide net learned at a fraction of the cost, where a narrow net from random
weights would have to learn it all again.

Which channels: in every conv-BN pair, the output channels whose BatchNormalization scale |gamma| is
largest (a channel with a small scale contributes little after normalisation). The next layer keeps
the matching input channels; the head's dense layer keeps the rows of the last stage's survivors.
Pruning changes the function: the pruned net is a starting point for training, not a served model.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fer_core.errors import ConfigError

__all__ = ["prune_vgg", "vgg_widths"]


def vgg_widths(model: Any) -> list[int]:
    """Stage widths of a `vgg` net built by fer_core.models.architectures (from its layer names)."""
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


def prune_vgg(model: Any, widths: Sequence[int]) -> Any:
    """A new `vgg` keras.Model with `widths` channels per stage, weights copied from the kept channels.

    `model` must be a `vgg` net from this package's registry (layers s{stage}c{conv}_conv/_bn and
    head_dense); each new width must be at most the old one. Dropout rates and the head's size are kept.
    """
    from fer_core.models.architectures import build_model

    old = vgg_widths(model)
    convs = len(_vgg_stages(model)[0]) if old else 0
    if not old or _layer(model, "logits") is None:
        raise ConfigError("model.prune_widths: the init_from model is not a fer_core `vgg` net (no s0c0_conv / logits "
                          "layers); pruning supports only that architecture")
    widths = [int(w) for w in widths]
    if len(widths) != len(old) or any(w < 1 or w > o for w, o in zip(widths, old)):
        raise ConfigError(f"model.prune_widths: {widths} must give one width per stage ({len(old)} stages) and each "
                          f"at most the model's own {old}")
    dense = _layer(model, "head_dense")
    stage_drop = _layer(model, "s0_drop")
    pruned = build_model("vgg", tuple(model.input_shape[1:]), int(_layer(model, "logits").units), widths=widths,
                         convs_per_stage=convs, dropout=float(_layer(model, "head_dropout").rate),
                         stage_dropout=float(stage_drop.rate) if stage_drop is not None else 0.0,
                         dense=int(dense.units) if dense is not None else 0)

    keep_in = np.arange(model.input_shape[-1])
    for s, width in enumerate(widths):
        for c in range(convs):
            name = f"s{s}c{c}"
            bn = model.get_layer(f"{name}_bn").get_weights()  # gamma, beta, moving mean, moving variance
            keep_out = np.sort(np.argsort(-np.abs(bn[0]), kind="stable")[:width])
            (kernel,) = model.get_layer(f"{name}_conv").get_weights()
            pruned.get_layer(f"{name}_conv").set_weights([kernel[:, :, keep_in][..., keep_out]])
            pruned.get_layer(f"{name}_bn").set_weights([w[keep_out] for w in bn])
            keep_in = keep_out
    if dense is not None:
        (kernel,) = dense.get_weights()
        pruned.get_layer("head_dense").set_weights([kernel[keep_in]])
        pruned.get_layer("head_bn").set_weights(model.get_layer("head_bn").get_weights())
        pruned.get_layer("logits").set_weights(model.get_layer("logits").get_weights())
    else:
        kernel, bias = model.get_layer("logits").get_weights()
        pruned.get_layer("logits").set_weights([kernel[keep_in], bias])
    return pruned
