"""The labelled scenario suite: each builder places one kind of incident (or a look-alike that must not fire) on
the simulated road, with randomised positions, speeds and timings."""
from __future__ import annotations

import numpy as np

from tests.traffic.simulator import CAR, EB_Y, PERSON, SUITCASE, WB_Y, Scenario, SimObject, Truth, drive


def background_traffic(rng: np.random.Generator, first_id: int, duration: float, count: int,
                       earliest: float = 0.0, westbound: bool = True) -> list[SimObject]:
    """Cars passing both ways (or eastbound only) at ordinary speeds, never stopping: the look-alike of every rule."""
    cars = []
    for i in range(count):
        eastbound = i % 2 == 0 or not westbound
        speed = rng.uniform(120, 260)
        start_t = rng.uniform(earliest, max(earliest, duration - 1400 / speed))
        x0, x1 = (-60, 1340) if eastbound else (1340, -60)
        cars.append(drive(first_id + i, EB_Y if eastbound else WB_Y, [], speed if eastbound else -speed,
                          x0, start_t, x1))
    return cars


def stopped_in_zone(rng) -> Scenario:
    """One car stops in the intersection box, another at the bus stop, each 25-40 s; then they drive on."""
    box_car = drive(1, EB_Y, [(rng.uniform(600, 680), rng.uniform(25, 40))], 200, -60, rng.uniform(0, 5), 1340)
    bus_stop_car = drive(2, WB_Y, [(rng.uniform(940, 1060), rng.uniform(25, 40))], -200, 1340, rng.uniform(5, 10), -60)
    truths = [Truth("stopped_vehicle", car.keyframes[1][0], car.keyframes[2][0], frozenset({car.track_id}))
              for car in (box_car, bus_stop_car)]
    return Scenario("stopped_in_zone", 70, [box_car, bus_stop_car, *background_traffic(rng, 100, 70, 4)], truths)


def red_light_queue(rng) -> Scenario:
    """A queue of 3-4 cars at the eastbound stop line for 40-70 s (excused), then a lone car stopping in the
    keep-clear zone with nobody at the line (not excused)."""
    red = rng.uniform(40, 70)
    count = int(rng.integers(3, 5))
    # Followers leave after the head, as a queue does when the light turns green.
    queue = [drive(10 + i, EB_Y, [(465 - 95 * i, red + 2 * i)], 200, -60 - 120 * i, 0.0, 1340) for i in range(count)]
    lone_start = red + 25
    lone = drive(20, EB_Y, [(rng.uniform(270, 330), rng.uniform(25, 35))], 200, -60, lone_start, 1340)
    truths = [Truth("stopped_vehicle", lone.keyframes[1][0], lone.keyframes[2][0], frozenset({20}))]
    duration = lone.keyframes[-1][0] + 3
    return Scenario("red_light_queue", duration, [*queue, lone, *background_traffic(rng, 100, duration, 2)], truths)


def wrong_way(rng) -> Scenario:
    """A car drives west in the eastbound lane; a car reverses a short way in the eastbound lane (not wrong way)."""
    speed = rng.uniform(120, 240)
    start = rng.uniform(0, 10)
    offender = drive(1, EB_Y, [], -speed, 1340, start, -60)
    reverse_x = rng.uniform(750, 850)
    reverser = SimObject(2, "car", CAR, [(20, reverse_x, EB_Y), (24, reverse_x - 40, EB_Y), (30, reverse_x - 40, EB_Y),
                                         (36, reverse_x + 400, EB_Y)])
    truths = [Truth("wrong_way", start + 60 / speed, start + 1400 / speed, frozenset({1}))]
    return Scenario("wrong_way", 40, [offender, reverser, *background_traffic(rng, 100, 40, 4)], truths)


def pedestrians(rng) -> Scenario:
    """A jaywalker crosses mid-block; one person uses the crosswalk, one walks along the sidewalk."""
    x = rng.uniform(760, 1200)
    start = rng.uniform(2, 10)
    walk_speed = rng.uniform(1.0, 1.6) * 10 * 1.5  # ~1-1.6 m/s at 10 px/m, a little hurried
    jay = SimObject(1, "person", PERSON, [(start, x, 280), (start + 240 / walk_speed, x, 520)])
    crosser = SimObject(2, "person", PERSON, [(start, 510, 280), (start + 240 / walk_speed, 510, 520)])
    stroller = SimObject(3, "person", PERSON, [(0, 100, 500), (30, 600, 500)])
    onset = start + 20 / walk_speed  # the foot reaches the roadway at y=300
    end = start + 180 / walk_speed
    # Traffic only after the crosswalk is clear: a car crossing it at speed next to a person is its own rule.
    traffic = background_traffic(rng, 100, 45, 2, earliest=start + 240 / walk_speed)
    return Scenario("pedestrians", 45, [jay, crosser, stroller, *traffic],
                    [Truth("pedestrian_on_roadway", onset, end, frozenset({1}))],
                    with_track_ids=bool(rng.random() < 0.5))


