"""Collisions seen at contact, and the camera moving, on hand-built frame sequences (the scene of
tests/traffic/simulator.py: eastbound lane y 380-460, westbound lane y 300-380, sidewalks beyond)."""
from __future__ import annotations

import pytest

from schemas import Detections, EventState
from schemas.settings.traffic import SceneConfig
from tests.traffic.simulator import EB_Y, T0, WB_Y
from tests.traffic.test_objects_at_rest import STEP, frame, opened, run


def car(track_id: int, x: float, y: float) -> tuple[int, str, tuple]:
    """A car of 80 x 40 px whose foot (bottom centre) is at (x, y)."""
    return track_id, "car", (x - 40, y - 40, x + 40, y)


def thrown_off_heading(t: float) -> tuple[float, float]:
    """Car 1's path: eastbound at 1.5 box heights per second, thrown south at 4 s, standing on the sidewalk from 5 s."""
    if t <= 4:
        return 200 + 60 * t, 440.0
    if t <= 5:
        return 440 + 10 * (t - 4), 440 + 60 * (t - 4)
    return 450.0, 500.0


def test_a_crash_is_flagged_at_contact_and_the_standstill_after_it_continues_the_same_event():
    frames = []
    for seq in range(100):  # 20 s
        t = seq * STEP
        # Car 1 eastbound at 1.5 box heights per second; at 4 s car 2, crossing southwards as fast, hits it: car 1 is
        # thrown off its heading onto the south sidewalk and stands there from 5 s; car 2 overturns (lost from view).
        objects = [car(1, *thrown_off_heading(t))]
        if t <= 4:
            objects.append(car(2, 450.0, 170 + 60 * t))
        frames.append(frame(seq, objects))
    events = run(frames)
    collisions = opened(events)
    assert [(e.type, e.severity.value) for e in collisions] == [("collision", "critical")]
    assert collisions[0].started_at - T0 < 5.0, "flagged at contact, before car 1 came to rest"
    assert "swerved" in collisions[0].reason and "vanished" in collisions[0].reason
    assert {e.event_id for e in events} == {collisions[0].event_id}, "the standstill continues the same incident"
    assert not [e for e in events if e.state is EventState.RESOLVED], "car 1 still stands on the sidewalk"


def test_at_10_fps_a_partner_seen_only_around_the_contact_still_counts_as_vanished():
    frames = []
    for seq in range(80):  # 8 s at 10 frames per second
        t = seq * 0.1
        # Car 1 eastbound at 1.5 box heights per second is thrown off its heading at about 4 s by car 2, crossing
        # southwards fast, which the tracker confirmed one frame before the contact and loses two frames after it
        # (it overturned): car 2's motion before the contact is two samples 0.1 s apart.
        objects = [car(1, *thrown_off_heading(t))]
        if 3.75 <= t <= 4.15:
            objects.append(car(2, 450.0, 170 + 60 * t))
        frames.append(frame(seq, objects).model_copy(update={"captured_at": T0 + t}))
    collisions = opened(run(frames))
    assert [e.type for e in collisions] == ["collision"]
    assert collisions[0].started_at - T0 < 5.0, "flagged at contact, before car 1 came to rest"
    assert "vanished" in collisions[0].reason

def test_cars_overlapping_in_perspective_and_one_hidden_behind_another_raise_nothing():
    frames = []
    for seq in range(75):  # 15 s
        t = seq * STEP
        objects = [car(1, 100 + 90 * t, 445.0)]  # the faster car overtakes in the next lane of the same carriageway
        slow = (300 + 60 * t, 420.0)
        if not 5 <= t < 6:  # hidden behind the overtaking car for a second, then found again under a new id
            objects.append(car(2 if t < 5 else 3, *slow))
        frames.append(frame(seq, objects))
    assert opened(run(frames)) == []


def test_a_queue_pulling_away_at_a_green_light_is_no_collision():
    frames = []
    for seq in range(60):  # 12 s: two cars stand bumper to bumper for 4 s, then pull away together
        t = seq * STEP
        moved = 0.0 if t < 4 else 30 * (t - 4) ** 2 if t < 5 else 30 + 60 * (t - 5)
        frames.append(frame(seq, [car(1, 300 + moved, 440.0), car(2, 375 + moved, 440.0)]))
    assert [e.type for e in opened(run(frames))] == []



