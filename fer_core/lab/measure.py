"""What a keras net scores on labelled faces, through the served EmotionModel (same preprocessing, same TTA views)."""
from __future__ import annotations

import numpy as np

from fer_core.lab.data import FaceDataset
from fer_core.models.spec import ModelSpec


FIT_SAMPLE = 2048  # training faces in the per-epoch fit check (about 5 s per epoch on 2 cores)


def fixed_sample_fit(model, images: np.ndarray, labels: np.ndarray, spec: ModelSpec) -> dict[str, float]:
    """Accuracy and cross-entropy of `model` (inference mode) on fixed, unaugmented training faces.

    Keras's logged `accuracy`/`loss` are running means in training mode (dropout, batch statistics) on
    augmented batches while the weights move; in long CPU runs here they drifted by ~5 points while
    the checkpoints themselves fitted the training faces equally well (fer-vgg-v5 model card). This
    is the figure that says what the model at the end of the epoch fits.
    """
    probs = predict_probs(model, images, spec)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"fit_accuracy": float((probs.argmax(1) == labels).mean()), "fit_loss": float(-np.log(picked).mean())}


def accuracy(model, dataset: FaceDataset, spec: ModelSpec, tta: bool | str = False) -> float:
    """Top-1 accuracy through the same preprocessing (optionally with TTA: True/"flip", "ten_crop", ...)."""
    probs = predict_probs(model, dataset.images, spec, tta=tta)
    return float((probs.argmax(1) == dataset.labels).mean())


def predict_probs(model, images: np.ndarray, spec: ModelSpec, tta: bool | str = False, batch: int = 512) -> np.ndarray:
    """(N, 7) probabilities of a keras model through EmotionModel's own views (the served TTA, exactly)."""
    from fer_core.models.emotion import EmotionModel

    return EmotionModel(model, spec, tta=tta, batch_size=batch, fold=False).predict(images)
