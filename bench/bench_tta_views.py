"""Classifier cost of test-time augmentation views: a reference model (single, flip) against a crop-trained
run's checkpoint (single, flip, six crops, ten-crop), interleaved in one process so the ratios share a machine.

Cost does not depend on the weights, so any epoch of the run measures it. Usage (pause other training first):

    .venv/bin/python bench/bench_tta_views.py --config conf/experiments/train_fer_vgg_v6.yaml \\
        --checkpoint artifacts/train/fer-vgg-v6/checkpoints/last.keras --reference fer-vgg@5
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = (False, True, "c,c_flip,tl,tr,bl,br", "ten_crop")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the crop-trained run's training config (gives its ModelSpec)")
    p.add_argument("--checkpoint", required=True, help="a .keras file of that run (e.g. its checkpoints/last.keras)")
    p.add_argument("--reference", default="fer-vgg@5", help="registered model to compare with (default: fer-vgg@5)")
    p.add_argument("--faces", type=int, default=2100)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)

    from fer_core.config import load_yaml
    from fer_core.models import EmotionModel, create_emotion_model
    from fer_core.models.emotion import load_keras_model, tta_mode_name
    from fer_core.lab.config import TrainConfig, model_spec

    cfg = load_yaml(a.config, TrainConfig)
    net = load_keras_model(a.checkpoint)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (a.faces, 48, 48), dtype=np.uint8)
    models = {f"{a.reference} single": create_emotion_model(a.reference),
              f"{a.reference} flip": create_emotion_model(a.reference, tta=True)}
    for mode in MODES:
        models[f"{cfg.model.name}@{cfg.model.version} {tta_mode_name(mode)}"] = EmotionModel(net, model_spec(cfg.model), tta=mode)
    for m in models.values():  # warm-up: trace every batch shape once
        m.predict(faces[:256])
    seconds: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(a.repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            m.predict(faces)
            seconds[k].append(time.perf_counter() - t0)
    base = float(np.median(seconds[f"{a.reference} flip"]))
    print(f"{a.faces} faces, median of {a.repeats}; cost relative to {a.reference} with flip TTA")
    for k, v in seconds.items():
        print(f"  {k:36s} {a.faces / np.median(v):8.0f} faces/s  x{np.median(v) / base:.2f}  ({models[k].views} views)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
