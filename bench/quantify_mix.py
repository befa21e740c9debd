"""How close is a campaign's reported emotion mix to the truth, counted vs confusion-adjusted?

A campaign's mix is a prevalence estimate, and a 67%-accurate classifier biases it whenever the
campaign is not mixed like FER2013. This fits the model's confusion profile (fer_core.quantify) on the
Training hold-out of conf/experiments/train_default.yaml (the rows the default model never trained on), then draws
synthetic campaigns from PublicTest faces with known mixes and compares, per class and per sentiment
group, the mean absolute error of:
  count     share of faces whose top emotion is the class (what the campaigns table held before)
  mean_p    mean probability
  adjusted  fer_core.quantify.adjusted_mix of the mean probabilities (what the job now adds)
Mixes: "fer2013" draws faces at PublicTest's own mix; "dirichlet a" draws each campaign's mix from a
Dirichlet(a) (a = 1: any mix equally likely; 0.5: campaigns dominated by a few emotions).
Needs ../shared/data/fer2013. Usage:

    .venv/bin/python bench/quantify_mix.py [--model fer-vgg@5] [--trials 400] [--write-spec PATH]

--write-spec stores the fitted profile in that spec JSON (how fer-vgg v5's was made).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fer_core  # noqa: E402,F401  (before TensorFlow: it turns oneDNN on)

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT_GROUPS = ("positive", "neutral", "negative")


def simulate(probs: np.ndarray, labels: np.ndarray, matrix: np.ndarray, groups: list[np.ndarray], alpha: float | None,
             n_faces: int, trials: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """{estimator: (emotion-share MAE, sentiment-share MAE)} in points, over `trials` drawn campaigns."""
    from fer_core.quantify import adjusted_mix

    k = probs.shape[1]
    by_class = [np.flatnonzero(labels == c) for c in range(k)]
    truths, counts_est, means = [], [], []
    for _ in range(trials):
        if alpha is None:
            idx = rng.choice(len(labels), n_faces, replace=True)
        else:
            counts = rng.multinomial(n_faces, rng.dirichlet(np.full(k, alpha)))
            idx = np.concatenate([rng.choice(by_class[c], n, replace=True) for c, n in enumerate(counts)])
        truths.append(np.bincount(labels[idx], minlength=k) / n_faces)
        counts_est.append(np.bincount(probs[idx].argmax(1), minlength=k) / n_faces)
        means.append(probs[idx].mean(0))
    truth = np.array(truths)
    estimates = {"count": np.array(counts_est), "mean_p": np.array(means)}
    estimates["adjusted"] = adjusted_mix(estimates["mean_p"], matrix)  # all campaigns in one batch
    errors = {}
    for name, est in estimates.items():
        group_err = np.mean([np.abs(est[:, g].sum(1) - truth[:, g].sum(1)) for g in groups], axis=0)
        errors[name] = np.stack([np.abs(est - truth).mean(1), group_err], axis=1)
    return {name: tuple(100 * np.mean(v, axis=0)) for name, v in errors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--config", default=str(ROOT / "conf" / "experiments" / "train_default.yaml"),
                        help="training config whose validation hold-out fits the profile")
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-spec", help="spec JSON to store the fitted profile in")
    args = parser.parse_args()

    from fer_core import create_emotion_model
    from fer_core.config import load_yaml
    from fer_core.labels import EMOTIONS
    from fer_core.models.emotion import EmotionModel
    from fer_core.quantify import mix_calibration
    from fer_core.sentiment import SentimentConfig
    from fer_core.lab.config import TrainConfig
    from fer_core.lab.train import split_data

    cfg = load_yaml(args.config, TrainConfig)
    data_path = (ROOT / cfg.data.path).resolve() if not Path(cfg.data.path).is_absolute() else Path(cfg.data.path)
    if not data_path.exists():
        sys.exit(f"{data_path} not found: this benchmark needs ../shared/data/fer2013 beside the repo")
    from dataclasses import replace
    cfg = replace(cfg, data=replace(cfg.data, path=str(data_path)))
    _, val, test, _ = split_data(cfg)
    if test is None:
        sys.exit(f"{args.config}: data.test_split is empty; the benchmark measures on the test split")

    model = create_emotion_model(args.model)
    tta = EmotionModel(model.keras_model, model.spec, tta=True, batch_size=model.batch_size)
    val_single, val_tta = model.predict(val.images), tta.predict(val.images)
    calibration = mix_calibration(val_single, val_tta, val.labels,
                                  source=f"{cfg.data.train_split} hold-out of {Path(args.config).name} "
                                         f"(val_fraction {cfg.data.val_fraction}, seed {cfg.seed})")
    test_probs = {"single": model.predict(test.images), "tta": tta.predict(test.images)}
    sentiment_of = SentimentConfig().groups
    groups = [np.array([EMOTIONS.index(e) for e in EMOTIONS if sentiment_of[e] == g]) for g in SENTIMENT_GROUPS]

    print(f"model {model.version}; profile fitted on {len(val)} held-out {cfg.data.train_split} faces; "
          f"campaigns drawn from {len(test)} {cfg.data.test_split} faces, {args.trials} per row")
    print("mean absolute error in points, per emotion share | per sentiment share (positive/neutral/negative)")
    print(f"{'pass':6s} {'mix':13s} {'faces':>5s}  {'count':>6s} {'mean_p':>6s} {'adjusted':>8s} | "
          f"{'count':>6s} {'mean_p':>6s} {'adjusted':>8s} | count/adjusted")
    for name in ("tta", "single"):
        rng = np.random.default_rng(args.seed)
        matrix = np.asarray(calibration[name])
        for mix, alpha in (("fer2013", None), ("dirichlet 1", 1.0), ("dirichlet 0.5", 0.5)):
            for n_faces in (50, 200, 1000):
                r = simulate(test_probs[name], test.labels, matrix, groups, alpha, n_faces, args.trials, rng)
                print(f"{name:6s} {mix:13s} {n_faces:5d}  {r['count'][0]:6.2f} {r['mean_p'][0]:6.2f} {r['adjusted'][0]:8.2f} | "
                      f"{r['count'][1]:6.2f} {r['mean_p'][1]:6.2f} {r['adjusted'][1]:8.2f} | "
                      f"x{r['count'][0] / r['adjusted'][0]:.2f}", flush=True)
    if args.write_spec:
        path = Path(args.write_spec)
        data = json.loads(path.read_text())
        data["mix_calibration"] = calibration
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote mix_calibration ({len(val)} faces) into {path}")


if __name__ == "__main__":
    main()
