"""The traffic rules: each looks at the tracks (and blobs) of the current frame and says which conditions hold.

Pure functions over the scene and the analyzer state; the event life cycle is `incidents.reconcile`'s job.
"""
from __future__ import annotations

import numpy as np

from processors.analytics.traffic.incidents import Condition
from processors.analytics.traffic.scene import Scene, anchor_point
from processors.analytics.traffic.state import BlobState, CollisionCandidate, TrackState, TrafficState
from schemas import Severity, StaticBlob
from schemas.geometry import box_intersection, box_iou, point_segment_distance
from schemas.settings.lines import Anchor

BLOB_MATCH_IOU = 0.3
BLOB_COVERED_FRACTION = 0.5  # a blob mostly under a detected object is that object (e.g. a stopped car)


def hold(track: TrackState, name: str, holds: bool, now: float) -> float:
    """How long a per-track condition has held without a break (0 when it does not hold now)."""
    if not holds:
        track.timers.pop(name, None)
        return 0.0
    return now - track.timers.setdefault(name, now)


def foot(track: TrackState) -> tuple[float, float]:
    return anchor_point(track.box, Anchor.BOTTOM_CENTER)


def standing_queues(scene: Scene, state: TrafficState, vehicles: list[TrackState], now: float) -> set[str]:
    """Stop lines where a red-light queue stands now: a stopped vehicle at the head, for a plausible red time."""
    standing = set()
    for line in scene.stop_lines.values():
        head = any(scene.is_stopped(v) and scene.is_in(foot(v), line.queue_area)
                   and point_segment_distance(foot(v), line.start, line.end) <= scene.thresholds.queue_head_distance_px
                   for v in vehicles)
        key = f"queue:{line.id}"
        if not head:
            state.zone_timers.pop(key, None)
            continue
        since = state.zone_timers.setdefault(key, now)
        if now - since <= scene.thresholds.max_red_light_seconds:
            standing.add(line.id)
    return standing


def stopped_vehicles(scene: Scene, state: TrafficState, vehicles: list[TrackState], now: float) -> list[Condition]:
    limit = scene.thresholds.stopped_seconds
    queues = standing_queues(scene, state, vehicles, now)
    conditions = []
    for vehicle in vehicles:
        zone = next((z for z in scene.stopping_zones if scene.is_in(foot(vehicle), z.polygon)), None)
        excused = zone is not None and bool(queues.intersection(zone.queue_stop_lines))
        if excused:
            vehicle.timers["excused_at"] = now
        # A vehicle that waited in a red-light queue starts its clock when the queue dissolves, not when it stopped.
        since = max(vehicle.rest_since, vehicle.timers.get("excused_at", vehicle.rest_since))
        # Time in the zone bounds it too: a vehicle at rest on the zone's edge flickers in and out with box jitter.
        in_zone_for = hold(vehicle, "in_stopping_zone", zone is not None, now)
        stopping = zone is not None and scene.is_stopped(vehicle) and not excused
        stopped_for = min(now - since, in_zone_for) if stopping else 0.0
        if zone is not None and stopped_for >= limit:
            conditions.append(Condition(
                key=f"stopped_vehicle:{vehicle.track_id}", type="stopped_vehicle", severity=Severity.WARNING,
                reason=f"{vehicle.class_name} stopped {stopped_for:.0f} s in {zone.id} (limit {limit:g} s)",
                confidence=vehicle.confidence, zone_id=zone.id, track_ids=[vehicle.track_id],
                details={"stopped_seconds": round(stopped_for, 1)}))
    return conditions


def wrong_way(scene: Scene, vehicles: list[TrackState]) -> list[Condition]:
    thresholds = scene.thresholds
    conditions = []
    for vehicle in vehicles:
        lane_id = scene.lane_of(foot(vehicle))
        if lane_id is None:
            continue
        # The longest recent stretch of history spent inside this lane, up to now.
        stretch = []
        for sample in reversed(vehicle.history):
            if scene.lane_of((sample[1], sample[2])) != lane_id:
                break
            stretch.append(sample)
        if len(stretch) < 2 or stretch[0][0] - stretch[-1][0] < thresholds.wrong_way_min_seconds:
            continue
        moved = np.asarray([stretch[0][1] - stretch[-1][1], stretch[0][2] - stretch[-1][2]])
        along = float(moved @ scene.lane_directions[lane_id])
        distance = float(np.linalg.norm(moved))
        if along <= -thresholds.wrong_way_min_distance_px and along <= -0.7 * distance:
            conditions.append(Condition(
                key=f"wrong_way:{vehicle.track_id}", type="wrong_way", severity=Severity.CRITICAL,
                reason=f"{vehicle.class_name} moved {-along:.0f} px against the direction of lane {lane_id}",
                confidence=vehicle.confidence, zone_id=lane_id, track_ids=[vehicle.track_id],
                details={"distance_against_px": round(-along, 1)}))
    return conditions


