"""Two vehicles converging into one box (a crash never seen as two touching boxes): specification on hand-built
frames of a crossroads drawn as one zone where nobody may stop (no lane directions, as at the dev set's night
crossroads), and the real night crossroads crash of the traffic dev set, replayed from its recording."""
from __future__ import annotations

import pytest

from cityguard.replay import CLIP_ORIGIN_S
from processors.analytics.traffic.converging import CONVERGED_MIN_SECONDS
from schemas import UNTRACKED, Detections
from schemas.settings.traffic import SceneConfig
from tests.replay.test_dev_clips import opened_events
from tests.traffic.simulator import T0
from tests.traffic.test_objects_at_rest import STEP, frame, opened, run

CROSSROADS = SceneConfig.model_validate(
    {"no_stopping_zones": [{"id": "carriageway", "polygon": [[0, 0], [1280, 0], [1280, 720], [0, 720]]}]})
CONTACT_S = 1.4  # the first frame showing one box


def box_at(foot_x: float, foot_y: float, width: float = 80, height: float = 40) -> tuple:
    return foot_x - width / 2, foot_y - height, foot_x + width / 2, foot_y


def union(a: tuple, b: tuple) -> tuple:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def crossing_cars(t: float) -> tuple[tuple, tuple]:
    """Car A eastbound at 250 px/s (6 box heights per second), car B southbound across it at 200 px/s: their boxes
    are apart up to 1.2 s and would touch at 1.4 s."""
    return box_at(200 + 250 * t, 430.0), box_at(600.0, 110 + 200 * t)


def converging_frames(ids: tuple[int, int] = (UNTRACKED, UNTRACKED), merged_id: int = UNTRACKED) -> list:
    """4 s of the crossing cars under `ids` until they meet, then locked together under `merged_id`, sliding a little
    further east and coming to rest as one box."""
    a_end, b_end = crossing_cars(CONTACT_S)
    wreck = union(a_end, b_end)
    frames = []
    for seq in range(20):
        t = seq * STEP
        if t < CONTACT_S - 1e-9:
            a, b = crossing_cars(t)
            objects = [(ids[0], "car", a), (ids[1], "car", b)]
        else:
            shift = min(t - CONTACT_S, 0.6) * 40
            objects = [(merged_id, "car", (wreck[0] + shift, wreck[1], wreck[2] + shift, wreck[3]))]
        frames.append(frame(seq, objects))
    return frames


@pytest.mark.parametrize(("ids", "merged_id"), [((UNTRACKED, UNTRACKED), UNTRACKED), ((1, 2), 1)],
                         ids=["unconfirmed detections", "confirmed tracks"])
def test_two_fast_vehicles_converging_into_one_box_that_stays_one_are_a_collision(ids, merged_id):
    collisions = opened(run(converging_frames(ids, merged_id), CROSSROADS))
    assert [(e.type, e.severity.value) for e in collisions] == [("collision", "critical")]
    # Seen as one box at 1.4 s, and still one box, come to rest, 0.4 s later.
    assert collisions[0].started_at - T0 == pytest.approx(CONTACT_S + CONVERGED_MIN_SECONDS)
    assert "closing at" in collisions[0].reason


def test_a_collision_outside_every_lane_and_zone_drawn_is_not_watched():
    """A frontage road or car park the operator left out of the scene: vehicles there hiding one another are no
    crash on the watched road."""
    far_lane = SceneConfig.model_validate(
        {"lanes": [{"id": "far", "polygon": [[0, 0], [1280, 0], [1280, 100], [0, 100]], "direction": [1, 0]}]})
    assert opened(run(converging_frames(), far_lane)) == []
    assert [e.type for e in opened(run(converging_frames(), CROSSROADS))] == ["collision"]


def passing_cars(t: float) -> tuple[tuple, tuple]:
    """Street-level perspective: car A eastbound near the camera (80 x 40 px), car B westbound in the far lane
    (60 x 30 px), both at 250 px/s: closing on each other at 14 box heights per second, their boxes apart up to
    1.4 s; A passes in front of B at 1.6 s."""
    return box_at(200 + 250 * t, 430.0), box_at(1030 - 250 * t, 415.0, 60, 30)


@pytest.mark.parametrize(("detected_as", "frames_as_one"), [("the nearer car", 2), ("one box over both", 1)])
def test_vehicles_passing_each_other_in_perspective_stay_quiet(detected_as, frames_as_one):
    frames = []
    for seq in range(25):  # 5 s
        t = seq * STEP
        a, b = passing_cars(t)
        if 1.6 - 1e-9 < t < 1.6 + frames_as_one * STEP - 1e-9:
            # While they pass, the detector sees the nearer car only (the farther one hidden behind it for two
            # frames), or one box over both for a frame.
            objects = [(UNTRACKED, "car", a if detected_as == "the nearer car" else union(a, b))]
        else:
            objects = [(UNTRACKED, "car", a), (UNTRACKED, "car", b)]
        frames.append(frame(seq, objects))
    assert opened(run(frames, CROSSROADS)) == []


