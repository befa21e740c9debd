import numpy as np
import pytest
from sklearn import metrics as skm

from fer_core.labels import EMOTIONS
from fer_core.metrics import classification_metrics, confusion_matrix


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
