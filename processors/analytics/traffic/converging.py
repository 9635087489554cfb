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
from functools import cached_property

from processors.analytics.traffic.scene import Scene, box_area, centre, in_box, shifted
from processors.analytics.traffic.state import Box, CollisionCandidate, TrafficState, VehicleFrame
from schemas import UNTRACKED
from schemas.geometry import BoxGrid, box_diagonal

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


Measures = tuple[tuple[float, float], float, float]  # a box's centre, diagonal and area


def _measures(box: Box) -> Measures:
    return centre(box), box_diagonal(box), box_area(box)


def _measured_distance(box: Measures, before: Measures) -> float | None:
    """distance_as_same_vehicle, from the boxes' measures."""
    (centre_a, diagonal_a, area_a), (centre_b, diagonal_b, area_b) = box, before
    diagonal = max(diagonal_a, diagonal_b)
    distance = math.dist(centre_a, centre_b) / diagonal if diagonal > 0 else math.inf
    small, large = (area_a, area_b) if area_a <= area_b else (area_b, area_a)
    return distance if distance < SAME_VEHICLE_DIAGONALS and large <= SAME_VEHICLE_AREA_RATIO * small else None


def distance_as_same_vehicle(box: Box, before: Box) -> float | None:
    """How far a box lies from an earlier one, in box diagonals, when it can be the same vehicle; else None."""
    return _measured_distance(_measures(box), _measures(before))


def same_vehicle_reach(box: Box) -> Box:
    """A square around the box's centre, its diagonal to each side: two boxes that can be the same vehicle
    (distance_as_same_vehicle) have their centres within the larger one's diagonal, so their squares meet. Widened by
    a hair, so that no rounding of these sums keeps two such squares apart."""
    x, y = centre(box)
    reach = box_diagonal(box) * (1 + 1e-9) + 1e-9 * (abs(x) + abs(y))
    return x - reach, y - reach, x + reach, y + reach


