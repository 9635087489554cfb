"""A frame's spatial index (converging.FrameIndex), through which the converging check, the matching of detections to
the frame before and the search for lost unconfirmed vehicles ask about the boxes near a place, answers exactly as a
look at every box of the frame does: that look, written out here, is the specification, put to random frames of many
vehicles, some converging."""
from __future__ import annotations

import math
import random

from processors.analytics.traffic.converging import FrameIndex, distance_as_same_vehicle
from processors.analytics.traffic.scene import centre, in_box, shifted
from processors.analytics.traffic.state import VehicleFrame
from schemas import UNTRACKED
from tests.traffic.test_converging import union

STEP = 0.2


def meet(a, b) -> bool:
    """Whether two boxes overlap by more than an edge."""
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def random_frames(seed: int, crashes: int = 30, others: int = 150, frames: int = 14) -> list[VehicleFrame]:
    """Pairs of cars crossing fast into one box that stays, slides or drives on (or splits again), among others
    driving about, stopping, overlapping and vanishing; confirmed tracks and unconfirmed detections mixed."""
    rng = random.Random(seed)
    objects = []  # (track id, box at 0 s, velocity px/s, first time seen as one box with the next, how that box moves)
    next_id = 1
    for _ in range(crashes):
        contact = rng.choice([0.6, 0.8, 1.0, 1.2])
        x, y = rng.uniform(150, 2400), rng.uniform(120, 1300)
        width, height = rng.uniform(50, 110), rng.uniform(25, 55)
        for side in (-1, 1):  # side by side at the contact, each centre inside the box over both, come from apart
            angle = math.atan2(-side * height, -side * width) + rng.uniform(-1.0, 1.0)
            speed = rng.uniform(150, 400)
            velocity = (speed * math.cos(angle), speed * math.sin(angle))
            at_contact = (x + side * width / 3 - width / 2, y + side * height / 4 - height / 2)
            start = shifted((*at_contact, at_contact[0] + width, at_contact[1] + height),
                            -velocity[0] * contact, -velocity[1] * contact)
            objects.append([next_id if rng.random() < 0.5 else UNTRACKED, start, velocity, contact, None])
            next_id += 1
        objects[-2][4] = (rng.choice([0.0, 30.0, 300.0]), rng.random() < 0.2)  # after contact: drift px/s, splits
    for _ in range(others):
        width, height = rng.uniform(20, 80), rng.uniform(15, 40)
        x, y = rng.uniform(0, 2560 - width), rng.uniform(0, 1440 - height)
        speed = rng.choice([0.0, rng.uniform(5, 60), rng.uniform(60, 500)])
        angle = rng.uniform(0, 2 * math.pi)
        objects.append([next_id if rng.random() < 0.6 else UNTRACKED, (x, y, x + width, y + height),
                        (speed * math.cos(angle), speed * math.sin(angle)), None, None])
        next_id += 1
    result = []
    for seq in range(frames):
        t = seq * STEP
        detections = []
        for n, (track_id, start, (vx, vy), contact, after) in enumerate(objects):
            if contact is not None and t >= contact - 1e-9:
                if after is None:
                    continue  # the second of a pair: one box with the first from the contact on
                drift, splits = after
                mate = objects[n + 1]
                at_contact = union(shifted(start, vx * contact, vy * contact),
                                   shifted(mate[1], mate[2][0] * contact, mate[2][1] * contact))
                if splits and seq % 3 == 0:
                    detections.append((track_id, shifted(start, vx * t, vy * t)))
                    detections.append((mate[0], shifted(mate[1], mate[2][0] * t, mate[2][1] * t)))
                else:
                    detections.append((track_id, shifted(at_contact, drift * (t - contact), 0.0)))
            elif contact is not None or rng.random() < 0.9:  # the detector misses one of the others now and then
                box = shifted(start, vx * t, vy * t)
                detections.append((track_id, box))
                if rng.random() < 0.03:
                    detections.append((UNTRACKED, box))  # a second detection of the same vehicle
        rng.shuffle(detections)
        result.append(VehicleFrame(time=1_700_000_000.0 + t, boxes=[box for _, box in detections],
                                   track_ids=[track_id for track_id, _ in detections],
                                   class_names=[rng.choice(["car", "truck"]) for _ in detections],
                                   confidences=[0.8] * len(detections)))
    return result


def test_the_frame_index_answers_as_a_look_at_every_box_does():
    asked = 0
    for seed in range(3):
        for frame in random_frames(seed, frames=6):
            index, boxes = FrameIndex(frame.boxes), frame.boxes
            # Each box itself, one far larger, one without area, and where each would be a moment later.
            probes = [*boxes, (0.0, 0.0, 2000.0, 900.0), (500.0, 500.0, 500.0, 540.0),
                      *(shifted(box, 40.0, -25.0) for box in boxes[::7])]
            for probe in probes:
                assert index.meeting(probe) == [j for j, box in enumerate(boxes) if meet(box, probe)]
                assert index.as_same_vehicle(probe) == [
                    (j, distance) for j, box in enumerate(boxes)
                    if (distance := distance_as_same_vehicle(probe, box)) is not None]
                point = centre(probe)
                assert index.holding(point) == [j for j, box in enumerate(boxes) if in_box(point, box)]
                asked += 1
    assert asked > 1000


def test_an_empty_frame_has_nothing_near_anything():
    index = FrameIndex([])
    assert index.meeting((0, 0, 10, 10)) == index.holding((5, 5)) == index.as_same_vehicle((0, 0, 1, 1)) == []
