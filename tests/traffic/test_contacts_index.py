"""Vehicles whose boxes overlap, found through each frame's spatial index (rules.overlapping_pairs), are exactly the
pairs that measuring every box against every other finds, in the same order and with the same overlap: the all-pairs
search written out here is the specification, run side by side with the analyzer's on random frames of many
vehicles, some of them the vehicles at rest that the detector missed, which pair only with one seen in the frame."""
from __future__ import annotations

import random

import numpy as np

from processors.analytics.traffic.rules import overlapping_pairs
from schemas.geometry import box_iou


def all_pairs(boxes: list[tuple[float, float, float, float]], firsts: int) -> tuple[np.ndarray, np.ndarray]:
    overlaps = box_iou(boxes, boxes)
    first, second = np.nonzero(np.triu(overlaps[:firsts] > 0, k=1))
    return np.stack([first, second], axis=1), overlaps[first, second]


def random_boxes(seed: int, count: int = 1500) -> list[tuple[float, float, float, float]]:
    """Vehicles of 15 to 45 px packed into a road, partly overlapping, with second detections of some, neighbours
    whose edges just touch, boxes without area or upside down, and a few far larger than the rest."""
    rng = random.Random(seed)
    boxes = []
    for _ in range(count):
        width = rng.uniform(15, 45)
        height = width * rng.uniform(0.4, 0.8)
        x, y = rng.uniform(0, 1280 - width), rng.uniform(200, 720 - height)
        boxes.append((x, y, x + width, y + height))
        kind = rng.random()
        if kind < 0.05:
            boxes.append((x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), x + width, y + height))
        elif kind < 0.08:
            boxes.append((x + width, y, x + 2 * width, y + height))  # touching along an edge: no overlap
        elif kind < 0.1:
            boxes.append((x, y, x, y + height) if rng.random() < 0.5 else (x + width, y + height, x, y))
        elif kind < 0.105:
            boxes.append((x, y, x + rng.uniform(400, 1500), y + rng.uniform(200, 500)))
    rng.shuffle(boxes)
    return boxes


def test_vehicles_touching_found_through_the_index_are_those_every_pair_shows():
    touching = 0
    for seed in range(4):
        boxes = random_boxes(seed)
        for firsts in (len(boxes), len(boxes) - 200):  # the last 200 as vehicles at rest missed in the frame
            pairs, overlaps = overlapping_pairs(boxes, firsts)
            expected_pairs, expected_overlaps = all_pairs(boxes, firsts)
            assert np.array_equal(pairs, expected_pairs), seed
            assert np.array_equal(overlaps, expected_overlaps), seed  # the very same numbers
            touching += len(pairs)
    assert touching > 10_000  # the frames put the search to work: many vehicles overlap


def test_no_vehicles_no_pairs():
    pairs, overlaps = overlapping_pairs([], 0)
    assert pairs.shape == (0, 2) and overlaps.shape == (0,)