def opposite_lanes_passing(fps: float, phase: float, merged_over_px: float) -> list[Detections]:
    """Two cars (80 x 40 px) passing each other at 200 px/s in adjacent opposite lanes, 8 s at `fps`, starting
    `phase` seconds in: while their boxes overlap by more than `merged_over_px`, the detector reports one box over both
    under the near car's id; then they come apart and drive on."""
    frames = []
    for seq in range(int(8 * fps)):
        t = seq / fps + phase
        east, west = box_at(140 + 200 * t, 400.0), box_at(1140 - 200 * t, 350.0)
        if min(east[2], west[2]) - max(east[0], west[0]) > merged_over_px:
            objects = [(1, "car", union(east, west))]
        else:
            objects = [(1, "car", east), (2, "car", west)]
        frames.append(Detections(
            camera_id="sim", seq=seq, captured_at=T0 + seq / fps, image_width=1280, image_height=720, model="test",
            inference_ms=0.0, xyxy=[box for _, _, box in objects], confidence=[0.8] * len(objects),
            class_id=[0] * len(objects), class_name=[name for _, name, _ in objects],
            track_id=[track_id for track_id, _, _ in objects]))
    return frames


@pytest.mark.parametrize(("fps", "merged_over_px"), [(25, 60), (25, 20), (10, 40), (5, 10)],
                         ids=["25 fps, one box 1-2 frames", "25 fps, one box 0.3 s", "10 fps", "5 fps, one box 0.35 s"])
@pytest.mark.parametrize("phase", [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18])
def test_cars_passing_in_opposite_lanes_seen_as_one_box_for_a_moment_stay_quiet(fps, merged_over_px, phase):
    assert opened(run(opposite_lanes_passing(fps, phase, merged_over_px), CROSSROADS)) == []


def test_two_vehicles_converging_into_one_box_that_drives_on_at_speed_stay_quiet():
    """One box where both were heading, that goes on at their speed: one vehicle passing over the other in the image
    (a bridge above a road), not two locked together."""
    frames = []
    for seq in range(20):
        t = seq * STEP
        if t < CONTACT_S - 1e-9:
            a, b = crossing_cars(t)
            objects = [(UNTRACKED, "car", a), (UNTRACKED, "car", b)]
        else:
            a, b = crossing_cars(CONTACT_S)
            drive_on = (t - CONTACT_S) * 250  # eastward at car A's speed
            one = union(a, b)
            objects = [(UNTRACKED, "car", (one[0] + drive_on, one[1], one[2] + drive_on, one[3]))]
        frames.append(frame(seq, objects))
    assert opened(run(frames, CROSSROADS)) == []


def test_the_night_crossroads_crash_is_one_collision_within_its_labelled_window():
    events = opened_events("lzk-night-crash")
    assert [(e.type, e.severity.value) for e in events] == [("collision", "critical")]
    # Labelled: contact at 1.8 s, the clip ends at 3.8 s (the cars slide out of view together).
    assert 1.8 <= events[0].started_at - CLIP_ORIGIN_S <= 3.8


def test_a_car_closing_up_on_a_queue_and_detected_as_one_box_with_it_stays_quiet():
    standing = box_at(600.0, 430.0)
    frames = []
    for seq in range(25):  # 5 s
        t = seq * STEP
        # Rolling up behind the standing car at 30 px/s (under 1 box height per second) until bumper to bumper at
        # 2 s; from then on the detector sees the two as one box.
        closing_up = box_at(min(460 + 30 * t, 520.0), 430.0)
        objects = ([(UNTRACKED, "car", union(standing, closing_up))] if t > 2 - 1e-9
                   else [(UNTRACKED, "car", standing), (UNTRACKED, "car", closing_up)])
        frames.append(frame(seq, objects))
    assert opened(run(frames, CROSSROADS)) == []


def test_a_box_without_height_closing_fast_on_another_is_skipped_not_a_failure():
    """A detection clipped to a line (zero height) closing fast on another vehicle, then one large box where both were
    heading: a box without size has no speed in box heights to measure; the frame goes through."""
    frames = [[(UNTRACKED, "car", (500.0, 400.0, 560.0, 400.0)), (UNTRACKED, "car", (700.0, 390.0, 780.0, 430.0))],
              [(UNTRACKED, "car", (540.0, 400.0, 600.0, 400.0)), (UNTRACKED, "car", (660.0, 390.0, 740.0, 430.0))],
              [(UNTRACKED, "car", (560.0, 370.0, 760.0, 440.0))]]
    assert opened(run([frame(seq, objects) for seq, objects in enumerate(frames)], CROSSROADS)) == []


@pytest.mark.parametrize("fps", [25, 10, 5])
def test_a_wreck_the_detector_splits_into_its_two_cars_for_one_frame_is_still_a_collision(fps):
    """One box from the contact on, but for one frame 0.2 s after it that shows the two cars again: a detector's
    lapse, which the more frames a second the likelier it is within CONVERGED_MIN_SECONDS."""
    a_end, b_end = crossing_cars(CONTACT_S)
    wreck = union(a_end, b_end)
    frames = []
    for seq in range(int(4 * fps)):
        t = seq / fps
        if t < CONTACT_S - 1e-9:
            objects = [(UNTRACKED, "car", box) for box in crossing_cars(t)]
        elif abs(t - (CONTACT_S + 0.2)) < 0.5 / fps:
            objects = [(UNTRACKED, "car", a_end), (UNTRACKED, "car", b_end)]
        else:
            shift = min(t - CONTACT_S, 0.6) * 40
            objects = [(UNTRACKED, "car", (wreck[0] + shift, wreck[1], wreck[2] + shift, wreck[3]))]
        frames.append(Detections(camera_id="sim", seq=seq, captured_at=T0 + t, image_width=1280, image_height=720,
                                 model="test", inference_ms=0.0, xyxy=[box for _, _, box in objects],
                                 confidence=[0.8] * len(objects), class_id=[0] * len(objects),
                                 class_name=["car"] * len(objects), track_id=[i for i, _, _ in objects]))
    assert [(e.type, e.severity.value) for e in opened(run(frames, CROSSROADS))] == [("collision", "critical")]
