"""Trainable emotion-net architectures, one registry (like timm's create_model).

All take a (s, s, c) input in the range `preprocess` produces and end in a 7-way softmax
named "probabilities", so every one of them plugs into EmotionModel, Grad-CAM and training.
"""
from __future__ import annotations

from typing import Callable

from fer_core.errors import ConfigError

ArchitectureFn = Callable[..., "object"]
_ARCHITECTURES: dict[str, ArchitectureFn] = {}


def register_architecture(name: str) -> Callable[[ArchitectureFn], ArchitectureFn]:
    def deco(fn: ArchitectureFn) -> ArchitectureFn:
        _ARCHITECTURES[name] = fn
        return fn

    return deco


def list_architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int = 7, **kwargs):
    """Build an uncompiled keras.Model by architecture name; unknown names list the known ones."""
    if name not in _ARCHITECTURES:
        raise ConfigError(f"model.architecture: unknown architecture {name!r}; known: {list_architectures()}")
    return _ARCHITECTURES[name](input_shape=input_shape, num_classes=num_classes, **kwargs)


def _head(x, num_classes: int, dropout: float, dense: int, layers):
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dense:
        x = layers.Dropout(dropout, name="head_dropout_1")(x)
        x = layers.Dense(dense, use_bias=False, name="head_dense")(x)
        x = layers.BatchNormalization(name="head_bn")(x)
        x = layers.Activation("relu", name="head_relu")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def _conv_bn_relu(x, filters: int, name: str, layers, stride: int = 1, weight_decay: float = 0.0,
                  bn_momentum: float = 0.99):
    reg = __import__("keras").regularizers.l2(weight_decay) if weight_decay else None
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


@register_architecture("vgg")
def vgg(input_shape, num_classes=7, widths=(32, 64, 128, 256), convs_per_stage=2, dropout=0.4,
        stage_dropout=0.1, dense=256, weight_decay=0.0, bn_momentum=0.99):
    """VGG-style: stages of 3x3 conv-BN-ReLU, max-pool, light spatial dropout; GAP head.

    The default widths keep it near 0.1 GFLOP per 48x48 face so it trains on 2 CPU cores.
    bn_momentum below the default suits very short runs (tests), where moving statistics
    would otherwise still be near their initial values.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="face")
    x = inputs
    for s, w in enumerate(widths):
        for c in range(convs_per_stage):
            x = _conv_bn_relu(x, w, f"s{s}c{c}", layers, weight_decay=weight_decay, bn_momentum=bn_momentum)
        x = layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
        if stage_dropout:
            x = layers.SpatialDropout2D(stage_dropout, name=f"s{s}_drop")(x)
    return keras.Model(inputs, _head(x, num_classes, dropout, dense, layers), name="vgg")


@register_architecture("resnet")
def resnet(input_shape, num_classes=7, widths=(32, 64, 128, 256), blocks_per_stage=2, dropout=0.4, dense=0):
    """ResNet-style: basic residual blocks, stride-2 downsampling between stages."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="face")
    x = _conv_bn_relu(inputs, widths[0], "stem", layers)
    for s, w in enumerate(widths):
        for b in range(blocks_per_stage):
            stride = 2 if (b == 0 and s > 0) else 1
            shortcut = x
            y = _conv_bn_relu(x, w, f"s{s}b{b}a", layers, stride=stride)
            y = layers.Conv2D(w, 3, padding="same", use_bias=False, name=f"s{s}b{b}b_conv")(y)
            y = layers.BatchNormalization(name=f"s{s}b{b}b_bn")(y)
            if stride != 1 or shortcut.shape[-1] != w:
                shortcut = layers.Conv2D(w, 1, strides=stride, use_bias=False, name=f"s{s}b{b}_proj")(shortcut)
                shortcut = layers.BatchNormalization(name=f"s{s}b{b}_proj_bn")(shortcut)
            x = layers.Activation("relu", name=f"s{s}b{b}_out")(layers.Add(name=f"s{s}b{b}_add")([y, shortcut]))
    return keras.Model(inputs, _head(x, num_classes, dropout, dense, layers), name="resnet")


@register_architecture("mini_xception")
def mini_xception(input_shape, num_classes=7, widths=(16, 32, 64, 128), dropout=0.3, dense=0):
    """Mini-Xception (Arriaga et al. 2017): depthwise-separable residual modules, as in the fer baseline."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="face")
    x = _conv_bn_relu(inputs, 8, "stem1", layers)
    x = _conv_bn_relu(x, 8, "stem2", layers)
    for s, w in enumerate(widths):
        residual = layers.Conv2D(w, 1, strides=2, padding="same", use_bias=False, name=f"m{s}_res")(x)
        residual = layers.BatchNormalization(name=f"m{s}_res_bn")(residual)
        y = layers.SeparableConv2D(w, 3, padding="same", use_bias=False, name=f"m{s}_sep1")(x)
        y = layers.BatchNormalization(name=f"m{s}_bn1")(y)
        y = layers.Activation("relu", name=f"m{s}_relu")(y)
        y = layers.SeparableConv2D(w, 3, padding="same", use_bias=False, name=f"m{s}_sep2")(y)
        y = layers.BatchNormalization(name=f"m{s}_bn2")(y)
        y = layers.MaxPooling2D(3, strides=2, padding="same", name=f"m{s}_pool")(y)
        x = layers.Add(name=f"m{s}_add")([y, residual])
    return keras.Model(inputs, _head(x, num_classes, dropout, dense, layers), name="mini_xception")


@register_architecture("transfer")
def transfer(input_shape, num_classes=7, backbone_path: str = "", dropout=0.3, dense=256,
             trainable_backbone: bool = False):
    """A classification head on any Keras backbone loaded from `backbone_path` (.keras).

    ImageNet weights cannot be downloaded here, so the backbone is always given by path
    (e.g. a MobileNetV3 saved elsewhere). Grey inputs are tiled to the backbone's channels
    and resized to its input size. `trainable_backbone=False` freezes it for the first phase
    of fine-tuning; `set_backbone_trainable()` in fer_core.lab.loop opens it later.
    """
    import keras
    from keras import layers

    if not backbone_path:
        raise ConfigError("model.backbone_path: the 'transfer' architecture needs a backbone .keras file")
    backbone = keras.models.load_model(backbone_path, compile=False, safe_mode=True)
    backbone.trainable = trainable_backbone
    b_shape = backbone.input_shape[1:]
    inputs = keras.Input(shape=input_shape, name="face")
    x = inputs
    if b_shape[0] and b_shape[:2] != tuple(input_shape[:2]):
        x = layers.Resizing(b_shape[0], b_shape[1], name="to_backbone_size")(x)
    if b_shape[-1] != input_shape[-1]:
        x = layers.Concatenate(name="to_backbone_channels")([x] * (b_shape[-1] // input_shape[-1]))
    x = backbone(x, training=False)
    if len(x.shape) == 2:
        x = layers.Reshape((1, 1, x.shape[-1]), name="as_map")(x)
    return keras.Model(inputs, _head(x, num_classes, dropout, dense, layers), name="transfer")
