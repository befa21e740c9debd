"""Which sentiment label rule agrees best with labelled faces? FER2013 labels mapped to sentiment groups
(happy/surprise positive, neutral neutral, angry/disgust/fear/sad negative) against the product's label.

    python bench/sentiment_rules.py --model fer-vgg@3

Rules compared, each on the same probabilities (flip TTA on, as in conf/default.yaml):
  probability_mass     the group holding the most probability (the default)
  valence +-0.15       thresholds on the valence read-out (the earlier default)
  valence fitted       thresholds fitted on the validation hold-out (best macro-F1 on a 0.025 grid)
The validation hold-out is the Training rows the default model never trained on (same seed and fraction as
conf/experiments/train_default.yaml); fitting uses only it. PublicTest is reported, never fitted on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", default=str(ROOT.parent / "shared/data/fer2013/fer2013.csv.gz"))
    p.add_argument("--model", default="default")
    p.add_argument("--train-config", default=str(ROOT / "conf/experiments/train_default.yaml"),
                   help="gives the seed and val_fraction of the validation hold-out")
    p.add_argument("--no-tta", action="store_true")
    a = p.parse_args(argv)
    if not Path(a.csv).exists():
        print(f"FER2013 CSV not found at {a.csv}; pass --csv", file=sys.stderr)
        return 2

    from fer_core.config import load_yaml
    from fer_core.lab.data import load_dataset, stratified_split
    from fer_core.lab.evaluate import sentiment_metrics
    from fer_core.models import create_emotion_model
    from fer_core.models.emotion import EmotionModel
    from fer_core.sentiment import SENTIMENTS, SentimentConfig, score_sentiment, sentiment_of_emotions
    from fer_core.lab.config import TrainConfig

    train_cfg = load_yaml(a.train_config, TrainConfig)
    splits, _ = load_dataset(a.csv)
    _, held = stratified_split(splits["Training"].labels, train_cfg.data.val_fraction, train_cfg.seed)
    data = {"validation": splits["Training"].subset(held), "PublicTest": splits["PublicTest"]}
    base = create_emotion_model(a.model)
    model = EmotionModel(base.keras_model, base.spec, tta=not a.no_tta, batch_size=base.batch_size)
    probs = {name: model.predict(d.images) for name, d in data.items()}
    gold = {name: sentiment_of_emotions(d.labels) for name, d in data.items()}

    def agreement(cfg: SentimentConfig, name: str) -> tuple[float, float, np.ndarray]:
        m = sentiment_metrics(data[name].labels, probs[name], cfg)
        return m["macro_f1"], m["accuracy"], np.asarray(m["confusion_matrix"]).sum(axis=0)

    grid = np.round(np.arange(-0.6, 0.6001, 0.025), 3)
    fitted = max(((agreement(SentimentConfig(label_rule="valence", negative_threshold=float(n),
                                             positive_threshold=float(q)), "validation")[0], float(n), float(q))
                  for n in grid for q in grid if n < q))
    rules = {
        "probability_mass": SentimentConfig(),
        "valence +-0.15": SentimentConfig(label_rule="valence"),
        f"valence fitted ({fitted[1]:+.3f}, {fitted[2]:+.3f})":
            SentimentConfig(label_rule="valence", negative_threshold=fitted[1], positive_threshold=fitted[2]),
    }
    print(f"model {base.version}, flip TTA {'off' if a.no_tta else 'on'}; "
          + ", ".join(f"{n}: {len(d)} faces, gold {dict(zip(SENTIMENTS, np.bincount(gold[n], minlength=3).tolist()))}"
                      for n, d in data.items()))
    print(f"{'rule':<34}{'split':<12}{'macro-F1':>9}{'accuracy':>10}   predicted positive/neutral/negative")
    for rule, cfg in rules.items():
        for name in data:
            f1, acc, counts = agreement(cfg, name)
            print(f"{rule:<34}{name:<12}{f1:>9.3f}{acc:>10.3f}   {'/'.join(map(str, counts.tolist()))}")
    neutral = {name: score_sentiment(probs[name][gold[name] == 1])[0] for name in data}
    print("median valence of faces labelled neutral: "
          + ", ".join(f"{n} {np.median(v):+.3f}" for n, v in neutral.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
