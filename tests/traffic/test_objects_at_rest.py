"""One incident per physical object at rest, and the vehicle-in-pedestrian-area rule, on hand-built frame sequences
(the scene of tests/traffic/simulator.py: eastbound lane y 380-460, westbound lane y 300-380, sidewalks beyond)."""
from __future__ import annotations

import pytest

from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas import Detections, Event, EventState, PictureFault, StaticBlob
from schemas.settings.config import CameraConfig, Config
from schemas.settings.traffic import SceneConfig
from tests.traffic.simulator import FPS, SCENE, T0

STEP = 1 / FPS


def frame(seq: int, objects: list[tuple[int, str, tuple]], blobs: list[tuple[tuple, float]] = ()) -> Detections:
    """One frame: (track id, class, box) per detection, (box, static since) per static blob."""
    return Detections(
        camera_id="sim", seq=seq, captured_at=T0 + seq * STEP, image_width=1280, image_height=720, model="test",
        inference_ms=0.0, xyxy=[box for _, _, box in objects], confidence=[0.8] * len(objects),
        class_id=[0] * len(objects), class_name=[name for _, name, _ in objects],
        track_id=[track_id for track_id, _, _ in objects],
        static_blobs=[StaticBlob(xyxy=box, static_since=since, fill_ratio=0.8) for box, since in blobs])


def run(frames: list[Detections], scene: SceneConfig = SCENE) -> list[Event]:
    analyzer = TrafficAnalyzer.restore(CameraConfig(id="sim", source="sim.mp4", scene=scene), Config(), None)
    return [event for detections in frames for event in analyzer.update(detections).events]


def opened(events: list[Event]) -> list[Event]:
    return [event for event in events if event.state is EventState.OPENED]


def test_a_blob_that_splits_vanishes_and_re_forms_is_one_obstacle():
    since = T0 + 1.0
    whole = ((800.0, 320.0, 880.0, 360.0), since)  # debris in the westbound lane
    halves = [((800.0, 320.0, 835.0, 360.0), since), ((845.0, 320.0, 880.0, 360.0), since + 2)]
    frames = []
    for seq in range(150):  # 30 s
        t = seq * STEP
        if t < 5:
            blobs = []
        elif t < 10:
            blobs = [whole]
        elif t < 14:
            blobs = halves  # the background model splits it
        elif t < 16:
            blobs = []  # and loses it for 2 s (a lorry parked in front, dust)
        else:
            blobs = [((805.0, 322.0, 878.0, 358.0), T0 + 16)]  # found again, with a new static-since
        frames.append(frame(seq, [], blobs))
    events = run(frames)
    assert [e.type for e in opened(events)] == ["obstacle_in_lane"]
    assert opened(events)[0].zone_id == "wb"
    assert not [e for e in events if e.state is EventState.RESOLVED]


@pytest.mark.parametrize(("hidden_s", "events"), [(12.0, 1), (40.0, 2)])
def test_an_obstacle_reported_then_hidden_for_a_while_is_still_one_incident(hidden_s, events):
    """A fallen load raised as an obstacle, then hidden for longer than an unreported object's grace by a dense
    stream of cars squeezing past over it, found again where it was with a new static-since 3 s after the last car
    has gone: the same incident, not a second event once it has stood there again for obstacle_min_seconds. Gone
    for longer than a reported object's grace, it was cleared away, and what stands there later is another
    obstacle."""
    load = (800.0, 320.0, 880.0, 360.0)  # in the westbound lane
    back = 25.0 + hidden_s
    # A car every 0.5 s at 200 px/s (100 px apart) from foot x 1340, over the load from 1.3 s to 2.1 s after it
    # set off, the last one off it 3 s before the load is shown again.
    starts = [23.0 + 0.5 * n for n in range(int((back - 3 - 2.1 - 23.0) / 0.5) + 1)]

    def cars(t: float) -> list[tuple[int, str, tuple]]:
        return [(10 + n, "car", (x - 40.0, 312.0, x + 40.0, 352.0)) for n, start in enumerate(starts)
                if 0 <= (x := 1340 - 200 * (t - start)) <= 1340]

    frames = [frame(seq, cars(seq * STEP), [(load, T0 + 1.0)] if 1 <= seq * STEP < 24 else [(load, T0 + back - 3)]
                    if seq * STEP >= back else []) for seq in range(int((back + 25) * FPS))]
    found = [e for e in run(frames) if e.type == "obstacle_in_lane"]
    assert len(opened(found)) == events


def car_over_the_load(t: float, start: float) -> list[tuple[int, str, tuple]]:
    """One car in the westbound lane at 200 px/s from foot x 1340 at `start`: over most of the load (x 800-880) from
    2.25 s to 2.75 s after it."""
    x = 1340 - 200 * (t - start)
    return [(9, "car", (x - 40.0, 312.0, x + 40.0, 352.0))] if 300 <= x <= 1340 else []


def test_a_cleared_obstacle_ends_once_a_vehicle_has_driven_over_its_place():
    """The background model stops showing a fallen load the moment it is cleared away at 30 s; the next car drives
    over its place (off it at 32.75 s) and 3 s later the model still shows nothing there: the road is seen clear, so
    the event ends then and resolves resolve_seconds later, not a reported object's grace after the load went."""
    load = ((800.0, 320.0, 880.0, 360.0), T0 + 1.0)  # in the westbound lane
    found = run([frame(seq, car_over_the_load(seq * STEP, 30.0), [load] if 1 <= seq * STEP < 30 else [])
                 for seq in range(int(60 * FPS))])
    assert [e.type for e in opened(found)] == ["obstacle_in_lane"]
    (resolved,) = [e for e in found if e.state is EventState.RESOLVED]
    assert T0 + 32.75 + 3 - STEP <= resolved.ended_at <= T0 + 32.75 + 3
    assert resolved.updated_at <= resolved.ended_at + SCENE.thresholds.resolve_seconds + STEP


@pytest.mark.parametrize("shown_again_s", [10.0, None])
def test_an_obstacle_no_longer_shown_with_nothing_over_it_stays_one_incident_for_the_grace_time(shown_again_s):
    """Dust or smoke round a crash changes the picture over a reported object without a box for anything over it, and
    the background model stops showing it: that is no sign the place is clear. Shown again 10 s later, it is the same
    incident; never shown again, its event ends a reported object's grace after it was last shown, as one cleared
    away with no vehicle over its place since."""
    load = (800.0, 320.0, 880.0, 360.0)

    def shown(t: float) -> list[tuple[tuple, float]]:
        if 1 <= t < 30:
            return [(load, T0 + 1.0)]
        return [(load, T0 + shown_again_s + 27)] if shown_again_s is not None and t >= 30 + shown_again_s else []

    found = [e for e in run([frame(seq, [], shown(seq * STEP)) for seq in range(int(60 * FPS))])
             if e.type == "obstacle_in_lane"]
    assert len(opened(found)) == 1
    resolved = [e for e in found if e.state is EventState.RESOLVED]
    if shown_again_s is None:
        grace = SCENE.thresholds.reported_object_grace_seconds
        assert [e.ended_at > T0 + 29 for e in resolved] == [True]
        assert resolved[0].updated_at >= T0 + 30 + grace - STEP


