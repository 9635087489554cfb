"""Scores shared by every evaluation: precision/recall/F1 from counts, the ROC curve and the area under a curve."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrecisionRecall:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        """Share of reported items that are right; 0 when nothing was reported."""
        reported = self.true_positives + self.false_positives
        return self.true_positives / reported if reported else 0.0

    @property
    def recall(self) -> float:
        """Share of labelled items that were found; 0 when nothing was labelled."""
        labelled = self.true_positives + self.false_negatives
        return self.true_positives / labelled if labelled else 0.0

    @property
    def f1(self) -> float:
        precision, recall = self.precision, self.recall
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    def to_json(self) -> dict:
        return {"true_positives": self.true_positives, "false_positives": self.false_positives,
                "false_negatives": self.false_negatives, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}


@dataclass(frozen=True)
class RocCurve:
    """False/true positive rates at every distinct score threshold, highest threshold first (starts at 0, 0)."""

    false_positive_rate: np.ndarray
    true_positive_rate: np.ndarray
    thresholds: np.ndarray  # the first is +inf: nothing predicted positive

    @property
    def auc(self) -> float:
        return area_under_curve(self.false_positive_rate, self.true_positive_rate)

    def to_json(self) -> dict:
        return {"auc": self.auc, "false_positive_rate": self.false_positive_rate.tolist(),
                "true_positive_rate": self.true_positive_rate.tolist(),
                "thresholds": [None if np.isinf(t) else float(t) for t in self.thresholds]}


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> RocCurve:
    """ROC of binary labels against scores, sweeping the threshold over every distinct score (score >= threshold)."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-D and the same length")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        raise ValueError(f"ROC needs both classes: {positives} positives, {negatives} negatives")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    true_positives = np.cumsum(sorted_labels)[last_of_each_score]
    false_positives = (last_of_each_score + 1) - true_positives
    return RocCurve(
        false_positive_rate=np.r_[0.0, false_positives / negatives],
        true_positive_rate=np.r_[0.0, true_positives / positives],
        thresholds=np.r_[np.inf, sorted_scores[last_of_each_score]],
    )


def area_under_curve(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under y(x); x must be monotonic."""
    return float(np.trapezoid(np.asarray(y, dtype=float), np.asarray(x, dtype=float)))
