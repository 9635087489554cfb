"""A camera's background floor in its density maps: learnt from its sparse maps, never able to calm a packed crowd.

tests/crowd/data/street_camera_maps.npz holds this project's own 512 px CSRNet maps and whole-frame detector person
counts of OpenCV's vtest.avi (a fixed street camera): eleven frames counted by eye (tests/devsets/crowd, 3 to 9
people) and ten other frames of the clip (every 80th from frame 40) as the camera's history. The packed crowds are
test_real_dense_crowds.py's recorded maps of four dense images (450 to 1,111 people).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from processors.analytics.crowd.counting import fuse_counts
from processors.inference.density_floor import DensityFloor, DensityFloorPool
from processors.inference.density_map import dense_cells
from schemas import RiskLevel
from schemas.settings.base import ConfigError
from schemas.settings.config import parse_config
from schemas.settings.crowd import CountingConfig, DensityModelConfig
from tests.conftest import VTEST, video_frames
from tests.crowd.test_real_dense_crowds import (
    IMAGES,
    SECONDS,
    analyzer_for,
    frame,
    multi_scale_map,
    recorded,
)

STREET = Path(__file__).parent / "data" / "street_camera_maps.npz"
FPS = 10.0  # vtest.avi
SETTINGS = DensityModelConfig()
FLOOR = SETTINGS.background_floor


def street() -> dict:
    with np.load(STREET) as arrays:
        return {key: arrays[key].astype(np.float32) if key.endswith("_map") else arrays[key] for key in arrays.files}


def new_floor(settings=FLOOR) -> DensityFloor:
    return DensityFloor(settings, SETTINGS.dense_cell_people)


def learnt_on_street_history(recorded_maps: dict) -> DensityFloor:
    floor = new_floor()
    for at, people, density in zip(recorded_maps["history_frame"], recorded_maps["history_detector"],
                                   recorded_maps["history_map"], strict=True):
        floor.learn(density, int(people), at / FPS)
    return floor


def zone_count(density: np.ndarray, detector_people: int) -> float:
    """The analytics' rule for a zone covering the whole frame, with a fresh map."""
    return fuse_counts(detector_people, float(density.sum()), CountingConfig(), 0.0).people


def test_a_floor_learnt_on_the_street_cameras_sparse_maps_brings_its_counts_to_the_people_counted_by_eye():
    maps = street()
    floor = learnt_on_street_history(maps)
    before, after = [], []
    for people, detected, density in zip(maps["counted_people"], maps["counted_detector"], maps["counted_map"],
                                         strict=True):
        before.append(abs(zone_count(density, int(detected)) - people))
        after.append(abs(zone_count(floor.subtract(density, 80.0), int(detected)) - people))
    assert np.mean(before) > 4.0  # the map's background texture: about five people too many per frame
    assert np.mean(after) < 1.0
    assert all(a <= b for a, b in zip(after, before, strict=True))


def test_nothing_is_subtracted_until_enough_sparse_maps_over_a_long_enough_span_are_learnt():
    density = street()["history_map"][0]
    floor = new_floor()
    for index in range(FLOOR.min_maps - 1):
        floor.learn(density, 3, index * FLOOR.min_span_seconds)
    assert floor.floor(FLOOR.min_span_seconds * FLOOR.min_maps) is None  # too few maps
    quick = new_floor()
    for index in range(FLOOR.min_maps * 2):
        quick.learn(density, 3, index * FLOOR.min_span_seconds / (FLOOR.min_maps * 4))
    assert quick.floor(FLOOR.min_span_seconds) is None  # too short a span: someone standing still is not background
    assert np.array_equal(quick.subtract(density, FLOOR.min_span_seconds), density)


def test_maps_older_than_the_window_are_forgotten():
    maps = street()
    floor = learnt_on_street_history(maps)
    assert floor.floor(80.0) is not None
    assert floor.floor(80.0 + FLOOR.window_seconds + 1) is None


@pytest.mark.parametrize("image", IMAGES)
def test_a_packed_crowds_map_is_never_learnt(image):
    outputs = recorded(image)
    density = multi_scale_map(outputs, SETTINGS.dense_cell_people)
    floor = new_floor()
    for index in range(FLOOR.min_maps * 4):
        floor.learn(density, len(outputs["boxes"]), index * FLOOR.window_seconds / 40)
    assert not floor.buckets


@pytest.mark.parametrize("image", IMAGES)
def test_the_largest_floor_a_sparse_scene_can_teach_never_drives_a_packed_zone_calm(image):
    """The worst case: every sparse map the camera saw held the most people a learnt map may hold, spread evenly
    over the whole frame, so the floor is as high as the guards allow in every cell."""
    outputs = recorded(image)
    analyzer, config = analyzer_for(outputs)
    density = multi_scale_map(outputs, config.analytics.density_model.dense_cell_people)
    even = np.full(density.shape, FLOOR.sparse_max_people / density.size, dtype=np.float32)
    floor = new_floor()
    for index in range(FLOOR.min_maps * 2):
        floor.learn(even, 0, index * FLOOR.min_span_seconds)
    floored = floor.subtract(density, FLOOR.min_span_seconds * FLOOR.min_maps * 2)

    assert float(density.sum() - floored.sum()) <= FLOOR.max_removed_people + 1e-3
    dense = dense_cells(density, SETTINGS.dense_cell_people)
    assert np.array_equal(floored[dense], density[dense])  # a locally dense crowd's cells are never touched
    metrics = [m for seq in range(SECONDS)
               for m in analyzer.update(frame(outputs, seq, floored if seq % 7 == 0 else None)).zone_metrics]
    assert metrics
    for window in metrics:  # as without the floor (test_real_dense_crowds): a warning at least
        assert window.count_reliable and window.risk_level in (RiskLevel.WARNING, RiskLevel.DANGER)


def test_a_camera_move_forgets_the_floor_and_people_walking_by_do_not():
    maps = street()
    images = dict(zip((0, 160), video_frames(VTEST, 2, step=160), strict=True))
    panned = np.roll(images[0], 48, axis=1)  # the camera turned: the scene slides 48 px sideways
    pool = DensityFloorPool(FLOOR, SETTINGS.dense_cell_people)
    for at, people, density in zip(maps["history_frame"], maps["history_detector"], maps["history_map"],
                                   strict=True):
        pool.update("campus", density, int(people), images[0], at / FPS)
    counted = maps["counted_map"][2]  # frame 160
    assert pool.update("campus", counted, 7, images[160], 80.0).sum() < counted.sum() - 3  # other people, same view
    assert np.array_equal(pool.update("campus", counted, 7, panned, 81.0), counted)  # moved: nothing learnt here
    assert np.array_equal(pool.update("lobby", counted, 7, images[160], 82.0), counted)  # each camera its own


def test_a_floor_per_cell_as_high_as_the_dense_cell_level_fails_at_start_naming_the_field():
    with pytest.raises(ConfigError, match="background_floor.max_cell_people"):
        parse_config({"site": "t", "cameras": [{"id": "c", "source": "0"}], "analytics": {"density_model": {
            "dense_cell_people": 0.2, "background_floor": {"max_cell_people": 0.2}}}}, Path("."))


def test_a_floor_span_as_long_as_its_window_fails_at_start_naming_the_field():
    with pytest.raises(ConfigError, match="background_floor.min_span_seconds"):
        parse_config({"site": "t", "cameras": [{"id": "c", "source": "0"}], "analytics": {"density_model": {
            "background_floor": {"window_seconds": 60, "min_span_seconds": 60}}}}, Path("."))
