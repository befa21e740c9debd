"""The pipeline config: one schema, with one default per key, for every way a face gets scored.

``python -m fer_core predict/serve --config`` reads it as it is (conf/inference.yaml lists every key
with its default, and a test holds the file to that). The Spark job's ``JobConfig``
(jobs/campaign/config.py) *extends* ``InferenceConfig`` with its job-only sections (input, output,
spark, ...), so the sections below mean the same pipeline, with the same defaults, in a job YAML
and in an inference YAML:

- ``detector:`` ``DetectorOptions`` (null = the detector family's own default)
- ``model:`` ``ModelOptions`` (name, tta, batch_size)
- ``sentiment:`` ``fer_core.sentiment.SentimentConfig``
- ``runtime:`` ``fer_core.runtime.RuntimeConfig`` (device, TensorFlow threads)
- ``video:`` ``VideoConfig``: whether video posts are scored, how their frames are sampled
  (``fer_core.video.VideoOptions``) and how their faces are linked into tracks (``tracking:``,
  ``fer_core.tracking.TrackOptions``)
- ``quality:`` ``fer_core.quality.QualityOptions`` (the cut-offs of the face-quality flags)
- ``max_pixels``, ``max_bytes``: the limits past which an image is ``too_large``

Everything that changes a face's numbers (model, tta, detector policy, sentiment rule, limits) is in
this one object, which is what a scoring identity or a config hash is derived from.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fer_core.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from fer_core.errors import ConfigError
from fer_core.quality import QualityOptions
from fer_core.runtime import RuntimeConfig
from fer_core.sentiment import SentimentConfig
from fer_core.tracking import TrackOptions
from fer_core.video import VideoOptions

__all__ = ["DetectorOptions", "ModelOptions", "VideoConfig", "InferenceConfig", "RuntimeConfig", "SentimentConfig"]


@dataclass(frozen=True)
class DetectorOptions:
    """``detector:`` section. Unset (null) values keep the detector family's own defaults; the values
    are validated here, when the config is read (see fer_core.detectors.DetectorConfig)."""

    name: str = "retinaface"
    score_threshold: float | None = None
    min_face_size: int | None = None
    max_side: int | None = None
    nms_iou: float | None = None
    small_face_px: int | None = None  # size-dependent threshold: faces under this many px ...
    small_face_threshold: float | None = None  # ... must score this instead of score_threshold
    engine: str | None = None  # retinaface only: auto | tflite | tf

    def __post_init__(self) -> None:
        from fer_core.detectors import resolve_detector_options

        try:  # a bad value fails when the config is read, not on every executor
            resolve_detector_options(self.name, **self.kwargs())
        except ConfigError as e:  # the config loader prefixes the section ("detector.") itself
            raise ConfigError(str(e).removeprefix("detector.")) from None

    def kwargs(self) -> dict[str, Any]:
        """The set values, as ``create_detector(name, **kwargs)`` keyword arguments."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name" and v is not None}

    def resolved(self) -> "DetectorOptions":
        """The same options with every unset threshold/size written out as the family's default, so
        that ``score_threshold: 0.9`` and leaving it to RetinaFace's 0.9 compare (and hash) equal."""
        from fer_core.detectors import resolve_detector_options

        _, det_cfg, _ = resolve_detector_options(self.name, **self.kwargs())
        return dataclasses.replace(self, **{k: getattr(det_cfg, k) for k in dataclasses.asdict(det_cfg)})


@dataclass(frozen=True)
class ModelOptions:
    """``model:`` section: a registered model name, "default", or a path/URI to a .keras/.h5 file.

    tta (default on): also classify each face's mirror image and average the two. It doubles the
    classifier's work (v5: 581 -> 289 faces/s in one run), but classifying is a small share of a scored
    image's time (RetinaFace takes most), so a whole job run took 8-15% longer in two bench_job runs
    (README, issue 25), for +1.5 points on PublicTest (v5:
    66.95% -> 68.49%; README "Models and weights"). The job has scored with it since conf/default.yaml
    turned it on, so on is the one default: a config that says nothing scores like the product.
    tta may also name a mode of ``fer_core.models.emotion.TTA_MODES`` ("flip" is true, "none" false,
    "ten_crop" the centre and corner crops and their mirrors) or a comma list of views ("c,c_flip,tl,br"):
    corner views need a crop-trained model (spec.frame_size), which the pipeline checks when it loads it.
    batch_size (default 64): the most crops per ``predict_on_batch`` call; smaller calls are padded
    only to the next power of two. It bounds peak memory per process (each Spark worker holds a
    batch), and a chunk of the job's images rarely has more faces. The classifier alone ran 821 faces/s
    at 64 against 896 at 256 (flip TTA, v5, 2 CPU threads, one run): under 1% of a scored image's
    time. GPUs want more (conf/gpu.yaml: 512).
    """

    name: str = "default"
    tta: bool | str = True
    batch_size: int = 64

    def __post_init__(self) -> None:
        from fer_core.models.emotion import canonical_tta

        # one spelling per mode, so that "flip" and true score (and are identified) alike
        object.__setattr__(self, "tta", canonical_tta(self.tta))
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class VideoConfig(VideoOptions):
    """``video:`` section: the sampling keys of ``fer_core.video.VideoOptions`` (sample_fps, max_frames,
    max_seconds, max_pixels_per_frame, gif) plus:

    enabled (default on): bytes that are a video (MP4/MOV, WebM/Matroska; ``fer_core.video.media_type``)
    are sampled and scored as one video post. A dump of social posts holds Reels and Shorts next to
    photos, and a user expects them scored; off, they stay what they were before video support, a
    decode_error row that says they are a video.
    tracking: how faces are linked across sampled frames (``fer_core.tracking.TrackOptions``).
    """

    enabled: bool = True
    tracking: TrackOptions = field(default_factory=TrackOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"enabled: must be true or false, got {self.enabled!r}")


@dataclass(frozen=True)
class InferenceConfig:
    """Everything needed to build a FacePipeline (conf/inference.yaml; the job's JobConfig extends it).

    max_bytes: files (``predict``), uploads (``serve``) and the job's fetched URIs and image cells larger
    than this are too_large, never read; the pipeline itself gets bytes already read, so it checks only
    max_pixels (the header-declared pixel count).
    """

    detector: DetectorOptions = field(default_factory=DetectorOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    sentiment: SentimentConfig = field(default_factory=SentimentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    quality: QualityOptions = field(default_factory=QualityOptions)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        for key in ("max_pixels", "max_bytes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")

    def pipeline_config(self) -> "InferenceConfig":
        """Just the pipeline part, as a plain InferenceConfig (of a JobConfig, say): what a FacePipeline
        is built from."""
        return InferenceConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(InferenceConfig)})

    def resolved(self) -> "InferenceConfig":
        """``pipeline_config()`` with the detector's family defaults written out: two configs that score
        alike are equal, whichever keys they state. What configs are compared by and hashed over."""
        return dataclasses.replace(self.pipeline_config(), detector=self.detector.resolved())
