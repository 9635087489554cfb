"""The inference stage's density maps: which frames get one, and the map-age gauge.

The density model is replaced by a stand-in that returns a map of a fixed count (the real model is exercised in
test_density_map.py); the worker is the real one, without a broker (this path does not touch it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from processors.inference.stage import CameraDetectors, DecodedFrame, InferenceWorker
from schemas import Frame
from schemas.settings.config import parse_config


class FixedCountDensity:
    """Stands in for processors.inference.density_map.DensityMapCounter: a uniform map summing to `people`."""

    def __init__(self, people: float):
        self.people = people
        self.calls = 0

    def density_maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += len(images)
        return [np.full((4, 4), self.people / 16, dtype=np.float32) for _ in images]


def worker(counter: FixedCountDensity) -> InferenceWorker:
    zone = {"id": "z", "polygon": [[0, 0], [8, 0], [8, 8]], "area_m2": 10}
    config = parse_config({"site": "t", "cameras": [
        {"id": "square", "source": "0", "zones": [zone]}, {"id": "road", "source": "1"}]}, Path("."))
    return InferenceWorker(config, None, None, CameraDetectors(None), "group", density_counter=counter)


def frame(camera: str, at: float) -> DecodedFrame:
    jpeg = b"\xff\xd8\xff\xd9"
    return DecodedFrame(Frame(camera_id=camera, seq=int(at), captured_at=at, width=8, height=8, jpeg=jpeg),
                        np.zeros((8, 8, 3), dtype=np.uint8))


def age(camera: str) -> float | None:
    return REGISTRY.get_sample_value("cityguard_density_map_age_seconds", {"camera": camera})


def test_zone_cameras_get_maps_when_theirs_are_due():
    counter = FixedCountDensity(people=400.0)
    stage = worker(counter)
    maps = stage.density_maps([frame("road", 100.0), frame("square", 100.0)])
    assert list(maps) == [1] and float(maps[1].sum()) == 400.0  # the camera without zones gets none
    assert age("square") == 0.0 and age("road") is None
    assert stage.density_maps([frame("square", 103.0)]) == {}  # not due yet
    assert age("square") == 3.0
    stage.density_maps([frame("square", 108.0)])  # due after analytics.density_model.interval_seconds
    assert counter.calls == 2 and age("square") == 0.0
