"""The traffic rules: each looks at the tracks (and blobs) of the current frame and says which conditions hold.

Pure functions over the scene and the analyzer state; the event life cycle is `incidents.reconcile`'s job.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise
from typing import NamedTuple

import numpy as np

from processors.analytics.traffic.converging import MAX_FRAME_GAP_S, FrameIndex, SampledFrames
from processors.analytics.traffic.incidents import Condition
from processors.analytics.traffic.scene import (
    GroundHistories,
    Scene,
    anchor_point,
    box_segment_distance,
    segment_meets_box,
)
from processors.analytics.traffic.state import (
    MAX_COLLISION_CANDIDATES,
    Box,
    CollisionCandidate,
    LaneStretch,
    OpenIncident,
    StaticObject,
    TrackState,
    TrafficState,
)
from processors.analytics.traffic.static_objects import (
    EDGE_MARGIN_PX,
    fragments_of_one,
    gather_evidence,
    incident_open,
    merge_objects,
    overlap,
    seen_gone,
    touches_edge,
    union,
    update_objects,
)
from schemas import Detections, Severity, StaticBlob
from schemas.geometry import Point, box_cover, box_diagonal, box_intersection, box_iou, positions_along
from schemas.settings.lines import Anchor

STANDING_FACTOR = 0.25  # pedestrian-area score of a vehicle standing still, relative to one moving
HIDDEN_STANDING_S = 1.0  # a vehicle at rest missed by the detector this long is still where it was last seen
CRASH_SCENE_DIAGONALS = 2.0  # vehicles at rest within this many crash-box diagonals belong to the crash
WALKING_KEY = "pedestrian_on_roadway:"  # key prefix of a person (or people walking together) on the roadway
IMPACT_SPEED_SECONDS = 0.5  # a vehicle's speed at a contact is its speed over this long before it
# A track followed for less than this has a speed from one or two sample steps, where a slight shake of the camera
# reads as motion (a car 20 px tall moved 4 px in 0.2 s is at 1 box height per second): its contact speed is its
# speed relative to the other vehicle's over those steps, in which the shake, moving every box alike, cancels out.
CONTACT_SPEED_MIN_TRACKED_S = 0.4
# Capture times of frames sampled at a steady rate from a camera's own rate wander (every fifth frame at 24 fps is
# 0.208 s apart): a frame this much later than a time still counts as at it.
CAPTURE_SLACK_S = 0.05
# A vehicle at most this share of the other's speed at a contact was struck by it, not braking alongside it.
STRUCK_SPEED_SHARE = 0.5
IMPACT_STOP_SHARE = 0.3  # speed after a contact, as a share of the speed before, below which a vehicle stopped dead
# The hardest braking, in box heights per second squared (a car's box about 1.5 m tall: some 7.5 m/s^2, an emergency
# stop): two vehicles braking to rest side by side, touching in perspective, lose speed no faster; an impact stops a
# vehicle within a frame or two.
BRAKING_MAX_BOX_PER_S2 = 5.0
AGAINST_LANE_COSINE = math.cos(math.radians(45))  # motion within 45 degrees of the reverse of the lane: moving back
# Share of the smaller box over a vehicle at rest that makes a box part of it (a second detection, an open door), with
# their foot points at most SAME_VEHICLE_FOOT_HEIGHTS of the smaller box's height apart: cars queued one behind the
# other overlap less in perspective, and a tall vehicle that covers the car ahead stands a vehicle's length nearer.
SAME_VEHICLE_OVERLAP = 0.6
SAME_VEHICLE_FOOT_HEIGHTS = 0.5


def hold(track: TrackState, name: str, holds: bool, now: float) -> float:
    """How long a per-track condition has held without a break (0 when it does not hold now)."""
    if not holds:
        track.timers.pop(name, None)
        return 0.0
    return now - track.timers.setdefault(name, now)


def foot(track: TrackState) -> tuple[float, float]:
    return anchor_point(track.box, Anchor.BOTTOM_CENTER)


def _tracks_of(state: TrafficState, track_ids: Iterable[int]) -> list[TrackState]:
    """The tracks still known among `track_ids` (an object's or a collision's), in their order."""
    return [state.tracks[track_id] for track_id in track_ids if track_id in state.tracks]


def _one_vehicle(a: Box, b: Box) -> bool:
    """Whether two vehicle boxes at one place are one vehicle (a second detection of it, its open door): one largely
    over the other, their foot points together."""
    feet_apart = math.dist(anchor_point(a, Anchor.BOTTOM_CENTER), anchor_point(b, Anchor.BOTTOM_CENTER))
    return (overlap(a, b) >= SAME_VEHICLE_OVERLAP
            and feet_apart <= SAME_VEHICLE_FOOT_HEIGHTS * min(a[3] - a[1], b[3] - b[1]))


def vehicle_moves(scene: Scene, state: TrafficState, seen: list[TrackState], now: float,
                  frames: SampledFrames) -> list[tuple[Point, Point]]:
    """Where vehicles that moved went on the ground (foot point before, now): on a sampled frame each vehicle
    detection, confirmed or not, since the sampled frame before, and each vehicle track seen now since its history's
    sample before, however many frames the detector missed it in between (up to MAX_FRAME_GAP_S)."""
    steps = []
    if len(state.recent_vehicles) == 2 and state.recent_vehicles[-1].time == now:
        first, second = state.recent_vehicles
        # This frame and the sampled one before it, or the two before it where this one, captured at the very time of
        # the last sampled frame, was not sampled.
        previous = frames.frame_previous if second is frames.frame else frames.recent_previous
        steps = [(anchor_point(first.boxes[j], Anchor.BOTTOM_CENTER), second.boxes[i])
                 for i, j in enumerate(previous) if j is not None]
    for track in seen:
        if track.class_name in scene.vehicle_classes and len(track.history) >= 2 \
                and now - track.history[-2][0] <= MAX_FRAME_GAP_S:
            steps.append((track.history[-2][1:3], track.box))
    moves = []
    for before, box in steps:
        after = anchor_point(box, Anchor.BOTTOM_CENTER)
        if math.dist(before, after) > scene.stationary_tolerance(box):
            moves.append((before, after))
    return moves


def queue_head_reach(scene: Scene, box: Box) -> float:
    """How close (pixels) a vehicle's box must come to a place where a queue's head waits: queue_head_distance_boxes
    of its own height, which scales with the resolution and the perspective as the gap in front of it does."""
    return scene.thresholds.queue_head_distance_boxes * max(box[3] - box[1], 1.0)


def standing_queues(scene: Scene, state: TrafficState, vehicles: list[TrackState], now: float) -> set[str]:
    """Stop lines where a red-light queue stands now: a stopped vehicle at the head, for a plausible red time. The
    head is measured by its box, whose front may be a vehicle's length from its foot point."""
    standing = set()
    for line in scene.stop_lines.values():
        head = any(scene.is_stopped(v) and scene.is_in(foot(v), line.queue_area)
                   and box_segment_distance(v.box, line.start, line.end) <= queue_head_reach(scene, v.box)
                   for v in vehicles)
        key = f"queue:{line.id}"
        if not head:
            state.zone_timers.pop(key, None)
            continue
        since = state.zone_timers.setdefault(key, now)
        if now - since <= scene.thresholds.max_red_light_seconds:
            standing.add(line.id)
    return standing


