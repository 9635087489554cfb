"""Which people count a zone reports: the box detector's, the density model's, or a blend, and how much to trust it.

Measured here (../shared/reference/crowd-and-traffic-facts.md): the tiled detector is good on sparse scenes
(MAE ~4 on 6-53 people) and collapses in dense ones (0-21 found of 271-1546); CSRNet is good on dense scenes
(~13-15 % error above ~250 people) and over-counts sparse ones several-fold. The rule follows from that:

- density-model count (fresh map) below `sparse_below_people`: the detector's count, confidence 0.85;
- above `dense_above_people`: the density model's count, confidence 0.85 (its ~15 % error);
- in between: a linear blend weighted towards the density model as its count grows, confidence 0.7 (both
  counters are outside their best range there);
- no fresh density map: the detector's count, confidence 0.85, unless its boxes cover more of the zone than
  `max_box_coverage` (people hide each other) or it reached `detector_saturation_people`; then the count is
  UNRELIABLE (confidence 0.2) and the zone's level is UNKNOWN rather than a falsely calm one.
Confidence is roughly 1 - the expected relative error of the chosen counter in its regime.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityguard.config_crowd import CountingConfig
from schemas.zone_metrics import CountSource

CONFIDENCE_IN_RANGE = 0.85
CONFIDENCE_BLEND = 0.7
CONFIDENCE_UNRELIABLE = 0.2


@dataclass(frozen=True)
class FusedCount:
    people: float
    source: CountSource
    confidence: float
    reliable: bool
    reason: str = ""  # why the count is unreliable


def box_coverage(boxes: np.ndarray, zone_area_px: float) -> float:
    """Summed person box area over the zone's image area: above ~1 boxes must overlap heavily."""
    if len(boxes) == 0 or zone_area_px <= 0:
        return 0.0
    return float(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum() / zone_area_px)


def fuse_counts(detector_people: int, model_people: float | None, coverage: float,
                config: CountingConfig) -> FusedCount:
    """The count a zone reports for one frame; model_people is None when no fresh density map exists."""
    if model_people is None:
        if detector_people >= config.detector_saturation_people:
            return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_UNRELIABLE, False,
                              f"detector saturated ({detector_people} people) and no density map")
        if coverage > config.max_box_coverage:
            return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_UNRELIABLE, False,
                              f"person boxes cover {coverage:.0%} of the zone (occlusion) and no density map")
        return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_IN_RANGE, True)
    if model_people <= config.sparse_below_people:
        return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_IN_RANGE, True)
    if model_people >= config.dense_above_people:
        return FusedCount(model_people, CountSource.DENSITY_MODEL, CONFIDENCE_IN_RANGE, True)
    weight = (model_people - config.sparse_below_people) / (config.dense_above_people - config.sparse_below_people)
    people = (1 - weight) * detector_people + weight * model_people
    return FusedCount(people, CountSource.BLEND, CONFIDENCE_BLEND, True)