def test_a_car_rolling_up_to_a_vehicle_that_stood_there_when_the_camera_started_is_no_collision():
    # Car 1 already stands in the eastbound lane at the first frame; car 2 rolls up behind it at 1.5 box heights per
    # second, overlapping it in perspective, and stops at 1 s. 9 s: less than stopped_seconds.
    frames = []
    for seq in range(45):
        t = seq * STEP
        frames.append(frame(seq, [car(1, 600.0, 440.0), car(2, 490 + 60 * min(t, 1.0), 445.0)]))
    assert [e.type for e in opened(run(frames))] == []


def test_a_queue_braking_to_rest_while_its_cars_overlap_in_perspective_is_no_collision():
    # Two cars 70 px apart in the eastbound lane (their boxes overlap: contact) drive at 1.5 box heights per second,
    # brake evenly from 1 s and stand from 4 s: both came to rest after a contact at speed, but neither stopped dead.
    frames = []
    for seq in range(50):
        t = seq * STEP
        moved = 60 * t if t < 1 else 60 + 60 * (t - 1) - 10 * (t - 1) ** 2 if t < 4 else 150.0
        frames.append(frame(seq, [car(1, 370 + moved, 440.0), car(2, 300 + moved, 445.0)]))
    assert [e.type for e in opened(run(frames))] == []

def wrong_way_driver(view_moved_every: int | None) -> list[Detections]:
    """A car driving west along the eastbound lane for 10 s; the view moving every `view_moved_every` frames."""
    frames = []
    for seq in range(50):
        detections = frame(seq, [car(1, 1100 - 60 * seq * STEP, 440.0)])
        if view_moved_every and seq % view_moved_every == 0:
            detections = detections.model_copy(update={"view_moved": True})
        frames.append(detections)
    return frames


def test_while_the_camera_pans_no_rule_runs_and_afterwards_motion_is_learnt_again():
    assert [e.type for e in opened(run(wrong_way_driver(None)))] == ["wrong_way"]
    assert opened(run(wrong_way_driver(5))) == [], "the camera moved every second: every motion may be the camera's"
    late = wrong_way_driver(None)
    late[0] = late[0].model_copy(update={"view_moved": True})  # a pan at the start, then the view keeps still
    events = opened(run(late))
    assert [e.type for e in events] == ["wrong_way"]
    assert events[0].started_at - T0 >= 2.0, "rules wait for the view to keep still (view_settle_seconds)"



def red_light_queue(lane: str, cars: int, spacing: float, blobs: bool, front_hidden: bool = False) -> list[Detections]:
    """A queue at a red light: in the westbound lane with its head at x 740, just past the intersection box (no stop
    line configured), or in the eastbound lane with its head at x 460, at the stop line. `cars` cars `spacing` px
    apart (80 px boxes: overlapping in perspective), each rolling up braking evenly over 3 s one second after the one
    ahead, standing about 60 s, then pulling away one by one. The detector misses each car one frame in four (hidden
    behind the car behind it) or, `front_hidden`, loses all but the last two once they have stopped and finds them
    again as the queue moves; `blobs`: the background model shows each car from 3 s after it stopped."""
    head, behind, foot_y = (740.0, 1, WB_Y) if lane == "wb" else (460.0, -1, EB_Y)
    stand_from, stand_s = 3.0, 60.0
    all_stopped = stand_from + cars - 1
    frames = []
    for seq in range(int((all_stopped + stand_s + 2 * cars + 10) / STEP)):
        t = seq * STEP
        objects, static = [], []
        for i in range(cars):
            rest_at, go_at = stand_from + i, all_stopped + stand_s + 1.5 * i
            # Braking in and pulling away both at 20 px/s^2 (0.5 box heights per second per second), 60 px/s beyond.
            gap = rest_at - t if t < rest_at else t - go_at if t >= go_at else 0.0
            travelled = 10 * gap * gap if gap < 3 else 90 + 60 * (gap - 3)
            x = head + behind * (spacing * i + (travelled if t < rest_at else -travelled))
            if not -100 < x < 1380:
                continue
            if blobs and rest_at + 3 <= t < go_at:
                static.append(((x - 36, foot_y - 36, x + 36, foot_y - 2), T0 + rest_at + 1))
            hidden = (i < cars - 2 and all_stopped + 1 <= t < go_at) if front_hidden else (seq + 2 * i) % 4 == 0
            if not hidden:
                objects.append(car(i + 1, x, foot_y))
        frames.append(frame(seq, objects, static))
    return frames