def objects_at_rest(scene: Scene, state: TrafficState, seen: list[TrackState], blobs: list[StaticBlob], now: float,
                    seq: int, frame_size: tuple[int, int], frames: SampledFrames) -> tuple[list[Condition], set[str]]:
    """One condition per physical object at rest where it should not be: a crashed or stopped vehicle, or an unknown
    object in a lane or zone. Severity follows what happened: a vehicle that came to rest through a collision or an
    abrupt stop is critical and is flagged after `collision_stopped_seconds`, any other after `stopped_seconds` (or its
    no-stopping zone's `allowed_seconds` for a class the zone allows).
    Also returns the stop lines where a red-light queue stands (standing_queues)."""
    thresholds = scene.thresholds
    moves = vehicle_moves(scene, state, seen, now, frames)
    evidence = gather_evidence(scene, state, seen, blobs, moves, now, frame_size)
    # A queue's vehicles are those in view and those the detector lost that the background model still shows where
    # they stood (in perspective the cars queued behind hide the ones ahead, the head at the stop line included).
    in_view = {track.track_id for track in seen}
    vehicles = [track for track in seen if track.class_name in scene.vehicle_classes] + [
        track for track in state.tracks.values() if track.held_at == now and track.track_id not in in_view]
    queues = standing_queues(scene, state, vehicles, now)
    objects = update_objects(state, evidence, {track.track_id: track.box for track in seen}, now, seq,
                             thresholds.static_object_grace_seconds, thresholds.reported_object_grace_seconds,
                             thresholds.stationary_box_fraction)
    _mark_crashes(scene, state, objects, queues, now, frame_size)
    conditions = []
    obstacles_now: dict[str, Condition] = {}
    for obj in list(objects):
        if obj not in state.static_objects:  # merged into another below
            continue
        region = _region_of(scene, obj)
        reported = incident_open(state, obj)
        if obj.region_since is None:  # it has rested where it is first seen at rest
            obj.region, obj.region_since, obj.moving_to_since = region, obj.since, None
        elif region == obj.region:
            obj.moving_to_since = None
        elif obj.moving_to_since is None or obj.moving_to != region:
            obj.moving_to, obj.moving_to_since = region, now
        elif now - obj.moving_to_since >= thresholds.resolve_seconds:
            # It has moved elsewhere once it has been there for as long as ends an event, and its clock there starts
            # when it got there. Box jitter on a region's edge moves its foot point across for a frame or two, not
            # the object (a car parked beside a lane, or stopped on the line between two).
            obj.region, obj.region_since, obj.moving_to_since = region, obj.moving_to_since, None
        region = obj.region
        if region is None:
            continue
        kind, zone_id = region.split(":", 1)
        if obj.class_name is None:
            # It has stood as long as the background model has shown it (update_objects leaves out the longer
            # gaps): a blob seen for a frame or two, then gone, stood no longer than that.
            static_for = obj.last_evidence - max(obj.since, obj.excused_at or obj.since)
            # In a standing red-light queue's area it is most likely vehicles packed in the queue that the detector
            # leaves unboxed (two-wheelers): timed from when the queue leaves, as a queued vehicle is. Once reported,
            # a queue forming behind it does not end it.
            if not reported and scene.in_queue_area(anchor_point(obj.box, Anchor.BOTTOM_CENTER), queues):
                obj.excused_at, static_for = now, 0.0
            # Traffic drives over road (a marking, a repair strip, asphalt under a stale background) and around an
            # obstacle: the clock restarts while a moving vehicle's ground point passes over the object. Once
            # reported, a vehicle hitting it or squeezing past does not end it.
            if static_for < thresholds.obstacle_min_seconds and any(
                    segment_meets_box(before, after, obj.box) for before, after in moves):
                obj.excused_at, static_for = now, 0.0
            # Something unknown at the frame edge is partly out of view: a vehicle waiting half in the picture, or
            # the camera's own caption or logo along the border. The view cannot tell either from an obstacle. One
            # seen gone was cleared away: its event ends now, not once it is forgotten.
            if static_for >= thresholds.obstacle_min_seconds and not touches_edge(obj.box, frame_size) \
                    and not seen_gone(obj, now):
                key = _obstacle_incident(state, obj, obstacles_now)
                box, confidence = obj.box, obj.confidence
                earlier = obstacles_now.get(key)
                if earlier is not None:  # another piece of the same obstacle: one condition over all of them
                    conditions.remove(earlier)
                    static_for = max(static_for, float(earlier.details["seconds_in_lane"]))
                    box, confidence = union(box, _obstacle_box(earlier)), max(confidence, earlier.confidence)
                obstacles_now[key] = Condition(
                    key=key, type="obstacle_in_lane", severity=Severity.WARNING,
                    reason=f"unknown static object in {kind} {zone_id} for {static_for:.0f} s",
                    confidence=confidence, zone_id=zone_id,
                    details={"class_name": "unknown", "seconds_in_lane": round(static_for, 1), "x1": box[0],
                             "y1": box[1], "x2": box[2], "y2": box[3]})
                conditions.append(obstacles_now[key])
            continue
        older = None if obj.crash else next(
            (other for other in state.static_objects if other is not obj and other.class_name is not None
             and other.since < obj.since and _one_vehicle(other.box, obj.box)), None)
        if older is not None:
            # Over a vehicle at rest since earlier, standing where it stands: a second detection of it, its open
            # door; one incident.
            merge_objects(state, older, obj, same_object=False)
            continue
        # A vehicle that waited in a queue starts its clock when the queue dissolves; one that rolled into the zone
        # when it got there (a vehicle at rest on the zone's edge flickers in and out with box jitter). Once reported,
        # a vehicle stopping beside it does not make it part of a queue.
        stopped_for = now - max(obj.since, obj.excused_at or obj.since, obj.region_since or obj.since)
        if not obj.crash and not reported and _driving_off(scene, state, obj, in_view, now):
            continue
        tracks = _tracks_of(state, obj.track_ids)
        if not obj.crash and kind in ("sidewalk", "pedestrian") and tracks and not obj.arrived:
            # Off the road only a vehicle seen arriving stopped there: one that has stood where it first appeared is
            # parked (a motorcycle on a footway) or street furniture read as a vehicle (a signal head).
            continue
        limit = thresholds.collision_stopped_seconds if obj.crash else _stopping_limit(scene, obj, kind, zone_id)
        # A queue excuses a vehicle not reported yet however long it has been timed: the first time it is judged,
        # its clock may be past the limit already (a patch the background model showed beside it since long before
        # joined it as it came to rest).
        if not obj.crash and not reported and _queued(scene, obj, kind, zone_id, queues, vehicles, frame_size, now):
            obj.excused_at, stopped_for = now, 0.0
        # A collision already raised at contact goes on without waiting: its vehicles' standstill is that incident.
        if stopped_for < limit and obj.incident_key is None:
            continue
        where = {"lane": "lane", "zone": "zone", "sidewalk": "sidewalk", "pedestrian": "pedestrian area"}[kind]
        if obj.crash:
            conditions.append(_crash_condition(state, obj, f"{where} {zone_id}", zone_id, stopped_for, now))
        else:
            conditions.append(Condition(
                key=f"at_rest:{obj.key}", type="stopped_vehicle", severity=Severity.WARNING, level=1,
                reason=f"{obj.class_name} stopped {stopped_for:.0f} s in {where} {zone_id} (limit {limit:g} s)",
                confidence=obj.confidence, zone_id=zone_id, track_ids=sorted(obj.track_ids),
                details={"stopped_seconds": round(stopped_for, 1)}))
    return conditions, queues


def _obstacle_incident(state: TrafficState, obj: StaticObject, obstacles_now: dict[str, Condition]) -> str:
    """The key of the obstacle incident an unknown object is: its own, or one open or raised in this frame that it
    lies over or beside (fragments_of_one). The background model splits an obstacle and re-forms it from frame to
    frame, and a piece found apart from the others is an object of its own, already standing for as long as the
    background shows it: it would open a second event at once. The incident it joins is remembered (piece_of): the
    piece keeps it open while hidden for as long as a reported object does."""
    own = f"at_rest:{obj.key}"
    for key in (own, obj.piece_of):
        if key in state.incidents or key in obstacles_now:
            return key
    shown = [(key, _obstacle_box(incident)) for key, incident in state.incidents.items()
             if key.startswith("at_rest:") and incident.type == "obstacle_in_lane"]  # (not a detected dog's)
    shown += [(key, _obstacle_box(condition)) for key, condition in obstacles_now.items()]
    key = next((key for key, box in shown if fragments_of_one(box, obj.box)), own)
    obj.piece_of = None if key == own else key
    return key


def _obstacle_box(incident: Condition | OpenIncident) -> Box:
    details = incident.details
    return (float(details["x1"]), float(details["y1"]), float(details["x2"]), float(details["y2"]))


def _driving_off(scene: Scene, state: TrafficState, obj: StaticObject, in_view: set[int], now: float) -> bool:
    """Whether the vehicle of an object at rest is in view, no longer at rest, further from where it last stood still
    than box jitter takes it: it is driving off, its box still over where it stood."""
    track = state.tracks.get(obj.track_ids[0])
    if obj.last_evidence == now or track is None or track.track_id not in in_view:
        return False
    return math.dist(foot(track), anchor_point(obj.box, Anchor.BOTTOM_CENTER)) > scene.stationary_tolerance(track.box)


def _crash_condition(state: TrafficState, obj: StaticObject, where: str, zone_id: str, stopped_for: float,
                     now: float) -> Condition:
    """The collision an object at rest is part of, naming the kinds of vehicle in it (the one that came to rest
    first first) and, when the collision was seen at contact, when that was."""
    names = [track.class_name for track in _tracks_of(state, obj.track_ids)]
    vehicles = " and ".join(dict.fromkeys(names)) or obj.class_name or "vehicle"  # each class once, in order
    if obj.contact_at is not None:
        # Whatever stood there before the contact (a waiting motorcycle that was hit) has been in the crash since it.
        since_contact = now - obj.contact_at
        reason = (f"collision of {vehicles} in {where}: contact {since_contact:.1f} s ago, at rest "
                  f"{min(stopped_for, since_contact):.0f} s")
        details = {"seconds_since_contact": round(since_contact, 1), "stopped_seconds": round(stopped_for, 1)}
    else:
        reason = f"collision of {vehicles} in {where}: came to rest abruptly {stopped_for:.0f} s ago"
        details = {"stopped_seconds": round(stopped_for, 1)}
    return Condition(
        key=obj.incident_key or f"at_rest:{obj.key}", type="collision", severity=Severity.CRITICAL, level=2,
        reason=reason, confidence=obj.confidence, zone_id=zone_id, track_ids=sorted(obj.track_ids), details=details)


def _region_of(scene: Scene, obj: StaticObject) -> str | None:
    """Where the object stands, as "kind:id": stopping zone, lane, sidewalk or pedestrian area; None elsewhere."""
    point = anchor_point(obj.box, Anchor.BOTTOM_CENTER if obj.class_name else Anchor.CENTER)
    zone = next((z for z in scene.stopping_zones if scene.is_in(point, z.polygon)), None)
    lane_id = scene.lane_of(point)
    if obj.class_name is None:
        # An unknown object blocks the lane it lies in; elsewhere (car parks, sidewalks, plazas) things come and go.
        return f"lane:{lane_id}" if lane_id is not None else None
    if zone is not None:
        return f"zone:{zone.id}"
    if lane_id is not None:
        return f"lane:{lane_id}"
    for kind, regions in (("sidewalk", scene.config.sidewalks), ("pedestrian", scene.config.pedestrian_areas)):
        region_id = scene.in_any(point, regions)
        if region_id is not None:
            return f"{kind}:{region_id}"
    return None


# A vehicle read as an allowed class in this share of the frames it has stood is of that class: detectors take a bus
# for a truck much of the time (and a truck for a bus far less), and a bus at its stop is the zone working.
ALLOWED_CLASS_SHARE = 0.25


