"""The training YAML schema (conf/experiments/train_*.yaml): one frozen dataclass per section, strict on load.

`model_spec` turns the model section into the ModelSpec a trained net is served with, so training
preprocesses faces exactly as inference will.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fer_core.labels import EMOTIONS
from fer_core.models.spec import ModelSpec


@dataclass(frozen=True)
class DataConfig:
    path: str
    train_split: str = "Training"  # FER2013 Usage, or "train" for class folders
    val_split: str = ""  # empty: hold out val_fraction of the training split (stratified)
    test_split: str = "PublicTest"  # reported only, never used for model selection
    val_fraction: float = 0.1
    limit: int = 0  # >0: use only this many training rows (smoke runs)


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "vgg"
    name: str = "fer-vgg"
    version: str = "1"
    input_size: int = 48
    channels: int = 1
    scaling: Literal["minus1_1", "unit"] = "minus1_1"
    crop_margin: float = 0.1  # alignment margin used when crops come from a detector
    # >input_size: crop training (Khaireddin & Chen 2021): faces are resized to frame_size, augmented, and
    # the net trains on random input_size crops; validation and single-pass inference use the centre crop,
    # EmotionModel(tta="ten_crop") the centre and corner crops and their mirrors. 0: whole faces.
    frame_size: int = 0
    dropout: float = 0.4
    options: dict = field(default_factory=dict)  # extra architecture kwargs (widths, ...)
    backbone_path: str = ""  # for architecture "transfer"
    init_from: str = ""  # fine-tune: start from this .keras model instead of random weights
    resize_widths: list[int] = field(default_factory=list)  # with a vgg init_from: prune or widen it to these stage widths


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    shift: float = 0.1  # fraction of the side
    rotation_deg: float = 10.0
    zoom: float = 0.1
    brightness: float = 0.2  # +- in the [-1, 1] input range / 2
    contrast: float = 0.2
    erasing_prob: float = 0.25  # random erasing (Zhong et al. 2017)
    # >0: mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself, inputs and
    # targets alike, with one weight ~ Beta(alpha, alpha) per batch. 0: off.
    mixup_alpha: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 40
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    # plateau: ReduceLROnPlateau on validation accuracy (PyTorch's rule, as in Khaireddin & Chen 2021): after
    # more than plateau_patience epochs without a new best, the LR is multiplied by plateau_factor.
    schedule: Literal["cosine", "constant", "plateau"] = "cosine"
    plateau_factor: float = 0.75
    plateau_patience: int = 5
    plateau_min_lr: float = 0.0
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    loss: Literal["crossentropy", "focal"] = "crossentropy"
    focal_gamma: float = 2.0
    class_weighting: Literal["none", "sqrt", "balanced"] = "none"
    early_stopping_patience: int = 0  # 0: off
    freeze_backbone_epochs: int = 0  # fine-tuning: train only the head this many epochs first
    fine_tune_lr_factor: float = 0.1
    # auto: mixed_float16 on a GPU, float32 on a CPU. bfloat16: mixed_bfloat16 on either; on a CPU with
    # AVX512_BF16 or AMX it trains about 2x faster than float32 (bench/bench_train_precision.py). The served
    # model is always written in float32 (fer_core.lab.loop.with_policy). off: float32.
    mixed_precision: Literal["auto", "off", "bfloat16"] = "auto"
    threads: int = 0  # 0: TensorFlow's default
    # >0: stochastic weight averaging (Izmailov et al. 2018): the mean of the weights after each epoch from
    # this one on, BatchNormalization statistics re-estimated on the training faces; the averaged model
    # replaces the best epoch only if its validation accuracy is higher. Pair it with a constant schedule.
    swa_start_epoch: int = 0

    def __post_init__(self):
        if not 0 <= self.swa_start_epoch <= self.epochs:
            raise ValueError(f"swa_start_epoch: {self.swa_start_epoch} is outside 0..epochs ({self.epochs}); "
                             "0 turns weight averaging off, otherwise start it at or before the last epoch")
        if self.schedule == "plateau" and self.warmup_epochs:
            raise ValueError(f"warmup_epochs: {self.warmup_epochs} with schedule 'plateau'; the plateau schedule "
                             "starts at learning_rate, so set warmup_epochs: 0")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ValueError(f"plateau_factor: {self.plateau_factor} must be in (0, 1) (the LR's multiplier on a plateau)")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (Hinton et al. 2015; "born-again" when the teacher is the student's own start).

    FER2013's labels are noisy (human agreement is about 65%): a trained teacher's probabilities on the
    training faces say which labels are doubtful and which classes a face resembles. The target becomes
    (1 - weight) * one-hot label + weight * teacher probabilities (flip-averaged when tta), computed once
    on the unaugmented training faces. The teacher must not have trained on the validation hold-out,
    or model selection is biased (same data.path, val_fraction and seed as the teacher's run keep it out).
    """

    teacher: str = ""  # registered model name ("fer-vgg@5") or model file; "" turns distillation off
    weight: float = 0.5
    tta: bool = True
    # True: the teacher labels every augmented batch as it is drawn (its target matches the face the student
    # sees, shifted, rotated or erased), at the cost of one or two teacher passes per step; the teacher must
    # take the student's input (same size, channels and scaling). False: once, on the unaugmented faces.
    online: bool = False

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight: {self.weight} is outside 0..1 (the teacher's share of the training target)")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    output_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    cv_folds: int = 0  # >=2: k-fold cross-validation on the training split instead of one run
    seed: int = 0
    # A committed file (e.g. checkpoints/fer-vgg-v6.npz) that carries a long run across machines: written by
    # `python -m fer_core.train --config X --export-checkpoint`, read when output_dir has no checkpoint yet.
    portable_checkpoint: str = ""

    def __post_init__(self):
        if self.distill.teacher and self.cv_folds >= 2:
            raise ValueError("distill.teacher is set with cv_folds: a teacher trained on the training split has seen "
                             "every validation fold, so CV scores would be inflated; run CV without distillation")


def model_spec(cfg: ModelConfig, weights: object = None, mix_calibration: dict | None = None) -> ModelSpec:
    """The ModelSpec a trained model is registered with; also drives preprocessing in training."""
    return ModelSpec(
        name=cfg.name, version=cfg.version, weights=weights, input_size=cfg.input_size,
        channels=cfg.channels, scaling=cfg.scaling, labels=EMOTIONS, crop_margin=cfg.crop_margin,
        frame_size=cfg.frame_size,
        description=f"{cfg.architecture} trained with fer_core.train", mix_calibration=mix_calibration or {},
    )
