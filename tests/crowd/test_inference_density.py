"""The inference stage's density maps (ZoneDensityMaps): which frames get one, and the map-age gauge.

The density model is replaced by a stand-in that returns a map of a fixed count (the real model is exercised in
test_density_map.py); the scheduling, background floor and worker are the real ones, without a broker (this path does
not touch it).
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY

from processors.inference.stage import CameraDetectors, DecodedFrame, InferenceWorker, ZoneDensityMaps
from schemas import Frame, encode
from schemas.settings.config import parse_config


class FixedCountDensity:
    """Stands in for processors.inference.density_map.DensityMapCounter: a uniform map summing to `people`."""

    def __init__(self, people: float):
        self.people = people
        self.calls = 0
        self.person_boxes: list[np.ndarray | None] = []

    def can_map(self, height: int, width: int) -> bool:
        return min(height, width) >= 8

    def density_maps(self, images: list[np.ndarray], person_boxes: list[np.ndarray | None]) -> list[np.ndarray]:
        assert all(self.can_map(*image.shape[:2]) for image in images)
        self.calls += len(images)
        self.person_boxes += person_boxes
        return [np.full((4, 4), self.people / 16, dtype=np.float32) for _ in images]


class SparseTextureDensity:
    """Stands in for the density model on a fixed camera's empty view: the same faint response in every cell of a
    512 px map, `people` in all (what grass and cones draw from the real model, tests/crowd/test_density_floor.py)."""

    def __init__(self, people: float):
        self.people = people

    def can_map(self, height: int, width: int) -> bool:
        return True

    def density_maps(self, images: list[np.ndarray], person_boxes: list[np.ndarray | None]) -> list[np.ndarray]:
        return [np.full((48, 64), self.people / (48 * 64), dtype=np.float32) for _ in images]


def zone_maps(counter, density_model: dict | None = None, video_time: bool = False) -> ZoneDensityMaps:
    """The maps of a site with a crowd camera ("square", one zone) and a camera without zones ("road")."""
    zone = {"id": "z", "polygon": [[0, 0], [8, 0], [8, 8]], "area_m2": 10}
    config = parse_config({"site": "t", "cameras": [
        {"id": "square", "source": "0", "zones": [zone]}, {"id": "road", "source": "1"}],
        "analytics": {"density_model": density_model or {}}}, Path("."))
    return ZoneDensityMaps(config, counter, video_time)


class FailingDensity(FixedCountDensity):
    """Stands in for the density model raising on some input it was given."""

    def density_maps(self, images: list[np.ndarray], person_boxes: list[np.ndarray | None]) -> list[np.ndarray]:
        raise RuntimeError("Check 'cmp::le(kernel, dim)' failed")


def frame(camera: str, at: float, height: int = 8) -> DecodedFrame:
    jpeg = b"\xff\xd8\xff\xd9"
    return DecodedFrame(Frame(camera_id=camera, seq=int(at), captured_at=at, width=8, height=height, jpeg=jpeg),
                        np.zeros((height, 8, 3), dtype=np.uint8))


def person_boxes(count: int, height: float = 4.0) -> np.ndarray:
    return np.tile(np.array([[0.0, 0.0, 2.0, height]]), (count, 1))


def age(camera: str) -> float | None:
    return REGISTRY.get_sample_value("cityguard_density_map_age_seconds", {"camera": camera})


def test_zone_cameras_get_maps_when_theirs_are_due():
    counter = FixedCountDensity(people=400.0)
    # The whole worker's time for maps: the wall time between calls always repays a map, however loaded the machine
    # (at the default half, a map slowed by other processes could still be owed when the next is due).
    mapper = zone_maps(counter, {"max_busy_fraction": 1.0})
    maps = mapper.make([frame("road", 100.0), frame("square", 100.0)], [person_boxes(0)] * 2)
    assert list(maps) == [1] and float(maps[1].sum()) == 400.0  # the camera without zones gets none
    assert age("square") == 0.0 and age("road") is None
    assert mapper.make([frame("square", 103.0)], [person_boxes(0)]) == {}  # not due yet
    assert age("square") == 3.0
    mapper.make([frame("square", 108.0)], [person_boxes(0)])  # due after interval_seconds
    assert counter.calls == 2 and age("square") == 0.0


def test_a_map_the_analytics_would_refuse_is_left_out_and_the_frame_goes_on():
    counter = FixedCountDensity(people=float("nan"))  # a model gone wrong (float16 overflow on a GPU)
    assert zone_maps(counter).make([frame("square", 100.0)], [person_boxes(0)]) == {}
    assert age("square") == float("inf")  # no map reached the analytics: none is counted as fresh
    counter.people = -16.0
    mapper = zone_maps(counter, video_time=True)
    assert mapper.make([frame("square", 100.0)], [person_boxes(0)]) == {}
    counter.people = 40.0
    assert mapper.make([frame("square", 101.0)], [person_boxes(0)]) == {}  # tried again a refresh interval later
    assert mapper.make([frame("square", 107.5)], [person_boxes(0)]).keys() == {0} and age("square") == 0.0


def test_a_frame_too_small_for_the_model_gets_no_map_and_its_age_keeps_growing():
    counter = FixedCountDensity(people=400.0)
    mapper = zone_maps(counter)
    assert mapper.make([frame("square", 200.0)], [person_boxes(0)]).keys() == {0}
    assert mapper.make([frame("square", 260.0, height=7)], [person_boxes(0)]) == {}
    assert counter.calls == 1 and age("square") == 60.0


def test_frames_that_go_out_with_their_cameras_newest_map_past_the_maximum_age_are_counted():
    def stale_frames() -> float:
        return REGISTRY.get_sample_value("cityguard_density_map_stale_frames_total", {"camera": "square"})

    mapper = zone_maps(FixedCountDensity(people=40.0), video_time=True)
    before = stale_frames()  # exported from 0
    mapper.make([frame("square", 100.0)], [person_boxes(0)])
    # too small to map: 15 s after the map is at the bound, past it is stale; a frame whose detection failed does
    # not go out
    mapper.make([frame("square", 115.0, height=7), frame("square", 115.2, height=7)], [person_boxes(0), None])
    assert stale_frames() == before
    mapper.make([frame("square", 115.4, height=7), frame("square", 116.0, height=7)], [person_boxes(0), None])
    assert stale_frames() == before + 1


class SlowDensity(FixedCountDensity):
    """Stands in for a density model far slower than the frames come (a whole map's time between two calls)."""

    def density_maps(self, images: list[np.ndarray], person_boxes: list[np.ndarray | None]) -> list[np.ndarray]:
        time.sleep(0.2)
        return super().density_maps(images, person_boxes)


def test_the_worker_spends_at_most_its_share_on_maps_and_a_replay_maps_every_interval_of_video():
    captured = [100.0 + 7.5 * index for index in range(4)]  # each frame due for a map
    live, replayed = SlowDensity(people=40.0), SlowDensity(people=40.0)
    live_maps, replay_maps = zone_maps(live), zone_maps(replayed, video_time=True)
    for maps in (live_maps, replay_maps):
        for at in captured:  # as fast as the CPU allows: far less wall time between calls than each map took
            maps.make([frame("square", at)], [person_boxes(0)])
    assert live.calls == 1  # the rest would take the worker past max_busy_fraction: the zone goes stale instead
    assert replayed.calls == len(captured)  # video time: a map per interval_seconds whatever the CPU's speed


def test_a_model_failure_costs_the_frame_its_map_not_the_partition():
    mapper = zone_maps(FailingDensity(people=400.0))
    assert mapper.make([frame("square", 300.0)], [person_boxes(0)]) == {}
    assert age("square") == float("inf")  # no map was made: none is counted as fresh


def crowd_cameras_maps(counter, cameras: list[str], maps_per_batch: int) -> ZoneDensityMaps:
    """The maps of a site whose cameras all have a zone, scheduled in video time."""
    zone = {"id": "z", "polygon": [[0, 0], [8, 0], [8, 8]], "area_m2": 10}
    config = parse_config({"site": "t", "cameras": [{"id": camera, "source": str(index), "zones": [zone]}
                                                     for index, camera in enumerate(cameras)],
                           "analytics": {"density_model": {"maps_per_batch": maps_per_batch}}}, Path("."))
    return ZoneDensityMaps(config, counter, video_time=True)


class FailsOnBrightPictures(FixedCountDensity):
    """Stands in for a density model that fails on one camera's pictures (all white here), whatever else the call
    holds."""

    def density_maps(self, images: list[np.ndarray], person_boxes: list[np.ndarray | None]) -> list[np.ndarray]:
        if any(image.min() == 255 for image in images):
            raise RuntimeError("Check 'cmp::le(kernel, dim)' failed")
        return super().density_maps(images, person_boxes)


@pytest.mark.parametrize("maps_per_batch", [1, 8])
def test_a_camera_whose_maps_always_fail_leaves_the_other_cameras_maps_fresh(maps_per_batch):
    cameras = ["bad", *(f"good{index}" for index in range(7))]
    counter = FailsOnBrightPictures(people=40.0)
    mapper = crowd_cameras_maps(counter, cameras, maps_per_batch)
    oldest = dict.fromkeys(cameras, 0.0)
    for step in range(300):  # 60 s, a batch every 0.2 s with a frame of each camera
        at = 1000.0 + step * 0.2
        frames = [DecodedFrame(Frame(camera_id=camera, seq=step, captured_at=at, width=8, height=8, jpeg=b"\xff\xd9"),
                               np.full((8, 8, 3), 255 if camera == "bad" else 0, dtype=np.uint8)) for camera in cameras]
        mapper.make(frames, [person_boxes(0)] * len(cameras))
        if step >= 50:  # past the first 10 s, each camera's map no older than the bound (15 s)
            oldest = {camera: max(oldest[camera], age(camera)) for camera in cameras}
    assert oldest.pop("bad") == float("inf")
    assert max(oldest.values()) <= 15.0
    # the bad camera's picture is tried once a refresh interval (7.5 s), alone after a call that failed with it
    assert counter.calls == pytest.approx(7 * 60 / 7.5, abs=7)


def test_a_call_that_fails_on_one_picture_loses_that_pictures_map_only():
    counter = FailsOnBrightPictures(people=40.0)
    mapper = crowd_cameras_maps(counter, ["a", "b", "c"], maps_per_batch=3)
    frames = [DecodedFrame(Frame(camera_id=camera, seq=0, captured_at=100.0, width=8, height=8, jpeg=b"\xff\xd9"),
                           np.full((8, 8, 3), 255 if camera == "b" else 0, dtype=np.uint8)) for camera in "abc"]
    assert mapper.make(frames, [person_boxes(0)] * 3).keys() == {0, 2}
    assert (age("a"), age("b"), age("c")) == (0.0, float("inf"), 0.0)


class DeviceFault(FixedCountDensity):
    """Stands in for a density model on a failing GPU: `fault` on every call after `calls_before` of them fail as a
    picture would."""

    def __init__(self, fault: Exception, calls_before: int = 0):
        super().__init__(people=40.0)
        self.fault, self.calls_before = fault, calls_before

    def density_maps(self, images: list[np.ndarray], person_boxes: list[np.ndarray | None]) -> list[np.ndarray]:
        if self.calls_before:
            self.calls_before -= 1
            raise RuntimeError("model failed on this input")
        raise self.fault


@pytest.mark.parametrize("fault", [torch.OutOfMemoryError("CUDA out of memory"),
                                   torch.AcceleratorError("CUDA error: an illegal memory access was encountered")])
@pytest.mark.parametrize("calls_before", [0, 1])  # on the call for all, or on a call for one picture after it
def test_a_device_fault_in_the_density_model_stops_the_worker(fault, calls_before):
    mapper = crowd_cameras_maps(DeviceFault(fault, calls_before), ["a", "b"], maps_per_batch=2)
    with pytest.raises(type(fault)):
        mapper.make([frame("a", 100.0), frame("b", 100.0)], [person_boxes(0)] * 2)



def test_the_model_is_told_where_the_frames_people_were_detected():
    counter = FixedCountDensity(people=40.0)
    mapper = zone_maps(counter, {"max_busy_fraction": 1.0})
    detected = np.array([[0, 0, 2, 3], [0, 0, 2, 5], [0, 0, 2, 6.0]])
    mapper.make([frame("square", 100.0)], [detected])
    mapper.make([frame("square", 108.0)], [person_boxes(0)])
    assert len(counter.person_boxes) == 2
    np.testing.assert_array_equal(counter.person_boxes[0], detected)
    assert len(counter.person_boxes[1]) == 0


def maps_every_interval(mapper: ZoneDensityMaps, detector_people: int, count: int, start: int = 0) -> list[float]:
    """The zone camera's map totals, one map per analytics.density_model.interval_seconds of capture time (the
    `start`-th interval first)."""
    totals = []
    for index in range(start, start + count):
        maps = mapper.make([frame("square", 1000.0 + index * 7.5)], [person_boxes(detector_people)])
        totals.append(float(maps[0].sum()))
    return totals


def test_the_worker_takes_a_learnt_background_floor_off_a_sparse_cameras_maps():
    mapper = zone_maps(SparseTextureDensity(people=5.0), {"max_busy_fraction": 1.0})
    totals = maps_every_interval(mapper, detector_people=1, count=12)
    assert totals[:9] == [pytest.approx(5.0)] * 9  # 5 sparse maps over at least 60 s before anything is taken off
    assert totals[9:] == [pytest.approx(0.0, abs=1e-3)] * 3  # the empty view's texture is gone; the detector's
    # count remains the zone's floor in the analytics
    assert REGISTRY.get_sample_value("cityguard_density_background_floor_people", {"camera": "square"}) == (
        pytest.approx(5.0, abs=1e-3))


def test_a_map_that_does_not_see_the_detected_people_loses_the_faint_texture_around_their_boxes():
    # The texture map puts 5 people evenly over the frame; 4 person boxes (one spot, a quarter of the rows and columns)
    # hold 5/16 of a person between them: the map does not see them, the rest of it (under 8 people) is texture.
    mapper = zone_maps(SparseTextureDensity(people=5.0), {"background_floor": {"enabled": False}})
    made = mapper.make([frame("square", 100.0)], [person_boxes(4, height=2.0)])[0]
    assert float(made.sum()) == pytest.approx(5.0 / 16)
    assert float(made[:12, :16].sum()) == pytest.approx(5.0 / 16)  # the cells under the boxes, as made
    # With the boxes holding their share (a quarter of the frame each way, 4 boxes: 0.31 people; the setting at 0.05
    # per box) or the rule off, the map goes out as made.
    for settings in ({"min_people_per_person_box": 0.05}, {"min_people_per_person_box": 0}):
        mapper = zone_maps(SparseTextureDensity(people=5.0), {"background_floor": {"enabled": False}, **settings})
        assert float(mapper.make([frame("square", 100.0)], [person_boxes(4, height=2.0)])[0].sum()) == (
            pytest.approx(5.0))


class TextureAndGroupDensity(SparseTextureDensity):
    """The texture map with a group of `group` people standing together in its bottom-right eighth of the frame each
    way (6 x 8 cells), not dense enough for a dense cell."""

    def __init__(self, people: float, group: float):
        super().__init__(people)
        self.group = group

    def density_maps(self, images: list[np.ndarray], person_boxes: list[np.ndarray | None]) -> list[np.ndarray]:
        maps = super().density_maps(images, person_boxes)
        for made in maps:
            made[-6:, -8:] += self.group / 48
        return maps


def test_a_group_behind_people_the_map_does_not_see_is_kept():
    mapper = zone_maps(TextureAndGroupDensity(people=5.0, group=12.0), {"background_floor": {"enabled": False}})
    made = mapper.make([frame("square", 100.0)], [person_boxes(4, height=2.0)])[0]
    assert float(made[-6:, -8:].sum()) == pytest.approx(12.0 + 5.0 * 48 / (48 * 64))  # the group, as made
    assert float(made.sum()) == pytest.approx(12.0 + 5.0 * 48 / (48 * 64) + 5.0 / 16, rel=0.05)  # and the boxes'


@pytest.mark.parametrize(("counter", "boxes", "expected"), [
    (SparseTextureDensity(people=40.0), 8, 32.0),  # faint everywhere, 2.5 people under 8 boxes: at most 8 taken off
    (SparseTextureDensity(people=100.0), 8, 100.0),  # more people than rescaled_max_people: not a sparse frame
    (TextureAndGroupDensity(people=5.0, group=30.0), 4, 35.0),  # a dense cell (0.6 people): not a sparse frame
    (SparseTextureDensity(people=5.0), 2, 5.0),  # too few boxes to tell what the map sees
])
def test_what_a_map_blind_to_the_detected_people_may_lose(counter, boxes, expected):
    mapper = zone_maps(counter, {"background_floor": {"enabled": False}})
    made = mapper.make([frame("square", 100.0)], [person_boxes(boxes, height=2.0)])[0]
    assert float(made.sum()) == pytest.approx(expected, rel=1e-4)


def test_the_floor_learns_from_the_maps_as_made_even_while_their_texture_is_taken_off():
    mapper = zone_maps(SparseTextureDensity(people=5.0), {"max_busy_fraction": 1.0})
    # 4 people the map does not see: the texture goes (without_texture), leaving what is under their boxes
    assert maps_every_interval(mapper, detector_people=4, count=9) == [pytest.approx(5.0 * 24 * 16 / (48 * 64))] * 9
    # then one person (too few boxes to tell): the floor learnt meanwhile takes the texture off
    assert maps_every_interval(mapper, detector_people=1, count=3, start=9) == [pytest.approx(0.0, abs=1e-3)] * 3


def test_without_the_background_floor_or_with_a_crowd_the_maps_go_out_as_made():
    off = zone_maps(SparseTextureDensity(people=5.0),
                    {"max_busy_fraction": 1.0, "background_floor": {"enabled": False}})
    assert maps_every_interval(off, detector_people=1, count=12) == [pytest.approx(5.0)] * 12
    crowded = zone_maps(SparseTextureDensity(people=300.0), {"max_busy_fraction": 1.0})
    assert maps_every_interval(crowded, detector_people=12, count=12) == [pytest.approx(300.0)] * 12


class JpegDetector:
    """Stands in for a detector that takes the JPEGs themselves (the GPU backend): the stage need not decode them."""

    def detect_jpegs(self, jpegs: list[bytes]) -> list:
        raise AssertionError("not called here")


def test_with_a_jpeg_detector_a_crowd_cameras_frame_is_decoded_on_the_cpu_only_when_chosen_for_a_map():
    zone = {"id": "z", "polygon": [[0, 0], [8, 0], [8, 8]], "area_m2": 10}
    config = parse_config({"site": "t", "cameras": [{"id": "square", "source": "0", "zones": [zone]}],
                           "model": {"max_frame_age_s": 3600}}, Path("."))
    counter = FixedCountDensity(people=40.0)
    stage = InferenceWorker(config, None, None, CameraDetectors(JpegDetector()), "group", density_counter=counter)
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    records = [SimpleNamespace(topic="frames", partition=0, offset=seq, key=b"square", value=encode(Frame(
        camera_id="square", seq=seq, captured_at=time.time() - 10 + seq, width=8, height=8, jpeg=jpeg)))
        for seq in range(3)]
    frames = [item for item, _ in stage.decode_part(stage.read_batch(records))]
    assert all(item.image is None for item in frames)  # the detector takes the JPEGs
    assert stage.zone_maps.make(frames, [person_boxes(0)] * 3).keys() == {2}  # the camera's newest frame
    assert counter.calls == 1  # decoded for its map (FixedCountDensity checks it has pixels)


def test_a_frame_whose_detection_failed_gets_no_map():
    mapper = zone_maps(FixedCountDensity(people=40.0))
    assert mapper.make([frame("square", 500.0)], [None]) == {}
    assert age("square") == float("inf")  # the camera is still due
