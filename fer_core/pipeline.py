"""FacePipeline: decode -> detect -> align -> classify -> sentiment, on numpy batches.

Each stage is a method with the same batch style so the Spark adapter can call them
one by one (or all at once through ``score_images``) without knowing any model. One bad
image never fails a batch: its typed error becomes its ``status``. Classification runs
once over all faces of the batch, which is what makes the classifier efficient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fer_core.decode import DEFAULT_MAX_PIXELS, decode_image
from fer_core.errors import DecodeError, ImageError
from fer_core.labels import EMOTIONS
from fer_core.pipeline_config import DetectorOptions, InferenceConfig, ModelOptions, VideoConfig
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
    "video_tracks",
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
        video: VideoConfig | None = None,
        quality: Any = None,
    ) -> None:
        from fer_core.quality import QualityOptions

        self.detector = detector
        self.model = model
        self.sentiment_config = sentiment or SentimentConfig()
        self.max_pixels = int(max_pixels)
        self.video = video or VideoConfig()
        self.quality_options = quality or QualityOptions()
        self.config: InferenceConfig | None = None  # set by from_config (the scoring identity's source)

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
        pipe = cls(detector, model, cfg.sentiment, cfg.max_pixels, cfg.video, cfg.quality)
        pipe.config = cfg
        return pipe

    @property
    def versions(self) -> dict[str, str]:
        """model_version / detector_version as stored in the tables."""
        return {"model_version": self.model.version, "detector_version": self.detector.version}

    @property
    def scoring_id(self) -> str | None:
        """The scoring identity (fer_core.identity) of a pipeline built from a config: the same string the
        job writes on its rows for that config, so a photo tried in the CLI can be matched to the lake's
        figures. None for a pipeline assembled by hand."""
        from fer_core.identity import scoring_id

        cfg = getattr(self, "config", None)
        return None if cfg is None else scoring_id(cfg, self.model.version, self.detector.version)

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
        local page and the Spark job all score through it. Photos are decoded and detected as one
        batch; a video post (``fer_core.video.media_type``, when ``video.enabled``) is sampled and its
        frames go through the same detect and align, one video at a time, so the frames held at once
        are those of one video (at most ``video.max_frames``), never those of a whole chunk of videos;
        only its crops are kept. All crops of the batch, photos' and videos', are classified in one call.
        """
        results: list[ImageResult | None] = [None] * len(images)
        crops: list[np.ndarray] = []
        owners: list[_Owner] = []
        photos = [i for i, data in enumerate(images) if not self.is_video(data)]
        decoded = self.decode([images[i] for i in photos])
        for i, d in zip(photos, decoded):
            if isinstance(d, ImageError):
                results[i] = ImageResult(status=d.status, error=str(d))
            else:
                results[i] = ImageResult(status="ok", width=int(d.shape[1]), height=int(d.shape[0]), n_frames=1)
        ok = [(i, d) for i, d in zip(photos, decoded) if not isinstance(d, ImageError)]
        self._detect_and_align(ok, results, crops, owners)
        del decoded, ok
        for i, data in enumerate(images):
            if results[i] is None:
                results[i] = self._sample_and_detect(i, data, results, crops, owners)
        out: list[ImageResult] = results  # type: ignore[assignment]  # every slot is filled above
        if not owners:
            return out

        probs = self.classify(np.concatenate(crops))
        valence, labels = self.sentiment(probs)
        for owner, p, v, s in zip(owners, probs, valence, labels):
            out[owner.index].faces.append(FaceResult(
                face=owner.face, probabilities=p, emotion=EMOTIONS[int(np.argmax(p))], sentiment=s,
                valence=float(v), frame_ms=owner.frame_ms, track_id=owner.track_id, quality=owner.quality))
        return out

    def is_video(self, data: Any) -> bool:
        """Whether ``score_images`` samples these bytes as a video post (video.enabled and a video container)."""
        from fer_core.video import media_type

        return (self.video.enabled and isinstance(data, (bytes, bytearray, memoryview))
                and media_type(data, self.video) == "video")

    def _detect_and_align(self, frames: Sequence[tuple[int, np.ndarray]], results: list[ImageResult | None],
                          crops: list[np.ndarray], owners: list["_Owner"]) -> list[list[Face] | ImageError]:
        """Detect faces on (result index, RGB) pairs in one batch; append each frame's aligned crops and
        their owners; a photo without faces becomes no_face, a failed detection its error. Returns the
        detections (a video's caller links them into tracks)."""
        detections = self.detect_safe([rgb for _, rgb in frames])
        for (i, rgb), faces in zip(frames, detections):
            result = results[i]
            if isinstance(faces, ImageError):
                result.status, result.error = faces.status, str(faces)
            elif faces:
                from fer_core.quality import face_quality

                crops.append(self.align(rgb, faces))
                owners.extend(_Owner(i, f, quality=q)
                              for f, q in zip(faces, face_quality(crops[-1], faces, self.quality_options)))
            elif result.media_type == "image":
                result.status = "no_face"
        return detections

    def _sample_and_detect(self, i: int, data: bytes, results: list[ImageResult | None],
                           crops: list[np.ndarray], owners: list["_Owner"]) -> ImageResult:
        """One video post: sample its frames, detect and align them as a batch, link its faces into
        tracks. Its frames are dropped on return (only the crops stay); a typed error is its status."""
        from fer_core.tracking import link_tracks
        from fer_core.video import sample_frames

        try:
            video = sample_frames(data, self.video)
        except ImageError as e:
            return ImageResult(status=e.status, error=str(e), media_type="video")
        except Exception as e:  # a decoder bug must not kill the batch
            bug = DecodeError(f"cannot decode video: {type(e).__name__}; re-export the file as H.264/VP9")
            return ImageResult(status=bug.status, error=str(bug), media_type="video")
        result = results[i] = ImageResult(status="ok", width=video.width, height=video.height, media_type="video",
                                          duration_s=video.duration_s, n_frames=len(video.frames))
        video_crops: list[np.ndarray] = []
        video_owners: list[_Owner] = []
        detections = self._detect_and_align([(i, frame) for frame in video.frames], results, video_crops,
                                             video_owners)
        if any(isinstance(d, ImageError) for d in detections):
            return result  # a frame the detector could not take: its error is the video's status, as for a photo
        if not video_owners:
            result.status = "no_face"
            return result
        track_ids = link_tracks(detections, video.frame_ms, self.video.tracking)
        frame_of_face = ((int(ms), int(tid)) for faces, ms, ids in zip(detections, video.frame_ms, track_ids)
                         for _face, tid in zip(faces, ids))
        for owner, (ms, track_id) in zip(video_owners, frame_of_face, strict=True):
            owner.frame_ms, owner.track_id = ms, track_id
        crops.extend(video_crops)
        owners.extend(video_owners)
        return result


