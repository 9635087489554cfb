"""Event accuracy against labelled intervals: temporal matching, per-type P/R/F1, detection delay, the type
confusion matrix, and ROC/AUC of scored outputs over time segments.

Matching: a predicted and a labelled event of the same camera match when their intervals overlap, or are at most
`tolerance_s` apart; pairs are one-to-one, as many as any pairing allows (a maximum matching), among those the
most overlap in total, then the closest starts. Detection delay is predicted start minus labelled start (negative:
raised before the labelled start, within the tolerance).

ROC needs negatives, which intervals alone do not have, so scored outputs are judged per time segment (the
segment-based scheme of sound-event detection): each `segment_s` slice of a camera's timeline is positive when a
labelled event covers it, and scores the highest score of the predictions covering it.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from cityguard.evaluation.scoring import PrecisionRecall, RocCurve, roc_curve

NONE = "none"  # the confusion-matrix label for "no event"
# A day of 0.1 s segments per camera: more is a unit mistake, and would take gigabytes.
MAX_SEGMENTS = 1_000_000
DEFAULT_SEGMENT_S = 1.0


@dataclass(frozen=True)
class EventInterval:
    camera: str
    type: str
    start: float
    end: float
    score: float | None = None  # risk score or event confidence, for ROC

    def __post_init__(self):
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ValueError(f"event {self.camera}/{self.type} needs finite times, not {self.start}..{self.end}")
        if not self.end >= self.start:
            raise ValueError(f"event {self.camera}/{self.type} ends ({self.end}) before it starts ({self.start})")


def evaluate_scores(truth: list[EventInterval], predicted: list[EventInterval],
                    segment_s: float) -> dict[str, RocCurve | None]:
    """Per type, the ROC of scores over time (per-frame scores) against the labelled events: scores are no events, so
    nothing is matched or counted as one."""
    return {event_type: _type_roc([e for e in truth if e.type == event_type],
                                  [e for e in predicted if e.type == event_type], segment_s)
            for event_type in sorted({e.type for e in truth} | {e.type for e in predicted})}


def overlap_s(a: EventInterval, b: EventInterval) -> float:
    """Seconds the intervals share; negative: the gap between them."""
    return min(a.end, b.end) - max(a.start, b.start)


def match_events(truth: list[EventInterval], predicted: list[EventInterval], tolerance_s: float = 0.0,
                 same_type: bool = True) -> list[tuple[int, int]]:
    """One-to-one (truth index, predicted index) pairs: as many as any pairing allows, then the most overlap in
    total, then the closest starts."""
    from scipy.optimize import linear_sum_assignment

    groups: dict[tuple[str, str], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for t, label in enumerate(truth):
        groups[(label.camera, label.type if same_type else "")][0].append(t)
    for p, guess in enumerate(predicted):
        groups[(guess.camera, guess.type if same_type else "")][1].append(p)
    pairs = []
    for truth_ids, predicted_ids in groups.values():
        if not truth_ids or not predicted_ids:
            continue
        shared = np.array([[overlap_s(truth[t], predicted[p]) for p in predicted_ids] for t in truth_ids])
        start_gap = np.array([[abs(predicted[p].start - truth[t].start) for p in predicted_ids] for t in truth_ids])
        eligible = shared >= -tolerance_s
        # Every eligible pair is worth 1; overlap (then close starts), scaled into [0, 1], adds under 1 / (n + 1) per
        # pair, so over any n pairs it never outweighs one more pair.
        step = 1.0 / (min(shared.shape) + 1)
        overlap, closeness = _scaled_to_unit_range(shared, eligible), 1.0 - _scaled_to_unit_range(start_gap, eligible)
        weight = 1.0 + step * (overlap + step * closeness)
        rows, columns = linear_sum_assignment(np.where(eligible, weight, 0.0), maximize=True)
        pairs += [(truth_ids[r], predicted_ids[c]) for r, c in zip(rows, columns, strict=True) if eligible[r, c]]
    return sorted(pairs)


def _scaled_to_unit_range(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`values` mapped linearly onto [0, 1] over the entries in `where`."""
    if not where.any():
        return np.zeros_like(values)
    low, high = values[where].min(), values[where].max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


@dataclass(frozen=True)
class EventTypeResult:
    type: str
    counts: PrecisionRecall
    delays_s: list[float]  # per matched event
    roc: RocCurve | None  # None when the type's predictions carry no scores or a class is missing

    @property
    def mean_delay_s(self) -> float | None:
        return float(np.mean(self.delays_s)) if self.delays_s else None

    def to_json(self) -> dict:
        return {"type": self.type, **self.counts.to_json(), "mean_detection_delay_s": self.mean_delay_s,
                "detection_delays_s": self.delays_s, "roc": self.roc.to_json() if self.roc else None}


@dataclass(frozen=True)
class EventResult:
    tolerance_s: float
    segment_s: float
    types: list[EventTypeResult]
    overall: PrecisionRecall
    confusion_labels: list[str]
    confusion: np.ndarray  # rows: labelled type, columns: predicted type; NONE for unmatched

    def to_json(self) -> dict:
        return {"tolerance_s": self.tolerance_s, "segment_s": self.segment_s, "overall": self.overall.to_json(),
                "types": [t.to_json() for t in self.types],
                "confusion_matrix": {"labels": self.confusion_labels, "rows": "truth", "columns": "predicted",
                                     "matrix": self.confusion.tolist()}}


