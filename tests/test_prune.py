"""Channel pruning of a vgg net (fer_core.models.prune): the kept channels are the strongest, the copy is
exact when the dropped channels are dead, and bad requests are refused with what to do."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.errors import ConfigError
from fer_core.models.architectures import build_model
from fer_core.models.prune import prune_vgg, vgg_widths

keras = pytest.importorskip("keras")

WIDE = [8, 12, 16]


def _vgg(widths, dense=24, seed=0):
    keras.utils.set_random_seed(seed)
    return build_model("vgg", (24, 24, 1), widths=widths, convs_per_stage=2, dropout=0.2, stage_dropout=0.05,
                       dense=dense)


def _kill_channels(model, widths, seed=1) -> dict[str, np.ndarray]:
    """Give every BN random statistics, then zero gamma and beta of all but `widths` channels per conv
    (a dead channel: its ReLU output is 0 for every input). Returns the live channels per conv."""
    rng = np.random.default_rng(seed)
    live = {}
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        n = layer.get_weights()[0].shape[0]
        gamma, beta = rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n)
        mean, var = rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)
        if layer.name.startswith("s"):
            stage = int(layer.name[1])
            keep = np.sort(rng.choice(n, widths[stage], replace=False))
            dead = np.setdiff1d(np.arange(n), keep)
            gamma[dead], beta[dead] = 0.0, 0.0
            live[layer.name] = keep
        layer.set_weights([gamma, beta, mean, var])
    return live


@pytest.mark.parametrize("dense", [24, 0])
def test_pruning_dead_channels_keeps_the_function_exactly(dense):
    wide = _vgg(WIDE, dense=dense)
    narrow_widths = [5, 7, 9]
    _kill_channels(wide, narrow_widths)
    narrow = prune_vgg(wide, narrow_widths)
    assert vgg_widths(narrow) == narrow_widths and vgg_widths(wide) == WIDE
    assert narrow.count_params() < wide.count_params()
    x = np.random.default_rng(4).uniform(-1, 1, (32, 24, 24, 1)).astype(np.float32)
    np.testing.assert_allclose(narrow.predict_on_batch(x), wide.predict_on_batch(x), atol=1e-5)


def test_pruning_keeps_the_channels_with_the_largest_scale():
    wide = _vgg(WIDE)
    live = _kill_channels(wide, [5, 7, 9])
    # make one live channel of the first conv weak (but not dead): it must be the one dropped at width 4
    bn = wide.get_layer("s0c0_bn")
    gamma, beta, mean, var = bn.get_weights()
    weakest = live["s0c0_bn"][2]
    gamma[weakest] = 0.01
    bn.set_weights([gamma, beta, mean, var])
    narrow = prune_vgg(wide, [4, 7, 9])
    kept_gamma = narrow.get_layer("s0c0_bn").get_weights()[0]
    expected = [g for i, g in enumerate(gamma) if i in set(live["s0c0_bn"]) - {weakest}]
    np.testing.assert_allclose(kept_gamma, expected)
    # the next conv reads exactly those input channels, for its own 4 strongest output channels
    kernel = wide.get_layer("s0c1_conv").get_weights()[0]
    keep_in = [i for i in live["s0c0_bn"] if i != weakest]
    keep_out = np.sort(np.argsort(-np.abs(wide.get_layer("s0c1_bn").get_weights()[0]))[:4])
    assert set(keep_out) <= set(live["s0c1_bn"])
    np.testing.assert_array_equal(narrow.get_layer("s0c1_conv").get_weights()[0], kernel[:, :, keep_in][..., keep_out])


def test_bad_prune_requests_are_refused():
    wide = _vgg(WIDE)
    with pytest.raises(ConfigError, match=r"at most the model's own \[8, 12, 16\]"):
        prune_vgg(wide, [4, 16, 8])
    with pytest.raises(ConfigError, match="one width per stage"):
        prune_vgg(wide, [4, 8])
    other = build_model("mini_xception", (24, 24, 1), widths=(8, 16))
    with pytest.raises(ConfigError, match="not a fer_core `vgg` net"):
        prune_vgg(other, [4, 8])


def test_train_config_prunes_its_init_from_model(tmp_path):
    from fer_core.config import load_dataclass
    from fer_core.train import TrainConfig, build_from_config

    source = tmp_path / "wide.keras"
    wide = _vgg(WIDE)
    _kill_channels(wide, [5, 7, 9])
    wide.save(source)
    raw = {"data": {"path": "unused.csv"}, "output_dir": str(tmp_path / "run"),
           "model": {"init_from": str(source), "prune_widths": [5, 7, 9]}}
    model = build_from_config(load_dataclass(TrainConfig, raw))
    assert vgg_widths(model) == [5, 7, 9]
    x = np.random.default_rng(2).uniform(-1, 1, (8, 24, 24, 1)).astype(np.float32)
    np.testing.assert_allclose(model.predict_on_batch(x), wide.predict_on_batch(x), atol=1e-5)
    raw["model"] = {"prune_widths": [5, 7, 9]}
    with pytest.raises(ConfigError, match="prune_widths needs model.init_from"):
        build_from_config(load_dataclass(TrainConfig, raw))
