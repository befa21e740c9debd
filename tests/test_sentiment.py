"""Sentiment read-out: fixed-array math and config validation."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.config import load_dataclass
from fer_core.errors import ConfigError
from fer_core.labels import EMOTIONS, EMOTION_INDEX
from fer_core.sentiment import DEFAULT_SENTIMENT_WEIGHTS, SENTIMENTS, SentimentConfig, score_sentiment, sentiment_of_emotions


def onehot(name: str) -> np.ndarray:
    p = np.zeros(7, np.float32)
    p[EMOTION_INDEX[name]] = 1.0
    return p


def test_defaults_cover_all_emotions_in_range():
    cfg = SentimentConfig()
    assert set(cfg.weights) == set(EMOTIONS)
    assert cfg.weights == DEFAULT_SENTIMENT_WEIGHTS
    assert cfg.weight_vector.shape == (7,)
    assert cfg.weight_vector[EMOTION_INDEX["happy"]] == 1.0


def test_valence_is_weighted_sum_and_labels_follow_thresholds():
    probs = np.stack([
        onehot("happy"),
        onehot("sad"),
        onehot("neutral"),
        0.5 * onehot("happy") + 0.5 * onehot("sad"),    # 0.5 - 0.4 = 0.1 -> neutral
        0.6 * onehot("surprise") + 0.4 * onehot("happy"),  # 0.15 + 0.4 = 0.55
        0.8 * onehot("angry") + 0.2 * onehot("fear"),   # -0.72 - 0.14 = -0.86
    ])
    valence, labels = score_sentiment(probs, SentimentConfig(label_rule="valence"))
    np.testing.assert_allclose(valence, [1.0, -0.8, 0.0, 0.1, 0.55, -0.86], atol=1e-6)
    assert labels == ["positive", "negative", "neutral", "neutral", "positive", "negative"]
    assert valence.dtype == np.float32 and valence.shape == (6,)


def test_thresholds_are_inclusive_and_configurable():
    cfg = SentimentConfig(label_rule="valence", positive_threshold=0.5, negative_threshold=-0.5)
    probs = np.stack([0.5 * onehot("happy") + 0.5 * onehot("neutral"), 0.25 * onehot("happy") + 0.75 * onehot("neutral")])
    _, labels = score_sentiment(probs, cfg)
    assert labels == ["positive", "neutral"]


def test_default_label_is_the_group_with_most_probability():
    neutral_face = 0.45 * onehot("neutral") + 0.2 * onehot("sad") + 0.2 * onehot("angry") + 0.15 * onehot("happy")
    probs = np.stack([
        neutral_face,                                       # valence -0.19: "negative" by thresholds
        0.4 * onehot("neutral") + 0.35 * onehot("surprise") + 0.25 * onehot("happy"),  # positive mass 0.6
        0.3 * onehot("neutral") + 0.25 * onehot("fear") + 0.25 * onehot("sad") + 0.2 * onehot("happy"),
        0.5 * onehot("happy") + 0.5 * onehot("sad"),        # tie goes positive
    ])
    valence, labels = score_sentiment(probs)
    assert SentimentConfig().label_rule == "probability_mass"
    assert labels == ["neutral", "positive", "negative", "positive"]
    assert score_sentiment(probs[:1], SentimentConfig(label_rule="valence"))[1] == ["negative"]
    np.testing.assert_allclose(valence[0], 0.15 - 0.16 - 0.18, atol=1e-6)  # valence is the same under both rules


def test_groups_follow_the_sign_of_the_weights():
    cfg = SentimentConfig(weights={**DEFAULT_SENTIMENT_WEIGHTS, "surprise": -0.2, "fear": 0.0})
    assert cfg.groups["surprise"] == "negative" and cfg.groups["fear"] == "neutral" and cfg.groups["happy"] == "positive"
    _, labels = score_sentiment(np.stack([0.6 * onehot("surprise") + 0.4 * onehot("happy"), onehot("fear")]), cfg)
    assert labels == ["negative", "neutral"]
    emotions = np.array([EMOTION_INDEX[e] for e in ("happy", "surprise", "neutral", "fear", "disgust")])
    assert [SENTIMENTS[i] for i in sentiment_of_emotions(emotions)] == ["positive", "positive", "neutral", "negative", "negative"]
    assert [SENTIMENTS[i] for i in sentiment_of_emotions(emotions, cfg)] == ["positive", "negative", "neutral", "neutral", "negative"]


def test_valence_is_clipped_for_unnormalised_input():
    valence, labels = score_sentiment(np.array([[0, 0, 0, 3.0, 0, 0, 0], [3.0, 0, 0, 0, 0, 0, 0]], np.float32))
    np.testing.assert_allclose(valence, [1.0, -1.0])
    assert labels == ["positive", "negative"]


def test_empty_batch_and_bad_shape():
    valence, labels = score_sentiment(np.zeros((0, 7), np.float32))
    assert valence.shape == (0,) and labels == []
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        score_sentiment(np.zeros((2, 6)))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"weights": {k: v for k, v in DEFAULT_SENTIMENT_WEIGHTS.items() if k != "fear"}}, "weights.fear"),
        ({"weights": {**DEFAULT_SENTIMENT_WEIGHTS, "joy": 1.0}}, "weights.joy"),
        ({"weights": {**DEFAULT_SENTIMENT_WEIGHTS, "happy": 1.5}}, "weights.happy"),
        ({"positive_threshold": 2.0}, "positive_threshold"),
        ({"positive_threshold": -0.2, "negative_threshold": 0.2}, "negative_threshold"),
        ({"label_rule": "argmax"}, "label_rule"),
    ],
)
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        SentimentConfig(**kwargs)


def test_loads_from_mapping_with_dotted_key_errors():
    cfg = load_dataclass(SentimentConfig, {"positive_threshold": 0.3})
    assert cfg.positive_threshold == 0.3
    with pytest.raises(ConfigError, match=r"sentiment\.weights\.sad"):
        load_dataclass(SentimentConfig, {"weights": {**DEFAULT_SENTIMENT_WEIGHTS, "sad": "bad"}}, path="sentiment")