def _stopping_limit(scene: Scene, obj: StaticObject, kind: str, zone_id: str) -> float:
    """How long the vehicle may stand where it is: a zone's allowance for its class (a bus at its stop, also read as
    a truck for most of its stay), else stopped_seconds, or unseen_stop_seconds for one not seen arriving (standing
    where it was first seen)."""
    zone = scene.stopping_zone_by_id[zone_id] if kind == "zone" else None
    if zone is not None and _of_allowed_class(obj, zone.allowed_classes):
        return zone.allowed_seconds
    thresholds = scene.thresholds
    return thresholds.stopped_seconds if obj.arrived else thresholds.unseen_stop_seconds


def _of_allowed_class(obj: StaticObject, allowed_classes: list[str]) -> bool:
    if obj.class_name in allowed_classes:
        return True
    frames = sum(obj.class_frames.values())
    return frames > 0 and sum(obj.class_frames.get(name, 0) for name in allowed_classes) >= ALLOWED_CLASS_SHARE * frames


def _queued(scene: Scene, obj: StaticObject, kind: str, zone_id: str, queues: set[str],
            vehicles: list[TrackState], frame_size: tuple[int, int], now: float) -> bool:
    """Whether the vehicle waits in a queue: behind a red light (a stop line's queue area, or a zone that names the
    line), with other vehicles stopped in its lane (a queue at a signal or a jam, not a lone stalled vehicle), or
    alone at a signal no stop line marks."""
    if kind == "zone":
        zone = scene.stopping_zone_by_id[zone_id]
        return bool(queues.intersection(zone.queue_stop_lines))
    if kind == "lane":
        point = anchor_point(obj.box, Anchor.BOTTOM_CENTER)
        if scene.in_queue_area(point, queues):
            return True  # in a red-light queue, alone or not, for as long as a red light lasts
        # A second detection of this vehicle, or its open door, is no other vehicle queued beside it.
        others = [vehicle for vehicle in vehicles
                  if vehicle.track_id not in obj.track_ids and scene.is_stopped(vehicle)
                  and scene.lane_of(foot(vehicle)) == zone_id and not _one_vehicle(vehicle.box, obj.box)]
        if not others:
            # Alone at the intersection or a crosswalk, it may wait at a signal (or for people crossing) where no
            # stop line is drawn, and with its front out of the picture at one out of view, as a queue's head may;
            # for no longer than a red light lasts.
            return (now - obj.since <= scene.thresholds.max_red_light_seconds
                    and (_at_yield_point(scene, obj.box, zone_id)
                         or _front_out_of_view(obj.box, scene.lane_directions[zone_id], frame_size)))
        # A queue waits behind something: a vehicle stopped ahead, a stop line, the end of the drawn lane or the
        # edge of the picture (its head out of sight). The head of a queue with none of these in front of it, seen
        # arriving, stalled there, and the queue is the traffic it holds up; a row of vehicles standing where they
        # were first seen is parked (or the camera has just started).
        # A lane with as many vehicles stopped as congestion is raised for is a jam (that event's), whose head may
        # wait for traffic further on than the detector sees.
        jam = len(others) + 1 >= scene.thresholds.congestion_queue_levels[scene.thresholds.congestion_event_level - 1]
        direction = scene.lane_directions[zone_id]
        position = float(np.dot(point, direction))
        return (not obj.arrived or jam or any(float(np.dot(foot(vehicle), direction)) > position for vehicle in others)
                or _at_queue_front(scene, obj.box, zone_id, frame_size))
    return False


def _at_yield_point(scene: Scene, box: Box, lane_id: str) -> bool:
    """Whether a vehicle's box reaches (within queue_head_reach) a place ahead of it in its lane where traffic waits
    its turn: a stop line, the intersection or a crosswalk (one it has driven past is behind it)."""
    reach = queue_head_reach(scene, box)
    direction = scene.lane_directions[lane_id]
    centre_at = float(np.dot(anchor_point(box, Anchor.CENTER), direction))
    return any(box_segment_distance(box, start, end) <= reach
               and max(float(np.dot(start, direction)), float(np.dot(end, direction))) > centre_at
               for start, end in scene.yield_segments)


def _front_out_of_view(box: Box, direction, frame_size: tuple[int, int]) -> bool:
    """Whether the frame edge cuts a vehicle's box on the side its lane's `direction` leads to."""
    width, height = frame_size
    cut = [(box[0] <= EDGE_MARGIN_PX, (-1.0, 0.0)), (box[1] <= EDGE_MARGIN_PX, (0.0, -1.0)),
           (box[2] >= width - EDGE_MARGIN_PX, (1.0, 0.0)), (box[3] >= height - EDGE_MARGIN_PX, (0.0, 1.0))]
    return any(at_edge and float(np.dot(outward, direction)) > 0 for at_edge, outward in cut)


def _at_queue_front(scene: Scene, box: Box, lane_id: str, frame_size: tuple[int, int]) -> bool:
    """Whether a vehicle's box reaches (within queue_head_reach) a place where the head of a queue waits: a yield
    point, the downstream end of its lane or the frame edge."""
    reach = queue_head_reach(scene, box)
    if touches_edge(box, frame_size) or _at_yield_point(scene, box, lane_id):
        return True
    direction = scene.lane_directions[lane_id]
    corners = np.asarray([(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])], float)
    return scene.lane_ends[lane_id] - float(np.max(corners @ direction)) <= reach


# A vehicle hidden in its own dust was lost at speed: over its last step before it was lost (at most this long; one
# step at 5 frames per second or fewer), not only over the second before it. One seen braking in that step (a car
# pulling up at the far end of a junction, lost as it stops and found again standing) stopped as traffic does.
LAST_STEP_S = 0.2
# The background model shows a vehicle hidden where it stopped 3 s later (static_seconds): it is judged hidden in its
# dust within this long of being lost, not whenever what stands there since then changes (a queue that forms over
# the spot and leaves).
HIDDEN_JUDGED_WITHIN_S = 6.0


def _mark_crashes(scene: Scene, state: TrafficState, objects: list[StaticObject], queues: set[str], now: float,
                  frame_size: tuple[int, int]) -> None:
    """Vehicles at rest that got there through a contact at speed or an abrupt stop; a collision's vehicles are
    one incident. `queues`: the stop lines whose red-light queue stands."""
    thresholds = scene.thresholds

    def whole_in_view(obj: StaticObject) -> list[TrackState]:
        """The object's tracks whose box the frame edge does not cut: a cut box moves with the cut (a vehicle
        entering or leaving the picture), so its speed says nothing."""
        return [track for track in _tracks_of(state, obj.track_ids) if not touches_edge(track.box, frame_size)]

    by_track = {track_id: obj for obj in objects if obj.class_name is not None for track_id in obj.track_ids}
    for candidate in [c for c in state.collisions if c.confirmed_at is not None]:
        # A collision seen at contact: whichever of its vehicles comes to rest after it is that incident.
        involved = [by_track[track_id] for track_id in candidate.track_ids if track_id in by_track
                    and by_track[track_id].since >= candidate.contact_at - 1.0]
        if not involved:
            continue
        keep = next((obj for obj in involved if obj.incident_key == candidate.key), involved[0])
        keep.crash, keep.incident_key, keep.contact_at = True, candidate.key, candidate.contact_at
        for other in involved:
            if other in state.static_objects and other is not keep:
                merge_objects(state, keep, other)
    for candidate in state.collisions:
        involved = [by_track[track_id] for track_id in candidate.track_ids if track_id in by_track]
        if len(involved) == 2 and involved[0] is involved[1] or _second_detection_in(state, candidate):
            continue  # both boxes are one vehicle (a second, smaller detection of it): no second party
        # Every vehicle of the pair came to rest because of the contact (not a car rolling up to a parked one).
        # A vehicle already at rest when first seen (the camera or its tracker just started, a queue confirmed
        # while standing) did not come to rest through this contact: its rest time is only when it was first seen.
        # A partner may also have stood there before (a parked or waiting vehicle that was hit). Both must be at
        # rest, seen or held by the background where the detector lost them; a partner that is not drove on (or out
        # of view).
        standing = [obj for obj in involved if _stood_there(candidate, obj)]
        came_to_rest = [obj for obj in involved if obj not in standing
                        and candidate.contact_at - 1.0 <= obj.since
                        <= candidate.contact_at + thresholds.collision_stop_within_seconds
                        and any(track.first_seen < obj.since for track in _tracks_of(state, obj.track_ids))]
        if not came_to_rest or len(came_to_rest) + len(standing) < len(candidate.track_ids):
            continue
        # One of them stood (or had just stopped) when they touched, or went much slower than the other (a car
        # rear-ended in slow traffic; one shoved forward by the hit comes to rest again after it). Two vehicles
        # at similar speeds at the contact that come to rest after it are traffic braking side by side or nose to
        # tail, touching in perspective; two moving vehicles that collided show it in their motion (impacts).
        # (Not "barely moving over the half second before": at 2 fps that half second is the step before the hit.)
        slower, faster = sorted(candidate.speeds_at_contact)
        if not (any(obj.since <= candidate.contact_at for obj in involved)
                or slower <= STRUCK_SPEED_SHARE * faster):
            continue
        at_contact = dict(zip(candidate.track_ids, candidate.speeds_at_contact, strict=True))
        # One that came to rest through it hit the other fast (speeds_at_contact) and stopped abruptly: a vehicle
        # braking behind or beside another touches it in perspective only as it closes up, slow by then, even when
        # the second before it came to rest was fast.
        abrupt = thresholds.crash_into_standing_speed_box_per_s if standing else thresholds.crash_stop_speed_box_per_s
        if not any(max((at_contact[i] for i in obj.track_ids if i in at_contact), default=0.0) >= abrupt
                   and any(scene.speed_before_rest(track) >= abrupt for track in whole_in_view(obj))
                   for obj in came_to_rest):
            continue
        keep = min(involved, key=lambda obj: obj.since)
        keep.crash = True
        for other in involved:
            if other in state.static_objects:
                merge_objects(state, keep, other)
    for obj in objects:
        if (obj.crash or obj.class_name is None or obj not in state.static_objects
                or _on_travel_path(scene, anchor_point(obj.box, Anchor.BOTTOM_CENTER))):
            continue
        # Left the travel path and stopped dead (on a shoulder, a sidewalk, against a building): a crash, not a
        # vehicle pulling over, which slows down first. Leaving the travel path is the evidence here, so a vehicle
        # the frame edge cuts (come to rest right in front of the camera) counts too; but it must have come off the
        # travel path, and be at rest now: a car coming out of a driveway waits on the sidewalk, a box on one
        # parked on the footway shifts, and one pulling away from there starts its time at rest anew each frame.
        obj.crash = any(scene.is_stopped(track) and _came_off_travel_path(scene, track)
                        and scene.speed_before_rest(track) >= thresholds.crash_stop_speed_box_per_s
                        for track in _tracks_of(state, obj.track_ids))
    for obj in objects:
        if obj.crash or obj.class_name is None or obj not in state.static_objects:
            continue
        # Stopped dead while moving back along its lane (knocked back or spun round): traffic stops in the lane's
        # direction, and a car reversing there (into a parking space) does so slowly.
        lane_id = scene.lane_of(anchor_point(obj.box, Anchor.BOTTOM_CENTER))
        if lane_id is not None and any(_stopped_dead_against(scene, track, scene.lane_directions[lane_id])
                                       for track in whole_in_view(obj)):
            obj.crash = True
    for obj in objects:
        if obj.crash or obj.class_name is None or obj not in state.static_objects:
            continue
        # Lost by the detector while still moving fast, and standing there since (the background model shows it):
        # it stopped within a frame or two, hidden in its own dust or debris. Not a car of a queue pulling away,
        # missed for a frame where it stood long before, nor one that drove out of the picture, nor one that pulled
        # in among vehicles standing there or into a waiting red-light queue (a queue packing in hides it).
        obj.crash = any(not scene.is_stopped(track) and track.last_seen < obj.last_evidence
                        and obj.since >= track.last_seen - 1.0
                        and scene.speed_box_per_s(track) >= thresholds.crash_stop_speed_box_per_s
                        and scene.speed_box_per_s(track, LAST_STEP_S) >= thresholds.crash_stop_speed_box_per_s
                        and now - track.last_seen <= HIDDEN_JUDGED_WITHIN_S
                        and not _among_standing_vehicles(scene, state, track)
                        and not scene.in_queue_area(foot(track), queues)
                        for track in whole_in_view(obj))
    for obj in objects:
        if obj.crash and obj.contact_at is None and obj in state.static_objects:
            # A crash found from its standstill: the latest contact at speed beside it is when it happened.
            near = [candidate.contact_at for candidate in state.collisions
                    if any(_near(track.box, obj.box) for track in _tracks_of(state, candidate.track_ids))]
            obj.contact_at = max(near, default=None)
    # What comes to rest around a crash (the other party, bystanders stopping, a motorcycle thrown aside, debris)
    # is that incident.
    # The earliest crash keeps its key, so the incident already raised goes on.
    for crash in sorted([obj for obj in objects if obj.crash], key=lambda obj: obj.since):
        if crash not in state.static_objects:
            continue
        # The crash scene: where each of its vehicles is (or was last seen).
        members = [crash.box, *(track.box for track in _tracks_of(state, crash.track_ids))]
        for other in [obj for obj in state.static_objects if obj is not crash]:
            if any(_near(box, other.box) for box in members):
                merge_objects(state, crash, other, same_object=False)


