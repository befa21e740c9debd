"""A campaign's emotion mix, corrected for the classifier's known confusions.

Counting each face's top emotion (or averaging its probabilities) gives a biased mix whenever a
campaign's faces are not mixed like FER2013's: a 67%-accurate model turns a share of every class into
its usual confusions (sad read as neutral, fear as sad, ...). If ``M[i, j]`` is the model's mean
probability for class j over faces whose true class is i, then for a campaign with true mix q the
mean probability vector is about ``M.T @ q`` (the prior-shift assumption: a face of a given true class
looks to the model the same in any campaign). ``adjusted_mix`` solves that for q on the probability
simplex; this is "probabilistic adjusted classify and count" (Bella et al. 2010).

``bench/quantify_mix.py`` measures it on PublicTest faces drawn into campaigns of known mix: with
fer-vgg v5 and flip TTA, on campaigns of 1,000 faces dominated by a few emotions, the mean absolute
error per class fell from 6.2 points (counting top emotions) to 2.4; on campaigns mixed like FER2013
itself counting stays better (1.3 vs 2.1). ``M`` is fitted on held-out faces
(``class_conditional_probs``), never on the faces being measured, and is stored in the model's spec
(``ModelSpec.mix_calibration``).
"""
from __future__ import annotations

import numpy as np

from fer_core.labels import EMOTIONS

__all__ = ["class_conditional_probs", "adjusted_mix", "mix_calibration"]


def class_conditional_probs(probs: np.ndarray, labels: np.ndarray, n_classes: int = len(EMOTIONS)) -> np.ndarray:
    """(K, K) matrix: row i is the mean probability vector over the faces labelled i.

    Raises ValueError when a class has no faces: its row cannot be estimated, and a guessed row
    would bias every adjusted mix.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] != n_classes or len(probs) != len(labels):
        raise ValueError(f"expected probs (N, {n_classes}) and labels (N,), got {probs.shape} and {labels.shape}")
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        missing = [EMOTIONS[i] if n_classes == len(EMOTIONS) else str(i) for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"no labelled faces of class {missing}: the mix calibration needs every class")
    matrix = np.zeros((n_classes, n_classes))
    np.add.at(matrix, labels, probs)
    return matrix / counts[:, None]


def adjusted_mix(mean_probs: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The mix q on the simplex whose expected mean probabilities ``q @ matrix`` are nearest
    ``mean_probs`` (least squares). Works on one vector (K,) or a batch of campaigns (C, K).

    Exact: the optimum of this small convex problem is the equality-constrained least-squares
    solution on some support set, so every one of the 2^K - 1 supports is solved (one KKT system
    per support, shared by the whole batch) and the best non-negative one kept. K = 7: 127 solves.
    """
    m = np.asarray(mean_probs, np.float64)
    single = m.ndim == 1
    m = np.atleast_2d(m)
    a = np.asarray(matrix, np.float64)
    k = a.shape[0]
    if a.ndim != 2 or a.shape[1] != k or m.shape[1] != k:
        raise ValueError(f"expected a square (K, K) matrix and mean probabilities (..., K); got {a.shape} and {m.shape}")
    best = np.zeros_like(m)
    best_loss = np.full(len(m), np.inf)
    for mask in range(1, 2 ** k):
        support = np.array([i for i in range(k) if mask >> i & 1])
        rows = a[support]
        s = len(support)
        kkt = np.zeros((s + 1, s + 1))
        kkt[:s, :s] = rows @ rows.T
        kkt[:s, s] = kkt[s, :s] = 1.0
        rhs = np.vstack([rows @ m.T, np.ones((1, len(m)))])
        q_support = (np.linalg.pinv(kkt) @ rhs)[:s].T  # (C, s)
        feasible = (q_support >= -1e-12).all(axis=1)
        q_support = np.clip(q_support, 0.0, None)
        loss = ((q_support @ rows - m) ** 2).sum(axis=1)
        better = feasible & (loss < best_loss - 1e-15)
        if better.any():
            best[better] = 0.0
            best[np.ix_(better, support)] = q_support[better]
            best_loss[better] = loss[better]
    best /= best.sum(axis=1, keepdims=True)
    return best[0] if single else best


def mix_calibration(single: np.ndarray, tta: np.ndarray, labels: np.ndarray, source: str) -> dict:
    """The ``ModelSpec.mix_calibration`` entry: the matrix for plain and flip-TTA predictions."""
    return {
        "single": np.round(class_conditional_probs(single, labels), 6).tolist(),
        "tta": np.round(class_conditional_probs(tta, labels), 6).tolist(),
        "faces": int(len(labels)),
        "source": source,
    }
