"""The 7 FER2013 emotion labels, in the fixed order every model output uses."""
from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Index i of every probability vector is EMOTIONS[i] (FER2013's integer codes 0..6)."""

EMOTION_INDEX: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

EMOTION_COLORS: dict[str, str] = {
    "angry": "#d1495b", "disgust": "#7d8a2e", "fear": "#8e6bbf", "happy": "#f2b134",
    "sad": "#3d7bd9", "surprise": "#2bb3a3", "neutral": "#9aa3ad",
}
"""One colour per emotion, wherever an emotion is drawn (dashboards, annotated images, the local page)."""

# Common synonyms found in class-folder datasets, mapped onto the FER2013 names.
EMOTION_SYNONYMS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "contempt": "disgust",
    "fear": "fear", "fearful": "fear", "scared": "fear", "afraid": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
}


def canonical_emotion(name: str) -> str:
    """Map a label name (any case, common synonyms) onto a FER2013 class name.

    Raises KeyError naming the label and the accepted names when it is unknown.
    """
    key = name.strip().lower()
    if key not in EMOTION_SYNONYMS:
        raise KeyError(
            f"unknown emotion label {name!r}; expected one of {sorted(EMOTION_SYNONYMS)}"
        )
    return EMOTION_SYNONYMS[key]
