"""The density-map schedule with a simulated worker: N zone cameras at 5 fps, batches of up to 8 frames costing
detector time per frame plus map time per map. Deterministic: the clock is simulated, nothing is timed."""
from __future__ import annotations

import math

import pytest

from processors.inference.density_schedule import DensitySchedule

FPS = 5.0
BATCH = 8  # model.max_batch_size
DETECT_S = 0.02  # per frame: the whole-frame detector
MAP_S = 0.99  # per map: median CSRNet time at 512 px wide on the development set (2 loaded cores)
MAX_AGE_S = 15.0  # analytics.counting.density_map_max_age_seconds
REFRESH_S = 7.5  # analytics.density_model.interval_seconds
BUSY = 0.5  # analytics.density_model.max_busy_fraction


def simulate(cameras: int, seconds: float = 300, map_s: float = MAP_S, maps_per_batch: int = 1,
             detect_s: float = DETECT_S) -> tuple[float, float]:
    """Runs one worker over `seconds` of video from `cameras` cameras.

    Returns the largest map age (capture time) any frame was sent with after the first 30 s (a cold start maps the
    cameras one after another), and how far behind the cameras the worker finished (seconds).
    """
    schedule = DensitySchedule([f"cam{i}" for i in range(cameras)], REFRESH_S, maps_per_batch, BUSY)
    queue = sorted((n / FPS, f"cam{c}") for c in range(cameras) for n in range(int(seconds * FPS)))
    clock, worst, taken = 0.0, 0.0, 0
    while taken < len(queue):
        clock = max(clock, queue[taken][0])  # idle until the next frame is captured
        batch = []
        while taken < len(queue) and len(batch) < BATCH and queue[taken][0] <= clock:
            batch.append((queue[taken][1], queue[taken][0]))
            taken += 1
        chosen = schedule.choose(batch, clock)
        schedule.spent(map_s * len(chosen))
        clock += detect_s * len(batch) + map_s * len(chosen)
        if batch[0][1] > 30:
            worst = max(worst, *(schedule.age(camera, at) for camera, at in batch))
    return worst, clock - queue[-1][0]


@pytest.mark.parametrize("cameras", [1, 2, 4])
def test_every_cameras_map_stays_younger_than_the_bound(cameras):
    """Map time needed: cameras x 0.99 s / 7.5 s = 0.13 s per second of video per camera, within half the worker's
    time up to four cameras on this machine; detection (0.1 s per camera-second) keeps up too."""
    worst_age, behind = simulate(cameras)
    assert worst_age <= MAX_AGE_S and behind < 1.0


def test_cameras_beyond_the_budget_get_stale_maps_and_detection_keeps_up():
    """Ten cameras would need 1.3 s of maps per second: the budget rations them to half the worker's time, so each
    camera's map is renewed about every 10 x 0.99 / 0.5 = 20 s and passes the bound (the analytics then report its
    zones UNKNOWN, "density map stale"), while the detector still keeps up with the cameras."""
    worst_age, behind = simulate(10, detect_s=0.005)
    assert worst_age > MAX_AGE_S and behind < 1.0


def test_a_faster_map_keeps_more_cameras_fresh():
    """A batched accelerator making four maps in the time of one keeps twelve cameras fresh."""
    assert simulate(12, map_s=MAP_S / 4, maps_per_batch=4, detect_s=0.005)[0] <= MAX_AGE_S
    assert simulate(12, detect_s=0.005)[0] > MAX_AGE_S


def test_oldest_maps_are_renewed_first_one_frame_per_camera():
    schedule = DensitySchedule(["a", "b"], REFRESH_S)
    assert schedule.choose([("a", 0.0), ("a", 0.2)], now=0.0) == [1]  # the camera's newest frame
    assert schedule.age("a", 0.2) == 0.0 and math.isinf(schedule.age("b", 0.2))
    assert schedule.choose([("a", 1.0), ("b", 1.0)], now=1.0) == [1]  # b has none yet; a is not due
    assert schedule.choose([("a", 7.7), ("b", 7.7)], now=7.7) == [0]  # a's map is 7.5 s old, b's 6.7 s
    assert schedule.choose([("x", 9.0)], now=9.0) == []  # not a zone camera


