"""Two vehicles converging into one box: a collision never seen as two touching boxes.

At a few frames per second, two vehicles crossing fast can be apart in one frame and one locked-together detection in
the next (at night their headlights and bodies blend into one box). What shows the impact is their motion just before:
two separate vehicles closing on each other fast, then a single box where both were heading, clearly larger than either,
neither seen apart from it, and what came after: one box CONVERGED_MIN_SECONDS later (a frame split in between is a
detector's lapse), that lost most of their speed. Vehicles passing each other in perspective close slowly in the image,
and the nearer one hides the farther behind a box of its own size; two boxes on one vehicle (a duplicate detection)
overlap from the start; a queue closes up at walking pace; two vehicles detected as one box while they pass come apart
again within a moment and drive on, and one seen where it was heading has passed the other (the box where they met
may then be the other, waiting, or a vehicle come up behind).

Unconfirmed detections count: such vehicles are often too fast for the tracker to confirm before they meet. Their
motion comes from the nearest detection of about their size in the frame before, trusted only where no other lies
nearly as near (riders packed in a queue).
"""
from __future__ import annotations

import math

from processors.analytics.traffic.scene import Scene, box_area, centre, in_box, shifted
from processors.analytics.traffic.state import Box, CollisionCandidate, TrafficState, VehicleFrame
from schemas import UNTRACKED
from schemas.geometry import box_diagonal

SAME_VEHICLE_DIAGONALS = 1.0  # an unconfirmed detection continues one of the frame before whose centre is this close
SAME_VEHICLE_AREA_RATIO = 4.0  # ... and whose box is at most this many times larger or smaller (entering the view)
MAX_FRAME_GAP_S = 1.0  # frames further apart (dropped frames, a paused camera) say nothing about motion between them
# Two vehicles passing close in the image are one box only while they overlap heavily: under 0.4 s at the closing
# speeds watched here (at 4 box heights per second, two cars twice as long as high overlap by two thirds for 0.33 s).
CONVERGED_MIN_SECONDS = 0.4
CONVERGED_WAIT_SECONDS = 1.0  # how long a pair seen apart again after merging is still waited for as one box
# The one box moves at most this share of the faster vehicle's speed before: locked together, they lost their speed.
CONVERGED_SPEED_SHARE = 0.5
# An unconfirmed detection continues the nearest of about its size in the frame before only when the next nearest
# lies at least this many times as far.
CLEAR_MATCH_RATIO = 1.5


def _disjoint(a: Box, b: Box) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def distance_as_same_vehicle(box: Box, before: Box) -> float | None:
    """How far a box lies from an earlier one, in box diagonals, when it can be the same vehicle; else None."""
    diagonal = max(box_diagonal(box), box_diagonal(before))
    distance = math.dist(centre(box), centre(before)) / diagonal if diagonal > 0 else math.inf
    sizes = sorted((box_area(box), box_area(before)))
    return distance if distance < SAME_VEHICLE_DIAGONALS and sizes[1] <= SAME_VEHICLE_AREA_RATIO * sizes[0] else None


def previous_of(earlier: VehicleFrame, later: VehicleFrame) -> list[int | None]:
    """For each detection of `later`, the index of the same vehicle in `earlier` (None when it has none): by track id
    where both are confirmed, else the nearest unclaimed detection of about its size."""
    matched: list[int | None] = [None] * len(later.boxes)
    index_of = {track_id: i for i, track_id in enumerate(earlier.track_ids) if track_id != UNTRACKED}
    for i, track_id in enumerate(later.track_ids):
        matched[i] = index_of.get(track_id) if track_id != UNTRACKED else None
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


def _clearly_continues(earlier: VehicleFrame, later: VehicleFrame, i: int, j: int) -> bool:
    """Whether `later`'s detection i, matched to `earlier`'s j (previous_of), is that vehicle beyond doubt: by track
    id, or, unconfirmed, with no other detection of `earlier` nearly as near (CLEAR_MATCH_RATIO). Among two-wheelers
    packed in a queue the nearest box of about its size is as often a neighbour's, and a mix-up reads as riders
    closing on each other fast."""
    if later.track_ids[i] != UNTRACKED:
        return True
    box = later.boxes[i]
    nearest = distance_as_same_vehicle(box, earlier.boxes[j])
    return not any(distance is not None and distance <= CLEAR_MATCH_RATIO * nearest
                   for k, before in enumerate(earlier.boxes) if k != j
                   for distance in [distance_as_same_vehicle(box, before)])


def _continued_apart(box: Box, frame: VehicleFrame, merged: list[Box]) -> bool:
    """Whether a box of `frame` outside `merged` (the boxes where two vehicles met) continues the vehicle at `box` more
    nearly than the largest of them does: that vehicle is seen apart from it."""
    to_merged = distance_as_same_vehicle(max(merged, key=box_area), box)
    return any(other not in merged and distance is not None and (to_merged is None or distance < to_merged)
               for other in frame.boxes for distance in [distance_as_same_vehicle(other, box)])