def pedestrians_on_roadway(scene: Scene, people: list[TrackState], vehicles: list[TrackState],
                           now: float) -> list[Condition]:
    config, thresholds = scene.config, scene.thresholds
    conditions = []
    for person in people:
        point = foot(person)
        crosswalk = scene.in_any(point, config.crosswalks)
        off_crossing = (crosswalk is None and scene.in_any(point, config.sidewalks) is None
                        and scene.on_roadway(point))
        on_road_for = hold(person, "on_roadway", off_crossing, now)
        if off_crossing and on_road_for >= thresholds.pedestrian_min_seconds:
            zone = scene.lane_of(point) or (config.intersection.id if config.intersection else None)
            conditions.append(Condition(
                key=f"pedestrian_on_roadway:{person.track_id}", type="pedestrian_on_roadway",
                severity=Severity.WARNING, reason=f"person on the roadway outside crosswalks for {on_road_for:.0f} s",
                confidence=person.confidence, zone_id=zone, track_ids=[person.track_id],
                details={"seconds_on_roadway": round(on_road_for, 1)}))
        elif crosswalk is not None and scene.calibrated:
            walk = next(c for c in config.crosswalks if c.id == crosswalk)
            fast = [(v, speed) for v in vehicles if scene.is_in(foot(v), walk.polygon)
                    and (speed := scene.ground_speed_mps(v)) is not None
                    and speed >= thresholds.crosswalk_vehicle_speed_mps]
            if fast:
                vehicle, speed = max(fast, key=lambda pair: pair[1])
                conditions.append(Condition(
                    key=f"pedestrian_on_roadway:{person.track_id}", type="pedestrian_on_roadway",
                    severity=Severity.CRITICAL,
                    reason=f"{vehicle.class_name} at {speed:.1f} m/s on crosswalk {crosswalk} while a person is on it",
                    confidence=min(person.confidence, vehicle.confidence), zone_id=crosswalk,
                    track_ids=[person.track_id, vehicle.track_id], details={"vehicle_speed_mps": round(speed, 2)}))
    return conditions


def obstacles(scene: Scene, state: TrafficState, tracks: list[TrackState], blobs: list[StaticBlob],
              now: float, seq: int) -> list[Condition]:
    limit = scene.thresholds.obstacle_min_seconds
    conditions = []
    for track in tracks:
        if track.class_name in scene.road_classes:
            continue
        lane_id = scene.lane_of(foot(track))
        in_lane_for = hold(track, "obstacle", lane_id is not None, now)
        if lane_id is not None and in_lane_for >= limit:
            conditions.append(Condition(
                key=f"obstacle_in_lane:{track.track_id}", type="obstacle_in_lane", severity=Severity.WARNING,
                reason=f"{track.class_name} in lane {lane_id} for {in_lane_for:.0f} s", confidence=track.confidence,
                zone_id=lane_id, track_ids=[track.track_id],
                details={"class_name": track.class_name, "seconds_in_lane": round(in_lane_for, 1)}))
    for blob in _match_blobs(state, blobs, now, seq):
        area = (blob.box[2] - blob.box[0]) * (blob.box[3] - blob.box[1])
        # Under any live track (not just this frame's detections, so a missed detection does not uncover it).
        covered = bool((box_intersection([blob.box], [track.box for track in state.tracks.values()])
                        >= BLOB_COVERED_FRACTION * area).any())
        lane_id = scene.lane_of(anchor_point(blob.box, Anchor.CENTER))
        static_for = now - blob.static_since
        if lane_id is not None and not covered and static_for >= limit:
            conditions.append(Condition(
                key=f"obstacle_in_lane:{blob.key}", type="obstacle_in_lane", severity=Severity.WARNING,
                reason=f"unknown static object in lane {lane_id} for {static_for:.0f} s", confidence=blob.fill_ratio,
                zone_id=lane_id, details={"class_name": "unknown", "seconds_in_lane": round(static_for, 1),
                                          "x1": blob.box[0], "y1": blob.box[1], "x2": blob.box[2], "y2": blob.box[3]}))
    return conditions