def _stood_there(candidate: CollisionCandidate, obj: StaticObject) -> bool:
    """Whether the vehicle at rest stood where it is over the second before the contact: at rest since before then,
    or seen only there since (CollisionCandidate.still_before). The detector missing a waiting car for a moment, or
    the car creeping up to its spot before that, starts its time at rest anew, but a car pulling up beside it in
    perspective did not hit a car that had just stopped."""
    return obj.since < candidate.contact_at - 1.0 or any(
        still >= 1.0 for track_id, still in zip(candidate.track_ids, candidate.still_before, strict=True)
        if track_id in obj.track_ids)


# Two history samples of a track further apart than this have frames between them that the detector missed it in
# (two at 5 frames per second, one at 2).
MISSED_GAP_S = 0.6


def _still_for(scene: Scene, track: TrackState) -> float:
    """How long the track has stood where it is now: since it came to rest, or since the sample before that when the
    detector then missed it for a while and that sample lies within the stationary tolerance of where it is (a
    waiting car missed for a second while it settled on its spot starts its time at rest anew when found again)."""
    since = track.rest_since
    before = [sample for sample in track.history if sample[0] < since]
    if (before and since - before[-1][0] >= MISSED_GAP_S
            and math.dist(before[-1][1:3], track.history[-1][1:3]) <= scene.stationary_tolerance(track.box)):
        since = before[-1][0]
    return track.last_seen - since


def _stopped_dead_against(scene: Scene, track: TrackState, direction) -> bool:
    """Whether the track came to rest abruptly (crash_moving_back_speed_box_per_s over the second before) while moving
    back along its lane (within 45 degrees of the opposite of the lane direction; traffic crossing or turning
    through a loosely drawn lane moves across it)."""
    if scene.speed_before_rest(track) < scene.thresholds.crash_moving_back_speed_box_per_s:
        return False
    motion = scene.velocity(track, track.rest_since - 1.0, track.rest_since)
    if motion is None or float(np.dot(motion, direction)) >= -AGAINST_LANE_COSINE * math.hypot(*motion):
        return False
    # From the sample before that second on, as the velocity is measured.
    start = max((s[0] for s in track.history if s[0] <= track.rest_since - 1.0), default=track.rest_since - 1.0)
    samples = [s for s in track.history if start <= s[0] <= track.rest_since]
    return moved_back_step_by_step(max(steps_back(samples, direction, jumps_only=True), default=0.0),
                                   sum(steps_back(samples, direction)))


def _among_standing_vehicles(scene: Scene, state: TrafficState, track: TrackState) -> bool:
    """Whether another vehicle stopped where the track was lost, its box touching the track's last box, and has been
    seen since."""
    return any(other.track_id != track.track_id and other.class_name in scene.vehicle_classes
               and other.last_seen > track.last_seen and scene.is_stopped(other) and overlap(other.box, track.box) > 0
               for other in state.tracks.values())


def _came_off_travel_path(scene: Scene, track: TrackState) -> bool:
    """Whether the track was on the travel path (`_on_travel_path`) at some point before it came to rest."""
    return any(_on_travel_path(scene, (sample[1], sample[2])) for sample in track.history
               if sample[0] < track.rest_since)


def _near(a, b) -> bool:
    """Within the scene of one crash: centres closer than CRASH_SCENE_DIAGONALS of the larger box's diagonal."""
    diagonal = max(box_diagonal(a), box_diagonal(b))
    return math.dist(anchor_point(a, Anchor.CENTER), anchor_point(b, Anchor.CENTER)) <= CRASH_SCENE_DIAGONALS * diagonal


def _on_travel_path(scene: Scene, point: tuple[float, float]) -> bool:
    """On a lane, in the intersection box, in a no-stopping zone or on a crosswalk (roadway, where a queue may stand),
    rather than on a sidewalk, a shoulder marked as one, a pedestrian area or outside every configured region."""
    return (scene.lane_of(point) is not None or any(scene.is_in(point, zone.polygon) for zone in scene.stopping_zones)
            or scene.in_any(point, scene.config.crosswalks) is not None)


# Largest share of a distance moved back along a lane that one history step may carry: a vehicle moving back covers
# it step by step (a second hidden within a 1.5 s stretch is two thirds of it); a track jumping a vehicle's length at
# once is the tracker swapping the ids of two vehicles standing nose to tail.
MAX_STEP_SHARE_BACK = 0.75
# A step at least this long (2.5 frames per second or fewer) is no jump whatever it carries: a crash's knock back, or
# a stretch of driving, falls between two such frames, and a swap of ids is then not told from motion.
JUMP_MAX_STEP_S = 0.4


def steps_back(samples: list[tuple[float, float, float, float]], direction,
               jumps_only: bool = False) -> list[float]:
    """How far each step between track history samples (oldest first) went back along a lane `direction`, in px;
    with `jumps_only`, only the steps shorter than JUMP_MAX_STEP_S."""
    return [float(np.dot((older[1] - newer[1], older[2] - newer[2]), direction))
            for older, newer in pairwise(samples) if not jumps_only or newer[0] - older[0] < JUMP_MAX_STEP_S - 1e-6]


def moved_back_step_by_step(largest_step_back: float, back: float) -> bool:
    """Whether a distance `back` moved back along a lane was covered over several steps rather than in one jump: no
    step carried more than MAX_STEP_SHARE_BACK of it."""
    return back > 0 and largest_step_back <= MAX_STEP_SHARE_BACK * back


WRONG_WAY_MAX_GAP_S = 1.0  # longest time a track may go unseen within a stretch of wrong-way driving