def obstacles(rng) -> Scenario:
    """A suitcase lies in the eastbound lane, another on the sidewalk; an unnamed static blob sits in the westbound
    lane, whose traffic goes round it (in this one-lane simulation: none comes); a blob under a car stopped at the stop
    line is the car itself."""
    x = rng.uniform(750, 1200)
    start = rng.uniform(2, 8)
    lane_case = SimObject(1, "suitcase", SUITCASE, [(start, x, EB_Y - 10), (start + 25, x, EB_Y - 10)])
    walk_case = SimObject(2, "suitcase", SUITCASE, [(start, x, 500), (start + 25, x, 500)])
    stopped = drive(3, EB_Y, [(465, 30)], 200, -60, 0, 1340)
    blob_x = rng.uniform(750, 1200)
    blob_start = rng.uniform(5, 15)
    blob = ((blob_x - 25, 320.0, blob_x + 25, 365.0), blob_start, blob_start + 20)
    stop_t = stopped.keyframes[1][0]
    car_blob = ((427.0, 392.0, 503.0, 428.0), stop_t, stop_t + 28)
    truths = [Truth("obstacle_in_lane", start, start + 25, frozenset({1})),
              Truth("obstacle_in_lane", blob_start, blob_start + 20, zone_id="wb")]
    traffic = background_traffic(rng, 100, 45, 2, westbound=False)
    return Scenario("obstacles", 45, [lane_case, walk_case, stopped, *traffic], truths, blobs=[blob, car_blob])


def congestion(rng) -> Scenario:
    """Eight westbound cars come to a standstill one behind the other and stay 60-80 s: a jam."""
    jam = rng.uniform(60, 80)
    cars = []
    for i in range(8):
        cars.append(drive(1 + i, WB_Y, [(60 + 95 * i, jam - 1.5 * i)], -220, 1340 + 200 * i, 1.5 * i - 1.5 * i, -60))
    sixth_stops = cars[5].keyframes[1][0]
    end = min(car.keyframes[2][0] for car in cars)
    truths = [Truth("congestion", sixth_stops, end, zone_id="wb")]
    # The tail of the jam stands in the intersection box: blocking the box is a stopped-vehicle incident too.
    truths += [Truth("stopped_vehicle", car.keyframes[1][0], car.keyframes[2][0], frozenset({car.track_id}))
               for car in cars if 560 <= car.keyframes[1][1] <= 720]
    return Scenario("congestion", end + 10, [*cars, *background_traffic(rng, 100, end, 2)], truths)


def collisions(rng) -> Scenario:
    """A fast car runs into a slower one ahead; both stop and stay. Look-alikes: an overtaking car whose box
    overlaps the other's without anyone stopping, and a car rolling gently up to a stopped one."""
    slow, fast = rng.uniform(60, 100), rng.uniform(260, 340)
    follower_start = -60.0
    meet = (700 - follower_start - 60) / (fast - slow)  # the boxes overlap by 20 px at the impact
    impact_x = 700 + slow * meet
    lead = SimObject(1, "car", CAR, [(0, 700, EB_Y), (meet, impact_x, EB_Y), (meet + 0.6, impact_x + 15, EB_Y),
                                     (meet + 25, impact_x + 15, EB_Y)])
    follower = SimObject(2, "car", CAR, [(0, follower_start, EB_Y), (meet, impact_x - 60, EB_Y),
                                         (meet + 0.4, impact_x - 55, EB_Y), (meet + 25, impact_x - 55, EB_Y)])
    # Overtake: car 3 passes car 4 with boxes overlapping, neither stops.
    overtaken = drive(4, WB_Y, [], -120, 1340, 0, -60)
    overtaker = SimObject(3, "car", CAR, [(0, 1500, WB_Y), (5, 1500 - 5 * 300, WB_Y - 12), (8, 1500 - 8 * 300, WB_Y)])
    # Gentle: car 6 rolls up to car 5, parked outside any zone, at 0.5 box/s until the boxes touch.
    parked = SimObject(5, "car", CAR, [(0, 200, WB_Y), (60, 200, WB_Y)])
    gentle = SimObject(6, "car", CAR, [(0, 400, WB_Y), (6.75, 265, WB_Y), (60, 265, WB_Y)])
    truths = [Truth("collision", meet, meet + 25, frozenset({1, 2}))]
    return Scenario("collisions", meet + 28, [lead, follower, overtaken, overtaker, parked, gentle], truths)


BUILDERS = [stopped_in_zone, red_light_queue, wrong_way, pedestrians, obstacles, congestion, collisions]