def _match_blobs(state: TrafficState, blobs: list[StaticBlob], now: float, seq: int) -> list[BlobState]:
    """Blob identities across frames (by overlap); returns the blobs present now."""
    present = []
    for index, blob in enumerate(blobs):
        overlaps = box_iou([known.box for known in state.blobs], [blob.xyxy])[:, 0]
        match = state.blobs[int(overlaps.argmax())] if len(overlaps) else None
        if match is None or overlaps.max() < BLOB_MATCH_IOU or match in present:
            match = BlobState(key=f"blob-{seq}-{index}", box=blob.xyxy, static_since=blob.static_since,
                              last_seen=now, fill_ratio=blob.fill_ratio)
            state.blobs.append(match)
        match.box, match.last_seen, match.fill_ratio = blob.xyxy, now, blob.fill_ratio
        match.static_since = min(match.static_since, blob.static_since)
        present.append(match)
    return present


def collisions(scene: Scene, state: TrafficState, vehicles: list[TrackState], now: float) -> list[Condition]:
    thresholds = scene.thresholds
    by_id = {vehicle.track_id: vehicle for vehicle in vehicles}
    known = {candidate.track_ids for candidate in state.collisions}
    overlaps = box_iou([vehicle.box for vehicle in vehicles], [vehicle.box for vehicle in vehicles])
    for i, a in enumerate(vehicles):
        for j in range(i + 1, len(vehicles)):
            b = vehicles[j]
            pair = tuple(sorted((a.track_id, b.track_id)))
            if pair in known or overlaps[i, j] < thresholds.collision_min_iou:
                continue
            speed = max(scene.peak_speed_box_per_s(a, 1.5), scene.peak_speed_box_per_s(b, 1.5))
            if speed >= thresholds.collision_min_speed_box_per_s:
                state.collisions.append(CollisionCandidate(track_ids=pair, contact_at=now, speed_box_per_s=speed))
                known.add(pair)
    conditions, kept = [], []
    confirm_by = thresholds.collision_stop_within_seconds + thresholds.collision_stopped_seconds
    for candidate in state.collisions:
        pair = [by_id.get(track_id) for track_id in candidate.track_ids]
        if any(track is None for track in pair):
            if (candidate.confirmed or now - candidate.contact_at <= confirm_by) and all(
                    t in state.tracks for t in candidate.track_ids):
                kept.append(candidate)  # a track missed for a frame; keep waiting
            continue
        # Both came to rest soon after the contact (abrupt deceleration), and have stayed at rest.
        stopped_at = [track.rest_since for track in pair]
        latest_stop = candidate.contact_at + thresholds.collision_stop_within_seconds
        stopped_soon = all(candidate.contact_at - 1.0 <= at <= latest_stop for at in stopped_at)
        resting_for = now - max(stopped_at)
        if stopped_soon and resting_for >= thresholds.collision_stopped_seconds:
            deceleration = candidate.speed_box_per_s / max(max(stopped_at) - candidate.contact_at, 0.5)
            conditions.append(Condition(
                key=f"collision_candidate:{pair[0].track_id}-{pair[1].track_id}", type="collision_candidate",
                severity=Severity.CRITICAL,
                reason=f"{pair[0].class_name} and {pair[1].class_name} touched at "
                       f"{candidate.speed_box_per_s:.1f} box/s and both stopped",
                confidence=min(pair[0].confidence, pair[1].confidence), zone_id=scene.lane_of(foot(pair[0])),
                track_ids=list(candidate.track_ids),
                details={"speed_before_box_per_s": round(candidate.speed_box_per_s, 2),
                         "deceleration_box_per_s2": round(deceleration, 2)}))
            candidate.confirmed = True
            kept.append(candidate)
        elif now - candidate.contact_at <= confirm_by:
            kept.append(candidate)
    state.collisions = kept
    return conditions