def wrong_way(scene: Scene, state: TrafficState, vehicles: list[TrackState],
              frame_size: tuple[int, int]) -> list[Condition]:
    thresholds = scene.thresholds
    # In diagonals of the picture, so that the same view decides alike at any resolution: the detector's box jitter
    # and a vehicle's travel both scale with it.
    min_distance = thresholds.wrong_way_min_distance_diagonals * math.hypot(*frame_size)
    conditions = []
    for vehicle in vehicles:
        if touches_edge(vehicle.box, frame_size):
            # A box cut by the frame edge moves with the cut, not with the vehicle, and the tracker hands it on from
            # one vehicle at the edge to the next: its foot may rise up the lane while no vehicle goes back.
            continue
        lane_id = scene.lane_of(foot(vehicle))
        if lane_id is None:
            vehicle.lane_stretch = None
            continue
        # The longest recent stretch of history spent inside this lane, up to now, seen without a long gap: a track
        # the detector keeps losing may be taken over by the next vehicle behind each time it is found again, and
        # so seem to creep backwards. A driver already found going the wrong way is the same one when found again
        # after any gap its track outlived (hidden behind a passing truck): its event goes on.
        key = f"wrong_way:{vehicle.track_id}"
        max_gap = thresholds.track_ttl_seconds if key in state.incidents else WRONG_WAY_MAX_GAP_S
        stretch = []
        for sample in reversed(vehicle.history):
            if scene.lane_of((sample[1], sample[2])) != lane_id or (
                    stretch and stretch[-1][0] - sample[0] > max_gap):
                break
            stretch.append(sample)
        if len(stretch) < 2:
            continue
        direction = scene.lane_directions[lane_id]
        start = _follow_lane_stretch(vehicle, stretch, direction)
        moved = np.asarray([stretch[0][1] - start.x, stretch[0][2] - start.y])
        along = float(moved @ direction)
        if (stretch[0][0] - start.since >= thresholds.wrong_way_min_seconds and along <= -min_distance
                and along <= -0.7 * float(np.linalg.norm(moved))
                and moved_back_step_by_step(start.largest_step_back, -along)):
            conditions.append(Condition(
                key=key, type="wrong_way", severity=Severity.CRITICAL,
                reason=f"{vehicle.class_name} moved {-along:.0f} px against the direction of lane {lane_id}",
                confidence=vehicle.confidence, zone_id=lane_id, track_ids=[vehicle.track_id],
                details={"distance_against_px": round(-along, 1)}, track_bound=True))
    return conditions


def _follow_lane_stretch(vehicle: TrackState, stretch: list[tuple[float, float, float, float]],
                         direction) -> LaneStretch:
    """Where the vehicle's stretch in its lane (`stretch`: the history's part of it, newest first) reached furthest
    along the lane's `direction`, whence any wrong-way driving in it began, and the most it went back in one step
    since. The history keeps a few seconds; when the stretch reaches back to the oldest sample it keeps and was
    followed last while that sample was in it, the stretch goes on from further back."""
    samples = stretch[::-1]
    positions = positions_along([sample[1:3] for sample in samples], direction)
    furthest = int(np.argmax(positions))
    kept = vehicle.lane_stretch
    if (kept is not None and stretch[-1] is vehicle.history[0] and kept.followed_at >= stretch[-1][0]
            and float(np.dot((kept.x, kept.y), direction)) >= positions[furthest]):
        kept.followed_at = samples[-1][0]
        kept.largest_step_back = max([kept.largest_step_back, *steps_back(samples, direction, jumps_only=True)])
        return kept
    since, x, y, _ = samples[furthest]
    vehicle.lane_stretch = LaneStretch(since=since, x=x, y=y, followed_at=samples[-1][0],
                                       largest_step_back=max(steps_back(samples[furthest:], direction, jumps_only=True),
                                                             default=0.0))
    return vehicle.lane_stretch


TWO_WHEELERS = frozenset({"bicycle", "motorcycle"})
RIDER_MIN_OVERLAP = 0.2  # of the person's box over a two-wheeler's: a rider sits on it, a passer-by barely touches it
SEEN_RIDING = "seen_riding"  # timer name: since when the person track was first seen on a two-wheeler
# A person track seen where a rider's track was lost no longer ago than this (two frames at 5 fps), over as much of
# that place as this IoU, is that rider under another id.
RIDER_HANDED_ON_S = 0.5
RIDER_PLACE_IOU = 0.5


def two_wheeler_boxes(detections: Detections) -> np.ndarray:
    """xyxy boxes of this frame's bicycles and motorcycles, tracked or not."""
    boxes = [box for box, name in zip(detections.xyxy, detections.class_name, strict=True) if name in TWO_WHEELERS]
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def riders(state: TrafficState, people: list[TrackState], two_wheelers: np.ndarray, now: float) -> set[int]:
    """Track ids of the people who ride a bicycle or motorcycle: their box lies largely over one detected in this
    frame (`two_wheelers`, xyxy, tracked or not), now or earlier in the track (the detector misses a two-wheeler
    under its rider in some frames), or the track took over the place of a rider lost just now (the tracker hands a
    rider waiting in a queue, his two-wheeler hidden, the id of someone it lost earlier)."""
    if people and len(two_wheelers):
        overlap = box_intersection([person.box for person in people], two_wheelers)
        areas = np.asarray([max((x2 - x1) * (y2 - y1), 1e-9) for x1, y1, x2, y2 in (p.box for p in people)])
        for person, share in zip(people, overlap.max(axis=1) / areas, strict=True):
            if share >= RIDER_MIN_OVERLAP:
                person.timers.setdefault(SEEN_RIDING, now)
    lost_riders = [track.box for track in state.tracks.values() if SEEN_RIDING in track.timers
                   and 0 < now - track.last_seen <= RIDER_HANDED_ON_S]
    taking_over = [person for person in people if SEEN_RIDING not in person.timers]
    if lost_riders and taking_over:
        places = box_iou([person.box for person in taking_over], lost_riders).max(axis=1)
        for person, iou in zip(taking_over, places, strict=True):
            if iou >= RIDER_PLACE_IOU:
                person.timers[SEEN_RIDING] = now
    return {person.track_id for person in people if SEEN_RIDING in person.timers}


# People riding in a stream of two-wheelers the detector does not see (at night it finds their riders, not their
# motorcycles): this many or more in one lane, each moving along it, within 30 degrees of its direction.
STREAM_MIN_RIDERS = 3
STREAM_COSINE = math.cos(math.radians(30))
STREAM_MIN_SPEED_BOX_PER_S = 0.2
IN_STREAM = "in_stream"  # timer name: since when the person track was first seen riding in a stream


def riding_in_streams(scene: Scene, people: list[TrackState], now: float) -> set[int]:
    """Track ids of the people moving along their lane, with its traffic, where STREAM_MIN_RIDERS or more do: riders
    of two-wheelers the detector misses. People on foot cross a road, or walk along it alone or in twos; a stream of
    them flowing with the traffic is the traffic. Each is a rider on the roadway from then on (IN_STREAM); not in a
    pedestrian area, where a cyclist whose bicycle goes unseen is the event itself."""
    by_lane: dict[str, list[TrackState]] = {}
    for person in people:
        lane_id = scene.lane_of(foot(person))
        motion = scene.velocity(person, person.last_seen - 1.0, person.last_seen) if lane_id is not None else None
        if motion is None:
            continue
        speed = math.hypot(*motion)
        if speed >= STREAM_MIN_SPEED_BOX_PER_S and \
                float(np.dot(motion, scene.lane_directions[lane_id])) >= STREAM_COSINE * speed:
            by_lane.setdefault(lane_id, []).append(person)
    for stream in by_lane.values():
        if len(stream) >= STREAM_MIN_RIDERS:
            for person in stream:
                person.timers.setdefault(IN_STREAM, now)
    return {person.track_id for person in people if IN_STREAM in person.timers}


# A "person" standing in a red-light queue (under this speed) waits in it: a rider whose two-wheeler the queue hides.
QUEUED_RIDER_MAX_SPEED_BOX_PER_S = 0.3


def pedestrians_on_roadway(scene: Scene, state: TrafficState, people: list[TrackState], vehicles: list[TrackState],
                           riding: set[int], queues: set[str], now: float, frame_height: int,
                           ground: GroundHistories) -> list[Condition]:
    """People on the roadway outside crosswalks and sidewalks (riders of bicycles and motorcycles are traffic), and
    fast vehicles on a crosswalk while someone is on it. A person cut off by the bottom of the frame stands somewhere
    below it (or rides a two-wheeler out of view): not placed on the roadway. Nor is one that has not gone half a body
    height from where it was first seen: people walk onto a road, and a "person" that stays where it appeared is a
    post, a sign or a signal head (once it walks it counts), nor one standing in a red-light queue's area while the
    queue stands (`queues`: its stop lines), a rider whose two-wheeler the vehicles packed around it hide. `riding`:
    the riders' track ids (`riders`, and `riding_in_streams`); `ground`: this frame's ground points of the tracks'
    histories.
    People walking together on the roadway are one incident, as is a person the tracker loses and finds again under
    a new id: one on the roadway beside a person of an open incident (`_walking_with`) is that incident at once."""
    config, thresholds = scene.config, scene.thresholds
    conditions = []
    walking: dict[str, Condition] = {}
    for person in people:
        if person.track_id in riding:
            continue
        point = foot(person)
        crosswalk = scene.in_any(point, config.crosswalks)
        queued = (scene.in_queue_area(point, queues)
                  and scene.speed_box_per_s(person) < QUEUED_RIDER_MAX_SPEED_BOX_PER_S)
        on_road = (crosswalk is None and scene.in_any(point, config.sidewalks) is None and scene.on_roadway(point)
                   and person.box[3] < frame_height - EDGE_MARGIN_PX and not queued)
        off_crossing = on_road and person.moved_away
        on_road_for = hold(person, "on_roadway", off_crossing, now)
        joined = _walking_with(state, person) if on_road else None
        if joined or (off_crossing and on_road_for >= thresholds.pedestrian_min_seconds):
            if joined:
                # Its people have been on the roadway since the incident opened, pedestrian_min_seconds after one
                # stepped onto it.
                on_road_for = max(on_road_for,
                                  now - state.incidents[joined].started_at + thresholds.pedestrian_min_seconds)
            key = joined or f"{WALKING_KEY}{person.track_id}"
            if key in walking:
                walking[key].track_ids.append(person.track_id)
                continue
            zone = scene.lane_of(point) or (config.intersection.id if config.intersection else None)
            walking[key] = Condition(
                key=key, type="pedestrian_on_roadway",
                severity=Severity.WARNING, reason=f"person on the roadway outside crosswalks for {on_road_for:.0f} s",
                confidence=person.confidence, zone_id=zone, track_ids=[person.track_id],
                details={"seconds_on_roadway": round(on_road_for, 1)}, track_bound=True)
        elif crosswalk is not None and scene.calibrated:
            walk = next(c for c in config.crosswalks if c.id == crosswalk)
            fast = [(v, speed) for v in vehicles if scene.is_in(foot(v), walk.polygon)
                    and (speed := scene.ground_speed_mps(v, ground)) is not None
                    and speed >= thresholds.crosswalk_vehicle_speed_mps]
            if fast:
                vehicle, speed = max(fast, key=lambda pair: pair[1])
                conditions.append(Condition(
                    key=f"pedestrian_on_crosswalk:{person.track_id}", type="pedestrian_on_roadway",
                    severity=Severity.CRITICAL,
                    reason=f"{vehicle.class_name} at {speed:.1f} m/s on crosswalk {crosswalk} while a person is on it",
                    confidence=min(person.confidence, vehicle.confidence), zone_id=crosswalk,
                    track_ids=[person.track_id, vehicle.track_id], details={"vehicle_speed_mps": round(speed, 2)}))
    return [*conditions, *walking.values()]


