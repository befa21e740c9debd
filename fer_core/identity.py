"""The scoring identity: one string that names everything which changes a face's numbers.

Two rows carry the same ``scoring_id`` only if they were scored alike: the same model weights
(``model_version``) with or without flip TTA, the same detector weights and policy (score threshold and
the lower one for faces under ``small_face_px``, largest side, smallest face, NMS), the same sentiment rule, video sampling, quality cut-offs and size
limits. It is readable first and exact second::

    fer-vgg@5+tta/retinaface@0.9,<96px:0.5,1024px,min20/fa674399

the model (``+tta`` with flip TTA, ``+tta:ten_crop`` or ``+tta:<views>`` with another mode), the
detector and its policy, then the first 8 hex digits of a sha256 over all of the above
(``scoring_hash``), so that two identities that read alike but differ in, say, the sentiment weights
never compare equal. Left out on purpose: the runtime (device, threads) and the
classifier's batch size, which change nothing but float32 rounding, and the RetinaFace engine, whose
engines return the same rows (tests/test_detectors.py).

Rows written before identities existed have none; readers give them :func:`legacy_scoring_id` of their
model version (``fer-vgg@5~legacy``): scored by that model under a policy nobody recorded, so never
equal to an identity of today and rescored, in bounded steps, like any older identity.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["scoring_id", "scoring_hash", "legacy_scoring_id", "LEGACY_SUFFIX", "is_legacy"]

LEGACY_SUFFIX = "~legacy"


def _policy(cfg: Any, model_version: str, detector_version: str) -> dict[str, Any]:
    from fer_core.config import dataclass_to_dict

    data = dataclass_to_dict(cfg.resolved())
    data.pop("runtime", None)
    data["model"].pop("batch_size", None)
    data["model"].pop("name", None)  # "default" and "fer-vgg" name the same weights: model_version says which
    data["detector"].pop("engine", None)
    data["model_version"], data["detector_version"] = model_version, detector_version
    return data


def scoring_hash(cfg: Any, model_version: str, detector_version: str) -> str:
    """sha256 (first 8 hex) of everything that changes a face's numbers (see the module doc)."""
    data = _policy(cfg, model_version, detector_version)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _num(value: Any) -> str:
    return "-" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def scoring_id(cfg: Any, model_version: str, detector_version: str) -> str:
    """The readable scoring identity of a pipeline config (an ``InferenceConfig`` or the job's
    ``JobConfig``) whose model and detector resolved to these versions."""
    det = cfg.detector.resolved()
    small = getattr(det, "small_face_px", 0) or 0  # a size-dependent threshold: faces under N px need less
    threshold = _num(det.score_threshold) + (f",<{small}px:{_num(det.small_face_threshold)}" if small else "")
    policy = (f"{threshold},{_num(det.max_side)}px,min{_num(det.min_face_size)}"
              if det.name == "retinaface" else f"min{_num(det.min_face_size)}")
    tta = cfg.model.tta  # canonical (ModelOptions): False, True (flip), or a mode's name / view list
    model = model_version + ("+tta" if tta is True else f"+tta:{tta}" if tta else "")
    return f"{model}/{det.name}@{policy}/{scoring_hash(cfg, model_version, detector_version)}"


def legacy_scoring_id(model_version: str | None) -> str:
    """The identity read for a row written before identities existed (see the module doc)."""
    return f"{model_version or 'unknown'}{LEGACY_SUFFIX}"


def is_legacy(identity: str | None) -> bool:
    return bool(identity) and identity.endswith(LEGACY_SUFFIX)