def type_confusion(truth: list[EventInterval], predicted: list[EventInterval],
                   tolerance_s: float = 0.0) -> tuple[list[str], np.ndarray]:
    """Type-agnostic matching, then labelled type x predicted type; misses and false alarms go to NONE."""
    labels = sorted({e.type for e in truth} | {e.type for e in predicted}) + [NONE]
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    pairs = match_events(truth, predicted, tolerance_s, same_type=False)
    for t, p in pairs:
        matrix[index[truth[t].type], index[predicted[p].type]] += 1
    for t in set(range(len(truth))) - {t for t, _ in pairs}:
        matrix[index[truth[t].type], index[NONE]] += 1
    for p in set(range(len(predicted))) - {p for _, p in pairs}:
        matrix[index[NONE], index[predicted[p].type]] += 1
    return labels, matrix


def segments_touched(lower: np.ndarray, upper: np.ndarray, event: EventInterval) -> np.ndarray:
    """Segments [lower, upper) the event overlaps; an instantaneous event touches the segment holding it."""
    if event.end > event.start:
        return (lower < event.end) & (upper > event.start)
    return (lower <= event.start) & (upper > event.start)


def segment_labels_and_scores(truth: list[EventInterval], predicted: list[EventInterval],
                              segment_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per segment of each camera's timeline (from its first to its last event): covered by truth, best score.

    Segments no prediction covers score below every predicted score.
    """
    if segment_s <= 0:
        raise ValueError("segment_s must be positive")
    scores = [e.score for e in predicted]
    if any(score is None for score in scores):
        raise ValueError("every predicted event needs a score for a ROC curve")
    floor = min(scores, default=0.0) - 1.0
    labels, best = [], []
    for camera in sorted({e.camera for e in truth} | {e.camera for e in predicted}):
        own_truth = [e for e in truth if e.camera == camera]
        own_predicted = [e for e in predicted if e.camera == camera]
        start = min(e.start for e in own_truth + own_predicted)
        end = max(e.end for e in own_truth + own_predicted)
        if (end - start) / segment_s > MAX_SEGMENTS:
            raise ValueError(f"camera {camera}: {end - start:.0f} s from the first event to the last is over "
                             f"{MAX_SEGMENTS:,} segments of {segment_s:g} s (are the truth and the predictions "
                             "in the same times? seconds from a clip's start against unix times would be this)")
        edges = start + segment_s * np.arange(max(1, math.ceil((end - start) / segment_s)) + 1)
        lower, upper = edges[:-1], edges[1:]
        covered = np.zeros(len(lower), dtype=bool)
        for e in own_truth:
            covered |= segments_touched(lower, upper, e)
        segment_best = np.full(len(lower), floor)
        for e in own_predicted:
            touched = segments_touched(lower, upper, e)
            segment_best[touched] = np.maximum(segment_best[touched], e.score)
        labels.append(covered)
        best.append(segment_best)
    return np.concatenate(labels), np.concatenate(best)


def evaluate_events(truth: list[EventInterval], predicted: list[EventInterval], tolerance_s: float = 0.0,
                    segment_s: float = DEFAULT_SEGMENT_S) -> EventResult:
    types = []
    total = PrecisionRecall(0, 0, 0)
    for event_type in sorted({e.type for e in truth} | {e.type for e in predicted}):
        own_truth = [e for e in truth if e.type == event_type]
        own_predicted = [e for e in predicted if e.type == event_type]
        pairs = match_events(own_truth, own_predicted, tolerance_s)
        counts = PrecisionRecall(len(pairs), len(own_predicted) - len(pairs), len(own_truth) - len(pairs))
        delays = [own_predicted[p].start - own_truth[t].start for t, p in pairs]
        types.append(EventTypeResult(event_type, counts, delays, _type_roc(own_truth, own_predicted, segment_s)))
        total = PrecisionRecall(total.true_positives + counts.true_positives,
                                total.false_positives + counts.false_positives,
                                total.false_negatives + counts.false_negatives)
    labels, matrix = type_confusion(truth, predicted, tolerance_s)
    return EventResult(tolerance_s, segment_s, types, total, labels, matrix)


# Segments of each kind a ROC curve needs: a timeline spanning little more than its events (event messages cover only
# when something happened) gives a handful of negatives, and an AUC from those is noise, not a figure.
MIN_ROC_SEGMENTS = 10


def _type_roc(truth: list[EventInterval], predicted: list[EventInterval], segment_s: float) -> RocCurve | None:
    """The type's ROC over time segments; None without scores or with under MIN_ROC_SEGMENTS of either kind."""
    if not predicted or any(e.score is None for e in predicted):
        return None
    labels, scores = segment_labels_and_scores(truth, predicted, segment_s)
    if min(labels.sum(), (~labels).sum()) < MIN_ROC_SEGMENTS:
        return None
    return roc_curve(labels, scores)