@pytest.mark.parametrize(("lane", "cars", "spacing", "blobs", "front_hidden"), [
    ("wb", 2, 40.0, False, False),  # a car missed as the one behind it stops was taken for the same object
    ("wb", 2, 40.0, True, False),
    ("wb", 3, 40.0, False, False),
    ("wb", 6, 25.0, True, False),  # a car pulling away, missed for a frame, was taken for one stopped dead, hidden
    ("eb", 4, 45.0, True, True),  # the head at the stop line and the car behind it hidden, the background shows them
])
def test_a_queue_at_a_red_light_whose_cars_overlap_in_perspective_raises_nothing(lane, cars, spacing, blobs,
                                                                                front_hidden):
    frames = red_light_queue(lane, cars, spacing, blobs, front_hidden)
    assert [e.type for e in opened(run(frames))] == []


@pytest.mark.parametrize(("speed", "collision"), [(3.0, True), (1.2, False)])
def test_a_car_running_into_a_bus_at_its_stop_is_a_collision_and_one_closing_up_behind_it_is_not(speed, collision):
    """The bus stands at its stop from the start; car 1 comes along the westbound lane at `speed` box heights per
    second and stops dead against its back. Hitting a vehicle that stood there takes more speed than two vehicles
    coming to rest together: vehicles closing up in a queue touch in perspective, and stop short."""
    rest_x = 1110.0  # the car's box overlaps the bus's by 10 px
    frames = []
    for seq in range(75):  # 15 s
        t = seq * STEP
        bus = (7, "bus", (920.0, WB_Y - 60, 1080.0, WB_Y))
        frames.append(frame(seq, [bus, car(1, max(rest_x, 1330 - speed * 40 * t), WB_Y)]))
    collisions = [e for e in opened(run(frames)) if e.type == "collision"]
    assert len(collisions) == (1 if collision else 0)
    if collision:
        assert collisions[0].severity.value == "critical" and collisions[0].started_at - T0 < 1.9 + 5


def test_a_second_smaller_box_on_a_car_that_just_stopped_is_no_collision():
    """The detector adds a half-width box over a car that stopped dead in the junction, under a new track id: one
    vehicle detected twice touches itself, it did not hit anything."""
    frames = []
    for seq in range(60):  # 12 s
        t = seq * STEP
        x = 300 + 80 * min(t, 5.0)  # eastbound at 2 box heights per second, stopping dead at 5 s
        objects = [car(1, x, EB_Y)]
        if t >= 5.4:
            objects.append((2, "car", (x - 40, EB_Y - 38, x, EB_Y - 2)))
        frames.append(frame(seq, objects))
    assert [e.type for e in opened(run(frames))] == []


@pytest.mark.parametrize("braking", [1.5, 2.0, 3.0])
def test_a_car_braking_to_rest_behind_one_waiting_at_the_stop_line_is_no_collision(braking):
    """Car 1 waits at the eastbound stop line; car 2 comes along at 5 box heights per second and brakes evenly at
    `braking` box heights per second squared (ordinary to firm braking), coming to rest with its box 10 px into car
    1's in perspective. Fast over the second before it stopped, it was slow by the time the boxes touched."""
    speed, deceleration = 200.0, 40.0 * braking  # px/s, px/s^2 (40 px boxes)
    rest_x, rest_at = 390.0, 8.0
    frames = []
    for seq in range(100):  # 20 s
        left = max(0.0, rest_at - seq * STEP)  # time until car 2 is at rest
        braking_s = speed / deceleration
        behind = deceleration * left**2 / 2 if left <= braking_s else speed**2 / (2 * deceleration) + speed * (
            left - braking_s)
        frames.append(frame(seq, [car(1, 460.0, 440.0), (2, "car", (rest_x - behind - 40, 405.0, rest_x - behind + 40,
                                                                     445.0))]))
    assert [e.type for e in opened(run(frames))] == []


def rear_end(lead_speed: float, shove: float) -> list[Detections]:
    """Car 2 at 3 box heights per second runs into car 1 ahead of it in the eastbound lane, moving at `lead_speed`
    box heights per second, at 5 s; the hit shoves car 1 `shove` px on, and both are at rest 0.4 s later."""
    frames = []
    for seq in range(125):  # 25 s
        t = seq * STEP
        pushed = shove * min(max(t - 5.0, 0.0), 0.4) / 0.4
        lead = 500 + 40 * lead_speed * min(t, 5.0) + pushed
        follower = 500 + 40 * lead_speed * 5.0 - 75 + 120 * (min(t, 5.0) - 5.0) + pushed
        frames.append(frame(seq, [car(1, lead, EB_Y), car(2, follower, EB_Y)]))
    return frames


