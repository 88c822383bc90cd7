"""The metrics module on hand-made cases whose answers are computed by hand in the comments."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.runtime import metrics as M


def _probs_for(pred, num_classes, conf=0.7):
    """Probabilities whose argmax is ``pred`` with top-1 confidence ``conf`` (the rest shared equally)."""
    pred = np.asarray(pred)
    p = np.full((len(pred), num_classes), (1 - conf) / (num_classes - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


# ------------------------------------------------------------------------------------------ confusion matrix


def test_confusion_matrix_known_counts():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 2, 2]
    cm = M.confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.dtype.kind == "i"


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([0, 3], [0, 1], 3)


def test_report_hand_computed_precision_recall_balanced_accuracy():
    # cm rows=true: [[2,1,0],[0,1,1],[0,0,1]]
    # precision: c0 2/2, c1 1/2, c2 1/2 ; recall: c0 2/3, c1 1/2, c2 1/1
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 2, 2]
    r = M.classification_report(y_true, _probs_for(y_pred, 3), ["cat", "dog", "mobile"])
    assert r.confusion == ((2, 1, 0), (0, 1, 1), (0, 0, 1))
    assert r.accuracy == pytest.approx(4 / 6)
    assert [c.precision for c in r.per_class] == pytest.approx([1.0, 0.5, 0.5])
    assert [c.recall for c in r.per_class] == pytest.approx([2 / 3, 0.5, 1.0])
    assert [c.support for c in r.per_class] == [3, 2, 1]
    f1 = [2 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert [c.f1 for c in r.per_class] == pytest.approx(f1)
    assert r.balanced_accuracy == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert r.macro_f1 == pytest.approx(np.mean(f1))
    assert r.nll == pytest.approx(-(4 * np.log(0.7) + 2 * np.log(0.15)) / 6)


def test_imbalanced_accuracy_high_balanced_accuracy_reveals_it():
    # 95 "other", 5 "mobile", the model always says "other": accuracy 0.95, balanced accuracy 0.5
    y_true = np.array([1] * 95 + [0] * 5)
    probs = _probs_for(np.ones(100, dtype=int), 2, conf=0.9)
    r = M.classification_report(y_true, probs, ["mobile", "other"], positive="mobile", threshold=0.5)
    assert r.accuracy == pytest.approx(0.95)
    assert r.balanced_accuracy == pytest.approx(0.5)
    mobile = r.per_class[0]
    assert (mobile.precision, mobile.recall, mobile.f1, mobile.support) == (0.0, 0.0, 0.0, 5)
    assert r.macro_f1 == pytest.approx((2 * 0.95 / 1.95) / 2)
    pm = r.positive_metrics
    assert (pm["tp"], pm["fp"], pm["fn"], pm["tn"]) == (0, 0, 5, 95)
    assert pm["recall"] == 0.0


def test_report_table_and_json():
    y_true = [0, 1, 1, 0]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    r = M.classification_report(y_true, probs, ["mobile", "other"], positive="mobile", threshold=0.5)
    text = r.table()
    for word in ("mobile", "other", "precision", "recall", "confusion", "balanced accuracy", "threshold"):
        assert word in text
    # confusion: true mobile -> [1 mobile, 1 other], true other -> [1, 1]
    assert r.confusion == ((1, 1), (1, 1))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["classes"] == ["mobile", "other"] and d["confusion"] == [[1, 1], [1, 1]]
    assert d["positive_metrics"]["tp"] == 1 and d["positive_metrics"]["fp"] == 1


def test_report_validates_inputs():
    with pytest.raises(ValueError, match="columns"):
        M.classification_report([0, 1], np.full((2, 3), 1 / 3), ["a", "b"])
    with pytest.raises(ValueError, match="positive"):
        M.classification_report([0, 1], np.full((2, 2), 0.5), ["a", "b"], positive="c")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.classification_report([0, 1], np.array([[3.0, -1.0], [0.0, 1.0]]), ["a", "b"])


# ----------------------------------------------------------------------------------------------- calibration


def test_ece_perfectly_calibrated_is_zero():
    # 10 samples at confidence 0.8 with exactly 8 right, 10 at 0.6 with exactly 6 right
    conf = np.array([0.8] * 10 + [0.6] * 10)
    probs = np.stack([conf, 1 - conf], axis=1)  # argmax is class 0
    y = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert M.expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    bins = M.reliability_bins(probs, y, n_bins=10)
    assert sum(bins["count"]) == 20
    assert bins["count"][7] == 10 and bins["count"][5] == 10  # (0.7, 0.8] and (0.5, 0.6]
    assert bins["accuracy"][7] == pytest.approx(0.8) and bins["confidence"][7] == pytest.approx(0.8)
    assert bins["accuracy"][0] is None


def test_ece_over_confident_predictor():
    # confidence 0.99 everywhere, half right: ECE = |0.5 - 0.99| = 0.49
    probs = np.tile([0.99, 0.01], (100, 1))
    y = np.array([0] * 50 + [1] * 50)
    assert M.expected_calibration_error(probs, y) == pytest.approx(0.49)


def test_ece_weights_bins_by_count():
    # bin A: 3 samples conf 0.9, 2 right (gap 0.9-2/3); bin B: 1 sample conf 0.55, wrong (gap 0.55)
    probs = np.array([[0.9, 0.1]] * 3 + [[0.55, 0.45]])
    y = np.array([0, 0, 1, 1])
    expected = 3 / 4 * abs(0.9 - 2 / 3) + 1 / 4 * 0.55
    assert M.expected_calibration_error(probs, y, n_bins=10) == pytest.approx(expected)


def test_softmax_temperature_and_stability():
    z = np.array([[1000.0, 999.0], [0.0, 0.0]])
    p = M.softmax(z)
    assert np.allclose(p.sum(axis=1), 1.0) and np.all(np.isfinite(p))
    assert p[0, 0] == pytest.approx(1 / (1 + np.exp(-1)))
    assert M.softmax(z, temperature=2.0)[0, 0] == pytest.approx(1 / (1 + np.exp(-0.5)))
    with pytest.raises(ValueError):
        M.softmax(z, temperature=0.0)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(1)
    n, c, t_true = 4000, 4, 2.5
    logits = rng.normal(0.0, 4.0, size=(n, c))
    p = M.softmax(logits, t_true)
    u = rng.random((n, 1))
    y = np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), c - 1)  # sample y ~ softmax(logits / 2.5)
    t = M.fit_temperature(logits, y)
    assert t == pytest.approx(t_true, rel=0.10)
    assert M.fit_temperature(logits, y) == t  # deterministic
    # fitted T is at least as good as T=1 and the true T
    nll_fit = M.nll(M.softmax(logits, t), y)
    assert nll_fit <= M.nll(M.softmax(logits, 1.0), y)
    assert nll_fit <= M.nll(M.softmax(logits, t_true), y) + 1e-9


def test_fit_temperature_separable_data_goes_to_lower_bound():
    logits = np.array([[5.0, -5.0], [-5.0, 5.0]])
    assert M.fit_temperature(logits, [0, 1], bounds=(0.1, 10.0)) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------- binary, PR, threshold

SCORES = [0.95, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3]
LABELS = [1, 1, 0, 1, 0, 1, 0]
# threshold : precision, recall   (4 positives)
# 0.95: 1/1, 1/4 | 0.9: 2/2, 2/4 | 0.8: 2/3, 2/4 | 0.7: 3/4, 3/4 | 0.6: 3/5, 3/4 | 0.4: 4/6, 4/4 | 0.3: 4/7, 4/4


def test_pr_curve_hand_case():
    precision, recall, thr = M.pr_curve(SCORES, LABELS)
    assert thr.tolist() == sorted(SCORES)
    assert precision.tolist() == pytest.approx([4 / 7, 4 / 6, 3 / 5, 3 / 4, 2 / 3, 1.0, 1.0])
    assert recall.tolist() == pytest.approx([1.0, 1.0, 0.75, 0.75, 0.5, 0.5, 0.25])


def test_pr_curve_ties_share_a_threshold():
    precision, recall, thr = M.pr_curve([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0])
    assert thr.tolist() == [0.1, 0.8, 0.9]
    assert precision.tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert recall.tolist() == pytest.approx([1.0, 1.0, 0.5])


def test_average_precision_hand_case():
    # recall steps: 0.25@1, 0.25@1 (0.9), 0.25@3/4 (0.7), 0.25@4/6 (0.4)
    expected = 0.25 * 1 + 0.25 * 1 + 0.25 * 0.75 + 0.25 * (4 / 6)
    assert M.average_precision(SCORES, LABELS) == pytest.approx(expected)


@pytest.mark.parametrize(
    "target, threshold, precision, recall",
    [(0.75, 0.7, 0.75, 0.75), (0.9, 0.9, 1.0, 0.5), (0.6, 0.4, 4 / 6, 1.0), (0.5, 0.3, 4 / 7, 1.0)],
)
def test_threshold_for_precision_hand_case(target, threshold, precision, recall):
    ch = M.threshold_for_precision(SCORES, LABELS, target)
    assert ch.achieved
    assert (ch.threshold, ch.precision, ch.recall) == pytest.approx((threshold, precision, recall))
    at = M.binary_metrics_at(SCORES, LABELS, ch.threshold)
    assert at["precision"] == pytest.approx(ch.precision) and at["recall"] == pytest.approx(ch.recall)


def test_threshold_for_precision_unreachable_target():
    # best precision is 1/2 at threshold 0.8 (0.9 is a negative)
    ch = M.threshold_for_precision([0.9, 0.8, 0.7], [0, 1, 0], 0.9)
    assert not ch.achieved
    assert (ch.threshold, ch.precision, ch.recall) == pytest.approx((0.8, 0.5, 1.0))


def test_threshold_for_precision_needs_a_positive():
    with pytest.raises(ValueError, match="positive"):
        M.threshold_for_precision([0.9, 0.1], [0, 0], 0.9)


def test_binary_metrics_at_counts():
    m = M.binary_metrics_at(SCORES, LABELS, 0.65)  # predicted positive: 0.95, 0.9, 0.8, 0.7
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 2)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    assert m["false_positive_rate"] == pytest.approx(1 / 3)
    none = M.binary_metrics_at(SCORES, LABELS, 0.99)
    assert none["tp"] + none["fp"] == 0 and none["precision"] == 0.0 and none["recall"] == 0.0
    with pytest.raises(ValueError, match="0/1"):
        M.binary_metrics_at([0.5, 0.6], [0, 2], 0.5)
