import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from cityguard.evaluation.scoring import PrecisionRecall, area_under_curve, roc_curve


def test_precision_recall_f1_from_counts():
    counts = PrecisionRecall(true_positives=6, false_positives=2, false_negatives=4)
    assert counts.precision == pytest.approx(0.75)
    assert counts.recall == pytest.approx(0.6)
    assert counts.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_nothing_reported_or_labelled_scores_zero_instead_of_dividing_by_zero():
    assert PrecisionRecall(0, 0, 3).precision == 0.0
    assert PrecisionRecall(0, 2, 0).recall == 0.0
    assert PrecisionRecall(0, 0, 0).f1 == 0.0


def test_roc_of_a_hand_computed_ranking():
    # positives score 0.9 and 0.7, negatives 0.8 and 0.1: 3 of the 4 positive/negative pairs are ordered right
    curve = roc_curve(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert curve.false_positive_rate.tolist() == [0, 0, 0.5, 0.5, 1]
    assert curve.true_positive_rate.tolist() == [0, 0.5, 0.5, 1, 1]
    assert curve.thresholds[0] == np.inf and curve.thresholds[1:].tolist() == [0.9, 0.8, 0.7, 0.1]
    assert curve.auc == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(5))
def test_roc_and_auc_match_scikit_learn_with_tied_scores(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    curve = roc_curve(labels, scores)
    fpr, tpr, thresholds = sklearn_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(curve.false_positive_rate, fpr)
    np.testing.assert_allclose(curve.true_positive_rate, tpr)
    np.testing.assert_allclose(curve.thresholds[1:], thresholds[1:])
    assert curve.auc == pytest.approx(roc_auc_score(labels, scores))


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(np.array([1, 1]), np.array([0.2, 0.4]))


def test_area_under_a_straight_line():
    assert area_under_curve(np.array([0, 0.5, 1]), np.array([0, 0.5, 1])) == pytest.approx(0.5)
