"""fer_core: face detection + 7-class FER2013 emotion classification + sentiment, on numpy batches.

The public API is re-exported here lazily (PEP 562): ``import fer_core`` stays cheap and
imports neither TensorFlow nor OpenCV; each name loads its module on first access.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

# oneDNN kernels train and infer ~1.5-2x faster on this project's x86 CPUs (measured in bench/; TensorFlow
# 2.21 leaves them off here unless asked); it must be set before TensorFlow is first imported, which
# fer_core never does at import time. Too late when the caller imported TensorFlow first: say so.
if "TF_ENABLE_ONEDNN_OPTS" not in os.environ and "tensorflow" in sys.modules:
    warnings.warn(
        "TensorFlow was imported before fer_core, so fer_core could not turn on oneDNN "
        "(TF_ENABLE_ONEDNN_OPTS=1); CPU inference may run ~1.5x slower. Import fer_core first, "
        "or export TF_ENABLE_ONEDNN_OPTS=1 (or =0 to keep TensorFlow's default and silence this).",
        RuntimeWarning, stacklevel=2,
    )
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # labels, types, errors
    "EMOTIONS": "fer_core.labels",
    "Face": "fer_core.types",
    "FaceResult": "fer_core.types",
    "ImageResult": "fer_core.types",
    "FerCoreError": "fer_core.errors",
    "ConfigError": "fer_core.errors",
    "WeightsError": "fer_core.errors",
    "ImageError": "fer_core.errors",
    # stages
    "decode_image": "fer_core.decode",
    "create_detector": "fer_core.detectors",
    "list_detectors": "fer_core.detectors",
    "align_faces": "fer_core.align",
    "preprocess": "fer_core.preprocess",
    # models
    "ModelSpec": "fer_core.models.spec",
    "EmotionModel": "fer_core.models.emotion",
    "create_emotion_model": "fer_core.models.registry",
    "list_models": "fer_core.models.registry",
    "register_model": "fer_core.models.registry",
    "get_spec": "fer_core.models.registry",
    "load_weight_bytes": "fer_core.models.registry",
    "model_version": "fer_core.models.registry",
    # sentiment, pipeline, explanations, config, runtime
    "SentimentConfig": "fer_core.sentiment",
    "score_sentiment": "fer_core.sentiment",
    "FacePipeline": "fer_core.pipeline",
    "InferenceConfig": "fer_core.pipeline",
    "image_probabilities": "fer_core.pipeline",
    "image_summary": "fer_core.pipeline",
    "dominant_emotion": "fer_core.pipeline",
    "heatmaps": "fer_core.gradcam",
    "overlay": "fer_core.gradcam",
    "explain_faces": "fer_core.gradcam",
    "load_dataclass": "fer_core.config",
    "load_yaml": "fer_core.config",
    "configure_tensorflow": "fer_core.runtime",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fer_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
