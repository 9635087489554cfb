import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cityguard.evaluation.events import (
    NONE,
    EventInterval,
    evaluate_events,
    match_events,
    segment_labels_and_scores,
    type_confusion,
)


def ev(type_: str, start: float, end: float, score: float | None = None, camera: str = "cam") -> EventInterval:
    return EventInterval(camera, type_, start, end, score)


def test_overlapping_events_of_the_same_camera_and_type_match_one_to_one():
    truth = [ev("crowd", 10, 20), ev("crowd", 30, 40)]
    predicted = [ev("crowd", 12, 25), ev("crowd", 14, 16), ev("crowd", 30, 31, camera="other")]
    assert match_events(truth, predicted) == [(0, 0)]  # longest overlap wins; another camera never matches


def test_tolerance_lets_a_slightly_late_event_match():
    truth, predicted = [ev("crowd", 10, 20)], [ev("crowd", 21, 25)]
    assert match_events(truth, predicted, tolerance_s=0.5) == []
    assert match_events(truth, predicted, tolerance_s=2) == [(0, 0)]


def test_per_type_scores_and_detection_delay():
    truth = [ev("crowd", 10, 20), ev("crowd", 50, 60), ev("wrong_way", 100, 105)]
    predicted = [ev("crowd", 13, 22), ev("crowd", 48, 55), ev("crowd", 80, 90), ev("wrong_way", 101, 102)]
    result = evaluate_events(truth, predicted)
    crowd, wrong_way = result.types
    assert (crowd.counts.true_positives, crowd.counts.false_positives, crowd.counts.false_negatives) == (2, 1, 0)
    assert crowd.delays_s == [3, -2] and crowd.mean_delay_s == pytest.approx(0.5)
    assert wrong_way.counts.f1 == 1.0 and wrong_way.mean_delay_s == 1.0
    assert (result.overall.precision, result.overall.recall) == (pytest.approx(0.75), 1.0)


def test_type_confusion_counts_mistaken_types_misses_and_false_alarms():
    truth = [ev("crowd", 0, 10), ev("crowd", 20, 30), ev("stopped_vehicle", 40, 50)]
    predicted = [ev("crowd", 1, 9), ev("stopped_vehicle", 41, 49), ev("stopped_vehicle", 70, 80)]
    labels, matrix = type_confusion(truth, predicted)
    assert labels == ["crowd", "stopped_vehicle", NONE]
    assert matrix.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 0]]


def test_segments_are_labelled_by_truth_and_scored_by_the_best_covering_prediction():
    truth = [ev("crowd", 0, 2)]
    predicted = [ev("crowd", 1, 3, score=0.4), ev("crowd", 2.5, 4, score=0.9)]
    labels, scores = segment_labels_and_scores(truth, predicted, segment_s=1.0)
    assert labels.tolist() == [True, True, False, False]
    assert scores.tolist() == [0.4 - 1.0, 0.4, 0.9, 0.9]  # uncovered segments score below every prediction


def test_event_roc_auc_matches_scikit_learn_on_the_segments():
    rng = np.random.default_rng(11)
    truth = [ev("crowd", s, s + 5) for s in range(0, 300, 30)]
    predicted = [ev("crowd", s + rng.uniform(-3, 3), s + rng.uniform(2, 8), score=rng.uniform(0.5, 1))
                 for s in range(0, 300, 30)]
    predicted += [ev("crowd", s, s + 4, score=rng.uniform(0, 0.7)) for s in range(15, 300, 60)]
    result = evaluate_events(truth, predicted, segment_s=1.0)
    labels, scores = segment_labels_and_scores(truth, predicted, 1.0)
    assert result.types[0].roc.auc == pytest.approx(roc_auc_score(labels, scores))
    assert 0.5 < result.types[0].roc.auc <= 1.0


def test_a_timeline_of_a_few_segments_gives_no_roc():
    """Event messages cover only when something happened: two events 5 s apart leave a handful of negatives."""
    result = evaluate_events([ev("crowd", 0, 5)], [ev("crowd", 1, 4, score=0.9), ev("crowd", 10, 12, score=0.3)])
    assert result.types[0].roc is None


def test_unscored_predictions_give_no_roc():
    result = evaluate_events([ev("crowd", 0, 5)], [ev("crowd", 1, 4), ev("crowd", 10, 12)])
    assert result.types[0].roc is None


def test_an_interval_that_ends_before_it_starts_is_rejected():
    with pytest.raises(ValueError, match="ends"):
        ev("crowd", 5, 4)


def test_matching_pairs_as_many_events_as_any_pairing_allows():
    # a greedy pairing by longest overlap would take [0,10]-[0,10] and leave [8,10] and [0,3] unmatched
    truth = [ev("crowd", 0, 10), ev("crowd", 8, 10)]
    predicted = [ev("crowd", 0, 10), ev("crowd", 0, 3)]
    assert match_events(truth, predicted) == [(0, 1), (1, 0)]
    counts = evaluate_events(truth, predicted).types[0].counts
    assert (counts.true_positives, counts.false_positives, counts.false_negatives) == (2, 0, 0)


def test_among_the_largest_pairings_the_one_with_most_overlap_wins():
    truth = [ev("crowd", 0, 10), ev("crowd", 20, 30)]
    predicted = [ev("crowd", 2, 10), ev("crowd", 9, 21)]  # the second touches both labelled events
    assert match_events(truth, predicted) == [(0, 0), (1, 1)]
    truth = [ev("crowd", 0, 10)]
    predicted = [ev("crowd", 5, 9), ev("crowd", 1, 9), ev("crowd", 6, 14)]
    assert match_events(truth, predicted) == [(0, 1)]
    assert match_events([ev("crowd", 0, 10)], [ev("crowd", 4, 8), ev("crowd", 1, 5)]) == [(0, 1)]  # closer start


def test_an_event_without_end_is_refused_not_matched():
    with pytest.raises(ValueError, match="needs finite times"):
        EventInterval("cam", "collision", 5.0, math.inf)

