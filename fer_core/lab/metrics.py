"""Classification metrics used in the FER literature, in plain numpy (checked against scikit-learn in tests).

The lab's evaluation report uses them; the Wilson interval, which the dashboards use too, is in fer_core.metrics.
"""
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


def calibration_metrics(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict:
    """Do the probabilities mean what they say? The job's valence and sentiment are sums of them.

    ECE (Guo et al. 2017): faces binned by top-class confidence into n_bins equal-width bins
    (lo, hi]; the count-weighted mean of |accuracy - mean confidence| per bin. MCE is the largest
    such gap over non-empty bins. NLL is scikit-learn's log_loss; Brier is the multi-class Brier score
    (sum over classes of the squared error, averaged over faces; 0 is perfect, 2 the worst).
    """
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] != y_true.shape[0]:
        raise ValueError(f"probs has shape {probs.shape} but y_true {y_true.shape}: need (n, classes) and (n,)")
    n = len(y_true)
    if n == 0:
        raise ValueError("calibration needs at least one face")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        members = which == b
        count = int(members.sum())
        if count == 0:
            continue
        acc, conf = float(correct[members].mean()), float(confidence[members].mean())
        ece += count / n * abs(acc - conf)
        mce = max(mce, abs(acc - conf))
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count, "accuracy": acc, "confidence": conf})
    onehot = np.eye(probs.shape[1])[y_true]
    return {
        "ece": float(ece),
        "mce": float(mce),
        "nll": float(-np.mean(np.log(np.clip(probs[np.arange(n), y_true], 1e-15, 1.0)))),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
        "mean_confidence": float(confidence.mean()),
        "accuracy": float(correct.mean()),
        "n_bins": n_bins,
        "bins": bins,
    }


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Are two models' accuracies on the same faces different? McNemar's exact (binomial) test.

    Only the faces exactly one model gets right count: under "no difference" each such face is a
    fair coin. Two-sided p-value = min(1, 2 * P(X <= min(only_a, only_b))) for X ~ Binomial(only_a + only_b, 1/2).
    """
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"the two models were scored on different faces: shapes {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        p_value = 1.0
    else:
        from math import lgamma, log

        log_terms = [lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) - n * log(2) for i in range(k + 1)]
        top = max(log_terms)
        tail = float(np.exp(top) * np.sum(np.exp(np.array(log_terms) - top)))
        p_value = min(1.0, 2 * tail)
    return {"only_a": only_a, "only_b": only_b, "p_value": p_value}