def _walking_with(state: TrafficState, person: TrackState) -> str | None:
    """The key of the open pedestrian-on-roadway incident with a person (seen now, or last seen) whose feet are
    within a body height of this one's."""
    reach = person.box[3] - person.box[1]
    for key, incident in state.incidents.items():
        if not key.startswith(WALKING_KEY):
            continue
        for other in _tracks_of(state, incident.track_ids):
            if other.track_id == person.track_id:
                return key
            if math.dist(foot(other), foot(person)) <= max(reach, other.box[3] - other.box[1]):
                return key
    return None


def obstacles(scene: Scene, tracks: list[TrackState], now: float) -> list[Condition]:
    """Detected objects of a class that does not belong on the road (a suitcase, a dog) in a lane."""
    limit = scene.thresholds.obstacle_min_seconds
    conditions = []
    for track in tracks:
        if track.class_name in scene.road_classes:
            # Read as a road user for as long as ends an event: it is one (the obstacle reading was the misread),
            # and its time as an obstacle starts afresh. A frame or two as a road user is the misread.
            if hold(track, "road_user", True, now) >= scene.thresholds.resolve_seconds:
                hold(track, "obstacle", False, now)
            continue
        hold(track, "road_user", False, now)
        lane_id = scene.lane_of(foot(track))
        in_lane_for = hold(track, "obstacle", lane_id is not None, now)
        if lane_id is not None and in_lane_for >= limit:
            conditions.append(Condition(
                key=f"obstacle_in_lane:{track.track_id}", type="obstacle_in_lane", severity=Severity.WARNING,
                reason=f"{track.class_name} in lane {lane_id} for {in_lane_for:.0f} s", confidence=track.confidence,
                zone_id=lane_id, track_ids=[track.track_id],
                details={"class_name": track.class_name, "seconds_in_lane": round(in_lane_for, 1)}))
    return conditions


def record_contacts(scene: Scene, state: TrafficState, vehicles: list[TrackState], appeared: set[int],
                    now: float, ground: GroundHistories) -> None:
    """Remembers pairs of vehicles whose boxes touched while one was moving fast: if their motion right after
    shows the impact (`impacts`), or one of them comes to rest soon after (objects_at_rest), it is a collision.
    Contacts expire once that can no longer happen. `appeared`: the ids of the tracks first seen in this frame (one
    found again as a vehicle lost a moment ago included). `ground`: this frame's ground points of the tracks'
    histories."""
    thresholds = scene.thresholds
    # The contact remembered for each pair, found by its pair: a jam has thousands of contacts in a few seconds.
    known: dict[tuple[int, int], CollisionCandidate] = {}
    for candidate in state.collisions:
        known.setdefault(candidate.track_ids, candidate)
    # A vehicle at rest that the detector misses in this frame (hidden by the one hitting it, a frame lost) still
    # stands where it was last seen.
    seen = {vehicle.track_id for vehicle in vehicles}
    hidden = [track for track in state.tracks.values() if track.track_id not in seen and track.class_name
              in scene.vehicle_classes and now - track.last_seen <= HIDDEN_STANDING_S and scene.is_stopped(track)]
    candidates = [*vehicles, *hidden]
    # Each pair once, a vehicle of this frame first.
    pairs, overlaps = overlapping_pairs([vehicle.box for vehicle in candidates], len(vehicles))
    _note_second_detections(vehicles, pairs[pairs[:, 1] < len(vehicles)], appeared)
    # How each vehicle moved up to now, measured once: in a jam a vehicle makes several new contacts a frame.
    before_contact: dict[int, MotionBeforeContact] = {}
    for i, j in pairs[overlaps >= thresholds.collision_min_iou]:
        a, b = vehicles[i], candidates[j]
        pair = tuple(sorted((a.track_id, b.track_id)))
        if pair in known:
            _measure_first_seen_at_contact(scene, known[pair], (a, b), now)
            continue
        speed = max(_contact_speed(scene, a, b, now), _contact_speed(scene, b, a, now))
        if speed >= thresholds.collision_min_speed_box_per_s:
            first, second = (a, b) if a.track_id == pair[0] else (b, a)
            for vehicle in (first, second):
                if vehicle.track_id not in before_contact:
                    before_contact[vehicle.track_id] = _motion_before_contact(scene, vehicle, now, ground)
            motions = (before_contact[first.track_id], before_contact[second.track_id])
            known[pair] = CollisionCandidate(
                track_ids=pair, contact_at=now, speed_box_per_s=speed,
                class_names=(first.class_name, second.class_name),
                velocities_before=tuple(motion.velocity for motion in motions),
                speeds_at_contact=tuple(motion.speed for motion in motions),
                headings_before=tuple(motion.heading for motion in motions),
                turn_rates_before=tuple(motion.turn_rate for motion in motions),
                still_before=tuple(motion.still_for for motion in motions))
            state.collisions.append(known[pair])
    keep_for = thresholds.collision_stop_within_seconds + thresholds.collision_stopped_seconds
    state.collisions = [c for c in state.collisions if now - c.contact_at <= keep_for]
    excess = len(state.collisions) - MAX_COLLISION_CANDIDATES
    if excess > 0:  # the oldest contacts not yet seen to be an impact go first, then the oldest impacts
        ranked = sorted(state.collisions, key=lambda c: (c.confirmed_at is not None, c.contact_at))
        dropped = {id(candidate) for candidate in ranked[:excess]}
        state.collisions = [c for c in state.collisions if id(c) not in dropped]


def overlapping_pairs(boxes: list[Box], firsts: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pair of the boxes that overlap, once, the first of it among the first `firsts` boxes: their indices (i < j),
    ordered by i then j, as (N, 2), and their intersection over union, (N,). Only boxes that meet are measured
    (FrameIndex): a jam has thousands of vehicles, millions of pairs, few of them touching."""
    index = FrameIndex(boxes)
    pairs = np.array([(i, j) for i in range(firsts) for j in index.meeting(boxes[i]) if j > i],
                     dtype=np.intp).reshape(-1, 2)
    box_array = np.asarray(boxes, dtype=float).reshape(-1, 4)
    overlaps = box_iou(box_array[pairs[:, 0]], box_array[pairs[:, 1]], paired=True)
    return pairs[overlaps > 0], overlaps[overlaps > 0]


def _note_second_detections(vehicles: list[TrackState], overlapping: np.ndarray, appeared: set[int]) -> None:
    """Marks each vehicle track first seen in this frame (`appeared`) with its box largely over another vehicle's (by
    SAME_VEHICLE_OVERLAP of the smaller box) as a possible second detection of that vehicle (`TrackState.doubles`),
    and forgets the mark once the two boxes overlap less: two vehicles after all, one having come out from behind
    the other or driven on past it. `overlapping`: the pairs of vehicles (their indices, each pair once) whose boxes
    overlap."""
    by_id = {vehicle.track_id: index for index, vehicle in enumerate(vehicles)}
    for vehicle in vehicles:
        doubled = by_id.get(vehicle.doubles)
        if doubled is not None and overlap(vehicle.box, vehicles[doubled].box) < SAME_VEHICLE_OVERLAP:
            vehicle.doubles = None
    # The boxes each new track's box overlaps, covered in one array operation: a frame may bring many new tracks.
    new = [(index, other) for pair in overlapping.tolist() for index, other in (pair, pair[::-1])
           if vehicles[index].track_id in appeared]
    covers = box_cover([vehicles[index].box for index, _ in new], [vehicles[other].box for _, other in new],
                       paired=True)
    shares: dict[int, list[tuple[float, int]]] = {}
    for (index, other), cover in zip(new, covers.tolist(), strict=True):
        shares.setdefault(index, []).append((cover, vehicles[other].track_id))
    for index, found in shares.items():
        share, other_id = max(found)
        if share >= SAME_VEHICLE_OVERLAP:
            vehicles[index].doubles = other_id


def _second_detection_in(state: TrafficState, candidate: CollisionCandidate) -> bool:
    """Whether one of a contact's tracks may be a second detection of a vehicle (`_note_second_detections`): it
    appeared over that vehicle and has stayed largely over it. A duplicate box under an id of its own moves with the
    vehicle and vanishes while the vehicle drives on, which read as a vehicle in contact with it, or with another
    vehicle the duplicate's box touched, that swerved or vanished."""
    return any(track.doubles in state.tracks for track in _tracks_of(state, candidate.track_ids))