@pytest.mark.parametrize(("lead_speed", "shove"), [(0.0, 40.0), (0.0, 80.0), (0.4, 30.0), (1.0, 30.0)])
def test_a_car_rear_ended_standing_or_in_slow_traffic_and_shoved_on_is_one_collision(lead_speed, shove):
    """Neither car is at rest at the contact (the struck one is moving, or is shoved on and comes to rest after
    it), but the struck one was much slower than the one that hit it."""
    assert [(e.type, e.severity.value) for e in opened(run(rear_end(lead_speed, shove)))] == [
        ("collision", "critical")]


def test_cars_braking_to_rest_side_by_side_in_adjacent_lanes_are_no_collision():
    """Two cars in adjacent eastbound lanes brake normally to a stop, the farther one pulling level with the nearer
    one as their boxes start to overlap in perspective: both were moving when they touched, and neither stopped
    dead at it."""
    scene = SceneConfig.model_validate({"lanes": [
        {"id": "near", "polygon": [[0, 400], [1280, 400], [1280, 470], [0, 470]], "direction": [1, 0]},
        {"id": "far", "polygon": [[0, 330], [1280, 330], [1280, 400], [0, 400]], "direction": [1, 0]}]})

    def foot_x(t: float, speed: float, brake_at: float, deceleration: float, start: float) -> float:
        braking = min(max(t - brake_at, 0.0), speed / deceleration)
        return start + speed * min(t, brake_at) + speed * braking - deceleration * braking**2 / 2

    frames = []
    for seq in range(75):  # 15 s
        t = seq * STEP
        near = foot_x(t, 100, 5.0, 100, 0)  # 80 x 50 px: 2 box heights per second, braking at 2 per second squared
        far = foot_x(t, 130, 5.4, 110, -184)  # 80 x 40 px: 3.25 box heights per second, braking at 2.75
        frames.append(frame(seq, [(1, "car", (near - 40, 390.0, near + 40, 440.0)),
                                  (2, "car", (far - 40, 355.0, far + 40, 395.0))]))
    assert "collision" not in [e.type for e in opened(run(frames, scene))]


@pytest.mark.parametrize("track_ids", [
    {},
    {100: 9},  # the tracker gives the car a new id at the shake
    {60: 8},  # it was lost for a frame and found again under a new id before the shake
])
def test_a_stopped_car_keeps_its_incident_through_a_shake_of_the_camera(track_ids):
    """A car stopped in the eastbound lane has its stopped-vehicle event open; one frame flags the view as moved (a
    gust shakes the pole) and the picture is back in place at once: after the view settles the car is where it
    stood, and its event goes on."""
    frames, track_id = [], 7
    for seq in range(200):  # 40 s
        track_id = track_ids.get(seq, track_id)
        detections = frame(seq, [] if seq == 59 else [car(track_id, 800 - 60 * max(0.0, 3 - seq * STEP), 430.0)])
        if seq == 100:  # 20 s
            detections = detections.model_copy(update={"view_moved": True})
        frames.append(detections)
    events = run(frames)
    assert [e.type for e in opened(events)] == ["stopped_vehicle"]
    assert not [e for e in events if e.state is EventState.RESOLVED]


def test_a_stopped_car_the_camera_pans_away_from_ends_its_incident():
    """The same car, but the view pans for good: after it settles the car is elsewhere in the picture, a new view;
    its incident ends and nothing holds over from the old view."""
    frames = []
    for seq in range(200):  # 40 s
        x = 800 - 60 * max(0.0, 3 - seq * STEP) - (300 if seq >= 100 else 0)
        detections = frame(seq, [car(7, x, 430.0)])
        if seq == 100:
            detections = detections.model_copy(update={"view_moved": True})
        frames.append(detections)
    events = run(frames)
    assert [e.state for e in events][:2] == [EventState.OPENED, EventState.RESOLVED]


def braking_side_by_side(brake_at: float, stop_s: float) -> list[Detections]:
    """A far car (80 x 40 px) at 3.75 box heights per second and a near one (110 x 100 px) at 2, overlapping in
    perspective from about 1.2 s as the near one draws level, both brake evenly from `brake_at` to rest in `stop_s`
    (from 3.75 box heights per second in 1 s: firm braking)."""
    def foot_x(t: float, start: float, speed: float) -> float:
        braking = min(max(t - brake_at, 0.0), stop_s)
        return start + speed * min(t, brake_at) + speed * braking - speed / stop_s * braking**2 / 2

    frames = []
    for seq in range(50):  # 10 s: both stand from 4 s at the latest, as long as a collision's standstill takes
        t = seq * STEP
        far, near = foot_x(t, 100, 150), foot_x(t, -50, 200)
        frames.append(frame(seq, [(1, "car", (far - 40, 400.0, far + 40, 440.0)),
                                  (2, "car", (near - 55, 420.0, near + 55, 520.0))]))
    return frames


