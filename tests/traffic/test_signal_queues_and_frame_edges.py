"""A queue at a signal is not congestion, however full its lane; a person cut off by the frame's bottom edge is not
placed on the roadway, nor is a "person" that never goes anywhere (a post), nor are "people" flowing along a lane with
its traffic or standing in a waiting red-light queue (riders), nor is a box cut by a side edge driving the wrong way.
Hand-built frames on an approach lane drawn only up to its stop line (x 0-470, y 380-460, traffic eastbound), unless
said otherwise."""
from __future__ import annotations

from schemas.settings.traffic import SceneConfig
from tests.traffic.simulator import T0
from tests.traffic.test_objects_at_rest import STEP, frame, opened, run

APPROACH = [[0, 380], [470, 380], [470, 460], [0, 460]]
STOP_LINE = {"id": "stop", "start": [470, 380], "end": [470, 460], "queue_area": APPROACH}


def approach(stop_line: bool, max_red_light_seconds: float = 180) -> SceneConfig:
    return SceneConfig.model_validate({
        "lanes": [{"id": "approach", "polygon": APPROACH, "direction": [1, 0]}],
        "stop_lines": [STOP_LINE] if stop_line else [],
        "thresholds": {"max_red_light_seconds": max_red_light_seconds},
    })


def full_queue(stand_s: float) -> list:
    """A bus at the head, its front at the stop line (its foot point 100 px behind it), and four cars behind it
    filling the lane, standing `stand_s` seconds; then all pull away east at 60 px/s."""
    frames = []
    for seq in range(int((stand_s + 12) / STEP)):
        t = seq * STEP
        moved = 60 * max(0.0, t - stand_s)
        objects = [(1, "bus", (270 + moved, 390, 470 + moved, 450))]
        objects += [(2 + i, "car", (180 - 90 * i + moved, 410, 260 - 90 * i + moved, 450)) for i in range(3)]
        frames.append(frame(seq, objects))
    return frames


def test_a_full_lane_waiting_at_a_red_light_is_not_congestion():
    assert opened(run(full_queue(60), approach(stop_line=True))) == []


def test_the_same_lane_full_without_a_signal_or_standing_longer_than_a_red_light_is_congestion():
    without_signal = opened(run(full_queue(60), approach(stop_line=False)))
    assert [e.type for e in without_signal] == ["congestion"]
    stuck = opened(run(full_queue(90), approach(stop_line=True, max_red_light_seconds=30)))
    assert [e.type for e in stuck] == ["congestion"]
    assert stuck[0].started_at - T0 > 30, "counted once the queue stood longer than a red light can"


def test_a_person_standing_in_a_waiting_red_light_queue_is_a_rider_and_one_walking_through_it_is_not():
    """Beside the queue, a "person" stands in the lane: a rider whose motorcycle the cars around it hide, its box
    jumping half its height once (the detector's box over a hidden two-wheeler), so it has moved away from where it
    was first seen. Waiting, it is a rider; one walking along the queue at a body height per second is on foot."""
    def beside_the_queue(walk_px_per_s: float) -> list:
        frames = full_queue(60)[:int(30 / STEP)]
        for seq, detections in enumerate(frames):
            t = seq * STEP
            x, jump = 40 + walk_px_per_s * t, -25 if t >= 3 else 0
            queue = zip(detections.track_id, detections.class_name, map(tuple, detections.xyxy), strict=True)
            frames[seq] = frame(seq, [*queue, (20, "person", (x, 400 + jump, x + 20, 450 + jump))])
        return frames

    assert opened(run(beside_the_queue(0), approach(stop_line=True))) == []
    walking = opened(run(beside_the_queue(50), approach(stop_line=True)))
    assert [e.type for e in walking] == ["pedestrian_on_roadway"]