def _drove_on(candidate: CollisionCandidate, frame: VehicleFrame, wreck: Box) -> bool:
    """Whether a box of about one party's size lies in `frame` where that party would be by now had it driven on as
    it did before the contact (`CollisionCandidate.converged_from`), other than the one box where they met: it
    passed the other, and the box there now is a vehicle come up behind."""
    since_contact = frame.time - candidate.contact_at
    for x1, y1, x2, y2, vx, vy in candidate.converged_from or ():
        ahead = shifted((x1, y1, x2, y2), vx * since_contact, vy * since_contact)
        if any(box != wreck and distance_as_same_vehicle(box, ahead) is not None for box in frame.boxes):
            return True
    return False


def record_converging(scene: Scene, state: TrafficState, frame: VehicleFrame) -> None:
    """Confirms the vehicles that converged into one box in an earlier frame as a collision once that box is one
    CONVERGED_MIN_SECONDS later and has lost their speed (forgets them when it is not, or when they are still apart
    CONVERGED_WAIT_SECONDS after), and remembers each
    pair of vehicles of the previous frame that converged into one box of this frame; `state.recent_vehicles` holds
    the two sampled frames before this one."""
    for candidate in [c for c in state.collisions if c.merged_box is not None and c.confirmed_at is None]:
        around = [box for box in frame.boxes if not _disjoint(box, candidate.merged_box)]
        since_contact = frame.time - candidate.contact_at
        if len(around) != 1 or distance_as_same_vehicle(around[0], candidate.merged_box) is None:
            # Not one box now: a detector splits a locked pair for a frame now and then, so only a pair apart (or
            # lost) until CONVERGED_WAIT_SECONDS is forgotten; one that passed and drives on fails the speed test.
            if since_contact >= CONVERGED_WAIT_SECONDS - 1e-6:
                state.collisions.remove(candidate)
            continue
        if since_contact < CONVERGED_MIN_SECONDS - 1e-6:
            continue
        if _drove_on(candidate, frame, around[0]):
            state.collisions.remove(candidate)  # passed each other: one box a moment, another vehicle there now
            continue
        # Speeds in box heights per second, the one box's by its own height (taller than either vehicle's: lenient).
        (x0, y0), (x1, y1) = centre(candidate.merged_box), centre(around[0])
        speed = math.hypot(x1 - x0, y1 - y0) / since_contact / max(around[0][3] - around[0][1], 1.0)
        faster = max(math.hypot(*velocity) for velocity in candidate.velocities_before if velocity is not None)
        if speed <= CONVERGED_SPEED_SHARE * faster:
            candidate.confirmed_at = frame.time
        else:
            state.collisions.remove(candidate)  # one box driving on: overlapping in the image, not locked together
    if len(state.recent_vehicles) < 2:
        return
    first, second = state.recent_vehicles
    if frame.time - first.time > 2 * MAX_FRAME_GAP_S or frame.time - second.time > MAX_FRAME_GAP_S:
        return
    thresholds = scene.thresholds
    step, ahead = second.time - first.time, frame.time - second.time
    previous = previous_of(first, second)
    moving = []  # (index in `second`, its centre's velocity in px/s)
    for i, j in enumerate(previous):
        # A box without area (clipped away, inverted) has no size to measure speed or growth against.
        if j is not None and box_area(second.boxes[i]) > 0 and _clearly_continues(first, second, i, j):
            (x0, y0), (x1, y1) = centre(first.boxes[j]), centre(second.boxes[i])
            moving.append((i, ((x1 - x0) / step, (y1 - y0) / step)))
    known = {track_id for candidate in state.collisions for track_id in candidate.track_ids if track_id != UNTRACKED}
    for n, (a, velocity_a) in enumerate(moving):
        for b, velocity_b in moving[n + 1:]:
            box_a, box_b = second.boxes[a], second.boxes[b]
            pair = (second.track_ids[a], second.track_ids[b])
            if not _disjoint(box_a, box_b) or known.intersection(pair):
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
            # Seen apart: at a point where one was heading, or going on from where it was (its motion read from a
            # neighbour's box in the frame before, the detector having missed it there, while the other's box grew
            # with the detector's jitter).
            if (largest is None or apart or any(_continued_apart(box, frame, merged) for box in (box_a, box_b))
                    or box_area(largest) < thresholds.converging_min_growth * max(box_area(box_a), box_area(box_b))
                    or any(track_id != UNTRACKED and track_id in frame.track_ids
                           and frame.boxes[frame.track_ids.index(track_id)] != largest for track_id in pair)):
                continue
            speed_a = math.hypot(*velocity_a) / (box_a[3] - box_a[1])
            speed_b = math.hypot(*velocity_b) / (box_b[3] - box_b[1])
            # Ordered by track id, as contacts are.
            (id_a, name_a, v_a, speed_a), (id_b, name_b, v_b, speed_b) = sorted(
                [(pair[0], second.class_names[a], velocity_a, speed_a),
                 (pair[1], second.class_names[b], velocity_b, speed_b)], key=lambda party: party[0])
            # Where each would have been at the contact had it driven on: the merged box's frame.
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