class FrameIndex:
    """A frame's vehicle boxes, bucketed (BoxGrid) to find those at a place, or that can be the same vehicle as a
    box, without measuring every one: a frame may hold thousands of vehicles, and asking about each of them, or each
    pair, of every box made such a frame take seconds. Each answer lists the boxes in the frame's order."""

    def __init__(self, boxes: list[Box]):
        self.boxes = boxes

    @cached_property
    def _measures(self) -> list[Measures]:
        return [_measures(box) for box in self.boxes]

    @cached_property
    def _cell(self) -> float:
        """The grids' cells' side: the median vehicle's diagonal."""
        diagonals = sorted(diagonal for _, diagonal, _ in self._measures if diagonal > 0)
        return diagonals[len(diagonals) // 2] if diagonals else 1.0

    @cached_property
    def _places(self) -> BoxGrid:
        return BoxGrid(self.boxes, self._cell)

    @cached_property
    def _centres(self) -> BoxGrid:
        return BoxGrid([(x, y, x, y) for (x, y), _, _ in self._measures], self._cell)

    @cached_property
    def _reaches(self) -> BoxGrid:
        return BoxGrid([same_vehicle_reach(box) for box in self.boxes], self._cell)

    def meeting(self, box: Box) -> list[int]:
        """The boxes that overlap `box` by more than an edge."""
        return sorted(index for index in self._places.near(box) if not _disjoint(self.boxes[index], box))

    def holding(self, point: tuple[float, float]) -> list[int]:
        """The boxes that hold the point (edges included)."""
        return sorted(index for index in self._places.near((*point, *point)) if in_box(point, self.boxes[index]))

    def as_same_vehicle(self, box: Box) -> list[tuple[int, float]]:
        """The boxes that can be the same vehicle as `box`, each with distance_as_same_vehicle. Their centres lie
        within the larger diagonal: within `box`'s (a centre in its reach), or within their own (its centre in
        theirs)."""
        measures, measured = _measures(box), self._measures
        near = self._centres.near(same_vehicle_reach(box)) | self._reaches.near((*measures[0], *measures[0]))
        return [(index, distance) for index in sorted(near)
                for distance in [_measured_distance(measures, measured[index])] if distance is not None]


def previous_of(earlier: VehicleFrame, earlier_index: FrameIndex, later: VehicleFrame) -> list[int | None]:
    """For each detection of `later`, the index of the same vehicle in `earlier` (None when it has none): by track id
    where both are confirmed, else the nearest unclaimed detection of about its size (`earlier_index`: earlier's)."""
    matched: list[int | None] = [None] * len(later.boxes)
    index_of = {track_id: i for i, track_id in enumerate(earlier.track_ids) if track_id != UNTRACKED}
    for i, track_id in enumerate(later.track_ids):
        matched[i] = index_of.get(track_id) if track_id != UNTRACKED else None
    claimed = {i for i in matched if i is not None}
    options = []
    for i, (box, track_id) in enumerate(zip(later.boxes, later.track_ids, strict=True)):
        if matched[i] is not None:
            continue
        for j, distance in earlier_index.as_same_vehicle(box):
            if j not in claimed and (track_id == UNTRACKED or earlier.track_ids[j] == UNTRACKED):
                options.append((distance, i, j))
    for _, i, j in sorted(options):
        if matched[i] is None and j not in claimed:
            matched[i] = j
            claimed.add(j)
    return matched


class SampledFrames:
    """The frame being analysed and the two sampled frames before it (`TrafficState.recent_vehicles`), each with its
    index, and which detection continues which of the frame before (previous_of) from the first sampled frame to the
    second and from the second to this one: the converging check, the search for lost unconfirmed vehicles and the
    vehicles' moves all ask about these. Made anew for every frame; each is worked out once, when first asked for."""

    def __init__(self, recent: list[VehicleFrame], frame: VehicleFrame):
        self.recent = list(recent)
        self.recent_indexes = [FrameIndex(sampled.boxes) for sampled in self.recent]
        self.frame = frame
        self.index = FrameIndex(frame.boxes)

    @cached_property
    def recent_previous(self) -> list[int | None]:
        """For each detection of the second sampled frame, the same vehicle's in the first (previous_of; there must
        be two)."""
        first, second = self.recent
        return previous_of(first, self.recent_indexes[0], second)

    @cached_property
    def frame_previous(self) -> list[int | None]:
        """For each detection of this frame, the same vehicle's in the last sampled frame (previous_of; there must be
        one)."""
        return previous_of(self.recent[-1], self.recent_indexes[-1], self.frame)

    def unconfirmed_origin(self, track_id: int) -> Box | None:
        """Where the vehicle of this frame's track `track_id`, new in this frame, was first seen in the sampled frames
        before as an unconfirmed detection (the earliest of them, clearly the same vehicle each step back), or None.
        At a few frames per second a vehicle close to the camera moves so far between frames that the tracker
        confirms it only several frames after the detector first found it."""
        frame = self.frame
        if track_id not in frame.track_ids or not self.recent or frame.time - self.recent[-1].time > MAX_FRAME_GAP_S:
            return None
        index = frame.track_ids.index(track_id)
        last, j = self.recent[-1], self.frame_previous[index]
        if j is None or last.track_ids[j] != UNTRACKED \
                or not _only_near(self.recent_indexes[-1], frame.boxes[index], j):
            return None
        if len(self.recent) == 2 and last.time - self.recent[0].time <= MAX_FRAME_GAP_S:
            k = self.recent_previous[j]
            if k is not None and self.recent[0].track_ids[k] == UNTRACKED \
                    and _only_near(self.recent_indexes[0], last.boxes[j], k):
                return self.recent[0].boxes[k]
        return last.boxes[j]


def _clearly_continues(earlier: FrameIndex, later: VehicleFrame, i: int, j: int) -> bool:
    """Whether `later`'s detection i, matched to `earlier`'s j (previous_of), is that vehicle beyond doubt: by track
    id, or, unconfirmed, with no other detection of `earlier` nearly as near (_only_near)."""
    return later.track_ids[i] != UNTRACKED or _only_near(earlier, later.boxes[i], j)


def _only_near(earlier: FrameIndex, box: Box, j: int) -> bool:
    """Whether `box` continues `earlier`'s detection j with no other detection of `earlier` nearly as near
    (CLEAR_MATCH_RATIO). Among two-wheelers packed in a queue the nearest box of about its size is as often a
    neighbour's, and a mix-up reads as riders closing on each other fast."""
    nearest = distance_as_same_vehicle(box, earlier.boxes[j])
    return not any(distance <= CLEAR_MATCH_RATIO * nearest for k, distance in earlier.as_same_vehicle(box) if k != j)


def _continued_apart(box: Box, frame: FrameIndex, merged: list[Box]) -> bool:
    """Whether a box of `frame` outside `merged` (the boxes where two vehicles met) continues the vehicle at `box` more
    nearly than the largest of them does: that vehicle is seen apart from it."""
    to_merged = distance_as_same_vehicle(max(merged, key=box_area), box)
    return any(frame.boxes[other] not in merged and (to_merged is None or distance < to_merged)
               for other, distance in frame.as_same_vehicle(box))


def _drove_on(candidate: CollisionCandidate, frame: FrameIndex, since_contact: float, wreck: Box) -> bool:
    """Whether a box of about one party's size lies in `frame` where that party would be `since_contact` after the
    contact had it driven on as it did before it (`CollisionCandidate.converged_from`), other than the one box where
    they met: it passed the other, and the box there now is a vehicle come up behind."""
    for x1, y1, x2, y2, vx, vy in candidate.converged_from or ():
        ahead = shifted((x1, y1, x2, y2), vx * since_contact, vy * since_contact)
        if any(frame.boxes[index] != wreck for index, _ in frame.as_same_vehicle(ahead)):
            return True
    return False


def record_converging(scene: Scene, state: TrafficState, frames: SampledFrames) -> None:
    """Confirms the vehicles that converged into one box in an earlier frame as a collision once that box is one
    CONVERGED_MIN_SECONDS later and has lost their speed (forgets them when it is not, or when they are still apart
    CONVERGED_WAIT_SECONDS after), and remembers each pair of vehicles of the previous frame that converged into one
    box of this frame (`frames.frame`, after the two sampled frames before it)."""
    frame, frame_index = frames.frame, frames.index
    for candidate in [c for c in state.collisions if c.merged_box is not None and c.confirmed_at is None]:
        around = [frame.boxes[index] for index in frame_index.meeting(candidate.merged_box)]
        since_contact = frame.time - candidate.contact_at
        if len(around) != 1 or distance_as_same_vehicle(around[0], candidate.merged_box) is None:
            # Not one box now: a detector splits a locked pair for a frame now and then, so only a pair apart (or
            # lost) until CONVERGED_WAIT_SECONDS is forgotten; one that passed and drives on fails the speed test.
            if since_contact >= CONVERGED_WAIT_SECONDS - 1e-6:
                state.collisions.remove(candidate)
            continue
        if since_contact < CONVERGED_MIN_SECONDS - 1e-6:
            continue
        if _drove_on(candidate, frame_index, since_contact, around[0]):
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
    if len(frames.recent) < 2:
        return
    first, second = frames.recent
    if frame.time - first.time > 2 * MAX_FRAME_GAP_S or frame.time - second.time > MAX_FRAME_GAP_S:
        return
    thresholds = scene.thresholds
    step, ahead = second.time - first.time, frame.time - second.time
    previous, first_index = frames.recent_previous, frames.recent_indexes[0]
    moving = []  # (index in `second`, its centre's velocity in px/s)
    for i, j in enumerate(previous):
        # A box without area (clipped away, inverted) has no size to measure speed or growth against.
        if j is not None and box_area(second.boxes[i]) > 0 and _clearly_continues(first_index, second, i, j):
            (x0, y0), (x1, y1) = centre(first.boxes[j]), centre(second.boxes[i])
            moving.append((i, ((x1 - x0) / step, (y1 - y0) / step)))
    # Where each was heading, and the boxes of this frame there: only two heading into one box can have converged.
    headings = [(x + vx * ahead, y + vy * ahead) for (x, y), (vx, vy)
                in ((centre(second.boxes[i]), velocity) for i, velocity in moving)]
    heading_into = [frame_index.holding(point) for point in headings]
    heading_there: dict[int, list[int]] = {}  # index of a box in this frame -> the moving heading into it
    for n, boxes in enumerate(heading_into):
        for index in boxes:
            heading_there.setdefault(index, []).append(n)
    pairs = sorted({(n, m) for movers in heading_there.values() for n in movers for m in movers if n < m})
    first_seen_at = {}  # track id -> its first box in this frame
    for box, track_id in zip(frame.boxes, frame.track_ids, strict=True):
        first_seen_at.setdefault(track_id, box)
    known = {track_id for candidate in state.collisions for track_id in candidate.track_ids if track_id != UNTRACKED}
    for n, m in pairs:
        (a, velocity_a), (b, velocity_b) = moving[n], moving[m]
        box_a, box_b = second.boxes[a], second.boxes[b]
        pair = (second.track_ids[a], second.track_ids[b])
        if not _disjoint(box_a, box_b) or known.intersection(pair):
            continue
        closing = (math.dist(centre(first.boxes[previous[a]]), centre(first.boxes[previous[b]]))
                   - math.dist(centre(box_a), centre(box_b))) / step
        height = (box_a[3] - box_a[1] + box_b[3] - box_b[1]) / 2
        if closing < thresholds.converging_min_closing_box_per_s * height:
            continue
        merged = [frame.boxes[index] for index in sorted(set(heading_into[n]) & set(heading_into[m]))]
        apart = any(frame.boxes[index] not in merged for index in {*heading_into[n], *heading_into[m]})
        largest = max(merged, key=box_area)
        # Seen apart: at a point where one was heading, or going on from where it was (its motion read from a
        # neighbour's box in the frame before, the detector having missed it there, while the other's box grew
        # with the detector's jitter).
        if (apart or any(_continued_apart(box, frame_index, merged) for box in (box_a, box_b))
                or box_area(largest) < thresholds.converging_min_growth * max(box_area(box_a), box_area(box_b))
                or any(track_id != UNTRACKED and track_id in first_seen_at and first_seen_at[track_id] != largest
                       for track_id in pair)):
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
