"""The dashboards' one door to the emotion model: Grad-CAM overlays per face.

Everything model-related (fer_core.gradcam, the model registry, TensorFlow) is imported
here lazily, on the first gallery image that needs it, so rendering without Grad-CAM
never loads TensorFlow and the rest of ``dashboards`` knows nothing of models.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class ExplainError(Exception):
    """Grad-CAM could not be computed; the message is shown under the thumbnail."""


class Explainer:
    """Grad-CAM overlays for gallery faces, loading each model version at most once per render."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}
        self._failures: dict[str, str] = {}

    def _model(self, model_version: str | None) -> tuple[Any, str | None]:
        """The model that scored ``model_version`` (name before '@'), or "default"; plus a caveat."""
        name = (model_version or "").split("@", 1)[0].strip() or "default"
        if name in self._failures:
            raise ExplainError(self._failures[name])
        if name not in self._models:
            try:
                from fer_core.models.registry import create_emotion_model

                self._models[name] = create_emotion_model(name)
            except Exception as exc:  # ImportError, WeightsError, ConfigError, TF errors...
                self._failures[name] = (f"Grad-CAM unavailable: model {name!r} could not be loaded "
                                        f"({type(exc).__name__}: {exc})")
                raise ExplainError(self._failures[name]) from exc
        model = self._models[name]
        loaded = getattr(model, "version", None)
        caveat = None
        if model_version and loaded and loaded != model_version:
            caveat = f"Grad-CAM computed with {loaded}; these faces were scored by {model_version}."
        return model, caveat

    def overlays(self, image_rgb: np.ndarray, faces: Sequence[dict], model_version: str | None
                 ) -> tuple[list[np.ndarray], str | None]:
        """One uint8 RGB overlay per face row (x, y, w, h, det_score, landmarks), plus a caveat.

        Raises ExplainError with a readable message when anything in the model stack fails.
        """
        model, caveat = self._model(model_version)
        try:
            from fer_core.gradcam import explain_faces
            from fer_core.types import Face

            face_objs = [Face(box=(float(f["x"]), float(f["y"]), float(f["w"]), float(f["h"])),
                              score=float(f.get("det_score") or 0.0), landmarks=_landmarks(f.get("landmarks")))
                         for f in faces]
            result = explain_faces(image_rgb, face_objs, model)
        except Exception as exc:
            raise ExplainError(f"Grad-CAM failed ({type(exc).__name__}: {exc})") from exc
        if len(result) != len(faces):
            raise ExplainError(f"Grad-CAM returned {len(result)} overlays for {len(faces)} faces")
        return [np.asarray(r, dtype=np.uint8) for r in result], caveat


def _landmarks(values: Sequence[float] | None) -> np.ndarray:
    arr = np.asarray([np.nan if v is None else v for v in (values or [])], dtype=np.float32)
    return arr.reshape(5, 2) if arr.size == 10 else np.full((5, 2), np.nan, np.float32)
