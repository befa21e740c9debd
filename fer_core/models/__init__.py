"""Emotion models: ModelSpec, the registry (``create_emotion_model``) and EmotionModel.

Names are re-exported lazily (PEP 562) so that ``fer_core.models.spec`` can be imported by
``fer_core.preprocess`` without pulling in emotion.py (which imports preprocess: a cycle),
and so importing this package never loads Keras/TensorFlow.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ModelSpec": "fer_core.models.spec",
    "EmotionModel": "fer_core.models.emotion",
    "load_keras_model": "fer_core.models.emotion",
    "DEFAULT_MODEL": "fer_core.models.registry",
    "create_emotion_model": "fer_core.models.registry",
    "get_spec": "fer_core.models.registry",
    "is_model_path": "fer_core.models.registry",
    "list_models": "fer_core.models.registry",
    "load_weight_bytes": "fer_core.models.registry",
    "model_version": "fer_core.models.registry",
    "register_model": "fer_core.models.registry",
    "spec_from_json": "fer_core.models.registry",
    "spec_to_json": "fer_core.models.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fer_core.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
