import numpy as np
import pytest
from sklearn import metrics as skm

from fer_core.labels import EMOTIONS
from fer_core.lab.metrics import classification_metrics, confusion_matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 7, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 7, 500))
    y_pred[y_pred == 1] = 2  # a class never predicted: precision must be 0, not NaN
    m = classification_metrics(y_true, y_pred)
    labels = list(range(7))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0))
    for i, name in enumerate(EMOTIONS):
        c = m["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix(np.array([0, 0, 3]), np.array([0, 3, 3]))
    assert cm[0, 0] == 1 and cm[0, 3] == 1 and cm[3, 3] == 1 and cm.sum() == 3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.zeros(3), np.zeros(4))


def _softmax_rows(rng, n, sharpness):
    logits = rng.normal(size=(n, 7)) * sharpness
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_equals_scikit_learn_and_a_recount(seed):
    from sklearn.calibration import calibration_curve

    from fer_core.lab.metrics import calibration_metrics

    rng = np.random.default_rng(seed)
    probs = _softmax_rows(rng, 800, 2.0)
    y = np.where(rng.random(800) < 0.6, probs.argmax(1), rng.integers(0, 7, 800))
    m = calibration_metrics(y, probs, n_bins=10)
    assert m["nll"] == pytest.approx(skm.log_loss(y, probs, labels=list(range(7))))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, probs, labels=list(range(7)), scale_by_half=False))
    conf, correct = probs.max(1), (probs.argmax(1) == y)
    frac_right, mean_conf = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
    assert [b["accuracy"] for b in m["bins"]] == pytest.approx(list(frac_right))
    assert [b["confidence"] for b in m["bins"]] == pytest.approx(list(mean_conf))
    counts = np.array([b["count"] for b in m["bins"]])
    assert counts.sum() == 800
    assert m["ece"] == pytest.approx(float(np.sum(counts / 800 * np.abs(frac_right - mean_conf))))
    assert m["mce"] == pytest.approx(float(np.abs(frac_right - mean_conf).max()))


def test_calibration_extremes():
    from fer_core.lab.metrics import calibration_metrics

    y = np.arange(10) % 7
    sure = np.eye(7)[y] * 0.97 + 0.005  # confident and always right: ECE = 1 - 0.975
    assert calibration_metrics(y, sure)["ece"] == pytest.approx(0.025)
    wrong = np.eye(7)[(y + 1) % 7] * 0.97 + 0.005  # just as confident, always wrong
    m = calibration_metrics(y, wrong)
    assert m["ece"] == pytest.approx(0.975) and m["accuracy"] == 0 and len(m["bins"]) == 1
    with pytest.raises(ValueError, match="shape"):
        calibration_metrics(y, sure[:5])


@pytest.mark.parametrize("successes,n", [(0, 10), (7, 10), (10, 10), (2403, 3589), (1, 1)])
def test_wilson_interval_equals_scipy(successes, n):
    from scipy.stats import binomtest

    from fer_core.metrics import wilson_interval

    lo, hi = wilson_interval(successes, n)
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert lo <= successes / n <= hi
    with pytest.raises(ValueError, match="outside"):
        wilson_interval(n + 1, n)


@pytest.mark.parametrize("only_a,only_b,both", [(90, 71, 2000), (0, 0, 5), (30, 3, 10), (1, 0, 0), (500, 520, 900)])
def test_mcnemar_exact_equals_scipy_binomial_test(only_a, only_b, both):
    from scipy.stats import binomtest

    from fer_core.lab.metrics import mcnemar_exact

    a = np.array([True] * only_a + [False] * only_b + [True] * both + [False] * 7)
    b = np.array([False] * only_a + [True] * only_b + [True] * both + [False] * 7)
    order = np.random.default_rng(0).permutation(len(a))
    m = mcnemar_exact(a[order], b[order])
    assert (m["only_a"], m["only_b"]) == (only_a, only_b)
    expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert m["p_value"] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="different faces"):
        mcnemar_exact(a, b[:-1])
