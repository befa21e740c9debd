"""The one preprocessing function, shared by training, evaluation, the CLI and Spark."""
from __future__ import annotations

import numpy as np

from fer_core.models.spec import ModelSpec


def to_grey(crops: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W,3) RGB or (N,H,W,1) or (N,H,W) -> uint8 (N,H,W), ITU-R BT.601 luma like cv2."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        return crops
    if crops.ndim == 4 and crops.shape[-1] == 1:
        return crops[..., 0]
    if crops.ndim == 4 and crops.shape[-1] == 3:
        import cv2

        return np.stack([cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY) for c in crops]) if len(crops) else crops[..., 0]
    raise ValueError(f"crops must be (N,H,W), (N,H,W,1) or (N,H,W,3); got shape {crops.shape}")


def resize_batch(crops: np.ndarray, size: int) -> np.ndarray:
    """Resize each crop to size x size with area interpolation (down) or linear (up)."""
    if crops.shape[1] == size and crops.shape[2] == size:
        return crops
    import cv2

    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_LINEAR
    out = [cv2.resize(np.ascontiguousarray(c), (size, size), interpolation=interp) for c in crops]
    return np.stack(out) if out else np.zeros((0, size, size) + crops.shape[3:], crops.dtype)


def scale_pixels(x: np.ndarray, scaling: str) -> np.ndarray:
    """uint8-range values -> float32 in the range the model was trained on."""
    x = x.astype(np.float32)
    if scaling == "minus1_1":
        return x / 127.5 - 1.0
    if scaling == "unit":
        return x / 255.0
    raise ValueError(f"unknown scaling {scaling!r}; expected 'minus1_1' or 'unit'")


def preprocess(crops: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 face crops -> float32 (N, s, s, c) model input, exactly as the model was trained.

    Crops may be (N,H,W) grey, (N,H,W,1) or (N,H,W,3) RGB, any square size; they are
    converted to the spec's channels, resized to its input size, and scaled. A crop-trained
    model (spec.frame_size) gets the centre input_size crop of the face resized to its frame.
    """
    return centre_crop(preprocess_frame(crops, spec), spec.input_size)


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    """The centred size x size window of (N, F, F, c) inputs (x itself when F == size)."""
    top = (x.shape[1] - size) // 2
    left = (x.shape[2] - size) // 2
    return x if (top, left) == (0, 0) else x[:, top:top + size, left:left + size]


def preprocess_frame(crops: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 face crops -> float32 (N, F, F, c) at the spec's frame side, before any crop is taken
    (what crop training augments and crop TTA cuts its views from; F = spec.frame)."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 pixels, got {crops.dtype}; pass the aligned crops, not model input")
    if spec.channels == 1:
        grey = resize_batch(to_grey(crops), spec.frame)
        return scale_pixels(grey, spec.scaling)[..., None]
    if crops.ndim == 3 or crops.shape[-1] == 1:
        g = crops if crops.ndim == 3 else crops[..., 0]
        crops = np.repeat(g[..., None], 3, axis=-1)
    return scale_pixels(resize_batch(crops, spec.frame), spec.scaling)
