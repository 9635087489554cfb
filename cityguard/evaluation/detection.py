"""Detector accuracy: IoU matching, precision/recall/F1 per class, the PR curve, AP@0.5 and the confusion matrix.

Matching follows COCO/VOC: per class, predictions in descending confidence (ties by their box) take the unmatched
ground-truth box of the same class with the highest IoU, if that IoU reaches the threshold; each box is matched at
most once. Because matching runs in confidence order, the outcome of a prediction does not depend on any less
confident one, so the figures at any confidence are read off one matching done at the lowest confidence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cityguard.evaluation.scoring import PrecisionRecall
from schemas.geometry import box_iou

BACKGROUND = "background"


@dataclass(frozen=True)
class Boxes:
    """Boxes of one image: ground truth (confidence all 1) or predictions."""

    xyxy: np.ndarray  # (N, 4) pixels
    class_id: np.ndarray  # (N,)
    confidence: np.ndarray  # (N,)

    @classmethod
    def of(cls, xyxy, class_id, confidence=None) -> Boxes:
        xyxy = np.asarray(xyxy, dtype=float).reshape(-1, 4)
        class_id = np.asarray(class_id, dtype=int).reshape(-1)
        confidence = np.ones(len(xyxy)) if confidence is None else np.asarray(confidence, dtype=float).reshape(-1)
        if not len(xyxy) == len(class_id) == len(confidence):
            raise ValueError(f"{len(xyxy)} boxes, {len(class_id)} class ids, {len(confidence)} confidences")
        return cls(xyxy, class_id, confidence)

    def __len__(self) -> int:
        return len(self.xyxy)

    def select(self, mask: np.ndarray) -> Boxes:
        return Boxes(self.xyxy[mask], self.class_id[mask], self.confidence[mask])


def match_predictions(truth: Boxes, predicted: Boxes, iou_threshold: float = 0.5) -> np.ndarray:
    """Whether each prediction is a true positive (class-aware, greedy in descending confidence)."""
    is_true_positive = np.zeros(len(predicted), dtype=bool)
    if not len(truth) or not len(predicted):
        return is_true_positive
    iou = box_iou(predicted.xyxy, truth.xyxy)
    iou[predicted.class_id[:, None] != truth.class_id[None, :]] = 0.0
    taken = np.zeros(len(truth), dtype=bool)
    for index in matching_order(predicted):
        candidates = np.where(taken, -1.0, iou[index])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            taken[best] = True
            is_true_positive[index] = True
    return is_true_positive


def matching_order(predicted: Boxes) -> np.ndarray:
    """Descending confidence; equal confidences by their box, so which of two tied predictions takes a labelled box
    never depends on the order a model happened to list them in."""
    x1, y1, x2, y2 = predicted.xyxy.T
    return np.lexsort((y2, x2, y1, x1, predicted.class_id, -predicted.confidence))


@dataclass(frozen=True)
class PrCurve:
    """Precision and recall at each distinct confidence, highest first: what keeping the detections at or above it
    gives (with the true positives and detections kept, counted)."""

    confidence: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    true_positives: np.ndarray
    detections: np.ndarray

    def to_json(self) -> dict:
        return {"confidence": self.confidence.tolist(), "precision": self.precision.tolist(),
                "recall": self.recall.tolist()}


def pr_curve(confidence: np.ndarray, is_true_positive: np.ndarray, truth_count: int) -> PrCurve:
    """One point per distinct confidence. Detections of equal confidence are one step, as a threshold sees them
    (scikit-learn's precision_recall_curve does the same): ranked one by one, the order a model lists tied boxes in
    (int8 models tie often) would move the curve and AP, so the same detections could pass or fail the gate."""
    confidence = np.asarray(confidence, dtype=float)
    order = np.argsort(-confidence, kind="mergesort")
    ranked = confidence[order]
    true_positives = np.cumsum(np.asarray(is_true_positive, dtype=bool)[order])
    step_ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True]) if len(ranked) else np.zeros(0, dtype=int)
    true_positives, detections = true_positives[step_ends], step_ends + 1
    recall = true_positives / truth_count if truth_count else np.zeros(len(step_ends))
    return PrCurve(ranked[step_ends], true_positives / detections, recall, true_positives, detections)


def counts_at(curve: PrCurve, truth_count: int, threshold: float) -> PrecisionRecall:
    """True/false positives and misses when the detections at or above `threshold` are kept."""
    steps = int(np.sum(curve.confidence >= threshold))
    found = int(curve.true_positives[steps - 1]) if steps else 0
    reported = int(curve.detections[steps - 1]) if steps else 0
    return PrecisionRecall(found, reported - found, truth_count - found)


def average_precision(curve: PrCurve) -> float:
    """Area under the PR curve with precision made monotone (all-point interpolation, VOC 2010+ / COCO style)."""
    recall = np.r_[0.0, curve.recall]
    envelope = np.maximum.accumulate(np.r_[curve.precision, 0.0][::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[:-1]))


@dataclass(frozen=True)
class ClassResult:
    class_id: int
    name: str
    truth_count: int
    counts: PrecisionRecall  # at the chosen confidence
    average_precision: float  # AP at the IoU threshold, over all confidences
    curve: PrCurve

    def to_json(self) -> dict:
        return {"class_id": self.class_id, "name": self.name, "truth_count": self.truth_count,
                **self.counts.to_json(), "ap50": self.average_precision, "pr_curve": self.curve.to_json()}


@dataclass(frozen=True)
class ConfusionMatrix:
    """Rows: ground truth, columns: prediction; the last label is background (missed / false detection)."""

    labels: list[str]
    matrix: np.ndarray

    def to_json(self) -> dict:
        return {"labels": self.labels, "rows": "truth", "columns": "predicted", "matrix": self.matrix.tolist()}


@dataclass(frozen=True)
class DetectionResult:
    confidence: float
    iou_threshold: float
    images: int
    classes: list[ClassResult]
    confusion: ConfusionMatrix
    extra: dict = field(default_factory=dict)  # e.g. timing from the runner

    @property
    def mean_average_precision(self) -> float:
        """mAP over classes with ground truth (mAP@0.5 at the default IoU threshold)."""
        scored = [c.average_precision for c in self.classes if c.truth_count]
        return float(np.mean(scored)) if scored else 0.0

    def to_json(self) -> dict:
        return {"confidence": self.confidence, "iou_threshold": self.iou_threshold, "images": self.images,
                "map50": self.mean_average_precision, "classes": [c.to_json() for c in self.classes],
                "confusion_matrix": self.confusion.to_json(), **self.extra}


def confusion_matrix(pairs: list[tuple[Boxes, Boxes]], class_ids: list[int], names: list[str],
                     confidence: float, iou_threshold: float = 0.5) -> ConfusionMatrix:
    """Class-agnostic matching (highest IoU pairs first) of predictions at or above `confidence` to the truth."""
    index = {class_id: i for i, class_id in enumerate(class_ids)}
    background = len(class_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=int)
    for truth, predicted in pairs:
        predicted = predicted.select(predicted.confidence >= confidence)
        iou = box_iou(truth.xyxy, predicted.xyxy)
        truth_free = np.ones(len(truth), dtype=bool)
        predicted_free = np.ones(len(predicted), dtype=bool)
        for t, p in zip(*np.unravel_index(np.argsort(-iou, axis=None, kind="mergesort"), iou.shape), strict=True):
            if iou[t, p] < iou_threshold:
                break
            if truth_free[t] and predicted_free[p]:
                truth_free[t] = predicted_free[p] = False
                matrix[index[truth.class_id[t]], index[predicted.class_id[p]]] += 1
        for t in np.flatnonzero(truth_free):
            matrix[index[truth.class_id[t]], background] += 1
        for p in np.flatnonzero(predicted_free):
            matrix[background, index[predicted.class_id[p]]] += 1
    return ConfusionMatrix([*names, BACKGROUND], matrix)


def evaluate_detections(pairs: list[tuple[Boxes, Boxes]], class_names: dict[int, str], confidence: float,
                        iou_threshold: float = 0.5, class_ids: list[int] | None = None) -> DetectionResult:
    """Per-class figures over (truth, predictions) per image.

    Classes evaluated: `class_ids`, or every class present in the ground truth. Predictions of other classes are
    left out. Predictions should go down to a low confidence (e.g. 0.001) so the PR curve and AP are complete.
    """
    if class_ids is None:
        class_ids = sorted({int(c) for truth, _ in pairs for c in truth.class_id})
    wanted = np.asarray(class_ids, dtype=int)
    pairs = [(truth.select(np.isin(truth.class_id, wanted)), predicted.select(np.isin(predicted.class_id, wanted)))
             for truth, predicted in pairs]
    hits = [match_predictions(truth, predicted, iou_threshold) for truth, predicted in pairs]
    all_predicted = np.concatenate([p.class_id for _, p in pairs]) if pairs else np.zeros(0, dtype=int)
    all_confidence = np.concatenate([p.confidence for _, p in pairs]) if pairs else np.zeros(0)
    all_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    all_truth = np.concatenate([t.class_id for t, _ in pairs]) if pairs else np.zeros(0, dtype=int)
    classes = []
    for class_id in class_ids:
        mine = all_predicted == class_id
        truth_count = int((all_truth == class_id).sum())
        curve = pr_curve(all_confidence[mine], all_hits[mine], truth_count)
        classes.append(ClassResult(class_id, class_names.get(class_id, str(class_id)), truth_count,
                                   counts_at(curve, truth_count, confidence), average_precision(curve), curve))
    names = [c.name for c in classes]
    return DetectionResult(confidence, iou_threshold, len(pairs), classes,
                           confusion_matrix(pairs, class_ids, names, confidence, iou_threshold))