def test_a_spent_budget_waits_until_repaid():
    schedule = DensitySchedule(["a", "b"], REFRESH_S, busy_fraction=0.5)
    assert schedule.choose([("a", 0.0)], now=0.0) == [0]
    schedule.spent(2.0)  # a slow map: 4 s of worker time must pass at half share before the next
    assert schedule.choose([("b", 1.0)], now=1.0) == []
    assert schedule.choose([("b", 4.1)], now=4.1) == [0]


def test_a_camera_whose_map_was_not_made_keeps_its_age_and_is_tried_again_a_refresh_interval_later():
    schedule = DensitySchedule(["a", "b"], REFRESH_S)
    assert schedule.choose([("a", 0.0)], now=0.0) == [0]
    schedule.batch_sent()
    assert schedule.choose([("a", 8.0), ("b", 8.0)], now=8.0) == [1]  # b has none yet; one per batch
    schedule.not_made(["b"])
    assert math.isinf(schedule.age("b", 8.0)) and schedule.age("a", 8.0) == 8.0
    schedule.batch_sent()
    # b, still without a map, would come first at every batch: a picture the model always fails on would take every
    # map slot. It waits a refresh interval from its try, and a, due too, gets its map meanwhile.
    assert schedule.choose([("b", 9.0), ("a", 9.0)], now=9.0) == [1]
    schedule.batch_sent()
    assert schedule.choose([("b", 15.4)], now=15.4) == []
    assert schedule.choose([("b", 15.5)], now=15.5) == [0]
    schedule.not_made(["b"])
    assert math.isinf(schedule.age("b", 15.5))


def test_a_batch_detected_in_parts_that_is_rewound_leaves_every_parts_cameras_due():
    schedule = DensitySchedule(["a", "b"], REFRESH_S, maps_per_batch=2)
    assert schedule.choose([("a", 0.0)], now=0.0) == [0]
    schedule.batch_sent()
    assert schedule.choose([("a", 8.0)], now=8.0) == [0]  # the batch's first part
    assert schedule.choose([("b", 8.2)], now=8.2, later_part=True) == [0]  # its second
    schedule.batch_rewound()  # neither map went out
    assert schedule.age("a", 8.0) == 8.0 and math.isinf(schedule.age("b", 8.2))
    assert schedule.choose([("a", 8.0), ("b", 8.2)], now=8.4) == [0, 1]  # the batch again: both are due


def test_a_map_that_failed_in_a_later_part_leaves_the_earlier_parts_maps():
    schedule = DensitySchedule(["a", "b"], REFRESH_S, maps_per_batch=3)
    assert schedule.choose([("a", 0.0)], now=0.0) == [0]
    assert schedule.choose([("b", 0.2)], now=0.2, later_part=True) == [0]
    schedule.not_made(["a", "b"])  # b's map failed; a's, chosen in an earlier part, was made and sent
    assert schedule.age("a", 0.2) == pytest.approx(0.2) and math.isinf(schedule.age("b", 0.2))
    # A camera mapped again in a later part of a batch spanning a refresh interval: its failure gives back the
    # earlier part's map, a rewind the map it had before the batch.
    assert schedule.choose([("a", 8.0)], now=8.0, later_part=True) == [0]
    schedule.not_made(["a"])
    assert schedule.age("a", 8.0) == 8.0
    schedule.batch_rewound()
    assert math.isinf(schedule.age("a", 8.0))


def test_maps_per_batch_bounds_a_batch_detected_in_parts():
    schedule = DensitySchedule(["a", "b", "c"], REFRESH_S, maps_per_batch=2)
    assert schedule.choose([("a", 0.0)], now=0.0) == [0]
    assert schedule.choose([("b", 0.1)], now=0.1, later_part=True) == [0]
    assert schedule.choose([("c", 0.2)], now=0.2, later_part=True) == []  # the batch has had its two
    schedule.batch_sent()
    assert schedule.choose([("c", 0.3)], now=0.3) == [0]  # the next batch