class MotionBeforeContact(NamedTuple):
    """How a vehicle moved up to a contact (CollisionCandidate's fields for one party)."""
    velocity: tuple[float, float] | None  # over the second before, box heights per second (Scene.velocity)
    speed: float  # over the IMPACT_SPEED_SECONDS before, box heights per second; 0 without one
    heading: tuple[float, float] | None  # over the IMPACT_SPEED_SECONDS before (_turning)
    turn_rate: float  # degrees per second (_turning)
    still_for: float  # seconds (_still_for)


def _motion_before_contact(scene: Scene, vehicle: TrackState, now: float,
                           ground: GroundHistories) -> MotionBeforeContact:
    velocity = scene.velocity(vehicle, now - IMPACT_SPEED_SECONDS, now)
    heading, turn_rate = _turning(scene, vehicle, now, ground)
    return MotionBeforeContact(velocity=scene.velocity(vehicle, now - 1.0, now),
                               speed=math.hypot(*velocity) if velocity else 0.0, heading=heading, turn_rate=turn_rate,
                               still_for=_still_for(scene, vehicle))


def _turning(scene: Scene, vehicle: TrackState, now: float,
             ground: GroundHistories) -> tuple[tuple[float, float] | None, float]:
    """Which way a vehicle went over the IMPACT_SPEED_SECONDS up to now (Scene.heading), and how fast it was turning
    (degrees per second: the change from its heading over the IMPACT_SPEED_SECONDS before; 0 without one, or when
    it moved too slowly in either for its heading to be more than box jitter)."""
    windows = [(now - 2 * IMPACT_SPEED_SECONDS, now - IMPACT_SPEED_SECONDS), (now - IMPACT_SPEED_SECONDS, now)]
    earlier, heading = (scene.heading(vehicle, *window, ground) for window in windows)
    moving = all(math.hypot(*velocity) >= scene.thresholds.collision_min_speed_box_per_s / 2
                 for velocity in (scene.velocity(vehicle, *window) or (0.0, 0.0) for window in windows))
    rate = _turn_degrees(earlier, heading) / IMPACT_SPEED_SECONDS if heading and earlier and moving else 0.0
    return heading, rate


