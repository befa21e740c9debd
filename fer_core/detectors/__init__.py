"""Face detector registry (timm-style): ``create_detector(name, **cfg)``, ``list_detectors()``.

Families register themselves with ``@register_detector("name")``. Importing this package is cheap:
TensorFlow / OpenCV are imported only when a detector is created.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from fer_core.detectors.base import Detections, Detector, DetectorConfig
from fer_core.errors import ConfigError

__all__ = ["Detector", "DetectorConfig", "Detections", "create_detector", "list_detectors", "register_detector",
           "resolve_detector_options"]

_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])


def register_detector(name: str) -> Callable[[D], D]:
    """Class decorator: make ``create_detector(name)`` build this Detector subclass."""

    def deco(cls: D) -> D:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"detector name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_detectors() -> list[str]:
    """Names accepted by ``create_detector``, sorted."""
    return sorted(_REGISTRY)


def create_detector(name: str = "retinaface", *, config: DetectorConfig | None = None, **cfg: Any) -> Detector:
    """Build a detector by name.

    ``cfg`` keys that are DetectorConfig fields (score_threshold, min_face_size, max_side, nms_iou,
    small_face_px, small_face_threshold) override the family's defaults; any other key goes to the
    family's constructor (e.g.
    ``weights_bytes=`` or ``engine=`` for retinaface). Unknown names or keys raise ConfigError listing
    the valid ones.
    """
    cls, base, extra = resolve_detector_options(name, config=config, **cfg)
    return cls(config=base, **extra)


def resolve_detector_options(
    name: str, *, config: DetectorConfig | None = None, **cfg: Any
) -> tuple[type[Detector], DetectorConfig, dict[str, Any]]:
    """Validate a detector's options without building it (cheap: no weights, no TensorFlow), so a job
    fails on its driver, naming the key, rather than on every executor.

    Returns (family class, its DetectorConfig, the constructor's other keyword arguments). Every
    ConfigError message starts with the key, as ``detector.<key>``.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"detector.name: unknown detector {name!r}; registered detectors: {list_detectors()}")
    cls = _REGISTRY[name]
    base = config if config is not None else cls.default_config
    cfg_keys = set(DetectorConfig.field_names())
    overrides = {k: v for k, v in cfg.items() if k in cfg_keys}
    extra = {k: v for k, v in cfg.items() if k not in cfg_keys}
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "config")]
    unknown = sorted(set(extra) - set(accepted))
    if unknown:
        raise ConfigError(
            f"detector.{unknown[0]}: detector {name!r} does not accept {unknown}; "
            f"valid keys: {sorted(cfg_keys) + sorted(accepted)}"
        )
    for key, value in extra.items():
        choices = cls.option_choices.get(key)
        if choices is not None and value not in choices:
            raise ConfigError(f"detector.{key}: expected one of {list(choices)} for {name!r}, got {value!r}")
    if overrides:
        try:
            base = DetectorConfig(**{**{f: getattr(base, f) for f in cfg_keys}, **overrides})
        except TypeError as e:
            raise ConfigError(f"detector {name!r}: bad config value ({e})") from e
    return cls, base, extra


# Import the families last so their @register_detector runs (they import nothing heavy at module level).
from fer_core.detectors import haar as _haar  # noqa: E402,F401
from fer_core.detectors import retinaface as _retinaface  # noqa: E402,F401
