"""Resizing a vgg net (fer_core.lab.resize). Pruning: the kept channels are the strongest, the copy is
exact when the dropped channels are dead. Widening: the wider net computes the same function and its
copied channels part ways in training. Bad requests are refused with what to do."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.errors import ConfigError
from fer_core.lab.architectures import build_model
from fer_core.lab.resize import resize_vgg, vgg_widths

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
    narrow = resize_vgg(wide, narrow_widths)
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
    narrow = resize_vgg(wide, [4, 7, 9])
    kept_gamma = narrow.get_layer("s0c0_bn").get_weights()[0]
    expected = [g for i, g in enumerate(gamma) if i in set(live["s0c0_bn"]) - {weakest}]
    np.testing.assert_allclose(kept_gamma, expected)
    # the next conv reads exactly those input channels, for its own 4 strongest output channels
    kernel = wide.get_layer("s0c1_conv").get_weights()[0]
    keep_in = [i for i in live["s0c0_bn"] if i != weakest]
    keep_out = np.sort(np.argsort(-np.abs(wide.get_layer("s0c1_bn").get_weights()[0]))[:4])
    assert set(keep_out) <= set(live["s0c1_bn"])
    np.testing.assert_array_equal(narrow.get_layer("s0c1_conv").get_weights()[0], kernel[:, :, keep_in][..., keep_out])


@pytest.mark.parametrize("dense", [24, 0])
def test_widening_keeps_the_function(dense):
    narrow = _vgg(WIDE, dense=dense)
    _kill_channels(narrow, WIDE)  # random BN statistics, every channel live
    wider_widths = [13, 12, 29]  # one stage copied more than once, one left as is
    wider = resize_vgg(narrow, wider_widths, seed=3)
    assert vgg_widths(wider) == wider_widths and wider.count_params() > narrow.count_params()
    x = np.random.default_rng(4).uniform(-1, 1, (32, 24, 24, 1)).astype(np.float32)
    np.testing.assert_allclose(wider.predict_on_batch(x), narrow.predict_on_batch(x), atol=1e-5)
    # the first 8 channels are the originals, the rest copies of them (kernel and BN alike)
    old_kernel = narrow.get_layer("s0c0_conv").get_weights()[0]
    new_kernel = wider.get_layer("s0c0_conv").get_weights()[0]
    np.testing.assert_array_equal(new_kernel[..., :8], old_kernel)
    copies = [int(np.flatnonzero([np.array_equal(new_kernel[..., j], old_kernel[..., i]) for i in range(8)])[0])
              for j in range(8, 13)]
    gamma = wider.get_layer("s0c0_bn").get_weights()[0]
    np.testing.assert_array_equal(gamma[8:], narrow.get_layer("s0c0_bn").get_weights()[0][copies])
    # the next conv reads an original and its copy with unequal shares that add up to the original weight
    j, i = 8, copies[0]
    old_next = narrow.get_layer("s0c1_conv").get_weights()[0]
    new_next = wider.get_layer("s0c1_conv").get_weights()[0]
    readers = [i, j] + [k for k in range(8, 13) if k != j and copies[k - 8] == i]
    np.testing.assert_allclose(new_next[:, :, readers, :8].sum(2), old_next[:, :, i], rtol=1e-5, atol=1e-7)
    assert not np.allclose(new_next[:, :, i], new_next[:, :, j])


def test_widened_copies_part_ways_in_training():
    """Copies read with equal shares would get equal gradients and stay copies for ever."""
    narrow = _vgg(WIDE, dense=0)
    wider = resize_vgg(narrow, [16, 12, 16], seed=0)
    before = wider.get_layer("s0c0_conv").get_weights()[0]
    wider.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 24, 24, 1)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, 16)]
    for _ in range(3):
        wider.train_on_batch(x, y)
    after = wider.get_layer("s0c0_conv").get_weights()[0]
    for j in range(8, 16):
        i = int(np.flatnonzero([np.array_equal(before[..., j], before[..., k]) for k in range(8)])[0])
        assert not np.allclose(after[..., j], after[..., i], atol=1e-6), f"channel {j} is still a copy of {i}"


def test_bad_resize_requests_are_refused():
    wide = _vgg(WIDE)
    with pytest.raises(ConfigError, match=r"one positive width per stage \(3 stages; the model's own are \[8, 12, 16\]"):
        resize_vgg(wide, [4, 0, 8])
    with pytest.raises(ConfigError, match="one positive width per stage"):
        resize_vgg(wide, [4, 8])
    other = build_model("mini_xception", (24, 24, 1), widths=(8, 16))
    with pytest.raises(ConfigError, match="not a fer_core `vgg` net"):
        resize_vgg(other, [4, 8])


def test_train_config_prunes_its_init_from_model(tmp_path):
    from fer_core.config import load_dataclass
    from fer_core.lab.config import TrainConfig
    from fer_core.lab.loop import build_from_config

    source = tmp_path / "wide.keras"
    wide = _vgg(WIDE)
    _kill_channels(wide, [5, 7, 9])
    wide.save(source)
    raw = {"data": {"path": "unused.csv"}, "output_dir": str(tmp_path / "run"),
           "model": {"init_from": str(source), "resize_widths": [5, 7, 9], "input_size": 24}}
    model = build_from_config(load_dataclass(TrainConfig, raw))
    assert vgg_widths(model) == [5, 7, 9]
    x = np.random.default_rng(2).uniform(-1, 1, (8, 24, 24, 1)).astype(np.float32)
    np.testing.assert_allclose(model.predict_on_batch(x), wide.predict_on_batch(x), atol=1e-5)
    raw["model"] = {"resize_widths": [5, 7, 9]}
    with pytest.raises(ConfigError, match="resize_widths needs model.init_from"):
        build_from_config(load_dataclass(TrainConfig, raw))
