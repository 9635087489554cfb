"""Boxes and geometry in the camera's own pixels, whatever size capture scales its frames to."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from processors.analytics.registry import PictureCheck, geometry_mismatch, narrow_crowd_picture
from processors.inference.stage import in_source_pixels
from schemas import Detections, Frame, decode, encode
from schemas.detections import StaticBlob
from schemas.settings.config import CameraConfig, load_config

JPEG = b"\xff\xd8\xff\xd9"


def frame(**size) -> Frame:
    return Frame(camera_id="c", seq=1, captured_at=1000.0, jpeg=JPEG, **size)


def detections(width: int, height: int) -> Detections:
    density = np.full((9, 16), 0.5, dtype=np.float32)
    return Detections(
        camera_id="c", seq=1, captured_at=1000.0, image_width=width, image_height=height, model="m", inference_ms=1.0,
        xyxy=[(100.0, 50.0, 200.0, 250.0)], confidence=[0.9], class_id=[2], class_name=["car"], track_id=[7],
        static_blobs=[StaticBlob(xyxy=(10.0, 20.0, 30.0, 40.0), static_since=990.0, fill_ratio=0.8)],
        density_map=density.tobytes(), density_map_shape=density.shape)


def test_a_scaled_frames_boxes_and_static_blobs_go_back_to_the_cameras_pixels():
    scaled = in_source_pixels(detections(1280, 720), frame(width=1280, height=720, source_width=1920,
                                                           source_height=1080))
    assert (scaled.image_width, scaled.image_height) == (1920, 1080)
    assert scaled.xyxy == [(150.0, 75.0, 300.0, 375.0)]
    assert scaled.static_blobs[0].xyxy == (15.0, 30.0, 45.0, 60.0) and scaled.static_blobs[0].fill_ratio == 0.8
    assert scaled.track_id == [7] and scaled.density_map == detections(1280, 720).density_map  # a grid: unchanged
    assert decode(encode(scaled), Detections) == scaled
    unscaled = detections(768, 576)
    assert in_source_pixels(unscaled, frame(width=768, height=576)) is unscaled


@pytest.mark.parametrize("size", [{"source_width": 1920}, {"source_width": 640, "source_height": 360}])
def test_a_frames_source_size_comes_whole_and_never_below_the_jpegs(size):
    with pytest.raises(ValueError, match="source_width and source_height"):
        frame(width=1280, height=720, **size)
    assert frame(width=1280, height=720, source_width=1920, source_height=1080).source_size == (1920, 1080)


def test_geometry_drawn_on_the_scaled_frame_is_named_with_the_factor_once_per_picture_size():
    camera = load_config(Path("tests/devsets/traffic/site.yaml")).camera("bangkok-jam")  # drawn at 1920x1080
    on_scaled_frame = CameraConfig.model_validate(camera.model_dump() | {"scene": {
        **camera.scene.model_dump(),
        "lanes": [lane.model_dump() | {"polygon": [(x / 1.5, y / 1.5) for x, y in lane.polygon]}
                  for lane in camera.scene.lanes],
        "sidewalks": [area.model_dump() | {"polygon": [(x / 1.5, y / 1.5) for x, y in area.polygon]}
                      for area in camera.scene.sidewalks]}})
    assert geometry_mismatch(camera, 1920, 1080) is None
    warning = geometry_mismatch(on_scaled_frame, 1920, 1080)
    assert "1280x720 frame capture scales its 1920x1080 picture to" in warning and "multiply" in warning
    assert "by 1.5 " in warning
    check = PictureCheck()
    assert check.warnings(on_scaled_frame, detections(1920, 1080)) == [warning]
    assert check.warnings(on_scaled_frame, detections(1920, 1080)) == []  # said once
    outside, resized = check.warnings(camera, detections(1280, 720))
    assert outside.startswith("camera bangkok-jam: scene.lanes[away]")
    assert resized.startswith("camera bangkok-jam: its picture changed from 1920x1080 to 1280x720")


def test_a_crowd_camera_counted_on_a_narrow_picture_is_named_once():
    zone = {"id": "z", "area_m2": 10, "polygon": [[0, 0], [300, 0], [300, 200]]}
    crowd = CameraConfig.model_validate({"id": "c", "source": "c.mp4", "zones": [zone]})
    assert narrow_crowd_picture(crowd, 640) is None and narrow_crowd_picture(crowd, 1920) is None
    warning = narrow_crowd_picture(crowd, 352)
    assert warning.startswith("camera c: its crowd zones are counted on a picture 352 px wide: below 640 px")
    # The picture the models see is the one capture scales the stream to.
    scaled = CameraConfig.model_validate({"id": "c", "source": "c.mp4", "max_width": 512, "zones": [zone]})
    assert "a picture 512 px wide" in narrow_crowd_picture(scaled, 1920)
    no_zones = CameraConfig.model_validate({"id": "t", "source": "t.mp4"})
    assert narrow_crowd_picture(no_zones, 352) is None
    check = PictureCheck()
    assert check.warnings(crowd, detections(352, 288)) == [narrow_crowd_picture(crowd, 352)]
    assert check.warnings(crowd, detections(352, 288)) == []


def test_every_kind_of_image_point_is_checked_against_the_picture():
    camera = CameraConfig.model_validate({"id": "c", "source": "c.mp4", "zones": [
        {"id": "z", "area_m2": 10, "polygon": [[0, 0], [90, 0], [90, 90]],
         "entrances": [{"id": "e", "start": [0, 0], "end": [0, 150]}]}], "scene": {
        "lanes": [{"id": "l", "polygon": [[0, 0], [90, 0], [90, 90]], "direction": [0, 500]}],
        "stop_lines": [{"id": "s", "start": [0, 0], "end": [10, 0], "queue_area": [[0, 0], [90, 0], [90, 300]]}],
        "counting_lines": [{"id": "n", "start": [200, 0], "end": [10, 0]}]}})
    assert camera.geometry_outside(100, 100) == [
        "zones[z].entrances[e].end reaches (0, 150)", "scene.stop_lines[s].queue_area reaches (90, 300)",
        "scene.counting_lines[n].start reaches (200, 0)"]  # a lane's direction is a vector, not a point


def test_a_camera_whose_picture_changes_size_is_named_once_per_new_size():
    zone = {"id": "z", "area_m2": 10, "polygon": [[0, 0], [600, 0], [600, 300]]}
    crowd = CameraConfig.model_validate({"id": "c", "source": "c.mp4", "zones": [zone]})
    check = PictureCheck()
    assert check.warnings(crowd, detections(1280, 720)) == []
    [resized] = check.warnings(crowd, detections(1920, 1080))
    assert resized == ("camera c: its picture changed from 1280x720 to 1920x1080: zones, lines and regions stay in "
                       "the pixels of the picture they were drawn on, so they now cover another part of the scene; "
                       "if they were drawn on the 1280x720 picture, multiply their coordinates by 1.5")
    # A stream alternating between sizes it has sent is not named at every frame.
    assert [check.warnings(crowd, detections(*size)) for size in [(1280, 720), (1920, 1080)] * 3] == [[]] * 6
    [other_shape] = check.warnings(crowd, detections(1280, 1024))
    assert other_shape.endswith("picture, redraw them (the width changed 0.6667-fold, the height 0.9481-fold)")
    bare = CameraConfig.model_validate({"id": "n", "source": "n.mp4"})
    check.warnings(bare, detections(1280, 720))
    assert check.warnings(bare, detections(1920, 1080)) == []  # no geometry to misplace
