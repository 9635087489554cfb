"""Counting accuracy: MAE, RMSE and relative error of per-image people counts, overall and by crowd size."""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

DEFAULT_SIZE_EDGES = (10, 50, 200)  # sparse / moderate / dense / packed scenes, by true count


@dataclass(frozen=True)
class CountErrors:
    images: int
    mean_absolute_error: float
    root_mean_squared_error: float
    mean_relative_error: float | None  # mean |error| / true over images with people; None when there are none
    mean_error: float  # signed: > 0 means over-counting

    def to_json(self) -> dict:
        return {"images": self.images, "mae": self.mean_absolute_error, "rmse": self.root_mean_squared_error,
                "mean_relative_error": self.mean_relative_error, "mean_error": self.mean_error}


def count_errors(true: np.ndarray, predicted: np.ndarray) -> CountErrors:
    true = np.asarray(true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if true.shape != predicted.shape or true.ndim != 1 or not len(true):
        raise ValueError(f"need two equal, non-empty 1-D count arrays, got {true.shape} and {predicted.shape}")
    error = predicted - true
    occupied = true > 0
    relative = float(np.mean(np.abs(error[occupied]) / true[occupied])) if occupied.any() else None
    return CountErrors(len(true), float(np.mean(np.abs(error))), float(np.sqrt(np.mean(error**2))), relative,
                       float(np.mean(error)))


def size_bins(edges: tuple[float, ...]) -> list[tuple[float, float]]:
    """(lower, upper] ranges of true count, each edge in the bin below it as in "60 people or fewer":
    0..edges[0] (0 included), edges[0]..edges[1], ..., edges[-1]..inf."""
    bounds = [0.0, *map(float, edges), math.inf]
    if any(upper <= lower for lower, upper in pairwise(bounds)):
        raise ValueError(f"size edges must be positive and increasing, got {edges}")
    return list(pairwise(bounds))


def bin_label(lower: float, upper: float) -> str:
    """`0-60`, `61-250`, `251+` for whole-number edges (people are counted whole); `>2.5-10` otherwise."""
    low = "0" if lower == 0 else f"{lower + 1:g}" if lower.is_integer() else f">{lower:g}"
    return f"{low}+" if math.isinf(upper) else f"{low}-{upper:g}"


def count_errors_by_size(true: np.ndarray, predicted: np.ndarray,
                         edges: tuple[float, ...] = DEFAULT_SIZE_EDGES) -> dict[str, CountErrors]:
    """Errors per crowd-size bin of the true count; empty bins are left out."""
    true = np.asarray(true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    result = {}
    for lower, upper in size_bins(edges):
        inside = (true >= lower if lower == 0 else true > lower) & (true <= upper)
        if inside.any():
            result[bin_label(lower, upper)] = count_errors(true[inside], predicted[inside])
    return result