def test_an_obstacle_traffic_keeps_driving_past_and_over_stays_one_event_until_cleared():
    """Cars in the westbound lane brush past a reported load, each hiding it from the background model, which shows
    it again 3 s after the car has moved off it (with a new static-since): one event, open until it is cleared at
    50 s and the next car has driven over its place (off it at 52.7 s)."""
    load = (800.0, 320.0, 880.0, 360.0)
    starts = [20.0 + 5 * n for n in range(7)]  # a car every 5 s at 200 px/s, foot x 1300 to 300 over 5 s

    def car_boxes(t: float) -> list[tuple[int, str, tuple]]:
        cars = []
        for n, start in enumerate(starts):
            x = 1300 - 200 * (t - start)
            if 300 <= x <= 1300:
                cars.append((10 + n, "car", (x - 40.0, 312.0, x + 40.0, 352.0)))
        return cars

    frames, last_over = [], 1.0  # when a car last overlapped the load (it stands from 1 s)
    for seq in range(int(60 * FPS)):
        t = seq * STEP
        cars = car_boxes(t)
        if any(box[0] < load[2] and box[2] > load[0] for _, _, box in cars):
            last_over = t
        shown = 1 <= t < 50 and t - last_over >= 3
        frames.append(frame(seq, cars, [(load, T0 + last_over)] if shown else []))
    found = run(frames)
    assert [e.type for e in opened(found)] == ["obstacle_in_lane"]
    (resolved,) = [e for e in found if e.state is EventState.RESOLVED]
    assert T0 + 55 < resolved.ended_at < T0 + 56


def test_a_stopped_car_hidden_for_a_while_and_found_again_under_a_new_id_is_still_one_stopped_vehicle():
    """Reported, then hidden behind a bus stopped alongside for 12 s with nothing of it for the background model to
    show: found again where it stood, under a new id, it is the same stopped vehicle."""
    box = (930.0, 310.0, 1010.0, 350.0)  # in the bus stop (no stopping), westbound lane
    frames = [frame(seq, [(7, "car", box)] if seq * STEP < 15 else [(8, "car", box)] if seq * STEP >= 27 else [])
              for seq in range(int(45 * FPS))]
    assert [(e.type, e.track_ids) for e in opened(run(frames))] == [("stopped_vehicle", [7])]


@pytest.mark.parametrize(("apart", "events"), [(8.0, 1), (200.0, 2)])
def test_pieces_of_an_obstacle_found_apart_are_one_incident(apart, events):
    """The background model finds a fallen load as one piece, later as a second piece one cell beside it, standing
    since the first was (its cells differed from the road all along, too faintly at first): one event, not a second
    one the moment the piece is found. Pieces as far apart as the road is wide are two obstacles."""
    since = T0 + 1.0
    first = ((800.0, 340.0, 840.0, 372.0), since)  # in the westbound lane, y 300-380
    beside = ((840.0 + apart, 340.0, 880.0 + apart, 372.0), since)
    frames = [frame(seq, [], ([first] if 5 <= seq * STEP < 30 else []) + ([beside] if 22 <= seq * STEP < 30 else []))
              for seq in range(250)]  # 50 s: cleared away at 30 s
    found = run(frames)
    assert [e.type for e in opened(found)] == ["obstacle_in_lane"] * events
    if events == 1:  # what it says as it ends covers both pieces
        (resolved,) = [e for e in found if e.state is EventState.RESOLVED]
        assert (resolved.details["x1"], resolved.details["x2"]) == (800.0, 888.0)


def test_an_obstacle_split_in_pieces_as_it_is_first_found_is_one_incident():
    """Found as three pieces one cell apart, all standing as long: one event over all three."""
    since = T0 + 1.0
    pieces = [((800.0, y, 840.0, y + 16.0), since) for y in (320.0, 344.0, 368.0)]
    found = opened(run([frame(seq, [], pieces if seq * STEP >= 5 else []) for seq in range(120)]))
    assert [e.type for e in found] == ["obstacle_in_lane"]
    assert (found[0].details["y1"], found[0].details["y2"]) == (320.0, 384.0)


def test_an_unknown_object_at_the_frame_edge_is_no_obstacle():
    """Partly out of view (a vehicle waiting half in the picture, the camera's caption along the border): the same
    blob a little further in is an obstacle."""
    def events_for(box: tuple) -> list[Event]:
        return opened(run([frame(seq, [], [(box, T0 + 1.0)] if seq >= 5 else []) for seq in range(100)]))

    assert events_for((1240.0, 320.0, 1280.0, 360.0)) == []
    assert [e.type for e in events_for((1200.0, 320.0, 1240.0, 360.0))] == ["obstacle_in_lane"]


def test_an_unknown_object_that_traffic_drives_over_is_road_not_an_obstacle():
    """A lane marking or repair strip under a stale background stands still like debris, but cars drive over it; the
    same blob with the cars passing in the other lane is an obstacle."""
    blob = ((800.0, 330.0, 850.0, 360.0), T0 + 1.0)  # in the westbound lane, y 300-380

    def events_for(over: bool) -> list[Event]:
        frames = []
        for seq in range(150):  # 30 s; a car every 8 s at 200 px/s, westbound over the blob or eastbound beside it
            t = seq * STEP
            cars = []
            for n in range(4):
                x = 1340 - 200 * (t - 8 * n) if over else -60 + 200 * (t - 8 * n)
                y = 345.0 if over else 420.0
                if -60 <= x <= 1340:
                    cars.append((100 + n, "car", (x - 40, y - 30, x + 40, y)))
            frames.append(frame(seq, cars, [blob] if seq >= 5 else []))
        return opened(run(frames))

    assert events_for(over=True) == []
    assert [e.type for e in events_for(over=False)] == ["obstacle_in_lane"]


def test_a_track_read_as_no_road_user_starts_its_time_at_rest_when_first_read_as_a_vehicle():
    """A logo on a title card read as a clock, then as a car under the same track when the card cuts to the road."""
    box = (930.0, 310.0, 1010.0, 350.0)  # in the bus stop (no stopping)
    frames = [frame(seq, [(7, "clock" if seq * STEP < 12 else "car", box)]) for seq in range(150)]  # 30 s
    events = opened(run(frames))
    assert [(e.type, e.track_ids) for e in events] == [("stopped_vehicle", [7])]
    assert 12 + 10 <= events[0].started_at - T0 <= 12 + 11


def test_a_bus_may_dwell_at_its_stop_for_the_zones_allowance_and_a_car_may_not():
    box = (930.0, 310.0, 1010.0, 350.0)  # in the bus stop, which allows buses 60 s

    def opened_for(class_name: str, seconds: int) -> list[Event]:
        return opened(run([frame(seq, [(7, class_name, box)]) for seq in range(int(seconds * FPS))]))

    assert opened_for("bus", 55) == []
    [event] = opened_for("bus", 70)
    assert 60 <= event.started_at - T0 <= 61 and "limit 60 s" in event.reason
    [event] = opened_for("car", 15)
    assert 10 <= event.started_at - T0 <= 11


