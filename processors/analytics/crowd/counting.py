"""Which people count a zone reports: the box detector's, the density model's, or a blend, and how much to trust it.

Measured on labelled clips: the tiled detector is good on sparse scenes
(MAE ~4 on 6-53 people) and collapses in dense ones (0-21 found of 271-1546); CSRNet is good on dense scenes
(~13-15 % error above ~250 people) and over-counts sparse ones several-fold. The rule follows from that:

- density-model count (fresh map) below `sparse_below_people`: the detector's count, confidence 0.85;
- above `dense_above_people`: the density model's count, confidence 0.85 (its ~15 % error);
- in between: a linear blend weighted towards the density model as its count grows, confidence 0.7 (both
  counters are outside their best range there);
- no fresh density map: the detector's count, confidence 0.85, unless more than `max_occluded_fraction` of its
  boxes are mostly (70 %) covered by another box (people hide each other) or it reached
  `detector_saturation_people`; then the count is
  UNRELIABLE (confidence 0.2) and the zone's level is UNKNOWN rather than a falsely calm one.
Confidence is roughly 1 - the expected relative error of the chosen counter in its regime.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.settings.crowd import CountingConfig
from schemas.zone_metrics import CountSource

CONFIDENCE_IN_RANGE = 0.85
CONFIDENCE_BLEND = 0.7
CONFIDENCE_UNRELIABLE = 0.2
OCCLUDED_COVER = 0.7  # a box mostly covered by another one is taken as an occluded person


@dataclass(frozen=True)
class FusedCount:
    people: float
    source: CountSource
    confidence: float
    reliable: bool
    reason: str = ""  # why the count is unreliable


def occluded_fraction(boxes: np.ndarray, min_covered: float = OCCLUDED_COVER) -> float:
    """Share of person boxes of which another box covers at least min_covered of the area: people hiding people.

    O(N²) in memory and time, so only called below the detector's saturation count.
    """
    count = len(boxes)
    if count < 2:
        return 0.0
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    overlap_w = np.clip(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), 0, None)
    overlap_h = np.clip(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), 0, None)
    overlap = overlap_w * overlap_h
    np.fill_diagonal(overlap, 0)
    area = np.maximum((x2 - x1) * (y2 - y1), 1e-9)
    return float(((overlap / area[:, None]).max(axis=1) >= min_covered).mean())


def fuse_counts(detector_people: int, model_people: float | None, boxes: np.ndarray,
                config: CountingConfig) -> FusedCount:
    """The count a zone reports for one frame; model_people is None when no fresh density map exists."""
    if model_people is None:
        if detector_people >= config.detector_saturation_people:
            return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_UNRELIABLE, False,
                              f"detector saturated ({detector_people} people) and no density map")
        hidden = occluded_fraction(boxes)
        if hidden > config.max_occluded_fraction:
            return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_UNRELIABLE, False,
                              f"{hidden:.0%} of person boxes are mostly hidden by others and no density map")
        return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_IN_RANGE, True)
    if model_people <= config.sparse_below_people:
        return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_IN_RANGE, True)
    if model_people >= config.dense_above_people:
        return FusedCount(model_people, CountSource.DENSITY_MODEL, CONFIDENCE_IN_RANGE, True)
    weight = (model_people - config.sparse_below_people) / (config.dense_above_people - config.sparse_below_people)
    people = (1 - weight) * detector_people + weight * model_people
    return FusedCount(people, CountSource.BLEND, CONFIDENCE_BLEND, True)
