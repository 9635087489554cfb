"""Vehicles converging into one box, found through each frame's spatial index (converging.FrameIndex), are exactly
those that a look at every box and every pair of vehicles finds: the pairwise search written out here is the
specification, run side by side with the analyzer's on random frames of many vehicles, some converging."""
from __future__ import annotations

import math
import random

from processors.analytics.traffic import converging
from processors.analytics.traffic.converging import (
    CLEAR_MATCH_RATIO,
    CONVERGED_MIN_SECONDS,
    CONVERGED_SPEED_SHARE,
    CONVERGED_WAIT_SECONDS,
    MAX_FRAME_GAP_S,
    distance_as_same_vehicle,
)
from processors.analytics.traffic.scene import Scene, box_area, centre, in_box, shifted
from processors.analytics.traffic.state import CollisionCandidate, TrafficState, VehicleFrame
from schemas import UNTRACKED
from tests.traffic.test_converging import CROSSROADS, union

STEP = 0.2


def disjoint(a, b) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def pairwise_previous_of(earlier: VehicleFrame, later: VehicleFrame) -> list[int | None]:
    index_of = {track_id: i for i, track_id in enumerate(earlier.track_ids) if track_id != UNTRACKED}
    matched = [index_of.get(track_id) if track_id != UNTRACKED else None for track_id in later.track_ids]
    claimed = {i for i in matched if i is not None}
    options = []
    for i, (box, track_id) in enumerate(zip(later.boxes, later.track_ids, strict=True)):
        if matched[i] is not None:
            continue
        for j, (before, before_id) in enumerate(zip(earlier.boxes, earlier.track_ids, strict=True)):
            if j in claimed or (track_id != UNTRACKED and before_id != UNTRACKED):
                continue
            distance = distance_as_same_vehicle(box, before)
            if distance is not None:
                options.append((distance, i, j))
    for _, i, j in sorted(options):
        if matched[i] is None and j not in claimed:
            matched[i] = j
            claimed.add(j)
    return matched


