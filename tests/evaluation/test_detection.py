import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from sklearn.metrics import precision_recall_curve

from cityguard.evaluation.detection import (
    Boxes,
    PrCurve,
    average_precision,
    confusion_matrix,
    evaluate_detections,
    match_predictions,
    pr_curve,
)
from schemas.geometry import box_iou

PERSON, CAR = 0, 2
NAMES = {PERSON: "person", CAR: "car"}


def test_iou_of_overlapping_disjoint_and_identical_boxes():
    iou = box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 2, 2]])
    np.testing.assert_allclose(iou, [[2 / 6, 0.0, 1.0]])


def test_each_truth_box_is_matched_once_by_the_most_confident_prediction():
    truth = Boxes.of([[0, 0, 10, 10]], [PERSON])
    predicted = Boxes.of([[0, 0, 10, 10], [1, 1, 10, 10]], [PERSON, PERSON], [0.6, 0.9])
    assert match_predictions(truth, predicted).tolist() == [False, True]


def test_a_prediction_of_the_wrong_class_or_too_little_overlap_is_not_a_match():
    truth = Boxes.of([[0, 0, 10, 10], [20, 0, 30, 10]], [PERSON, PERSON])
    predicted = Boxes.of([[0, 0, 10, 10], [25, 0, 35, 10]], [CAR, PERSON], [0.9, 0.9])  # second: IoU 1/3
    assert match_predictions(truth, predicted, 0.5).tolist() == [False, False]
    assert match_predictions(truth, predicted, 0.3).tolist() == [False, True]


def test_average_precision_of_a_hand_computed_ranking():
    # 2 labelled objects; by confidence: hit, miss, hit -> P 1, 1/2, 2/3 at R 1/2, 1/2, 1
    curve = pr_curve(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), truth_count=2)
    np.testing.assert_allclose(curve.precision, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1])
    assert average_precision(curve) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_uses_the_precision_envelope_and_stops_at_the_recall_reached():
    # 4 labelled, found by confidence: miss, hit, hit (recall 0.5 at most); envelope precision is 2/3 up to 0.5
    curve = pr_curve(np.array([0.9, 0.8, 0.7]), np.array([False, True, True]), truth_count=4)
    assert average_precision(curve) == pytest.approx(0.5 * 2 / 3)


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_matches_the_interpolated_scikit_learn_curve(seed):
    # With every labelled object found at some confidence, AP is the area under the interpolated PR curve of the
    # predictions as a binary ranking (true positive or not), which scikit-learn computes independently.
    rng = np.random.default_rng(seed)
    hits = rng.random(60) < 0.6
    confidence = rng.random(60)
    ours = average_precision(pr_curve(confidence, hits, truth_count=int(hits.sum())))
    precision, recall, _ = precision_recall_curve(hits, confidence)
    precision, recall = precision[::-1], recall[::-1]  # ascending recall
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    assert ours == pytest.approx(float(np.sum(np.diff(recall) * envelope[1:])))


def scene() -> list[tuple[Boxes, Boxes]]:
    """Two images: a found person, a car taken for a person, a missed person, a phantom car, a low-confidence hit."""
    image_1 = (Boxes.of([[0, 0, 10, 20], [50, 50, 90, 80]], [PERSON, CAR]),
               Boxes.of([[0, 0, 10, 20], [50, 50, 90, 80], [200, 200, 240, 230]], [PERSON, PERSON, CAR],
                        [0.9, 0.8, 0.7]))
    image_2 = (Boxes.of([[10, 10, 20, 30], [100, 100, 110, 120]], [PERSON, PERSON]),
               Boxes.of([[10, 10, 20, 30]], [PERSON], [0.1]))
    return [image_1, image_2]


def test_per_class_precision_recall_f1_and_ap_at_a_confidence():
    result = evaluate_detections(scene(), NAMES, confidence=0.5)
    person, car = result.classes
    assert (person.name, person.truth_count) == ("person", 3)
    assert (person.counts.true_positives, person.counts.false_positives, person.counts.false_negatives) == (1, 1, 2)
    assert person.counts.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    # person ranking: hit 0.9, miss 0.8, hit 0.1 over 3 labelled -> AP = 1/3 * 1 + 1/3 * 2/3
    assert person.average_precision == pytest.approx(1 / 3 + 2 / 9)
    assert (car.counts.true_positives, car.counts.false_positives, car.counts.false_negatives) == (0, 1, 1)
    assert car.average_precision == 0.0
    assert result.mean_average_precision == pytest.approx((1 / 3 + 2 / 9) / 2)