def lorries_nose_to_tail(speed_px_per_s: float, seconds: float = 40) -> list:
    """Lorries (200x60 px boxes) 20 px apart driving east through the lane at `speed_px_per_s`, covering most of it
    all the time: what a stream of traffic looks like passing close to the camera."""
    frames = []
    for seq in range(int(seconds / STEP)):
        head = speed_px_per_s * seq * STEP
        lefts = [head - 220 * i for i in range(int(head // 220) + 1)]
        frames.append(frame(seq, [(1 + i, "truck", (x, 390, x + 200, 450)) for i, x in enumerate(lefts) if x < 470]))
    return frames


def test_traffic_flowing_through_a_lane_it_fills_is_not_congestion_and_the_same_traffic_crawling_is():
    assert opened(run(lorries_nose_to_tail(90), approach(stop_line=False))) == []  # 1.5 box heights per second
    crawling = opened(run(lorries_nose_to_tail(15), approach(stop_line=False)))  # 0.25 box heights per second
    assert [e.type for e in crawling] == ["congestion"]


def test_a_person_cut_off_by_the_bottom_of_the_frame_is_not_placed_on_the_roadway():
    """Only a rider's head and shoulders are in the picture, at the bottom edge of an approach lane: where the
    person stands (or rides) is below the frame."""
    edge = SceneConfig.model_validate({
        "lanes": [{"id": "approach", "polygon": [[0, 600], [1280, 600], [1280, 760], [0, 760]], "direction": [1, 0]}],
    })
    def walked(seq: int) -> int:
        return 2 * min(seq, 30)

    cut_off = [frame(seq, [(1, "person", (600 + walked(seq), 660, 650 + walked(seq), 720))]) for seq in range(50)]
    assert opened(run(cut_off, edge)) == []
    whole = [frame(seq, [(1, "person", (600, 580 + walked(seq), 630, 640 + walked(seq)))]) for seq in range(50)]
    assert [e.type for e in opened(run(whole, edge))] == ["pedestrian_on_roadway"]



def test_a_person_that_never_goes_anywhere_is_a_post_until_it_walks():
    """Read as a person on the roadway's edge from its first frame and standing there, jittering a few pixels: a
    marker post. The same box walking into the lane is a person on the roadway."""
    edge = SceneConfig.model_validate({
        "lanes": [{"id": "approach", "polygon": [[0, 400], [1280, 400], [1280, 600], [0, 600]], "direction": [1, 0]}],
    })
    post = [frame(seq, [(1, "person", (600 + seq % 3, 450, 620 + seq % 3, 500))]) for seq in range(100)]
    assert opened(run(post, edge)) == []
    walking = [frame(seq, [(1, "person", (600, 450 + min(seq, 30) * 2, 620, 500 + min(seq, 30) * 2))])
               for seq in range(100)]
    assert [e.type for e in opened(run(walking, edge))] == ["pedestrian_on_roadway"]


def people_walking_along_a_lane(people: list[tuple[int, int, int, int]]) -> list:
    """People walking along an approach lane at 5 px a frame (half a body height per second), 100 frames: per person
    (track id, x offset, first frame, last frame)."""
    return [frame(seq, [(track_id, "person", (100 + offset + 5 * seq, 450, 120 + offset + 5 * seq, 500))
                        for track_id, offset, first, last in people if first <= seq <= last]) for seq in range(100)]


LANE = SceneConfig.model_validate({
    "lanes": [{"id": "approach", "polygon": [[0, 400], [1280, 400], [1280, 600], [0, 600]], "direction": [1, 0]}],
})


def test_people_walking_together_on_the_roadway_are_one_incident_and_people_apart_are_two():
    together = run(people_walking_along_a_lane([(1, 0, 0, 99), (2, 30, 20, 99)]), LANE)
    assert [(e.type, e.track_ids) for e in opened(together)] == [("pedestrian_on_roadway", [1])]
    assert together[-1].track_ids == [1, 2]
    apart = opened(run(people_walking_along_a_lane([(1, 0, 0, 99), (2, 400, 20, 99)]), LANE))
    assert [(e.type, e.track_ids) for e in apart] == [("pedestrian_on_roadway", [1]), ("pedestrian_on_roadway", [2])]


def test_three_people_moving_along_a_lane_with_its_traffic_are_riders_and_three_crossing_it_are_not():
    """At night the detector finds riders but not their motorcycles: three or more "people" flowing along a lane in
    its direction are a stream of two-wheelers. Two walking along it, or three crossing it, are people on foot."""
    stream = opened(run(people_walking_along_a_lane([(1, 0, 0, 99), (2, 150, 0, 99), (3, 300, 0, 99)]), LANE))
    assert stream == []
    crossing = [frame(seq, [(track_id, "person", (300 + 200 * track_id, 380 + 5 * seq, 320 + 200 * track_id,
                                                  430 + 5 * seq)) for track_id in (1, 2, 3)]) for seq in range(40)]
    assert {e.type for e in opened(run(crossing, LANE))} == {"pedestrian_on_roadway"}


def test_a_person_on_the_roadway_found_again_under_a_new_track_id_is_the_same_incident():
    switched = run(people_walking_along_a_lane([(1, 0, 0, 49), (2, 0, 51, 99)]), LANE)
    assert [(e.type, e.track_ids) for e in opened(switched)] == [("pedestrian_on_roadway", [1])]
    joined = next(e for e in switched if e.track_ids == [1, 2])
    assert joined.details["seconds_on_roadway"] >= 9  # since person 1 stepped onto the roadway, not person 2


def test_a_red_light_queue_whose_head_stops_short_of_the_line_is_excused_at_any_resolution():
    """Three cars wait 60 s at the red light, the head's front 40 px (its box height, a metre or so) short of the stop
    line; the same scene drawn and seen by a 4K camera (3 times the pixels) is the same queue."""
    for scale in (1, 3):
        lane = [[x * scale, y * scale] for x, y in APPROACH]
        scene = SceneConfig.model_validate({
            "lanes": [{"id": "approach", "polygon": lane, "direction": [1, 0]}],
            "stop_lines": [{"id": "stop", "start": [470 * scale, 380 * scale], "end": [470 * scale, 460 * scale],
                            "queue_area": lane}]})
        frames = []
        for seq in range(int(90 / STEP)):
            t = seq * STEP
            objects = []
            for i in range(3):  # 120 x 40 px cars arriving at 60 px/s, at rest from 5 s, pulling away at 65 s
                x = 310 - 140 * i - 60 * max(0.0, 5 - t) + 60 * max(0.0, t - 65)
                if x <= 470:
                    objects.append((i + 1, "car", (x * scale, 410 * scale, (x + 120) * scale, 450 * scale)))
            frames.append(frame(seq, objects).model_copy(
                update={"image_width": 1280 * scale, "image_height": 720 * scale}))
        assert opened(run(frames, scene)) == [], scale


def test_a_lone_car_waiting_with_its_front_out_of_the_picture_is_excused_as_long_as_a_red_light_lasts():
    """A car drives east and stops with its front cut off by the right frame edge, where the signal it waits for is
    out of view, as the head of a queue there would be: excused for up to max_red_light_seconds (180 s). One standing
    with its back cut off by the left edge has nothing out of view ahead of it."""
    def waiting(seconds: float) -> list:
        frames = []
        for seq in range(int(seconds / STEP)):
            foot_x = 1260.0 - max(0.0, 2 - seq * STEP) * 100  # arriving at 100 px/s, at rest from 2 s
            frames.append(frame(seq, [(7, "car", (foot_x - 40, 390.0, min(foot_x + 40, 1280.0), 430.0))]))
        return frames

    assert opened(run(waiting(60))) == []
    [event] = opened(run(waiting(200)))
    assert event.type == "stopped_vehicle" and 180 <= event.started_at - T0 <= 193
    back_cut = [frame(seq, [(7, "car", (0.0, 390.0, 60.0, 430.0))]) for seq in range(int(15 / STEP))]
    assert [e.type for e in opened(run(back_cut))] == ["stopped_vehicle"]


EDGE_LANE = SceneConfig.model_validate({"lanes": [
    {"id": "towards", "polygon": [[0, 200], [400, 200], [400, 700], [0, 700]], "direction": [0, 1]}]})


def handed_on_at_the_frame_edge() -> list:
    """A lorry in a lane coming down the picture turns out of view at its left edge over 2 s (its box cut by the
    edge, ever narrower); the tracker hands its id to a bus standing behind it at the edge, whose box's bottom rises
    by 240 px over 3 s as the lorry leaving in front of it hides its lower part."""
    frames = []
    for seq in range(40):
        t = seq * STEP
        if t < 2:
            box = (0.0, 420.0, 300 - 120 * t, 620.0)
        else:
            box = (0.0, 200.0, 220.0, 620 - 80 * min(t - 2, 3.0))
        frames.append(frame(seq, [(5, "truck" if t < 2 else "bus", box)]))
    return frames


def test_a_box_cut_by_the_frame_edge_handed_from_vehicle_to_vehicle_is_not_driving_the_wrong_way():
    assert [e.type for e in opened(run(handed_on_at_the_frame_edge(), EDGE_LANE))] == []


def test_a_patch_in_a_standing_red_light_queue_is_vehicles_queued_not_an_obstacle():
    """A car waits at the stop line for 30 s; behind it the background model shows a patch the detector boxes
    nothing in (motorcycles packed in the queue) from 1 s until the queue leaves at 30 s: it waits in the queue as
    the car does, and is timed from when the queue leaves."""
    frames = []
    for seq in range(int(40 / STEP)):
        t = seq * STEP
        head = 420 + 100 * max(0.0, t - 30)  # pulls away at green
        objects = [(1, "car", (head - 40, 410.0, head + 40, 450.0))] if head < 470 else []
        blobs = [((200.0, 400.0, 330.0, 450.0), T0 + 1.0)] if 1 <= t < 31 else []
        frames.append(frame(seq, objects, blobs))
    assert opened(run(frames, approach(stop_line=True))) == []


LANE_OUT_AT_THE_EDGE = SceneConfig.model_validate({"lanes": [
    {"id": "out", "polygon": [[0, 300], [200, 300], [200, 460], [0, 460]], "direction": [-1, 0]}]})


def turning_out_at_the_left_edge() -> list:
    """Lorries turn out of the picture across its left edge one after another, each over 4 s: its box, cut by the
    edge, narrows from 400 px to nothing and, as the lorry turns away, its height falls from 150 px to 45."""
    frames = []
    for seq in range(int(40 / STEP)):
        lorry, into_turn = divmod(seq * STEP, 4.0)
        share = into_turn / 4.0
        frames.append(frame(seq, [(1 + int(lorry), "truck", (0.0, 450 - 150 * (1 - 0.7 * share),
                                                            400 * (1 - share), 450.0))]))
    return frames


def test_vehicles_leaving_across_the_frame_edge_are_not_congestion():
    """A box the edge cuts moves with the cut: its foot point crawls while the lorry drives out of view."""
    assert opened(run(turning_out_at_the_left_edge(), LANE_OUT_AT_THE_EDGE)) == []