def pairwise_record_converging(scene: Scene, state: TrafficState, frame: VehicleFrame) -> None:
    """converging.record_converging, every question put to every box of a frame and to every pair of vehicles."""
    for candidate in [c for c in state.collisions if c.merged_box is not None and c.confirmed_at is None]:
        around = [box for box in frame.boxes if not disjoint(box, candidate.merged_box)]
        since_contact = frame.time - candidate.contact_at
        if len(around) != 1 or distance_as_same_vehicle(around[0], candidate.merged_box) is None:
            if since_contact >= CONVERGED_WAIT_SECONDS - 1e-6:
                state.collisions.remove(candidate)
            continue
        if since_contact < CONVERGED_MIN_SECONDS - 1e-6:
            continue
        drove_on = any(box != around[0] and distance_as_same_vehicle(box, ahead) is not None
                       for x1, y1, x2, y2, vx, vy in candidate.converged_from
                       for ahead in [shifted((x1, y1, x2, y2), vx * since_contact, vy * since_contact)]
                       for box in frame.boxes)
        if drove_on:
            state.collisions.remove(candidate)
            continue
        (x0, y0), (x1, y1) = centre(candidate.merged_box), centre(around[0])
        speed = math.hypot(x1 - x0, y1 - y0) / since_contact / max(around[0][3] - around[0][1], 1.0)
        faster = max(math.hypot(*velocity) for velocity in candidate.velocities_before if velocity is not None)
        if speed <= CONVERGED_SPEED_SHARE * faster:
            candidate.confirmed_at = frame.time
        else:
            state.collisions.remove(candidate)
    if len(state.recent_vehicles) < 2:
        return
    first, second = state.recent_vehicles
    if frame.time - first.time > 2 * MAX_FRAME_GAP_S or frame.time - second.time > MAX_FRAME_GAP_S:
        return
    thresholds = scene.thresholds
    step, ahead = second.time - first.time, frame.time - second.time
    previous = pairwise_previous_of(first, second)
    moving = []
    for i, j in enumerate(previous):
        if j is None or box_area(second.boxes[i]) <= 0:
            continue
        if second.track_ids[i] == UNTRACKED:
            nearest = distance_as_same_vehicle(second.boxes[i], first.boxes[j])
            if any(distance is not None and distance <= CLEAR_MATCH_RATIO * nearest
                   for k, before in enumerate(first.boxes) if k != j
                   for distance in [distance_as_same_vehicle(second.boxes[i], before)]):
                continue
        (x0, y0), (x1, y1) = centre(first.boxes[j]), centre(second.boxes[i])
        moving.append((i, ((x1 - x0) / step, (y1 - y0) / step)))

    def continued_apart(box, merged) -> bool:
        to_merged = distance_as_same_vehicle(max(merged, key=box_area), box)
        return any(other not in merged and distance is not None and (to_merged is None or distance < to_merged)
                   for other in frame.boxes for distance in [distance_as_same_vehicle(other, box)])

    known = {track_id for candidate in state.collisions for track_id in candidate.track_ids if track_id != UNTRACKED}
    for n, (a, velocity_a) in enumerate(moving):
        for b, velocity_b in moving[n + 1:]:
            box_a, box_b = second.boxes[a], second.boxes[b]
            pair = (second.track_ids[a], second.track_ids[b])
            if not disjoint(box_a, box_b) or known.intersection(pair):
                continue
            closing = (math.dist(centre(first.boxes[previous[a]]), centre(first.boxes[previous[b]]))
                       - math.dist(centre(box_a), centre(box_b))) / step
            height = (box_a[3] - box_a[1] + box_b[3] - box_b[1]) / 2
            if closing < thresholds.converging_min_closing_box_per_s * height:
                continue
            heading = [(x + vx * ahead, y + vy * ahead) for (x, y), (vx, vy)
                       in ((centre(box_a), velocity_a), (centre(box_b), velocity_b))]
            merged = [box for box in frame.boxes if all(in_box(point, box) for point in heading)]
            apart = [box for box in frame.boxes if box not in merged and any(in_box(p, box) for p in heading)]
            largest = max(merged, key=box_area, default=None)
            if (largest is None or apart or any(continued_apart(box, merged) for box in (box_a, box_b))
                    or box_area(largest) < thresholds.converging_min_growth * max(box_area(box_a), box_area(box_b))
                    or any(track_id != UNTRACKED and track_id in frame.track_ids
                           and frame.boxes[frame.track_ids.index(track_id)] != largest for track_id in pair)):
                continue
            speed_a = math.hypot(*velocity_a) / (box_a[3] - box_a[1])
            speed_b = math.hypot(*velocity_b) / (box_b[3] - box_b[1])
            (id_a, name_a, v_a, speed_a), (id_b, name_b, v_b, speed_b) = sorted(
                [(pair[0], second.class_names[a], velocity_a, speed_a),
                 (pair[1], second.class_names[b], velocity_b, speed_b)], key=lambda party: party[0])
            converged_from = tuple((*shifted(box, vx * ahead, vy * ahead), vx, vy)
                                   for box, (vx, vy) in ((box_a, velocity_a), (box_b, velocity_b)))
            state.collisions.append(CollisionCandidate(
                track_ids=(id_a, id_b), contact_at=frame.time, speed_box_per_s=max(speed_a, speed_b),
                class_names=(name_a, name_b),
                velocities_before=((v_a[0] / height, v_a[1] / height), (v_b[0] / height, v_b[1] / height)),
                speeds_at_contact=(speed_a, speed_b), merged_box=largest, converged_from=converged_from,
                reason=f"{name_a} and {name_b} collided: closing at {closing / height:.1f} box/s, then seen as one "
                       f"box {box_area(largest) / max(box_area(box_a), box_area(box_b)):.1f} times the larger"))
            known.update(track_id for track_id in pair if track_id != UNTRACKED)


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


def test_vehicles_converging_found_through_the_index_are_those_every_pair_shows():
    scene = Scene(CROSSROADS)
    confirmed = 0
    for seed in range(3):
        indexed, pairwise = TrafficState(), TrafficState()
        contacts = set()
        for frame in random_frames(seed):
            if indexed.recent_vehicles:
                assert converging.previous_of(indexed.recent_vehicles[-1], frame) == \
                    pairwise_previous_of(indexed.recent_vehicles[-1], frame), seed
            converging.record_converging(scene, indexed, frame)
            pairwise_record_converging(scene, pairwise, frame)
            assert indexed.collisions == pairwise.collisions, seed
            contacts.update((c.track_ids, c.contact_at) for c in indexed.collisions)
            confirmed += sum(c.confirmed_at == frame.time for c in indexed.collisions)
            for state in (indexed, pairwise):
                state.recent_vehicles = [*state.recent_vehicles, frame][-2:]
        assert len(contacts) >= 3, seed  # the frames put the search to work: vehicles converged
    assert confirmed > 0  # ... and some were seen locked together
