"""fer_core.quantify: the confusion-adjusted emotion mix of a campaign."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.labels import EMOTIONS
from fer_core.quantify import adjusted_mix, class_conditional_probs, mix_calibration

K = len(EMOTIONS)


def _confusion(rng: np.random.Generator, diagonal: float = 0.6) -> np.ndarray:
    """A row-stochastic matrix with `diagonal` on the diagonal and the rest spread at random."""
    off = rng.dirichlet(np.ones(K - 1), K) * (1 - diagonal)
    m = np.zeros((K, K))
    for i in range(K):
        m[i, np.arange(K) != i] = off[i]
        m[i, i] = diagonal
    return m


def _scipy_reference(mean_probs: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    optimize = pytest.importorskip("scipy.optimize")
    res = optimize.minimize(lambda q: ((q @ matrix - mean_probs) ** 2).sum(), np.full(K, 1 / K), method="SLSQP",
                            bounds=[(0, 1)] * K, constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1}],
                            options={"ftol": 1e-15, "maxiter": 1000})
    return res.x


def test_class_conditional_probs_are_per_class_means():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(K), 5)
    probs = rng.dirichlet(np.ones(K), len(labels))
    m = class_conditional_probs(probs, labels)
    for c in range(K):
        np.testing.assert_allclose(m[c], probs[labels == c].mean(0))
    np.testing.assert_allclose(m.sum(1), 1.0)


def test_class_conditional_probs_refuses_a_missing_class():
    probs = np.full((4, K), 1 / K)
    with pytest.raises(ValueError, match="disgust"):
        class_conditional_probs(probs, np.array([0, 2, 3, 4]))


def test_exact_mean_probabilities_give_back_the_true_mix():
    rng = np.random.default_rng(1)
    matrix = _confusion(rng)
    truth = rng.dirichlet(np.full(K, 0.5), 20)  # includes near-zero classes
    est = adjusted_mix(truth @ matrix, matrix)
    np.testing.assert_allclose(est, truth, atol=1e-9)


def test_noisy_inputs_match_a_general_solver_and_stay_on_the_simplex():
    rng = np.random.default_rng(2)
    matrix = _confusion(rng, 0.5)
    for _ in range(10):
        mean_probs = rng.dirichlet(np.full(K, 0.5)) @ matrix + rng.normal(0, 0.03, K)  # off the model's range
        est = adjusted_mix(mean_probs, matrix)
        ref = _scipy_reference(mean_probs, matrix)
        assert est.min() >= 0 and abs(est.sum() - 1) < 1e-12
        loss = lambda q: ((q @ matrix - mean_probs) ** 2).sum()  # noqa: E731
        assert loss(est) <= loss(ref) + 1e-12
        np.testing.assert_allclose(est, ref, atol=1e-5)


def test_batch_equals_one_at_a_time():
    rng = np.random.default_rng(3)
    matrix = _confusion(rng)
    batch = rng.dirichlet(np.ones(K), 6) @ matrix + rng.normal(0, 0.02, (6, K))
    np.testing.assert_allclose(adjusted_mix(batch, matrix), np.stack([adjusted_mix(b, matrix) for b in batch]))


def test_adjustment_beats_counting_when_the_mix_differs_from_training():
    """Faces drawn from a known confusion: a campaign of mostly sad faces looks partly neutral to the
    model; counting keeps that bias, the adjusted mix removes it (up to sampling noise)."""
    rng = np.random.default_rng(4)
    matrix = _confusion(rng, 0.55)
    calib_labels = np.repeat(np.arange(K), 3000)
    def faces(labels):  # a face of class c looks like class j ~ matrix[c]; its mean probabilities are matrix[c]
        seen = [rng.choice(K, p=matrix[c]) for c in labels]
        return np.stack([rng.dirichlet(100 * (0.7 * np.eye(K)[j] + 0.3 * matrix[c]) + 1e-3) for c, j in zip(labels, seen)])
    fitted = class_conditional_probs(faces(calib_labels), calib_labels)
    truth = np.array([0.05, 0.0, 0.05, 0.1, 0.7, 0.0, 0.1])
    labels = rng.choice(K, 4000, p=truth)
    probs = faces(labels)
    counted = np.bincount(probs.argmax(1), minlength=K) / len(labels)
    adjusted = adjusted_mix(probs.mean(0), fitted)
    true_mix = np.bincount(labels, minlength=K) / len(labels)
    assert np.abs(adjusted - true_mix).max() < 0.02
    assert np.abs(counted - true_mix).max() > 0.1


def test_mix_calibration_round_trips_through_the_spec():
    from fer_core.models.registry import spec_from_json, spec_to_json
    from fer_core.models.spec import ModelSpec

    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(K), 4)
    single, tta = rng.dirichlet(np.ones(K), len(labels)), rng.dirichlet(np.ones(K), len(labels))
    cal = mix_calibration(single, tta, labels, source="test")
    spec = ModelSpec(name="m", version="1", weights=None, mix_calibration=cal)
    back = spec_from_json(spec_to_json(spec))
    np.testing.assert_allclose(back.mix_matrix(tta=True), class_conditional_probs(tta, labels), atol=1e-6)
    np.testing.assert_allclose(back.mix_matrix(tta=False), class_conditional_probs(single, labels), atol=1e-6)
    assert ModelSpec(name="m", version="1", weights=None).mix_matrix(tta=True) is None
    with pytest.raises(ValueError, match="mix_calibration.tta"):
        ModelSpec(name="m", version="1", weights=None, mix_calibration={"tta": [[1.0] * K] * K})


def test_the_default_model_ships_a_profile_fitted_on_held_out_faces():
    from fer_core.models.registry import get_spec

    spec = get_spec("default")
    for tta in (False, True):
        m = spec.mix_matrix(tta)
        assert m is not None and m.shape == (K, K)
        assert (np.diag(m) == m.max(axis=1)).sum() >= K - 1  # the model mostly agrees with the labels
    assert spec.mix_calibration["faces"] > 2000 and "hold-out" in spec.mix_calibration["source"]
