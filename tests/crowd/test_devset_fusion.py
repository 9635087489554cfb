"""The zone counter's rule against the labelled development set's measurements (tests/devsets/crowd).

measurements.csv holds, per real image, the true count and what each counter of this project made of it. The zone
count here is computed by the product's own functions (map width policy, fuse_counts) from those columns.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from processors.analytics.crowd.counting import fuse_counts
from processors.inference.density_map import map_width
from schemas.settings.crowd import CountingConfig, DensityModelConfig

TABLE = Path(__file__).resolve().parents[1] / "devsets" / "crowd" / "measurements.csv"
REGIMES = {"sparse": (0, 60), "medium": (60, 250), "dense": (250, float("inf"))}  # true count, (lower, upper]
SINGLE = ("detector", "tiled", "density_384", "density_512", "density_640", "density_768", "density_1024")


def load() -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(TABLE.open()))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0] if key != "id"}


def zone_counts(table: dict[str, np.ndarray], settings: DensityModelConfig) -> np.ndarray:
    """What the analytics report for a whole-frame zone of a steady scene: the map at the width the inference stage
    settles on (the reduced width's count picks it), then fuse_counts with the whole-frame detector's count."""
    counts = []
    for index in range(len(table["true"])):
        people = table[f"density_{map_width(None, settings)}"][index]
        people = table[f"density_{map_width(people, settings)}"][index]
        fused = fuse_counts(int(table["detector"][index]), float(people), CountingConfig(), model_age_s=0.0)
        assert fused.reliable
        counts.append(fused.people)
    return np.array(counts)


def errors(true: np.ndarray, predicted: np.ndarray) -> dict[str, tuple[float, float]]:
    """(MAE, mean relative error) per regime."""
    result = {}
    for name, (lower, upper) in REGIMES.items():
        inside = (true > lower) & (true <= upper)
        error = np.abs(predicted[inside] - true[inside])
        result[name] = (float(error.mean()), float((error / true[inside]).mean()))
    return result


@pytest.fixture(scope="module")
def table():
    return load()


def test_the_set_spans_every_regime(table):
    true = table["true"]
    assert len(true) == 68
    assert [int(((true > lo) & (true <= hi)).sum()) for lo, hi in REGIMES.values()] == [26, 20, 22]


def test_fused_count_is_never_worse_than_the_best_single_counter_beyond_the_stated_margins(table):
    """Sparse and dense: at least as good as the best single counter (small margin for rounding). Medium: the rule
    uses full-width maps from 150 people on, which over-count some 150-250 crowds; it is allowed 25 % more MAE
    than the best single counter there (the reduced-width map), the price of a 17 % instead of 23 % error in
    packed crowds, where under-counting is the dangerous mistake."""
    fused = errors(table["true"], zone_counts(table, DensityModelConfig()))
    singles = {name: errors(table["true"], table[name]) for name in SINGLE}
    best = {regime: min(single[regime][0] for single in singles.values()) for regime in REGIMES}
    assert fused["sparse"][0] <= best["sparse"] + 0.2
    assert fused["dense"][0] <= best["dense"] + 0.5
    assert fused["medium"][0] <= 1.25 * best["medium"]
    for detector in ("detector", "tiled"):  # the box detectors are far behind everywhere
        for regime in REGIMES:
            assert fused[regime][0] < 0.6 * singles[detector][regime][0]


def test_figures_quoted_in_the_counting_module(table):
    fused = errors(table["true"], zone_counts(table, DensityModelConfig()))
    assert fused["sparse"] == pytest.approx((5.3, 0.16), abs=0.05)
    assert fused["dense"] == pytest.approx((87.5, 0.169), abs=0.05)


def test_the_shipped_threshold_is_the_leave_one_out_choice(table):
    """The one fitted parameter, dense_above_people, chosen on all images but one and scored on that one, for
    every image: the choice minimises the dense-crowd relative error, then the medium MAE."""
    true, candidates = table["true"], (60, 80, 100, 120, 150, 200, 250, 300, 350)

    def predict(threshold: float, index) -> np.ndarray:
        return zone_counts({k: v[index] for k, v in table.items()},
                           DensityModelConfig(dense_above_people=threshold))

    chosen, held_out = [], np.zeros(len(true))
    for left_out in range(len(true)):
        train = np.array([i for i in range(len(true)) if i != left_out])

        def objective(threshold: float, train=train) -> tuple[float, float]:
            fitted = errors(true[train], predict(threshold, train))
            return round(fitted["dense"][1], 3), fitted["medium"][0]

        best = min(candidates, key=objective)
        chosen.append(best)
        held_out[left_out] = predict(best, np.array([left_out]))[0]
    assert max(set(chosen), key=chosen.count) == DensityModelConfig().dense_above_people
    loo = errors(true, held_out)
    assert loo["sparse"][0] < 5.5 and loo["dense"][1] < 0.175 and loo["medium"][0] < 45