def test_a_bus_read_as_a_truck_most_of_its_stay_may_dwell_at_its_stop_and_a_truck_may_not():
    box = (930.0, 310.0, 1010.0, 350.0)  # in the bus stop, which allows buses 60 s

    def opened_for(bus_every: int | None) -> list[Event]:
        """A vehicle standing 30 s, read as a bus in one frame of every `bus_every` (None: never), else a truck."""
        return opened(run([frame(seq, [(7, "bus" if bus_every and seq % bus_every == 0 else "truck", box)])
                           for seq in range(int(30 * FPS))]))

    assert opened_for(bus_every=3) == []
    [event] = opened_for(bus_every=None)
    assert 10 <= event.started_at - T0 <= 11 and event.type == "stopped_vehicle"
    [event] = opened_for(bus_every=10)  # a truck read now and then as a bus is still a truck
    assert 10 <= event.started_at - T0 <= 11


def test_a_vehicle_lost_by_the_detector_stays_one_stopped_vehicle_while_the_background_shows_it():
    box = (930.0, 310.0, 1010.0, 350.0)  # stopped in the bus stop (no stopping), westbound lane
    frames = []
    for seq in range(100):  # 20 s; the car stands from 0 s, the detector loses it in smoke at 4 s
        t = seq * STEP
        objects = [(7, "car", box)] if t < 4 else []
        blobs = [((935.0, 312.0, 1000.0, 348.0), T0 + 3.0)] if t >= 3 else []
        frames.append(frame(seq, objects, blobs))
    events = opened(run(frames))
    assert [(e.type, e.track_ids) for e in events] == [("stopped_vehicle", [7])]
    assert events[0].started_at - T0 <= 10.5  # within 10 s of standstill (plus the 1 s it takes to call it stopped)


def test_a_box_over_a_reported_stopped_car_is_part_of_it_not_a_queue_or_a_second_vehicle():
    """Its open door, its driver getting out or a second detection of it, each seen as a car standing in its lane,
    neither restarts its clock (a queue excuses only a vehicle not yet reported) nor opens an event of its own."""
    car = (800.0, 310.0, 880.0, 350.0)  # stalled in the westbound lane from 0 s, 80 px short of the intersection
    door = (810.0, 312.0, 850.0, 348.0)
    frames = [frame(seq, [(7, "car", car)] + ([(8, "car", door)] if 12 <= seq * STEP < 30 else []))
              for seq in range(int(45 / STEP))]
    events = run(frames)
    assert [(e.type, e.track_ids[0]) for e in opened(events)] == [("stopped_vehicle", 7)]
    assert not [e for e in events if e.state is EventState.RESOLVED]


def test_a_stalled_vehicle_at_the_head_of_the_queue_it_holds_up_is_a_stopped_vehicle():
    """It drives up and stops; the cars that stop behind it wait in a queue, and it is the queue's head with nothing
    in front of it: no signal, no vehicle, the lane going on in view. The same queue with its head at the frame edge
    (its front out of sight, like a jam going on beyond the picture) raises nothing, nor does a row of cars standing
    where they were first seen (parked, or the camera has just started), nor a jam."""
    def opened_for(head_x: float, head_arrives: bool, behind: int = 2) -> list[Event]:
        frames = []
        for seq in range(int(30 / STEP)):  # 30 s, eastbound lane (y 380-460, travel to +x)
            t = seq * STEP
            x = head_x - max(0.0, 2 - t) * 100 if head_arrives else head_x  # at 100 px/s until it stops at 2 s
            cars = [(7, "car", (x, 410.0, x + 80, 450.0))]
            cars += [(8 + n, "car", (head_x - 85 * (n + 1), 410.0, head_x - 85 * (n + 1) + 80, 450.0))
                     for n in range(behind) if t >= 3 + n]  # the cars behind it, one a second from 3 s
            frames.append(frame(seq, cars))
        return opened(run(frames))

    events = opened_for(head_x=1130.0, head_arrives=True)
    assert [(e.type, e.track_ids) for e in events] == [("stopped_vehicle", [7])]
    assert 12 <= events[0].started_at - T0 <= 13
    assert opened_for(head_x=1190.0, head_arrives=True) == []
    assert opened_for(head_x=1130.0, head_arrives=False) == []
    # Six stopped in the lane are a jam (congestion's to report), whose head may wait for traffic the detector does
    # not see.
    assert "stopped_vehicle" not in [e.type for e in opened_for(head_x=1130.0, head_arrives=True, behind=5)]


def test_a_stopped_vehicle_the_detector_finds_again_under_a_new_id_stays_one_stopped_vehicle():
    box = (930.0, 310.0, 1010.0, 350.0)  # stopped in the bus stop (no stopping), westbound lane
    frames = []
    for seq in range(100):  # 20 s; lost in smoke from 4 s to 6 s, then tracked again under a new id
        t = seq * STEP
        objects = [(7, "car", box)] if t < 4 else [(8, "car", box)] if t >= 6 else []
        frames.append(frame(seq, objects, [((935.0, 312.0, 1000.0, 348.0), T0 + 3.0)] if t >= 3 else []))
    events = opened(run(frames))
    assert [e.type for e in events] == ["stopped_vehicle"]
    assert events[0].started_at - T0 <= 10.5