def test_confusion_matrix_with_background_row_and_column():
    result = evaluate_detections(scene(), NAMES, confidence=0.5)
    assert result.confusion.labels == ["person", "car", "background"]
    assert result.confusion.matrix.tolist() == [
        [1, 0, 2],  # person: found once, missed twice (one only at confidence 0.1)
        [1, 0, 0],  # car: detected as a person
        [0, 1, 0],  # a car where there is nothing
    ]


def test_confusion_matrix_matches_scikit_learn_on_one_to_one_matches():
    rng = np.random.default_rng(7)
    truth_classes = rng.integers(0, 3, 30)
    predicted_classes = np.where(rng.random(30) < 0.7, truth_classes, rng.integers(0, 3, 30))
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(30)], dtype=float)
    pairs = [(Boxes.of(boxes, truth_classes), Boxes.of(boxes, predicted_classes, np.ones(30)))]
    ours = confusion_matrix(pairs, [0, 1, 2], ["a", "b", "c"], confidence=0.5)
    np.testing.assert_array_equal(ours.matrix[:3, :3], sklearn_confusion_matrix(truth_classes, predicted_classes))
    assert ours.matrix[3].sum() == ours.matrix[:, 3].sum() == 0


def test_only_the_requested_classes_are_evaluated():
    result = evaluate_detections(scene(), NAMES, confidence=0.5, class_ids=[CAR])
    assert [c.name for c in result.classes] == ["car"]
    assert result.confusion.labels == ["car", "background"]


def test_pr_curve_serialises_to_plain_lists():
    curve = pr_curve(np.array([0.5]), np.array([True]), 1)
    assert isinstance(curve, PrCurve) and curve.to_json() == {"confidence": [0.5], "precision": [1.0], "recall": [1.0]}


def test_ap_of_tied_confidences_does_not_depend_on_the_order_they_are_listed_in():
    # a hit and a miss at the same confidence are one threshold step: precision 1/2 at recall 1, in either order
    truth = [Boxes.of([[10, 10, 50, 90]], [PERSON])]
    hit, ghost = [10, 10, 50, 90], [200, 10, 240, 90]
    listed = [evaluate_detections(list(zip(truth, [Boxes.of(boxes, [PERSON, PERSON], [0.5, 0.5])], strict=True)),
                                  NAMES, 0.25).mean_average_precision
              for boxes in ([hit, ghost], [ghost, hit])]
    assert listed == [pytest.approx(0.5), pytest.approx(0.5)]


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_with_ties_matches_the_interpolated_scikit_learn_curve(seed):
    # confidences rounded to one decimal: many ties, which scikit-learn also takes as one threshold each
    rng = np.random.default_rng(seed)
    hits = rng.random(60) < 0.6
    confidence = np.round(rng.random(60), 1)
    curve = pr_curve(confidence, hits, truth_count=int(hits.sum()))
    precision, recall, _ = precision_recall_curve(hits, confidence)
    precision, recall = precision[::-1], recall[::-1]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    assert average_precision(curve) == pytest.approx(float(np.sum(np.diff(recall) * envelope[1:])))
    shuffled = rng.permutation(60)
    assert average_precision(pr_curve(confidence[shuffled], hits[shuffled], int(hits.sum()))) == pytest.approx(
        average_precision(curve))


def test_which_of_two_tied_predictions_takes_a_labelled_box_does_not_depend_on_their_order():
    # the first box overlaps both people; listed first it takes the left one and leaves the right one unmatched
    truth = Boxes.of([[0, 0, 10, 20], [4, 0, 14, 20]], [PERSON, PERSON])
    wide, narrow = [2, 0, 12, 20], [0, 0, 10, 20]
    found = [int(match_predictions(truth, Boxes.of(boxes, [PERSON, PERSON], [0.7, 0.7])).sum())
             for boxes in ([wide, narrow], [narrow, wide])]
    assert found[0] == found[1]


def test_counts_at_a_threshold_are_read_off_the_curve():
    from cityguard.evaluation.detection import counts_at

    curve = pr_curve(np.array([0.9, 0.6, 0.6, 0.3]), np.array([True, False, True, True]), truth_count=5)
    assert [(c.true_positives, c.false_positives, c.false_negatives)
            for c in (counts_at(curve, 5, t) for t in (0.95, 0.9, 0.6, 0.5, 0.1))] == [
        (0, 0, 5), (1, 0, 4), (2, 1, 3), (2, 1, 3), (3, 1, 2)]
