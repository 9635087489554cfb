"""Objects at rest, one per physical object, from every piece of evidence that it is there.

A crashed or stalled vehicle shows up in pieces: its track while the detector sees it, the place where the detector
lost it (in dust, smoke, under occlusion), and the static-blob fragments the background model finds there, which
split, vanish and re-form from frame to frame. Reporting each piece gives an operator many warnings for one
incident. Here the pieces are merged in space and time:

- a stopped vehicle track is an object (keyed by the vehicle), and a track the detector lost keeps it alive at its
  last position while static-blob evidence overlaps that position;
- a blob fragment joins the object it overlaps most; fragments that overlap several objects merge them;
- an object outlives gaps in its evidence by a grace time, so a blob that vanishes and re-forms is the same object,
  and a longer one once it has been reported (a vehicle hidden in smoke, an object behind a bus stopped over it, is
  still that incident); but an unknown object whose place a road user has stood over since it was last shown, and
  that the background model has not shown again BLOB_SHOWN_AGAIN_S after it moved off, is seen gone, cleared away,
  and its incident ends (seen_gone);
- a new track on a vehicle whose own track was lost is the same object (the detector re-found it under a new id);
- an unknown object over or beside an obstacle raised already (closer than its own size: fragments_of_one) is part of
  that incident, which the rules report once over all its pieces.

Pure functions over the analyzer state; the rules decide which objects are incidents.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from processors.analytics.traffic.scene import Scene, anchor_point, box_area, segment_meets_box
from processors.analytics.traffic.state import Box, StaticObject, TrackState, TrafficState
from schemas import StaticBlob
from schemas.geometry import Point, box_cover, box_diagonal, box_intersection
from schemas.settings.lines import Anchor

SAME_OBJECT_OVERLAP = 0.3  # share of the smaller box two pieces of evidence must share to be one object
MOVING_COVER = 0.5  # a blob mostly under a road user (a vehicle moving past it) is hidden this frame, not gone
EDGE_MARGIN_PX = 4.0  # a box this close to the frame's border is cut off by it
VEHICLE_MARGIN = 0.25  # of its box size on each side: a vehicle's shadow
# Blobs where a vehicle vanished must add up to this share of its box's area: one hidden where it stopped changes
# the picture over most of it, while a lane marking or a patch of road under a stale background is a fraction of it
# (a third and a quarter on the dev set's freeway, against 1.4 and 8.6 for the crashed cars hidden in dust).
HIDDEN_VEHICLE_BLOB_SHARE = 0.5
# Nor can a vehicle narrower or lower than this be told to stand hidden by a blob: two cells of the background model
# (8 px each), whose smallest blob covers all of such a vehicle and as much road again (distant traffic under a
# swaying camera leaves such ghosts), and whose speed is a pixel or two of box jitter per frame.
HIDDEN_VEHICLE_MIN_PX = 16.0
# A vehicle whose anchor has moved on average less than this (box diagonals per second, about 0.7 km/h for a car)
# since it came to rest is still at rest: its box drifts as it edges forward or as the detector's box grows.
CREEP_DIAGONALS_PER_S = 0.04
# Evidence of an unknown object gone longer than this (five frames at 5 fps) is a gap in it, not a missed frame.
BLOB_GAP_S = 1.0
# The background model shows what a road user hid this long after it moved off (static_seconds): till then an unknown
# object it hid is not yet seen gone.
BLOB_SHOWN_AGAIN_S = 3.0


@dataclass(frozen=True)
class Evidence:
    box: Box
    since: float  # at rest since, by this evidence
    track: TrackState | None = None  # None for a static blob
    confidence: float = 0.0


def overlap(a: Box, b: Box) -> float:
    """Intersection as a share of the smaller box (1 when one box lies inside the other)."""
    return float(box_cover([a], [b])[0, 0])


def _with_margin(box: Box) -> Box:
    dx, dy = VEHICLE_MARGIN * (box[2] - box[0]), VEHICLE_MARGIN * (box[3] - box[1])
    return (box[0] - dx, box[1] - dy, box[2] + dx, box[3] + dy)


def fragments_of_one(a: Box, b: Box) -> bool:
    """Two unknown objects overlapping, or apart, across and along, by no more than the smaller one's shorter side:
    pieces of one thing the background model split."""
    gap = max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])
    return gap <= min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1])


def union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def covered(box: Box, others: list[Box]) -> bool:
    """Whether one of `others` lies over at least MOVING_COVER of the box."""
    return bool(others) and bool((box_intersection([box], others) >= MOVING_COVER * box_area(box)).any())


def seen_gone(obj: StaticObject, now: float) -> bool:
    """An unknown object that no evidence shows now, though a road user has stood over its place since it was last
    shown and moved off over BLOB_SHOWN_AGAIN_S ago: the background model, which would have shown it again by then,
    sees the road there (it was cleared away, or driven over). Only that says so: blobs also stop showing an object
    that is still there while what the detector has no box for changes over it (dust or smoke round a crash keeps the
    background model from finding it static), and an incident ended then would open again as a second one."""
    return (obj.class_name is None and obj.last_evidence < now and obj.covered_at is not None
            and obj.covered_at > obj.last_evidence and now - obj.covered_at > BLOB_SHOWN_AGAIN_S)


def touches_edge(box: Box, frame_size: tuple[int, int], margin_px: float = EDGE_MARGIN_PX) -> bool:
    """A box at the frame edge: its object may just have left the view."""
    width, height = frame_size
    return box[0] <= margin_px or box[1] <= margin_px or box[2] >= width - margin_px or box[3] >= height - margin_px


def gather_evidence(scene: Scene, state: TrafficState, seen: list[TrackState], blobs: list[StaticBlob],
                    moves: list[tuple[Point, Point]], now: float, frame_size: tuple[int, int]) -> list[Evidence]:
    """This frame's evidence of objects at rest (`moves`: where moving vehicles went on the ground since the frame
    before, foot point before and now)."""
    seen_ids = {track.track_id for track in seen}
    evidence = [Evidence(track.box, track.rest_since, track, track.confidence) for track in seen
                if track.class_name in scene.vehicle_classes and scene.is_stopped(track)]
    moving = [track for track in seen if not scene.is_stopped(track)]
    blob_boxes = [blob.xyxy for blob in blobs]
    held = {track_id for obj in state.static_objects if obj.class_name is not None for track_id in obj.track_ids}
    for track_id in held - seen_ids:
        track = state.tracks.get(track_id)
        if track is not None and any(overlap(track.box, box) >= SAME_OBJECT_OVERLAP for box in blob_boxes):
            # Lost by the detector, still there for the background model: the vehicle has not left.
            track.held_at = now
            evidence.append(Evidence(track.box, track.rest_since, track, track.confidence))
    for track in state.tracks.values():
        if (track.track_id in seen_ids or track.track_id in held or track.class_name not in scene.vehicle_classes
                or track.reacquired or touches_edge(track.box, frame_size)
                or min(track.box[2] - track.box[0], track.box[3] - track.box[1]) < HIDDEN_VEHICLE_MIN_PX):
            continue  # (a track another went on from is that vehicle's past, not a vehicle lost)
        # A vehicle driving over the place where the detector lost one shows that it did not stop there (it was
        # hidden behind one passing, or the tracker handed its id on): whatever the background model shows there
        # later (a ghost of traffic it took for background) is no vehicle hidden in its dust. Over the road it stood
        # on, the lower half of its box: in perspective the upper half covers the road beyond it, where traffic
        # passes behind a vehicle standing there.
        x1, y1, x2, y2 = track.box
        if any(segment_meets_box(before, after, (x1, (y1 + y2) / 2, x2, y2)) for before, after in moves):
            track.driven_over_at = now
        if track.driven_over_at is not None and track.driven_over_at > track.last_seen:
            continue
        # Lost while moving, away from the frame edge, and something has stood where it was since about then:
        # it stopped there, hidden (dust, smoke, debris, occlusion), instead of driving on.
        since_then = [blob for blob in blobs if blob.static_since >= track.last_seen - 1.0]
        stopped = [blob for blob in since_then if overlap(track.box, blob.xyxy) >= SAME_OBJECT_OVERLAP]
        # Fragments of it, also where it rolled on a little out of sight.
        around = [blob for blob in since_then if overlap(_with_margin(track.box), blob.xyxy) > 0]
        if stopped and sum(box_area(blob.xyxy) for blob in around) >= HIDDEN_VEHICLE_BLOB_SHARE * box_area(track.box):
            track.held_at = now
            evidence.append(Evidence(track.box, min(blob.static_since for blob in stopped), track, track.confidence))
    for blob in blobs:
        if not covered(blob.xyxy, [track.box for track in moving]):
            evidence.append(Evidence(blob.xyxy, blob.static_since, None, blob.fill_ratio))
    return evidence


def update_objects(state: TrafficState, evidence: list[Evidence], seen: dict[int, Box], now: float, seq: int,
                   grace_s: float, reported_grace_s: float, stationary_fraction: float) -> list[StaticObject]:
    """Folds this frame's evidence into the objects at rest (`seen`: this frame's track boxes by track id); returns
    the objects alive now. An object outlives a gap in its evidence by `grace_s`, or by `reported_grace_s` once its
    incident is open: found again where it was, it continues that incident instead of opening another."""
    seen_ids = set(seen)
    boxes_now: dict[str, Box] = {}
    # Vehicles first, so blob fragments find the vehicle they belong to.
    for index, item in enumerate(sorted(evidence, key=lambda e: e.track is None)):
        obj = _object_for(state, item, seen_ids, seq, index)
        if item.track is not None:
            if item.track.track_id not in obj.track_ids:
                obj.track_ids.append(item.track.track_id)
            if item.track.track_id == obj.track_ids[0]:
                # The first vehicle's own box (not debris, not a vehicle that stopped beside it after a crash). Its
                # rest time stays through box jitter and a crawl slower than CREEP_DIAGONALS_PER_S (a car edging
                # along the shoulder); a vehicle that moved on further and stopped again restarts it, and where it
                # stands is judged afresh. Whether it was seen arriving is settled as it comes to rest: driving off, a
                # parked car moves away too.
                boxes_now[obj.key] = item.box
                point = anchor_point(item.box, Anchor.BOTTOM_CENTER)
                diagonal = box_diagonal(item.box)
                tolerance = diagonal * (stationary_fraction + CREEP_DIAGONALS_PER_S * max(now - obj.since, 0.0))
                if obj.rest_point is None or math.dist(point, obj.rest_point) > tolerance:
                    obj.rest_point, obj.since, obj.class_frames = point, item.since, {}
                    obj.arrived, obj.region_since = item.track.moved_away, None
                obj.since = min(obj.since, item.since)
                # Its class is the one it is read as most often at rest: a bus at its stop read as a truck in a
                # frame is still a bus, which the stop allows.
                name = item.track.class_name
                obj.class_frames[name] = obj.class_frames.get(name, 0) + 1
                obj.class_name = max(obj.class_frames, key=obj.class_frames.__getitem__)
            else:
                boxes_now.setdefault(obj.key, obj.box)
        elif obj.class_name is None:
            if obj.last_evidence >= 0 and now - obj.last_evidence > BLOB_GAP_S:
                # The background model lost it for a while (traffic passing over a patch of road, or the thing was
                # hidden): the time it went unseen is no time seen standing there. Its incident stays one.
                obj.since += now - obj.last_evidence
            boxes_now[obj.key] = union(boxes_now[obj.key], item.box) if obj.key in boxes_now else item.box
            obj.since = min(obj.since, item.since)
        obj.last_evidence = now
        obj.confidence = max(obj.confidence, item.confidence)
    for obj in state.static_objects:
        obj.box = boxes_now.get(obj.key, obj.box)
        if obj.class_name is None and covered(obj.box, list(seen.values())):
            obj.covered_at = now
    # Gone: no evidence for the grace time, or its vehicle is in view somewhere else (it drove off). A vehicle
    # still in place whose box jitters (partly occluded, half out of the frame) is not at rest for a moment: it stays.
    state.static_objects = [obj for obj in state.static_objects
                            if now - obj.last_evidence <= (reported_grace_s if incident_open(state, obj) else grace_s)
                            and (obj.key in boxes_now or not obj.track_ids or obj.track_ids[0] not in seen
                                 or overlap(seen[obj.track_ids[0]], obj.box) >= SAME_OBJECT_OVERLAP)]
    return state.static_objects


def incident_open(state: TrafficState, obj: StaticObject) -> bool:
    """Whether an incident the object is, or is a piece of, is open."""
    return any(key in state.incidents for key in (obj.incident_key or f"at_rest:{obj.key}", obj.piece_of) if key)


def merge_objects(state: TrafficState, keep: StaticObject, other: StaticObject, same_object: bool = True) -> None:
    """`other` is the same physical object as `keep` (or, not `same_object`, part of the same incident): its evidence
    joins `keep`, whose key (and event) stays."""
    if other is keep:
        return
    keep.incident_key = keep.incident_key or other.incident_key
    keep.contact_at = other.contact_at if keep.contact_at is None else keep.contact_at
    if not same_object:
        keep.track_ids += [track_id for track_id in other.track_ids if track_id not in keep.track_ids]
        state.static_objects.remove(other)
        return
    if keep.class_name is None:  # a vehicle's box is its own; loose fragments add up
        keep.box = other.box if other.class_name is not None else union(keep.box, other.box)
    keep.track_ids += [track_id for track_id in other.track_ids if track_id not in keep.track_ids]
    keep.class_name = keep.class_name or other.class_name
    keep.since = min(keep.since, other.since)
    keep.last_evidence = max(keep.last_evidence, other.last_evidence)
    keep.confidence = max(keep.confidence, other.confidence)
    keep.crash = keep.crash or other.crash
    state.static_objects.remove(other)


def _object_for(state: TrafficState, item: Evidence, seen_ids: set[int], seq: int, index: int) -> StaticObject:
    objects = state.static_objects
    if item.track is not None:
        own = next((obj for obj in objects if item.track.track_id in obj.track_ids), None)
        if own is not None:
            return own
        # Another object here whose vehicle was lost before this track was first seen (the detector re-found it
        # under a new id), or that is no vehicle: the same thing. A vehicle tracked alongside this one, missed for a
        # frame (hidden behind the car queued behind it), is another vehicle, as is one that drove up to where the
        # lost one stood (a bus pulling in over a car's place at its stop): a vehicle re-found is first seen there.
        candidates = [obj for obj in objects if overlap(obj.box, item.box) >= SAME_OBJECT_OVERLAP
                      and not seen_ids.intersection(obj.track_ids)
                      and (obj.class_name is None or not item.track.moved_away)
                      and all(state.tracks[track_id].last_seen < item.track.first_seen for track_id in obj.track_ids
                              if track_id in state.tracks)]
    else:
        # A vehicle's shadow and the road it darkens lie just outside its box: a fragment there is the vehicle.
        share = {obj.key: overlap(_with_margin(obj.box) if obj.class_name else obj.box, item.box) for obj in objects}
        candidates = [obj for obj in objects if share[obj.key] >= SAME_OBJECT_OVERLAP]
    if not candidates:
        key = f"vehicle-{item.track.track_id}" if item.track is not None else f"blob-{seq}-{index}"
        obj = StaticObject(key=key, box=item.box, since=item.since, last_evidence=-1.0, confidence=item.confidence)
        objects.append(obj)
        return obj
    vehicles = [obj for obj in candidates if obj.class_name is not None]
    if item.track is None and vehicles:
        # A fragment by several vehicles is the one it lies over most: the bus standing over it, not the car beside
        # whose place it also lies, lost by the detector, which it would keep there.
        keep = max(vehicles, key=lambda obj: (share[obj.key], -obj.since))
    else:
        # The oldest keeps its key, so the incident it may already have raised continues.
        keep = min(candidates, key=lambda obj: (obj.class_name is None, obj.since))
    if item.track is None:
        for other in candidates:
            # A fragment touching two vehicles does not make them one; it does join loose fragments together.
            if other.class_name is None:
                merge_objects(state, keep, other)
    return keep
