"""FacePipeline: decode -> detect -> align -> classify -> sentiment, on numpy batches.

Each stage is a method with the same batch style so the Spark adapter can call them
one by one (or all at once through ``score_images``) without knowing any model. One bad
image never fails a batch: its typed error becomes its ``status``. Classification runs
once over all faces of the batch, which is what makes the classifier efficient.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fer_core.decode import DEFAULT_MAX_PIXELS, decode_image
from fer_core.errors import DecodeError, ImageError
from fer_core.labels import EMOTIONS
from fer_core.pipeline_config import DetectorOptions, InferenceConfig, ModelOptions
from fer_core.sentiment import SentimentConfig, score_sentiment
from fer_core.types import Face, FaceResult, ImageResult

__all__ = [
    "FacePipeline",
    "DetectorOptions",
    "ModelOptions",
    "InferenceConfig",
    "image_probabilities",
    "dominant_emotion",
    "image_summary",
]

# The config schema lives in fer_core/pipeline_config.py (one schema for the CLI, serve and the job);
# importing it from here keeps working.

# ---------------------------------------------------------------- pipeline


class FacePipeline:
    """Stage functions over batches of images; see the module doc.

    detector: a fer_core.detectors Detector; model: an EmotionModel; crops are aligned
    at the model's input size with the model's own crop margin (spec.crop_margin).
    """

    def __init__(
        self,
        detector: Any,
        model: Any,
        sentiment: SentimentConfig | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        quality: Any = None,
    ) -> None:
        from fer_core.quality import QualityOptions

        self.detector = detector
        self.model = model
        self.sentiment_config = sentiment or SentimentConfig()
        self.max_pixels = int(max_pixels)
        self.quality_options = quality or QualityOptions()

    @classmethod
    def from_config(
        cls,
        cfg: InferenceConfig | None = None,
        *,
        weights_bytes: bytes | None = None,
        detector_weights_bytes: bytes | None = None,
        configure_runtime: bool = True,
    ) -> "FacePipeline":
        """Build detector + model from a validated InferenceConfig (the CLI and Spark workers use this).

        weights_bytes / detector_weights_bytes: broadcast file bytes (``load_weight_bytes(name)``,
        ``read_weight_bytes(RETINAFACE_MOBILENET_V2)``) so executors fetch nothing.
        configure_runtime: apply ``cfg.runtime`` via configure_tensorflow first.
        """
        from fer_core.detectors import create_detector
        from fer_core.models.registry import create_emotion_model
        from fer_core.runtime import configure_tensorflow

        from fer_core.models.registry import get_spec, is_model_path

        cfg = cfg or InferenceConfig()
        if not is_model_path(cfg.model.name):
            get_spec(cfg.model.name)  # fail fast on a wrong name, before loading anything heavy
        if configure_runtime:
            configure_tensorflow(cfg.runtime.device, cfg.runtime.intra_threads, cfg.runtime.inter_threads)
        det_kwargs = cfg.detector.kwargs()
        if detector_weights_bytes is not None:
            det_kwargs["weights_bytes"] = detector_weights_bytes
        detector = create_detector(cfg.detector.name, **det_kwargs)
        model = create_emotion_model(
            cfg.model.name, tta=cfg.model.tta, batch_size=cfg.model.batch_size, weights_bytes=weights_bytes
        )
        return cls(detector, model, cfg.sentiment, cfg.max_pixels, cfg.quality)

    @property
    def versions(self) -> dict[str, str]:
        """model_version / detector_version as stored in the tables."""
        return {"model_version": self.model.version, "detector_version": self.detector.version}

    # -- stages ------------------------------------------------------------

    def decode(self, images: Sequence[bytes | None | ImageError]) -> list[np.ndarray | ImageError]:
        """Bytes -> RGB uint8 arrays; a problem becomes its typed ImageError in place (never raised).

        An ImageError given in place of bytes (the caller could not read them: a fetch error, an
        oversized cell) passes through unchanged, so every per-image status is decided here."""
        out: list[np.ndarray | ImageError] = []
        for data in images:
            if isinstance(data, ImageError):
                out.append(data)
                continue
            try:
                out.append(decode_image(data, max_pixels=self.max_pixels))
            except ImageError as e:
                out.append(e)
            except Exception as e:  # a decoder bug must not kill the batch either
                out.append(DecodeError(f"cannot decode image: {type(e).__name__}: {e}"))
        return out

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """RGB arrays -> faces per image (one detector call for the whole batch)."""
        if not len(images):
            return []
        return self.detector.detect(list(images))

    def align(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """One image's faces -> (N, s, s, 3) uint8 crops at the model's input size and margin."""
        from fer_core.align import align_faces

        spec = self.model.spec
        return align_faces(image, list(faces), size=spec.input_size, margin=spec.crop_margin)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops -> (N, 7) probabilities in EMOTIONS order."""
        return self.model.predict(crops)

    def sentiment(self, probs: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(N, 7) probabilities -> (valence (N,), sentiment labels)."""
        return score_sentiment(probs, self.sentiment_config)

    # -- whole batch -----------------------------------------------------------

    def detect_safe(self, images: Sequence[np.ndarray]) -> list[list[Face] | ImageError]:
        """Like ``detect``, but never raises: if the batch call fails, images are retried one by one
        and only the culprit gets an ImageError (status decode_error, message says detection failed)."""
        images = list(images)
        try:
            return list(self.detect(images))
        except Exception:
            out: list[list[Face] | ImageError] = []
            for img in images:
                try:
                    out.append(list(self.detect([img])[0]))
                except Exception as e:
                    out.append(DecodeError(f"face detection failed on this image: {type(e).__name__}: {e}"))
            return out

    def score_images(self, images: Sequence[bytes | None | ImageError]) -> list[ImageResult]:
        """Bytes (None: an empty cell; an ImageError: bytes that could not be read) per image -> one
        ImageResult each, in order. Never raises for one bad image.

        The one place that orders decode -> detect -> align -> classify -> sentiment: the CLI, the
        local page and the Spark job all score through it. All faces of the batch are classified in
        one call."""
        decoded = self.decode(images)
        results: list[ImageResult] = []
        ok: list[int] = []
        for i, d in enumerate(decoded):
            if isinstance(d, ImageError):
                results.append(ImageResult(status=d.status, error=str(d)))
            else:
                results.append(ImageResult(status="ok", width=int(d.shape[1]), height=int(d.shape[0])))
                ok.append(i)
        detections = self.detect_safe([decoded[i] for i in ok])

        from fer_core.quality import face_quality

        crops: list[np.ndarray] = []
        owners: list[tuple[int, Face]] = []
        qualities: list[Any] = []
        for i, faces in zip(ok, detections):
            if isinstance(faces, ImageError):
                results[i].status, results[i].error = faces.status, str(faces)
                continue
            if not faces:
                results[i].status = "no_face"
                continue
            crops.append(self.align(decoded[i], faces))
            owners.extend((i, f) for f in faces)
            qualities.extend(face_quality(crops[-1], faces, self.quality_options))
        if not owners:
            return results

        probs = self.classify(np.concatenate(crops))
        valence, labels = self.sentiment(probs)
        for (i, face), p, v, s, q in zip(owners, probs, valence, labels, qualities):
            results[i].faces.append(FaceResult(face=face, probabilities=p, emotion=EMOTIONS[int(np.argmax(p))],
                                               sentiment=s, valence=float(v), quality=q))
        return results


# ---------------------------------------------------------------- image level


def image_probabilities(faces: ImageResult | Sequence[FaceResult]) -> np.ndarray | None:
    """Image-level probabilities: the face-area-weighted mean of its faces' (7,) vectors; None without faces.

    Bigger faces are closer / more prominent in a campaign photo, so they count more.
    """
    faces = faces.faces if isinstance(faces, ImageResult) else list(faces)
    if not faces:
        return None
    probs = np.stack([f.probabilities for f in faces]).astype(np.float64)
    areas = np.array([max(f.face.area, 0.0) for f in faces], dtype=np.float64)
    weights = areas if areas.sum() > 0 else np.ones_like(areas)
    return (weights @ probs / weights.sum()).astype(np.float32)


def dominant_emotion(probs: np.ndarray | None) -> str | None:
    """The EMOTIONS name with the highest probability (None for None)."""
    return None if probs is None else EMOTIONS[int(np.argmax(probs))]


def image_summary(result: ImageResult, cfg: SentimentConfig | None = None) -> dict[str, Any]:
    """The image-level columns of the images table: n_faces, dominant_emotion, p_*, sentiment, valence.

    Without faces every value but n_faces is None. Image valence is the sentiment of the
    area-weighted probabilities (equal to the area-weighted mean face valence before clipping).
    """
    probs = image_probabilities(result)
    row: dict[str, Any] = {"n_faces": len(result.faces), "dominant_emotion": dominant_emotion(probs)}
    for j, name in enumerate(EMOTIONS):
        row[f"p_{name}"] = None if probs is None else float(probs[j])
    if probs is None:
        row.update(sentiment=None, valence=None)
    else:
        valence, labels = score_sentiment(probs[None, :], cfg)
        row.update(sentiment=labels[0], valence=float(valence[0]))
    return row