@dataclass
class _Owner:
    """Whose crop it is: the result index, the face and, for a video, its frame time and track."""

    index: int
    face: Face
    frame_ms: int | None = None
    track_id: int | None = None
    quality: Any = None  # fer_core.quality.FaceQuality of its crop


# ---------------------------------------------------------------- image level


def video_tracks(result: ImageResult) -> list[Any]:
    """A video's tracks (``fer_core.tracking.TrackSummary``, by track id) from its faces' track_id and
    frame_ms: each track's area-weighted mean probabilities and ``area_sum`` (mean area x frames seen)."""
    from fer_core.tracking import track_summary

    by_frame: dict[int, list[FaceResult]] = {}
    for fr in result.faces:
        by_frame.setdefault(int(fr.frame_ms or 0), []).append(fr)
    frame_ms = sorted(by_frame)
    frames = [by_frame[ms] for ms in frame_ms]
    return track_summary([[int(fr.track_id or 0) for fr in faces] for faces in frames],
                         [[fr.face for fr in faces] for faces in frames],
                         [np.stack([fr.probabilities for fr in faces]) for faces in frames], frame_ms)


def image_probabilities(faces: ImageResult | Sequence[FaceResult]) -> np.ndarray | None:
    """Image-level probabilities: the face-area-weighted mean of its faces' (7,) vectors; None without faces.

    Bigger faces are closer / more prominent in a campaign photo, so they count more. For a video
    (an ImageResult with media_type video), its tracks' mean probabilities weighted by each track's
    face area x frames seen (``video_tracks``): a person on screen, near the camera, for long counts most.
    """
    if isinstance(faces, ImageResult) and faces.media_type == "video" and faces.faces:
        tracks = video_tracks(faces)
        probs = np.stack([t.probabilities for t in tracks]).astype(np.float64)
        weights = np.array([t.area_sum for t in tracks], dtype=np.float64)
        return (weights @ probs / weights.sum()).astype(np.float32)
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

    A video's n_faces is the number of its tracks (one person across its frames counts once).
    Without faces every value but n_faces is None. Image valence is the sentiment of the
    area-weighted probabilities (equal to the area-weighted mean face valence before clipping).
    """
    probs = image_probabilities(result)
    n_faces = len({fr.track_id for fr in result.faces}) if result.media_type == "video" else len(result.faces)
    row: dict[str, Any] = {"n_faces": n_faces, "dominant_emotion": dominant_emotion(probs)}
    for j, name in enumerate(EMOTIONS):
        row[f"p_{name}"] = None if probs is None else float(probs[j])
    if probs is None:
        row.update(sentiment=None, valence=None)
    else:
        valence, labels = score_sentiment(probs[None, :], cfg)
        row.update(sentiment=labels[0], valence=float(valence[0]))
    return row
