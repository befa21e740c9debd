"""Emotion probabilities -> valence in [-1, 1] and a positive/neutral/negative label.

Valence is a fixed linear read-out of the 7 probabilities (``probs @ weights``), so it is
cheap, explainable on a dashboard ("happy counts +1, sad -0.8"), and the area-weighted
mean of face valences equals the valence of the image's area-weighted probabilities.

The label, by default, is the sentiment group holding the most probability (the group of an
emotion is the sign of its weight). Thresholding the valence instead calls most neutral faces
negative: a neutral face keeps much of its probability on sad/angry/fear, so its median valence is
about -0.14 (v5; -0.17 with v4). Against FER2013's labels (happy/surprise positive, neutral neutral, the rest negative)
the probability-mass rule scores macro-F1 0.775 on the validation hold-out vs 0.706 for valence
thresholds of +-0.15 (0.736 with thresholds fitted there), default model v5: `bench/sentiment_rules.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer_core.errors import ConfigError
from fer_core.labels import EMOTIONS

DEFAULT_SENTIMENT_WEIGHTS: dict[str, float] = {
    "happy": 1.0,      # the only clearly positive FER2013 class
    "surprise": 0.25,  # mostly positive in campaign photos (reveal, delight), but ambiguous
    "neutral": 0.0,
    "sad": -0.8,
    "fear": -0.7,      # less often aimed at the brand than anger/disgust
    "angry": -0.9,
    "disgust": -0.9,
}
"""Valence contribution of each class. Negative classes sit below -1 in magnitude so a
face that is e.g. 50% happy / 50% sad reads as mildly positive, not exactly neutral."""

SENTIMENTS: tuple[str, ...] = ("positive", "neutral", "negative")
LABEL_RULES: tuple[str, ...] = ("probability_mass", "valence")


@dataclass(frozen=True)
class SentimentConfig:
    """How probabilities become sentiment.

    label_rule "probability_mass" (default): the label is the group with the most probability,
    where emotions with a positive weight are "positive", zero "neutral", negative "negative"
    (ties go positive, then neutral). label_rule "valence": valence >= positive_threshold ->
    "positive", valence <= negative_threshold -> "negative", otherwise "neutral"; the thresholds
    are used by this rule only. Validated on construction (ConfigError names the offending key).
    """

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SENTIMENT_WEIGHTS))
    label_rule: str = "probability_mass"
    positive_threshold: float = 0.15
    negative_threshold: float = -0.15

    def __post_init__(self) -> None:
        missing = [e for e in EMOTIONS if e not in self.weights]
        if missing:
            raise ConfigError(f"weights.{missing[0]}: missing; weights need all 7 emotions {list(EMOTIONS)}")
        for key, value in self.weights.items():
            if key not in EMOTIONS:
                raise ConfigError(f"weights.{key}: unknown emotion; expected one of {list(EMOTIONS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
                raise ConfigError(f"weights.{key}: must be a number in [-1, 1], got {value!r}")
        for key in ("positive_threshold", "negative_threshold"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
                raise ConfigError(f"{key}: must be a number in [-1, 1], got {value!r}")
        if self.label_rule not in LABEL_RULES:
            raise ConfigError(f"label_rule: must be one of {list(LABEL_RULES)}, got {self.label_rule!r}")
        if not self.negative_threshold < self.positive_threshold:
            raise ConfigError(
                f"negative_threshold: must be below positive_threshold "
                f"({self.negative_threshold} >= {self.positive_threshold})"
            )

    @property
    def weight_vector(self) -> np.ndarray:
        """(7,) float32 weights in EMOTIONS order."""
        return np.array([self.weights[e] for e in EMOTIONS], dtype=np.float32)

    @property
    def groups(self) -> dict[str, str]:
        """Each emotion's sentiment group: the sign of its weight."""
        return {e: "positive" if w > 0 else "negative" if w < 0 else "neutral" for e, w in self.weights.items()}

    def group_matrix(self) -> np.ndarray:
        """(7, 3) 0/1 matrix mapping EMOTIONS probabilities onto SENTIMENTS probability mass."""
        groups = self.groups
        return np.array([[float(groups[e] == s) for s in SENTIMENTS] for e in EMOTIONS], dtype=np.float32)

    def label(self, valence: float) -> str:
        """Sentiment label of one valence value under the "valence" rule."""
        if valence >= self.positive_threshold:
            return "positive"
        if valence <= self.negative_threshold:
            return "negative"
        return "neutral"


def score_sentiment(probs: np.ndarray, cfg: SentimentConfig | None = None) -> tuple[np.ndarray, list[str]]:
    """(N, 7) probabilities in EMOTIONS order -> (valence (N,) float32 in [-1, 1], N labels)."""
    cfg = cfg or SentimentConfig()
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(EMOTIONS):
        raise ValueError(f"probs must be (N, {len(EMOTIONS)}) in EMOTIONS order, got shape {probs.shape}")
    valence = np.clip(probs @ cfg.weight_vector, -1.0, 1.0).astype(np.float32)
    if cfg.label_rule == "valence":
        return valence, [cfg.label(float(v)) for v in valence]
    mass = probs @ cfg.group_matrix()
    return valence, [SENTIMENTS[i] for i in mass.argmax(axis=1)]


def sentiment_of_emotions(emotion_index: np.ndarray, cfg: SentimentConfig | None = None) -> np.ndarray:
    """Emotion class indices -> SENTIMENTS indices by group: turns emotion labels into sentiment labels."""
    cfg = cfg or SentimentConfig()
    groups = cfg.groups
    lookup = np.array([SENTIMENTS.index(groups[e]) for e in EMOTIONS], dtype=np.int64)
    return lookup[np.asarray(emotion_index, dtype=np.int64)]
