"""The inference stage against cameras whose clocks are wrong: the density map schedule recovers from a frame stamped
in the future, and per-camera state is dropped on the worker's own clock, never on one camera's capture time against
another's. (Frames stamped ahead are not shed: a file replayed as fast as possible is stamped ahead by design.)"""
from __future__ import annotations

import time

import numpy as np

from infra.keyed_pool import KeyedPool
from processors.inference.density_floor import DensityFloorPool
from processors.inference.density_schedule import DensitySchedule
from schemas.settings.crowd import BackgroundFloorConfig

YEAR_2100 = 4_102_444_800.0


def test_a_map_from_a_frame_stamped_in_the_future_does_not_stop_the_cameras_maps():
    schedule = DensitySchedule(["cam"], refresh_seconds=7.5)
    assert schedule.choose([("cam", YEAR_2100)], now=0.0) == [0]
    now = time.time()
    assert schedule.choose([("cam", now)], now=1.0) == [0], "the camera is due again once its clock is right"
    assert schedule.age("cam", now + 3) == 3.0
    assert schedule.choose([("cam", now + 3)], now=2.0) == []  # and keeps its ordinary interval
    assert schedule.choose([("cam", now + 8)], now=3.0) == [0]


def test_a_background_floor_is_not_dropped_because_another_cameras_clock_runs_ahead():
    settings = BackgroundFloorConfig()
    pool = DensityFloorPool(settings, dense_cell_people=0.5)
    density, image = np.zeros((4, 4), np.float32), np.zeros((8, 8, 3), np.uint8)
    pool.update("square", density, 0, image, 1_000.0)
    pool.update("plaza", density, 0, image, 1_000.0 + 10 * settings.window_seconds)
    assert len(pool) == 2


def test_a_pool_drops_keys_idle_on_its_own_clock_and_keeps_the_ones_in_use():
    now = [0.0]
    pool = KeyedPool(lambda key: object(), idle_seconds=60, clock=lambda: now[0])
    first = pool.get("a")
    for index in range(5_000):  # a producer sending ever-changing camera ids
        pool.get(f"junk-{index}")
    assert pool.get("a") is first and len(pool) == 5_001
    now[0] = 61.0
    assert pool.get("b") is not None and len(pool) == 1
    now[0] = 62.0
    assert pool.get("a") is not first