def _turn_degrees(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The signed angle from one heading to another, in degrees (-180 to 180)."""
    return math.degrees(math.atan2(before[0] * after[1] - before[1] * after[0],
                                   before[0] * after[0] + before[1] * after[1]))


def _contact_speed(scene: Scene, vehicle: TrackState, other: TrackState, now: float) -> float:
    """A vehicle's speed as it touches `other` (box heights per second): its peak speed over the last 1.5 s, or, for a
    track followed under CONTACT_SPEED_MIN_TRACKED_S, its speed relative to the other's over that short history."""
    if now - vehicle.first_seen >= CONTACT_SPEED_MIN_TRACKED_S or not vehicle.history:
        return scene.peak_speed_box_per_s(vehicle, 1.5)
    own = scene.velocity(vehicle, vehicle.history[0][0], now)
    theirs = scene.velocity(other, vehicle.history[0][0], now) or (0.0, 0.0)
    return math.hypot(own[0] - theirs[0], own[1] - theirs[1]) if own else 0.0


def _measure_first_seen_at_contact(scene: Scene, candidate: CollisionCandidate,
                                   touching: tuple[TrackState, TrackState], now: float) -> None:
    """A vehicle first seen at the contact (it came into view, or out of the other's shadow, as they met) had no speed
    to take then: while the pair still touches and is not yet a collision, its speed since (`_contact_speed`) stands
    in for it."""
    if candidate.confirmed_at is not None:
        return
    by_id = {vehicle.track_id: vehicle for vehicle in touching}
    speeds = []
    pair = candidate.track_ids
    for track_id, other_id, speed in zip(pair, pair[::-1], candidate.speeds_at_contact, strict=True):
        vehicle = by_id[track_id]
        if speed == 0.0 and vehicle.first_seen >= candidate.contact_at:
            speed = _contact_speed(scene, vehicle, by_id[other_id], now)
        speeds.append(speed)
    candidate.speeds_at_contact = (speeds[0], speeds[1])


def impacts(scene: Scene, state: TrafficState, now: float, frame_size: tuple[int, int],
            ground: GroundHistories) -> list[Condition]:
    """Collisions seen at contact, before anything comes to rest: after touching at speed, both vehicles' motion
    broke off at once (each stopped dead, swerved, or vanished mid-view while moving fast: overturned, in dust,
    behind debris). Vehicles passing each other, or overlapping in perspective, keep their speed and heading (or the
    turn they were making); a queue brakes over seconds and pulls away together (a car set moving is no evidence: so
    does a queue at a green light); an occluded vehicle vanishes but the one in front drives on unchanged; two
    vehicles whose ids the tracker swapped as they passed each went on where the other was heading.
    One condition per collision while its contact is remembered; what comes to rest through it continues the same
    incident (objects_at_rest)."""
    thresholds = scene.thresholds
    conditions = []
    for candidate in state.collisions:
        since_contact = now - candidate.contact_at
        if (candidate.confirmed_at is None and since_contact <= thresholds.impact_window_seconds
                and not _second_detection_in(state, candidate)):
            tracks = [state.tracks.get(track_id) for track_id in candidate.track_ids]
            breaks = [_motion_break(scene, track, candidate, party, now, frame_size, ground)
                      for party, track in enumerate(tracks)]
            # Both broke off, and at least one break was seen (two vehicles merely lost together are one vehicle
            # detected twice, or both hidden).
            if all(breaks) and any(b != "vanished" for b in breaks) and not _swapped_places(scene, tracks, candidate):
                candidate.confirmed_at = now
                first, second = candidate.class_names
                candidate.reason = (f"{first} and {second} collided: contact at {candidate.speed_box_per_s:.1f} box/s, "
                                    f"then the {first} {breaks[0]} and the {second} {breaks[1]}")
        if candidate.confirmed_at is None:
            continue
        if not _watched(scene, state, candidate):
            continue
        zone_id = _zone_at(scene, state, candidate)
        conditions.append(Condition(
            key=candidate.key, type="collision", severity=Severity.CRITICAL, level=2,
            reason=f"{candidate.reason} ({since_contact:.1f} s ago)",
            confidence=min((track.confidence for track in _tracks_of(state, candidate.track_ids)), default=0.5),
            zone_id=zone_id, track_ids=list(candidate.track_ids),
            details={"seconds_since_contact": round(since_contact, 1),
                     "contact_speed_box_per_s": round(candidate.speed_box_per_s, 2)}))
    return conditions


def _motion_break(scene: Scene, track: TrackState | None, candidate: CollisionCandidate, party: int, now: float,
                  frame_size: tuple[int, int], ground: GroundHistories) -> str | None:
    """How the motion of the candidate's `party` (0 or 1) broke off at the contact, in words, or None while it
    carries on (or it is too early to tell). Stopping dead is losing speed at the contact faster than brakes slow a
    vehicle; swerving is turning by impact_turn_degrees within impact_min_seconds of the contact, besides any turn it
    was already making (a vehicle turning through a junction goes on turning; one seen again only later may have
    turned any way meanwhile)."""
    if track is None:
        return None
    thresholds = scene.thresholds
    contact_at, before = candidate.contact_at, candidate.velocities_before[party]
    fast = thresholds.collision_min_speed_box_per_s
    speed_before = math.hypot(*before) if before else 0.0
    if now - track.last_seen >= thresholds.impact_min_seconds:
        # Not seen since right after the contact, away from the frame edge, after moving fast.
        vanished = (track.last_seen < contact_at + thresholds.impact_min_seconds and speed_before >= fast
                    and not touches_edge(track.box, frame_size))
        return "vanished" if vanished else None
    if now - contact_at < thresholds.impact_min_seconds or touches_edge(track.box, frame_size):
        # A box cut off by the frame edge moves with the cut, not with the vehicle (entering or leaving the view).
        return None
    after = scene.velocity(track, contact_at, now)
    if after is None:
        return None
    speed_after = math.hypot(*after)
    if speed_before >= fast and speed_after <= IMPACT_STOP_SHARE * speed_before:
        # Speeds over as long just before and just after the contact, so their windows' middles are that far apart.
        right_after = scene.velocity(track, contact_at, contact_at + IMPACT_SPEED_SECONDS)
        slowing = (candidate.speeds_at_contact[party] - math.hypot(*right_after)) / IMPACT_SPEED_SECONDS \
            if right_after else 0.0
        if slowing > BRAKING_MAX_BOX_PER_S2:
            return "stopped dead"
    turn = _swerve(scene, track, candidate, party, ground)
    if turn is not None and abs(turn) >= thresholds.impact_turn_degrees:
        return f"swerved {abs(turn):.0f} degrees"
    return None


def _swerve(scene: Scene, track: TrackState, candidate: CollisionCandidate, party: int,
            ground: GroundHistories) -> float | None:
    """How far (degrees, signed) a vehicle's heading over the impact_min_seconds after the contact turned from its
    heading just before it, less what the turn it was making then (CollisionCandidate.turn_rates_before) explains; None
    when it moved too slowly either side, or was followed under CONTACT_SPEED_MIN_TRACKED_S either side, for its
    heading to be more than box jitter (on a camera shaking by a few pixels, cars 20 px tall moving 5 px a step).
    Too slowly is under collision_min_speed_box_per_s: a few pixels of shake turn a distant car crawling in a queue
    any way at all, where a vehicle deflected at collision speed goes on faster than that."""
    contact_at, fast = candidate.contact_at, scene.thresholds.collision_min_speed_box_per_s
    if contact_at - track.first_seen < CONTACT_SPEED_MIN_TRACKED_S:
        return None
    before, heading = candidate.velocities_before[party], candidate.headings_before[party]
    end = contact_at + scene.thresholds.impact_min_seconds + CAPTURE_SLACK_S
    after, heading_after = scene.velocity(track, contact_at, end), scene.heading(track, contact_at, end, ground)
    if (before is None or heading is None or after is None or heading_after is None
            or min(math.hypot(*before), math.hypot(*after)) < fast):
        return None
    seen_until = max(sample[0] for sample in track.history if sample[0] <= end)
    if seen_until - contact_at < CONTACT_SPEED_MIN_TRACKED_S - CAPTURE_SLACK_S:
        return None
    turn = _turn_degrees(heading, heading_after)
    # From the middle of the half second before the contact to the middle of the time after it looked at. Only a
    # turn the same way counts against it, and no more than it: a vehicle going straight, box jitter read as a turn
    # before, did not swerve by that.
    going_on = candidate.turn_rates_before[party] * ((seen_until - contact_at) / 2 + IMPACT_SPEED_SECONDS / 2)
    return turn - (min(max(going_on, 0.0), turn) if turn >= 0 else max(min(going_on, 0.0), turn))


# Each of two tracks ended within this share of the distance between where each would be had it kept on: the
# tracker swapped their ids as they passed (each box jumps onto the other's path), where an impact leaves neither
# where the other would have been.
SWAPPED_SHARE = 1 / 3


def _swapped_places(scene: Scene, tracks: list[TrackState | None], candidate: CollisionCandidate) -> bool:
    """Whether each of the two vehicles was last seen (after the contact) about where the other would be by then had
    it kept the velocity it had up to the contact, and not where it would be itself."""
    if any(track is None or track.last_seen <= candidate.contact_at for track in tracks):
        return False
    for track in tracks:
        own, other = (scene.point_ahead(vehicle, candidate.contact_at, track.last_seen) for vehicle in
                      (track, tracks[1] if track is tracks[0] else tracks[0]))
        if own is None or other is None:
            return False
        seen = track.history[-1][1:3]
        if not math.dist(seen, other) < min(math.dist(seen, own), SWAPPED_SHARE * math.dist(own, other)):
            return False
    return True


def _collision_points(state: TrafficState, candidate: CollisionCandidate) -> list[tuple[float, float]]:
    """Where the collision's vehicles stand: each tracked one's last foot point, then the box they converged into."""
    boxes = [track.box for track in _tracks_of(state, candidate.track_ids)]
    if candidate.merged_box is not None:
        boxes.append(candidate.merged_box)
    return [anchor_point(box, Anchor.BOTTOM_CENTER) for box in boxes]


def _watched(scene: Scene, state: TrafficState, candidate: CollisionCandidate) -> bool:
    """Whether the collision lies where the operator drew the scene (a lane, zone, crosswalk, sidewalk or pedestrian
    area): a frontage road or car park left out is not watched, and vehicles there hiding one another are no crash.
    A scene with no regions drawn watches the whole view."""
    config = scene.config
    regions = [*scene.stopping_zones, *config.crosswalks, *config.sidewalks, *config.pedestrian_areas]
    if not (config.lanes or regions):
        return True
    return any(scene.lane_of(point) is not None or scene.in_any(point, regions) is not None
               for point in _collision_points(state, candidate))


def _zone_at(scene: Scene, state: TrafficState, candidate: CollisionCandidate) -> str | None:
    """The zone or lane where the collision happened: the first tracked vehicle's last position, else the box the
    vehicles converged into."""
    points = _collision_points(state, candidate)
    if not points:
        return None
    return scene.in_any(points[0], scene.stopping_zones) or scene.lane_of(points[0])


def vehicles_in_pedestrian_areas(scene: Scene, state: TrafficState, tracks: list[TrackState], riding: set[int],
                                 now: float, frame_size: tuple[int, int]) -> list[Condition]:
    """A vehicle or cyclist moving inside a pedestrian area, or a person moving there faster than people walk (on
    wheels the detector does not see); critical when the area is crowded. The rider of a detected bicycle or
    motorcycle (`riding`: track ids, `riders`) is not a second event: the two-wheeler is the event."""
    conditions = []
    fast_person = scene.thresholds.pedestrian_area_fast_person_box_per_s
    for area in scene.config.pedestrian_areas:
        people = sum(1 for track in tracks if track.class_name == "person" and scene.is_in(foot(track), area.polygon))
        # The detector misses someone in a crowd now and then: the area stays crowded until its head count has been
        # under the limit for resolve_seconds, as an event ends only once its condition has been gone that long.
        key = f"crowded:{area.id}"
        if people >= area.crowded_people:
            state.zone_timers[key] = now
        crowded = now - state.zone_timers.get(key, -math.inf) <= scene.thresholds.resolve_seconds
        if not crowded:
            state.zone_timers.pop(key, None)
        for track in tracks:
            inside = (_scored_in_pedestrian_areas(scene, track) and track.track_id not in riding
                      and scene.is_in(foot(track), area.polygon))
            if not inside:
                hold(track, f"in_pedestrian_area:{area.id}", False, now)
                continue
            score = pedestrian_area_score(scene, track, frame_size)
            speed = scene.speed_box_per_s(track)
            moving = score >= scene.thresholds.pedestrian_area_min_score and (
                track.class_name != "person" or speed >= fast_person)
            inside_for = hold(track, f"in_pedestrian_area:{area.id}", moving, now)
            if moving and inside_for >= scene.thresholds.pedestrian_area_min_seconds:
                what = "person faster than walking" if track.class_name == "person" else track.class_name
                conditions.append(Condition(
                    key=f"vehicle_in_pedestrian_area:{area.id}:{track.track_id}", type="vehicle_in_pedestrian_area",
                    severity=Severity.CRITICAL if crowded else Severity.WARNING, level=int(crowded),
                    reason=f"{what} moving at {speed:.1f} box/s in pedestrian area {area.id}"
                           + (f" among {people} people" if crowded else ""),
                    confidence=min(score, 1.0), zone_id=area.id, track_ids=[track.track_id],
                    details={"class_name": track.class_name, "speed_box_per_s": round(speed, 2), "people": people}))
    return conditions


def pedestrian_area_scores(scene: Scene, tracks: list[TrackState], untracked: list[tuple[tuple, str, float]],
                           frame_size: tuple[int, int]) -> dict[str, float]:
    """Per pedestrian area, the highest score of a vehicle, cyclist or fast-moving person in it this frame (0 when
    there is none): the frame-level anomaly score. Vehicles the tracker has not confirmed yet count as standing
    still."""
    scores = {}
    for area in scene.config.pedestrian_areas:
        tracked = [pedestrian_area_score(scene, track, frame_size) for track in tracks
                   if _scored_in_pedestrian_areas(scene, track) and scene.is_in(foot(track), area.polygon)]
        unconfirmed = [confidence * STANDING_FACTOR for box, class_name, confidence in untracked
                       if class_name in scene.vehicle_classes
                       and scene.is_in(anchor_point(box, Anchor.BOTTOM_CENTER), area.polygon)]
        scores[area.id] = max([*tracked, *unconfirmed], default=0.0)
    return scores


def _scored_in_pedestrian_areas(scene: Scene, track: TrackState) -> bool:
    return track.class_name in scene.vehicle_classes or track.class_name == "person"


# A box at the frame edge whose height changed by this factor over the last second is being cut by the edge.
CUT_HEIGHT_CHANGE = 1.25


def cut_by_the_edge(track: TrackState, frame_size: tuple[int, int]) -> bool:
    """Whether the frame edge is cutting the track's box as its object leaves or enters the view: the box touches
    the edge and its height has shrunk or grown by CUT_HEIGHT_CHANGE over the second up to its last sighting. Then
    its anchor and its height move with the cut (someone walking out of the bottom of the picture reads as several
    box heights a second); a box that merely runs along the edge keeps its height and its motion."""
    if not touches_edge(track.box, frame_size):
        return False
    heights = [sample[3] for sample in track.history if sample[0] >= track.last_seen - 1.0]
    return bool(heights) and max(heights) >= CUT_HEIGHT_CHANGE * max(min(heights), 1.0)


def pedestrian_area_score(scene: Scene, track: TrackState, frame_size: tuple[int, int]) -> float:
    """How surely a vehicle, cyclist or person on wheels is moving through a pedestrian area: detection confidence
    times a speed factor. A vehicle's is 1 from pedestrian_area_moving_box_per_s up and falls to a floor for one
    standing still (a parked bicycle); a person's is 0 at walking speed and grows to 1 at
    pedestrian_area_fast_person_box_per_s (a cyclist or skater the detector sees only as a person), and 0 while the
    frame edge cuts its box (`cut_by_the_edge`). A vehicle's class is the evidence, its speed only telling it from a
    parked one, so a vehicle entering the view is scored as it enters."""
    thresholds = scene.thresholds
    speed = scene.speed_box_per_s(track)
    if track.class_name == "person":
        if cut_by_the_edge(track, frame_size):
            return 0.0
        walking, fast = thresholds.pedestrian_area_walking_box_per_s, thresholds.pedestrian_area_fast_person_box_per_s
        return track.confidence * min(1.0, max(0.0, (speed - walking) / (fast - walking)))
    moving = speed / thresholds.pedestrian_area_moving_box_per_s
    factor = min(1.0, STANDING_FACTOR + (1 - STANDING_FACTOR) * moving)
    return track.confidence * factor
