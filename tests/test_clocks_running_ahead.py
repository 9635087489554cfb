"""The inference stage against cameras whose clocks are wrong: a frame stamped in the future is skipped and counted,
the density map schedule recovers from one it met anyway, and per-camera state is dropped on the worker's own clock,
never on one camera's capture time against another's."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from prometheus_client import REGISTRY

from infra.keyed_pool import KeyedPool
from processors.inference.density_floor import DensityFloorPool
from processors.inference.density_schedule import DensitySchedule
from processors.inference.shedding import FUTURE, MAX_AHEAD_S, FrameShedder
from processors.inference.stage import CameraDetectors, InferenceWorker
from schemas import Frame, encode
from schemas.settings.config import parse_config
from schemas.settings.crowd import BackgroundFloorConfig

YEAR_2100 = 4_102_444_800.0


def frame(camera: str, captured_at: float, seq: int = 0) -> Frame:
    return Frame(camera_id=camera, seq=seq, captured_at=captured_at, width=8, height=8, jpeg=b"\xff\xd8\xff\xd9")


def test_frames_stamped_further_ahead_than_a_clock_may_run_are_skipped():
    shedder = FrameShedder(max_age_s=5, camera_fps={"cam": 10}, rate_factor=1.5, clock=lambda: 1000.0)
    assert shedder.reason(frame("cam", 1000.0 + MAX_AHEAD_S - 0.1)) is None  # a producer's clock slightly ahead
    assert shedder.reason(frame("cam", 1000.0 + MAX_AHEAD_S + 0.1, seq=1)) == FUTURE
    assert shedder.reason(frame("unconfigured", YEAR_2100)) == FUTURE


def test_the_worker_counts_the_frames_from_the_future_it_skips():
    config = parse_config({"site": "t", "cameras": [{"id": "cam", "source": "0"}]}, Path("."))
    stage = InferenceWorker(config, None, None, CameraDetectors(None), "group")
    labels = {"camera": "cam", "reason": FUTURE}
    before = REGISTRY.get_sample_value("cityguard_frames_shed_total", labels) or 0
    assert stage.decode_batch([SimpleNamespace(value=encode(frame("cam", YEAR_2100)))]) == []
    assert REGISTRY.get_sample_value("cityguard_frames_shed_total", labels) == before + 1


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
