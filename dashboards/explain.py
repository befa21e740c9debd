"""The dashboards' one door to the emotion model: Grad-CAM overlays per face.

Everything model-related (fer_core.gradcam, the model registry, TensorFlow) is imported
here lazily, on the first gallery image that needs it, so rendering without Grad-CAM
never loads TensorFlow and the rest of ``dashboards`` knows nothing of models.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fer_core.storage import fsspec_options


class ExplainError(Exception):
    """Grad-CAM could not be computed; the message is shown under the thumbnail."""


class Explainer:
    """Grad-CAM overlays for gallery faces, loading each model version at most once per render.

    ``models`` maps a model_version as stored in the tables to the name or path/URI that loads
    it: needed for models given to the job as a file, whose version (``<stem>@sha256-…``) is
    not a registered name. ``storage_options`` (delta-rs style AWS_* keys, as for the tables)
    reach a model file on s3:// translated for s3fs, so one set of options serves the whole render.
    """

    def __init__(self, models: Mapping[str, str] | None = None,
                 storage_options: Mapping[str, str] | None = None) -> None:
        self._sources = dict(models or {})
        self._storage_options = dict(storage_options or {})
        self._models: dict[str, Any] = {}
        self._failures: dict[str, str] = {}

    def _source(self, model_version: str | None) -> str:
        """What to load for ``model_version``: the given mapping, else the exact registered
        ``name@version`` (an older shipped version), else the name before '@', else "default"."""
        version = (model_version or "").strip()
        if version in self._sources:
            return self._sources[version]
        if version:
            try:
                from fer_core.models.registry import list_models

                if version in list_models():
                    return version
            except Exception:  # no fer_core here: the load below reports it
                pass
        return version.split("@", 1)[0].strip() or "default"

    def _model(self, model_version: str | None) -> tuple[Any, str | None]:
        """The model that scored ``model_version`` (see _source); plus a caveat when it is another version."""
        name = self._source(model_version)
        if name in self._failures:
            raise ExplainError(self._failures[name])
        if name not in self._models:
            try:
                from fer_core.models.registry import create_emotion_model

                self._models[name] = create_emotion_model(
                    name, storage_options=fsspec_options(name, self._storage_options) or None)
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