def test_a_stopped_vehicle_whose_id_switches_every_few_seconds_stays_one_stopped_vehicle():
    """Missed for a frame or two every 4 s (frames lost, a passing bus) and given a new id each time: the new track
    goes on with the car's time at rest, and with its incident."""
    box = (930.0, 310.0, 1010.0, 350.0)  # stopped in the bus stop (no stopping), westbound lane
    frames = []
    for seq in range(125):  # 25 s
        t = seq * STEP
        frames.append(frame(seq, [] if t % 4 >= 3.6 else [(7 + int(t // 4), "car", box)]))
    events = opened(run(frames))
    assert [e.type for e in events] == ["stopped_vehicle"]
    assert 10 <= events[0].started_at - T0 <= 11



def test_cars_passing_a_spot_where_the_detector_finds_one_every_2_s_under_one_track_are_no_stopped_vehicle():
    """On a busy road the detector may find a car at one spot only now and then, and the tracker match each to the
    same lost track: seen there again and again, it would stand there all along. A stopped car missed for a second at
    a time, or held by the background model while unseen, still stands."""
    box = (930.0, 310.0, 1010.0, 350.0)  # in the bus stop (no stopping), westbound lane

    def opened_for(seen, blobs: bool = False) -> list[Event]:
        return opened(run([frame(seq, [(7, "car", box)] if seen(seq * STEP) else [],
                                 [((935.0, 312.0, 1000.0, 348.0), T0)] if blobs else [])
                           for seq in range(int(30 / STEP))]))

    assert opened_for(lambda t: t % 2 < 0.4) == []  # two frames every 2 s
    assert [e.type for e in opened_for(lambda t: t % 2 < 0.4, blobs=True)] == ["stopped_vehicle"]
    assert [e.type for e in opened_for(lambda t: t % 2 < 1.2)] == ["stopped_vehicle"]  # unseen 0.8 s at a time

def edging_along_the_bus_stop(px_per_s: float, moves_on_at: float | None = None) -> list[Event]:
    """A car (80x40, diagonal 89 px) drives into the bus stop at 2 s and from there edges west at `px_per_s`; from
    `moves_on_at` it drives 100 px on in 2 s and edges again."""
    frames = []
    for seq in range(150):  # 30 s
        t = seq * STEP
        x = 1060.0 + 50 * max(0.0, 2 - t) - px_per_s * max(0.0, t - 2)
        if moves_on_at is not None and t > moves_on_at:
            x -= 50 * min(t - moves_on_at, 2.0)
        frames.append(frame(seq, [(7, "car", (x - 40, 310.0, x + 40, 350.0))]))
    return opened(run(frames))


def test_a_car_edging_forward_at_a_crawl_is_stopped_from_when_it_came_to_rest():
    """At 1.5 px/s (0.02 box diagonals per second, a detector's box growing or a car edging along the shoulder) the
    anchor leaves the stationary tolerance (0.15 diagonals) after 9 s: that restarted the clock, so the car was
    flagged 9 s late. A car that drives on a box length and stops again still starts again."""
    events = edging_along_the_bus_stop(1.5)
    assert [e.type for e in events] == ["stopped_vehicle"]
    assert 2 + 10 <= events[0].started_at - T0 <= 2 + 11
    moved_on = edging_along_the_bus_stop(1.5, moves_on_at=8)
    assert [e.type for e in moved_on] == ["stopped_vehicle"]
    assert 10 + 9.5 <= moved_on[0].started_at - T0 <= 10 + 11  # rested once within tolerance of its new place


def test_a_vehicle_that_leaves_the_road_and_stops_dead_is_one_critical_collision():
    # Eastbound at 1.5 box heights per second (60 px/s), then off the lane onto the south sidewalk within a second.
    path = [(200.0 + 60 * i * STEP, 440.0) for i in range(25)]
    path += [(200.0 + 60 * 5 + 30 * i * STEP, 440.0 + 70 * i * STEP) for i in range(1, 6)]
    path += [path[-1]] * 70
    frames = [frame(seq, [(3, "car", (x - 40, y - 40, x + 40, y))]) for seq, (x, y) in enumerate(path)]
    events = opened(run(frames))
    assert [(e.type, e.severity.value, e.zone_id) for e in events] == [("collision", "critical", "south-walk")]
    rest_at = T0 + 30 * STEP
    assert events[0].started_at - rest_at <= 5
    # Hidden in its dust for 2 s from 0.6 s after it stopped, before the background model shows anything there: seen
    # again where it stood, it came to rest the way it did.
    hidden = [frame(seq, [] if 33 <= seq < 43 else [(3, "car", (x - 40, y - 40, x + 40, y))])
              for seq, (x, y) in enumerate(path)]
    assert [(e.type, e.severity.value) for e in opened(run(hidden))] == [("collision", "critical")]


def test_a_vehicle_the_tracker_finds_again_at_rest_under_a_new_id_keeps_its_motion():
    """A car at 1.5 box heights per second veers off its lane onto the sidewalk and stops hard within a second; it is
    lost (dust, motion blur) for the last 0.4 s and found again standing under a new id. As a new track it was first
    seen at rest, off the road, so nothing at all was raised. A car appearing there at rest where no track was lost
    is still one first seen there (parked)."""
    path = [(200.0 + 60 * i * STEP, 440.0) for i in range(25)]
    path += [(path[-1][0] + dx, 440.0 + dy) for dx, dy in [(12, 25), (20, 45), (26, 60), (28, 66), (29, 68)]]
    path += [path[-1]] * 70

    def car(seq: int, track_id: int) -> list[tuple[int, str, tuple]]:
        x, y = path[seq]
        return [(track_id, "car", (x - 40, y - 40, x + 40, y))]

    found_again = [frame(seq, car(seq, 3) if seq < 28 else [] if seq < 30 else car(seq, 9)) for seq in range(len(path))]
    events = opened(run(found_again))
    assert [(e.type, e.severity.value, e.zone_id) for e in events] == [("collision", "critical", "south-walk")]
    assert 9 in events[0].track_ids
    appearing = [frame(seq, car(seq, 9) if seq >= 30 else []) for seq in range(len(path))]
    assert opened(run(appearing)) == []


def test_a_vehicle_pulling_over_slowly_is_a_stopped_vehicle_not_a_collision():
    path = [(200.0 + 10 * i * STEP, 440.0 + 5 * i * STEP) for i in range(40)]  # creeps onto the sidewalk
    path += [path[-1]] * 80
    frames = [frame(seq, [(4, "car", (x - 40, y - 40, x + 40, y))]) for seq, (x, y) in enumerate(path)]
    assert [(e.type, e.severity.value) for e in opened(run(frames))] == [("stopped_vehicle", "warning")]


def stop_in_eastbound_lane(last_px_per_s: float) -> list[Event]:
    """A car driving east along its lane at 1.5 box heights per second (60 px/s) for 2 s, then moving at
    `last_px_per_s` (negative: back west) for 1.2 s and stopping there at once; it stands 14 s."""
    path = [(900.0 + 60 * i * STEP, 440.0) for i in range(10)]
    path += [(path[-1][0] + last_px_per_s * i * STEP, 440.0) for i in range(1, 7)]
    path += [path[-1]] * 70
    return opened(run([frame(seq, [(5, "car", (x - 40, y - 40, x + 40, y))]) for seq, (x, y) in enumerate(path)]))


def test_a_vehicle_knocked_back_along_its_lane_that_stops_dead_is_one_critical_collision():
    events = stop_in_eastbound_lane(-60)
    assert [(e.type, e.severity.value, e.zone_id) for e in events] == [("collision", "critical", "eb")]
    assert events[0].started_at - (T0 + 15 * STEP) <= 5


def test_a_vehicle_stopping_dead_with_its_traffic_is_a_stopped_vehicle_not_a_collision():
    events = stop_in_eastbound_lane(60)
    assert [(e.type, e.severity.value) for e in events] == [("stopped_vehicle", "warning")]


def test_a_vehicle_reversing_along_its_lane_and_stopping_is_a_stopped_vehicle_not_a_collision():
    events = stop_in_eastbound_lane(-44)  # 1.1 box heights per second
    assert [(e.type, e.severity.value) for e in events] == [("stopped_vehicle", "warning")]


PLAZA = SceneConfig.model_validate({
    "pedestrian_areas": [{"id": "plaza", "polygon": [[0, 0], [1280, 0], [1280, 720], [0, 720]], "crowded_people": 5}],
})


def crowd(count: int) -> list[tuple[int, str, tuple]]:
    return [(100 + i, "person", (100.0 + 60 * i, 500.0, 120.0 + 60 * i, 560.0)) for i in range(count)]


def test_a_cyclist_riding_through_a_plaza_is_an_event_critical_when_the_plaza_is_crowded():
    for people, severity in ((0, "warning"), (6, "critical")):
        frames = [frame(seq, [(1, "bicycle", (100.0 + 30 * seq, 300.0, 140.0 + 30 * seq, 360.0)), *crowd(people)])
                  for seq in range(20)]
        events = opened(run(frames, PLAZA))
        assert [(e.type, e.severity.value) for e in events] == [("vehicle_in_pedestrian_area", severity)]


def test_a_cyclist_detected_as_a_bicycle_and_its_rider_riding_fast_through_a_plaza_is_one_event():
    frames = [frame(seq, [(1, "bicycle", (100.0 + 30 * seq, 310.0, 140.0 + 30 * seq, 360.0)),
                          (2, "person", (102.0 + 30 * seq, 280.0, 138.0 + 30 * seq, 345.0))]) for seq in range(20)]
    events = opened(run(frames, PLAZA))
    assert [(e.type, e.details["class_name"]) for e in events] == [("vehicle_in_pedestrian_area", "bicycle")]


def test_a_plaza_keeps_its_score_between_the_frames_a_cyclist_is_found_in_and_loses_it_once_the_cyclist_is_gone():
    """The detector finds the cyclist in every other frame; the plaza's frame-level score is the evidence of about the
    last half second, so the frames between are not scored as an empty plaza."""
    analyzer = TrafficAnalyzer.restore(CameraConfig(id="sim", source="sim.mp4", scene=PLAZA), Config(), None)
    frames = [frame(seq, [(1, "bicycle", (100.0 + 30 * seq, 300.0, 140.0 + 30 * seq, 360.0))]
                    if seq % 2 == 0 and seq < 20 else []) for seq in range(40)]
    scores = [analyzer.update(detections).area_scores.get("plaza", 0.0) for detections in frames]
    found, between = scores[6:20:2], scores[7:20:2]
    assert min(between) >= 0.5 * max(found) > 0
    assert scores[-1] < 0.01 * max(found)


def test_a_parked_bicycle_in_a_plaza_is_no_event():
    frames = [frame(seq, [(1, "bicycle", (400.0, 300.0, 440.0, 360.0)), *crowd(6)]) for seq in range(50)]
    assert not [e for e in opened(run(frames, PLAZA)) if e.type == "vehicle_in_pedestrian_area"]


def person_crossing_plaza(px_per_step: float) -> list[Detections]:
    """A person (60 px tall) crossing the plaza at `px_per_step` per frame (5 frames per second), among six standing."""
    return [frame(seq, [(1, "person", (100.0 + px_per_step * seq, 300.0, 125.0 + px_per_step * seq, 360.0)),
                        *crowd(6)]) for seq in range(25)]


def test_a_person_faster_than_anyone_walks_in_a_plaza_is_an_event_and_a_walker_is_none():
    """Seen only as a person: a cyclist or skater at 2.5 box heights per second (150 px/s) is on wheels; a walker at
    a third of a box height per second (20 px/s) is not, and adds nothing to the plaza's score."""
    events = opened(run(person_crossing_plaza(30), PLAZA))
    assert [(e.type, e.severity.value, e.details["class_name"]) for e in events] == [
        ("vehicle_in_pedestrian_area", "critical", "person")]
    assert opened(run(person_crossing_plaza(4), PLAZA)) == []
    analyzer = TrafficAnalyzer.restore(CameraConfig(id="sim", source="sim.mp4", scene=PLAZA), Config(), None)
    assert max(analyzer.update(detections).area_scores["plaza"] for detections in person_crossing_plaza(4)) == 0.0


def test_a_walker_leaving_through_the_bottom_of_the_picture_is_no_faster_than_walking():
    """Cut off by the frame edge, a walker's box shrinks from 60 to 5 px tall in a second while its foot stays on the
    edge: measured in its own shrinking height, its box would move several box heights a second (a score of 0.6).
    Its speed is not scored while the edge cuts it; before, it walks."""
    frames = [frame(seq, [(1, "person", (600.0 + 4 * seq, 659.0 + 11 * min(seq, 5), 625.0 + 4 * seq, 719.0)),
                          *crowd(6)]) for seq in range(8)]
    analyzer = TrafficAnalyzer.restore(CameraConfig(id="sim", source="sim.mp4", scene=PLAZA), Config(), None)
    assert max(analyzer.update(detections).area_scores["plaza"] for detections in frames) < 0.01
    assert opened(run(frames, PLAZA)) == []


def test_a_vehicle_lost_at_speed_where_something_then_stands_is_one_collision():
    """The detector loses a truck in its own dust as it stops; the background model finds it standing there."""
    frames = []
    for seq in range(100):
        t = seq * STEP
        x = 200.0 + 80 * min(t, 4.0)  # 2 box heights per second in the eastbound lane until lost at 4 s
        objects = [(9, "truck", (x - 40, 400.0, x + 40, 440.0))] if t < 4 else []
        # Static since 4.4 s, reported from 7.4 s (the background model's 3 s), split into fragments at times.
        blobs = [((505.0, 402.0, 545.0, 438.0), T0 + 4.4), ((548.0, 404.0, 578.0, 436.0), T0 + 4.4)] if t >= 7.4 else []
        frames.append(frame(seq, objects, blobs))
    events = opened(run(frames))
    assert [(e.type, e.severity.value, e.track_ids) for e in events] == [("collision", "critical", [9])]
    assert events[0].started_at - (T0 + 4.0) <= 10


@pytest.mark.parametrize(("last_step_px", "event_type"), [(4.0, "stopped_vehicle"), (16.0, "collision")])
def test_a_car_lost_as_it_brakes_to_a_stop_is_a_stopped_vehicle_not_a_crash(last_step_px, event_type):
    """A car drives east at 2 box heights per second, makes 4 px in its last frame (half a box height per second)
    and is lost as it stops; the background model then shows it standing there. Over the second before it was lost
    it still made 1.6 box heights per second, but it was seen braking: it pulled up. One lost still at speed in its
    last frame (16 px) stopped hidden in its dust."""
    frames = []
    for seq in range(100):
        t = seq * STEP
        x = 700.0 + 80 * min(t, 3.8) + (last_step_px if t >= 4.0 else 0.0)
        objects = [(9, "car", (x - 40, 400.0, x + 40, 440.0))] if t <= 4.0 else []
        blobs = [((x - 38, 402.0, x + 38, 438.0), T0 + 4.2)] if t >= 7.2 else []
        frames.append(frame(seq, objects, blobs))
    assert [e.type for e in opened(run(frames))] == [event_type]


def test_a_motorcycle_lost_as_it_packs_into_a_waiting_red_light_queue_is_no_crash():
    """Two cars wait at the eastbound stop line; a motorcycle rides up the lane at 2 box heights per second and is
    lost in the queue's area, beside them but not touching them, where the background model then shows something:
    the queue hides it, as vehicles standing around it do. Nor is it judged hidden in its dust once the queue has
    pulled away at 15 s, long after it was lost."""
    frames = []
    for seq in range(int(30 / STEP)):
        t = seq * STEP
        x = 200.0 + 60 * min(t, 3.0)  # lost at 3 s, at x 380
        moved = 60 * max(0.0, t - 15)
        objects = [(1, "car", (390.0 + moved, 390.0, 470.0 + moved, 430.0)),
                   (2, "car", (300.0 + moved, 420.0, 380.0 + moved, 460.0))]
        if t < 3:
            objects.append((9, "motorcycle", (x - 15, 370.0, x + 15, 400.0)))
        blobs = [((x - 14, 372.0, x + 14, 398.0), T0 + 3.2)] if t >= 6.2 else []
        frames.append(frame(seq, objects, blobs))
    assert "collision" not in [e.type for e in opened(run(frames))]


@pytest.mark.parametrize("class_name", ["bicycle", "person"])
def test_a_cyclist_riding_along_the_bottom_edge_of_the_picture_is_still_an_event(class_name):
    """Touching the frame edge without being cut by it (its box keeps its height), a cyclist keeps its motion: seen
    as a bicycle, or only as a person riding faster than anyone walks."""
    frames = [frame(seq, [(1, class_name, (100.0 + 30 * seq, 660.0, 125.0 + 30 * seq, 719.0))]) for seq in range(20)]
    assert [e.type for e in opened(run(frames, PLAZA))] == ["vehicle_in_pedestrian_area"]


def test_a_vehicle_lost_where_the_next_car_then_drives_is_no_crash():
    """The detector loses a car as it drives on (the tracker hands its id to another, or one passing hides it), and
    the next car in the lane drives through where it was lost; later the background model shows a patch there that
    it took for background while traffic covered it. A car standing hidden there would have been driven into."""
    frames = []
    for seq in range(100):
        t = seq * STEP
        x = 200.0 + 80 * min(t, 4.0)
        objects = [(9, "car", (x - 40, 400.0, x + 40, 440.0))] if t < 4 else []
        if 1 <= t < 9:  # the next car, 2 s behind it, over the place from 5.5 s to 6.5 s
            objects.append((10, "car", (80 * t, 400.0, 80 * t + 80, 440.0)))
        blobs = [((505.0, 402.0, 545.0, 438.0), T0 + 4.4), ((548.0, 404.0, 578.0, 436.0), T0 + 4.4)] if t >= 7.4 else []
        frames.append(frame(seq, objects, blobs))
    assert not [e for e in opened(run(frames)) if e.type in ("collision", "stopped_vehicle")]


def test_a_truck_lost_in_its_dust_is_one_collision_while_traffic_passes_behind_it():
    """A tall truck stops hidden in its dust in the eastbound lane; westbound cars pass beyond it, their ground points
    inside the upper part of its box (in perspective it covers the far lane), never over the road it stands on."""
    frames = []
    for seq in range(100):
        t = seq * STEP
        x = 200.0 + 240 * min(t, 2.0)  # 2 box heights per second until lost at 2 s, at x 680
        objects = [(9, "truck", (x - 40, 320.0, x + 40, 440.0))] if t < 2 else []
        if 2 <= t < 10:  # westbound, its ground point at y 370, past x 640-720 from 4.5 s to 5.5 s
            objects.append((10, "car", (1040 - 80 * t, 330.0, 1120 - 80 * t, 370.0)))
        blobs = [((645.0, 330.0, 715.0, 438.0), T0 + 2.4)] if t >= 5.4 else []
        frames.append(frame(seq, objects, blobs))
    events = opened(run(frames))
    assert [(e.type, e.severity.value, e.track_ids) for e in events] == [("collision", "critical", [9])]


@pytest.mark.parametrize(("height", "collisions"), [(12.0, 0), (20.0, 1)])
def test_a_distant_car_lost_where_a_ghost_of_two_cells_then_stands_is_no_crash(height, collisions):
    """A car far down the road, a dozen pixels high, is lost as it drives on at 5 box heights per second; later the
    background model shows a blob two cells (16 px) high there, a ghost of the traffic under a swaying camera: it
    covers the whole car and as much road again, and a pixel of box jitter is a tenth of the car. No car hidden in its
    dust. A car 20 px high lost the same way over a blob its own size is one."""
    frames = []
    for seq in range(100):
        t = seq * STEP
        x = 200.0 + 5 * height * min(t, 4.0)
        objects = [(9, "car", (x - 0.65 * height, 440.0 - height, x + 0.65 * height, 440.0))] if t < 4 else []
        side = max(height, 16.0)
        blob = (x - 0.8 * side, 438.0 - side, x + 0.8 * side, 442.0)
        frames.append(frame(seq, objects, [(blob, T0 + 4.4)] if t >= 7.4 else []))
    assert len([e for e in opened(run(frames)) if e.type == "collision"]) == collisions


def test_a_vehicle_lost_over_a_small_blob_is_no_crash():
    """A lane dash under a stale background stands where the detector lost a passing car: a blob a fifth of the
    car's size is no car hidden there."""
    frames = []
    for seq in range(100):
        t = seq * STEP
        x = 200.0 + 80 * min(t, 4.0)
        objects = [(9, "car", (x - 40, 400.0, x + 40, 440.0))] if t < 4 else []
        frames.append(frame(seq, objects, [((490.0, 412.0, 530.0, 428.0), T0 + 4.4)] if t >= 7.4 else []))
    assert not [e for e in opened(run(frames)) if e.type in ("collision", "stopped_vehicle")]


def test_a_cyclist_riding_into_a_crowd_zone_of_a_traffic_camera_is_an_event_in_that_zone():
    camera = CameraConfig(id="sim", source="sim.mp4", scene=SceneConfig(), zones=[
        {"id": "square", "polygon": [[0, 0], [1280, 0], [1280, 720], [0, 720]], "area_m2": 400}])
    analyzer = TrafficAnalyzer.restore(camera, Config(), None)
    frames = [frame(seq, [(1, "bicycle", (100.0 + 30 * seq, 300.0, 140.0 + 30 * seq, 360.0))]) for seq in range(20)]
    events = opened([event for detections in frames for event in analyzer.update(detections).events])
    assert [(e.type, e.zone_id) for e in events] == [("vehicle_in_pedestrian_area", "square")]


def test_on_a_sidewalk_only_a_vehicle_seen_arriving_is_a_stopped_vehicle():
    """A motorcycle standing on the south sidewalk from the moment it appeared is parked there (or a fixture read as
    one); one that rides up onto the sidewalk and stops is a stopped vehicle after stopped_seconds."""
    parked = [frame(seq, [(1, "motorcycle", (600, 470, 640, 510))]) for seq in range(100)]
    assert opened(run(parked)) == []
    arriving = []
    for seq in range(100):
        t = min(seq * STEP, 4.0)
        y = 430 + 80 * (1 - (1 - t / 4) ** 2)  # from the eastbound lane onto the sidewalk, braking to rest over 4 s
        arriving.append(frame(seq, [(1, "motorcycle", (600, y - 40, 640, y))]))
    assert [e.type for e in opened(run(arriving))] == ["stopped_vehicle"]


def test_a_lone_car_waiting_at_the_junction_is_excused_for_as_long_as_a_red_light_lasts():
    """Alone in the westbound lane, its front 10 px from the intersection where no stop line is drawn: it may be
    waiting at a signal, until max_red_light_seconds (180 s) have passed."""
    box = (730.0, 310.0, 810.0, 350.0)
    events = opened(run([frame(seq, [(7, "car", box)]) for seq in range(int(200 / STEP))]))
    assert [(e.type, e.track_ids) for e in events] == [("stopped_vehicle", [7])]
    assert 180 <= events[0].started_at - T0 <= 192


def test_a_lone_car_stalled_just_past_the_junction_is_a_stopped_vehicle():
    """The intersection lies behind it (eastbound, just past the box): it waits for no signal."""
    box = (730.0, 410.0, 810.0, 450.0)
    events = opened(run([frame(seq, [(7, "car", box)]) for seq in range(int(15 / STEP))]))
    assert [(e.type, e.track_ids) for e in events] == [("stopped_vehicle", [7])]
    assert 10 <= events[0].started_at - T0 <= 11


def test_a_track_found_again_only_every_1_4_s_further_back_is_no_wrong_way_driver():
    """Seen every 1.4 s, each time 56 px further west in the eastbound lane: the detector keeps losing a car and
    the track is taken over by the car behind it. The same drift seen in every frame is a car reversing up the lane."""
    sparse = [frame(seq, [(6, "car", (1000 - 8 * seq, 400, 1080 - 8 * seq, 440))] if seq % 7 == 0 else [])
              for seq in range(50)]
    assert [e.type for e in opened(run(sparse))] == []
    continuous = [frame(seq, [(6, "car", (1000 - 8 * seq, 400, 1080 - 8 * seq, 440))]) for seq in range(50)]
    assert [e.type for e in opened(run(continuous))] == ["wrong_way"]


def test_two_trucks_standing_nose_to_tail_whose_ids_the_tracker_swaps_are_no_wrong_way_driver():
    """Two 180 px trucks wait nose to tail at the eastbound stop line; at 20 s the tracker swaps their ids once, so
    each track jumps a truck's length (195 px) in one frame, past the wrong-way distance and as fast as a crash knocks
    a vehicle back. Nothing moved. The same distance covered step by step in 3 s is a truck reversing up the lane."""
    def truck(foot_x: float) -> tuple:
        return foot_x - 90, 380.0, foot_x + 90, 450.0

    swapped = [frame(seq, [(1, "truck", truck(380.0)), (2, "truck", truck(185.0))] if seq * STEP < 20
                     else [(2, "truck", truck(380.0)), (1, "truck", truck(185.0))]) for seq in range(int(40 / STEP))]
    assert opened(run(swapped)) == []
    reversing = [frame(seq, [(1, "truck", truck(1000.0 - 65 * min(max(seq * STEP - 2, 0.0), 3.0)))])
                 for seq in range(int(7 / STEP))]
    assert [(e.type, e.track_ids) for e in opened(run(reversing))] == [("wrong_way", [1])]


@pytest.mark.parametrize("hidden_s", [1.0, 2.2])
def test_a_wrong_way_driver_hidden_for_a_moment_is_one_event(hidden_s):
    """A car drives west up the eastbound lane at 100 px/s; a truck passing in front hides it from the detector for
    `hidden_s` at 5 s, and it is found again under its track id. One offender, one event, which ends once the car has
    left the picture."""
    frames = []
    for seq in range(int(20 / STEP)):
        t, x = seq * STEP, 1250 - 100 * seq * STEP
        seen = x > 40 and not 5.0 <= t < 5.0 + hidden_s
        frames.append(frame(seq, [(9, "car", (x - 40, 390.0, x + 40, 430.0))] if seen else []))
    events = [e for e in run(frames) if e.type == "wrong_way"]
    assert [e.state.value for e in events] == ["opened", "resolved"]
    assert events[1].ended_at - T0 > 10


def test_a_wrong_way_driver_the_tracker_gives_a_new_id_is_one_event():
    """The same car, found again under a new id a frame after the tracker lost it (6 s): the new track goes on with the
    old one's motion, and its wrong-way event with it, instead of a second event for the one driver."""
    frames = []
    for seq in range(int(20 / STEP)):
        t, x = seq * STEP, 1250 - 100 * seq * STEP
        track_id = 9 if t < 6.0 else 10
        frames.append(frame(seq, [(track_id, "car", (x - 40, 390.0, x + 40, 430.0))] if x > 40 and t != 6.0 else []))
    events = [e for e in run(frames) if e.type == "wrong_way"]
    assert [e.state.value for e in events if e.state.value != "updated"] == ["opened", "resolved"]
    assert events[-1].track_ids == [9, 10]


@pytest.mark.parametrize("hidden_s", [2.2, 3.0])
def test_a_person_crossing_the_roadway_hidden_for_a_moment_is_one_event(hidden_s):
    """A person jaywalks north across both lanes at 15 px/s, hidden behind a bus for `hidden_s` from 8 s and found
    again under the same track id."""
    frames = []
    for seq in range(int(25 / STEP)):
        t, foot_y = seq * STEP, 480 - 15 * seq * STEP
        seen = not 8.0 <= t < 8.0 + hidden_s
        frames.append(frame(seq, [(5, "person", (790.0, foot_y - 50, 810.0, foot_y))] if seen else []))
    events = [e for e in run(frames) if e.type == "pedestrian_on_roadway"]
    assert [e.state.value for e in events] == ["opened", "resolved"]


def test_a_car_driving_the_wrong_way_slowly_is_a_wrong_way_driver_once_it_has_gone_the_distance():
    """A car creeps west up the eastbound lane at 25 px/s (a distant car at walking pace in the image): it covers the
    wrong-way distance (169 px at 1280x720) in under 7 s, more than the track history keeps. A car that drove east
    for 20 s and then reverses as fast is one too, from where it began reversing."""
    creeping = [frame(seq, [(3, "car", (1160 - 25 * seq * STEP, 390.0, 1240 - 25 * seq * STEP, 430.0))])
                for seq in range(int(12 / STEP))]
    [event] = opened(run(creeping))
    assert event.type == "wrong_way" and 6.7 <= event.started_at - T0 <= 8
    turned = [frame(seq, [(3, "car", (x - 40, 390.0, x + 40, 430.0))])
              for seq in range(int(30 / STEP)) if (x := 200 + 25 * min(seq * STEP, 20) - 25 * max(seq * STEP - 20, 0))]
    [event] = opened(run(turned))
    assert event.type == "wrong_way" and 26.7 <= event.started_at - T0 <= 28


def test_wrong_way_is_judged_alike_at_every_resolution_of_the_same_view():
    """One two-lane view recorded at 640x360, 1280x720 and 1920x1080: a car reversing a fifth of the picture's width
    up the eastbound lane in 4 s is a wrong-way driver at each; one whose box creeps back 8 % of the width (a tracker
    handing the id to the car behind) is at none. A threshold in pixels would call the creep wrong-way in the large
    picture only."""
    def verdicts(scale: float, travel: float) -> list[str]:
        scene = SceneConfig.model_validate({"lanes": [
            {"id": "eb", "polygon": [[0, 380 * scale], [1280 * scale, 380 * scale], [1280 * scale, 460 * scale],
                                     [0, 460 * scale]], "direction": [1, 0]}]})
        frames = []
        for seq in range(int(4 / STEP) + 1):
            x = (1000 - travel * 1280 * seq * STEP / 4) * scale
            frames.append(Detections(
                camera_id="sim", seq=seq, captured_at=T0 + seq * STEP, image_width=round(1280 * scale),
                image_height=round(720 * scale), model="test", inference_ms=0.0,
                xyxy=[(x, 400 * scale, x + 80 * scale, 440 * scale)], confidence=[0.8], class_id=[2],
                class_name=["car"], track_id=[6]))
        return [e.type for e in opened(run(frames, scene))]

    for scale in (0.5, 1.0, 1.5):
        assert verdicts(scale, travel=0.2) == ["wrong_way"], scale
        assert verdicts(scale, travel=0.08) == [], scale


def car_stopping_dead_against_a_parked_car(hidden_at_contact: bool) -> list[Detections]:
    """Car 1 drives east at 2 box heights per second and stops dead against car 2, standing in the lane since the
    camera started, at 5 s; the detector may miss car 2 from just before the contact for 2 s, hidden behind the car
    hitting it (then the contact is seen only against where car 2 was last seen)."""
    frames = []
    for seq in range(60):
        t = seq * STEP
        x = 200.0 + 80 * min(t, 5.2)  # car 1's front edge: 616 px from 5.2 s, 16 px into car 2
        objects = [(1, "car", (x - 80, 400.0, x, 440.0))]
        if not (hidden_at_contact and 4.9 <= t <= 6.9):
            objects.append((2, "car", (600.0, 400.0, 680.0, 440.0)))
        frames.append(frame(seq, objects))
    return frames


def test_a_car_stopping_dead_against_a_standing_car_the_detector_misses_at_the_contact_is_one_collision():
    for hidden in (False, True):
        events = opened(run(car_stopping_dead_against_a_parked_car(hidden)))
        assert [(e.type, e.severity.value) for e in events] == [("collision", "critical")], hidden


def test_a_cyclist_in_a_plaza_whose_crowd_the_detector_counts_one_short_every_other_frame_is_one_steady_event():
    """Five people stand in the plaza (crowded_people 5); the detector misses one of them in every other frame. The
    event is critical from the start and stays so: its severity does not follow each frame's head count."""
    frames = [frame(seq, [(1, "bicycle", (100.0 + 30 * seq, 300.0, 140.0 + 30 * seq, 360.0)),
                          *crowd(5)[seq % 2:]]) for seq in range(30)]
    events = run(frames, PLAZA)
    assert [(e.state, e.severity.value) for e in events] == [(EventState.OPENED, "critical")]


def test_a_car_misread_as_a_boat_in_two_frames_far_apart_is_no_obstacle():
    """A car waiting at the red light is read as a boat in one frame, and again 16 s later: each misreading is a
    frame long, not an obstacle standing in the lane since the first."""
    frames = [frame(seq, [(3, "boat" if seq in (10, 90) else "car", (380.0, 390.0, 460.0, 430.0))])
              for seq in range(200)]
    assert [e.type for e in opened(run(frames))] == []


def test_a_bus_reported_in_the_lane_that_pulls_into_its_stop_ends_its_event_there():
    """The bus stands in the westbound lane beside its stop (reported after 10 s), then at 20 s pulls 100 px on
    into the stop, where buses may stand 60 s: it has moved, not jittered across the stop's edge."""
    frames = [frame(seq, [(5, "bus", (x - 80, 310.0, x + 80, 370.0))])
              for seq in range(250) for x in [1180 - 50 * min(max(seq * STEP - 20, 0), 2)]]
    events = run(frames)
    assert [(e.type, e.state, e.zone_id) for e in events] == [
        ("stopped_vehicle", EventState.OPENED, "wb"), ("stopped_vehicle", EventState.RESOLVED, "wb")]
    assert events[1].updated_at - T0 < 30


def test_a_suitcase_misread_as_a_person_now_and_then_is_still_an_obstacle():
    """A suitcase lies in the westbound lane from 1 s; the detector reads it as a person in one frame every 8 s."""
    frames = [frame(seq, [(4, "person" if seq % 40 == 0 else "suitcase", (800.0, 330.0, 830.0, 360.0))])
              for seq in range(5, 300)]
    assert [(e.type, round(e.started_at - T0)) for e in opened(run(frames))] == [("obstacle_in_lane", 16)]


def test_a_stopped_car_on_the_line_between_two_lanes_stays_one_stopped_vehicle_through_box_jitter():
    """A car broke down across the line between the lanes, its foot point 3-4 px inside the eastbound lane; once its
    event is open, one frame's box 6 px higher puts the foot point in the westbound lane. The car has not moved."""
    frames = []
    for seq in range(300):  # 60 s
        t = seq * STEP
        x = 800 - 60 * max(0.0, 3 - t)  # arrives at 60 px/s, at rest from 3 s
        foot_y = 378.0 if seq == 125 else 383.5 + (0.5 if seq % 2 else -0.5)
        frames.append(frame(seq, [(7, "car", (x - 40, foot_y - 40, x + 40, foot_y))]))
    events = run(frames)
    assert [(e.type, e.state) for e in events] == [("stopped_vehicle", EventState.OPENED)]
    assert events[0].zone_id == "eb"


def test_the_event_that_resolves_a_stopped_vehicle_says_how_long_it_stood():
    """A car stands 25 s in the bus stop and drives off: the event closing it says so, not the 10 s of its
    opening."""
    frames = []
    for seq in range(175):  # 35 s
        t = seq * STEP
        x = 950 - 60 * max(0.0, t - 25)  # at rest from the start, pulls away west at 25 s
        frames.append(frame(seq, [(7, "car", (x, 310.0, x + 80, 350.0))] if x > 0 else []))
    events = run(frames)
    assert [e.state for e in events] == [EventState.OPENED, EventState.RESOLVED]
    stood = events[1].details["stopped_seconds"]
    assert "stopped 10 s" in events[0].reason and stood >= 25 and f"stopped {stood:.0f} s" in events[1].reason


def test_a_frozen_or_blank_picture_raises_no_stopped_vehicle_and_no_obstacle():
    """In a frozen picture every vehicle stands still and what was foreground stays: the same frames as a live
    picture raise both."""
    car = (930.0, 310.0, 1010.0, 350.0)  # in the bus stop (no stopping), westbound lane
    debris = ((800.0, 320.0, 880.0, 360.0), T0 + 1.0)
    frames = [frame(seq, [(7, "car", car)], [debris] if seq >= 5 else []) for seq in range(150)]  # 30 s

    assert sorted(e.type for e in opened(run(frames))) == ["obstacle_in_lane", "stopped_vehicle"]
    for fault in PictureFault:
        assert run([detections.model_copy(update={"picture_fault": fault}) for detections in frames]) == []
