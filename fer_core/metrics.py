"""Classification metrics used in the FER literature, in plain numpy (checked against scikit-learn in tests)."""
from __future__ import annotations

import numpy as np

from fer_core.labels import EMOTIONS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(EMOTIONS)) -> np.ndarray:
    """(n, n) counts; rows are true classes, columns predicted (scikit-learn's convention)."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...] = EMOTIONS) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted F1, confusion matrix.

    A class with no predictions (or no samples) gets precision (or recall) 0, like
    scikit-learn's zero_division=0.
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred {y_pred.shape}")
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n = max(1, len(y_true))
    return {
        "accuracy": float(tp.sum() / n),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / n),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
        "n": int(len(y_true)),
    }
