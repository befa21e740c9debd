"""Training speed of float32 against bfloat16 mixed precision (`optim.mixed_precision`) for one training config's
net, on the lab's own tf.data pipeline (its augmentation included), interleaved in one process so the ratio shares
a machine. Speed does not depend on the pixels or the weights, so random faces and fresh weights measure it.

    .venv/bin/python bench/bench_train_precision.py --config conf/experiments/train_fer_vgg_v8.yaml

Pause any training first. Prints images/s per round and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SETTINGS = ("off", "bfloat16")  # optim.mixed_precision values; fer_core.lab.loop.training_policy names their policies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a training config (its net, input size, batch and augmentation)")
    p.add_argument("--steps", type=int, default=8, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=6)
    a = p.parse_args(argv)

    import keras
    import tensorflow as tf

    from fer_core.config import load_yaml
    from fer_core.lab.batches import make_dataset
    from fer_core.lab.config import TrainConfig, model_spec
    from fer_core.lab.loop import build_from_config, configure_runtime, cpu_has_bf16, training_policy
    from fer_core.lab.optim import class_weights, make_loss, make_optimizer

    cfg = load_yaml(a.config, TrainConfig)
    spec = model_spec(cfg.model)
    batch = cfg.optim.batch_size
    side = spec.frame
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch * 16, side, side), dtype=np.uint8)
    labels = rng.integers(0, 7, len(images))
    models = {}
    for setting in SETTINGS:
        optim = replace(cfg.optim, mixed_precision=setting)
        gpu = configure_runtime(optim, cfg.seed)
        model = build_from_config(cfg)
        loss = make_loss(optim, class_weights(labels, optim.class_weighting))
        model.compile(optimizer=make_optimizer(optim, a.steps), loss=loss)
        models[training_policy(setting, gpu)] = model
    data = make_dataset(images, labels, spec, batch, training=True, augment=cfg.augment, seed=cfg.seed).repeat()
    for model in models.values():
        model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # compile and warm up
    rates: dict[str, list[float]] = {policy: [] for policy in models}
    for _ in range(a.rounds):
        for policy, model in models.items():
            t0 = time.perf_counter()
            model.fit(data, steps_per_epoch=a.steps, epochs=1, verbose=0)
            rates[policy].append(a.steps * batch / (time.perf_counter() - t0))
    median = {policy: float(np.median(r)) for policy, r in rates.items()}
    print(f"{a.config}: {cfg.model.architecture} {cfg.model.options.get('widths', '')} at {spec.input_size}px, "
          f"batch {batch}, {models['float32'].count_params():,} parameters; TensorFlow {tf.__version__}, "
          f"keras {keras.__version__}, CPU bfloat16 {'native' if cpu_has_bf16() else 'emulated'}, "
          f"GPU {gpu}")
    for policy, r in rates.items():
        print(f"  {policy:15s} images/s per round: {' '.join(f'{v:.0f}' for v in r)}  median {median[policy]:.0f}")
    ratio = median["mixed_bfloat16"] / median["float32"]
    epoch_s = 25837 / median["mixed_bfloat16"]
    print(f"bfloat16 / float32: x{ratio:.2f} (medians of {a.rounds} interleaved rounds); a FER2013 Training epoch "
          f"(25,837 faces) in bfloat16 is about {epoch_s:.0f} s of steps, validation aside")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