BRAKED_ALMOST_TO_REST_AT_CONTACT = pytest.mark.xfail(strict=True, reason=(
    "braking from 0.8 s to rest at 2.3 s, the near car already counts as at rest when their boxes touch at about "
    "2.0 s, so it reads as a car standing there when struck; telling the two apart by its motion over the half second "
    "before the contact would lose a head-on that falls between two frames at 2 fps"))


@pytest.mark.parametrize(("brake_at", "stop_s"), [
    pytest.param(brake_at, stop_s, marks=[BRAKED_ALMOST_TO_REST_AT_CONTACT] if (brake_at, stop_s) == (0.8, 1.5) else [])
    for brake_at in (0.8, 1.0, 1.2, 1.4, 2.0) for stop_s in (1.0, 1.5, 2.0)])
def test_cars_overlapping_in_perspective_braking_firmly_to_rest_side_by_side_are_no_collision(brake_at, stop_s):
    """Each keeps its lane and heading and loses speed no faster than brakes slow a car, whenever the braking starts
    against the moment their boxes first touch."""
    scene = SceneConfig.model_validate({"lanes": [
        {"id": "far", "polygon": [[0, 380], [1280, 380], [1280, 460], [0, 460]], "direction": [1, 0]},
        {"id": "near", "polygon": [[0, 460], [1280, 460], [1280, 560], [0, 560]], "direction": [1, 0]}]})
    assert "collision" not in [e.type for e in opened(run(braking_side_by_side(brake_at, stop_s), scene))]


def test_two_cars_stopping_dead_where_they_meet_are_a_collision_at_contact():
    """Car 1 eastbound and car 2 southbound, both at 4 box heights per second, meet in the junction at 3 s and stand
    there from that frame on: they lost their speed far faster than brakes do, so the collision is raised at the
    contact, before their standstill would raise it."""
    frames = []
    for seq in range(int(6 / STEP)):
        t = min(seq * STEP, 3.0)
        objects = [car(1, 640 - 160 * (3.0 - t), EB_Y)]
        if seq * STEP >= 1.5:
            objects.append(car(2, 650.0, 410 - 160 * (3.0 - t)))
        frames.append(frame(seq, objects))
    collisions = opened(run(frames))
    assert [(e.type, e.severity.value) for e in collisions] == [("collision", "critical")]
    assert collisions[0].started_at - T0 < 4.0 and "stopped dead" in collisions[0].reason


def detections_at(seq: int, at: float, objects: list[tuple[int, str, tuple]]) -> Detections:
    return Detections(camera_id="sim", seq=seq, captured_at=T0 + at, image_width=1280, image_height=720, model="test",
                      inference_ms=0.0, xyxy=[box for _, _, box in objects], confidence=[0.8] * len(objects),
                      class_id=[0] * len(objects), class_name=[name for _, name, _ in objects],
                      track_id=[track_id for track_id, _, _ in objects])


@pytest.mark.parametrize("fps", [2, 4, 5])
@pytest.mark.parametrize("phase", [0.0, 0.1, 0.25])
def test_two_cars_meeting_between_two_frames_at_a_low_frame_rate_are_a_collision(fps, phase):
    """The crash at 3.0 s falls between two frames: the frame before shows both moving at full speed, the one after
    both standing where they met."""
    frames = []
    for seq in range(int(8 * fps)):
        at = phase + seq / fps
        t = min(at, 3.0)
        objects = [car(1, 640 - 160 * (3.0 - t), EB_Y)]
        if at >= 1.5:
            objects.append(car(2, 650.0, 410 - 160 * (3.0 - t)))
        frames.append(detections_at(seq, at, objects))
    assert [(e.type, e.severity.value) for e in opened(run(frames))] == [("collision", "critical")]


@pytest.mark.parametrize("fps", [2, 4, 5, 10])
def test_a_car_knocked_back_along_its_lane_within_a_frame_at_a_low_frame_rate_is_a_collision(fps):
    """Driving east at 60 px/s, knocked 150 px back west within 0.5 s (at 2 fps: between two frames), then standing."""
    frames = []
    for seq in range(int(16.5 * fps)):
        t = seq / fps
        x = 900 + 60 * min(t, 2.0) - 300 * min(max(t - 2.0, 0.0), 0.5)
        frames.append(detections_at(seq, t, [(5, "car", (x - 40, 400.0, x + 40, 440.0))]))
    assert [(e.type, e.severity.value) for e in opened(run(frames))] == [("collision", "critical")]
