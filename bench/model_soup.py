"""Uniform "model soup": average the weights of fine-tunes of one model and score the average on validation.

    python bench/model_soup.py --config conf/experiments/train_default.yaml --base fer_core/pretrained/fer-vgg-v5.keras \
        --soup all=0,1,2,3 --soup fine-tunes=1,2,3 artifacts/train/fer-vgg-v6/model.keras \
        artifacts/train/exp-weakaug/model.keras artifacts/train/exp-online-distill/model.keras

Models are numbered from 0 (the --base model, then the positional ones, in order); each --soup NAME=I,J,...
averages those models' weights and re-estimates BatchNormalization on the config's training rows (as
the training's weight averaging does). Every model must share the architecture, and should descend from
one set of weights (averaging unrelated nets gives noise). Only the config's validation hold-out is
scored (single pass and flip TTA, McNemar's exact test against the base model's single pass): choose on
it, then evaluate the chosen model on PublicTest with ``python -m fer_core.evaluate``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="conf/experiments/train_default.yaml", help="training config: data, split, seed")
    ap.add_argument("--base", default="fer_core/pretrained/fer-vgg-v5.keras", help="model 0, the reference")
    ap.add_argument("--soup", action="append", default=[], metavar="NAME=I,J,...")
    ap.add_argument("--out", default="", help="save each soup here as soup-NAME.keras (for fer_core.evaluate)")
    ap.add_argument("models", nargs="*", help="models 1, 2, ...")
    args = ap.parse_args(argv)

    import numpy as np

    from fer_core.runtime import configure_tensorflow

    configure_tensorflow("cpu")
    import keras
    from scipy.stats import binomtest

    from fer_core.config import load_yaml
    from fer_core.lab.averaging import recalibrate_batch_norm
    from fer_core.lab.config import TrainConfig, model_spec
    from fer_core.lab.measure import predict_probs
    from fer_core.lab.train import split_data

    cfg = load_yaml(args.config, TrainConfig)
    spec = model_spec(cfg.model)
    train, val, _, _ = split_data(cfg)
    paths = [args.base, *args.models]
    models = [keras.models.load_model(p, compile=False, safe_mode=True) for p in paths]
    y = val.labels

    def scores(model) -> tuple[np.ndarray, float]:
        single = predict_probs(model, val.images, spec).argmax(1)
        return single, float((predict_probs(model, val.images, spec, tta=True).argmax(1) == y).mean())

    base_single, base_tta = scores(models[0])
    print(f"{len(train)} training rows (BatchNormalization), {len(val)} validation rows ({args.config})")
    print(f"0 {paths[0]}: single {(base_single == y).mean():.2%}, TTA {base_tta:.2%}")
    rows = [(f"{i} {p}", models[i]) for i, p in enumerate(paths) if i]
    for item in args.soup:
        name, _, idx = item.partition("=")
        members = [models[int(i)] for i in idx.split(",")]
        soup = keras.models.clone_model(members[0])
        soup.set_weights([np.mean(ws, axis=0) for ws in zip(*(m.get_weights() for m in members))])
        recalibrate_batch_norm(soup, train.images, spec)  # training mode: dropout makes this vary by ~0.1 point
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            soup.save(Path(args.out) / f"soup-{name}.keras")
        rows.append((f"soup {name} ({idx})", soup))
    for label, model in rows:
        single, tta = scores(model)
        won, lost = int(((single == y) & (base_single != y)).sum()), int(((single != y) & (base_single == y)).sum())
        p = binomtest(won, won + lost).pvalue if won + lost else 1.0
        print(f"{label}: single {(single == y).mean():.2%}, TTA {tta:.2%}; against model 0's single pass "
              f"+{won} / -{lost} faces, McNemar p = {p:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
