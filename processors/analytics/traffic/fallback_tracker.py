"""Analytics-side tracker for detections that arrive without track ids: greedy IoU, then centroid distance.

Deliberately simple (no motion model): it only bridges the gap until the inference stage's per-camera ByteTrack
fills `Detections.track_id`. One per analyzer, i.e. per camera; its state lives in the analyzer's state.
"""
from __future__ import annotations

import math

from processors.analytics.traffic.scene import centre
from processors.analytics.traffic.state import Box, FallbackTrack, TrafficState
from schemas.geometry import box_diagonal, box_iou

MIN_IOU = 0.3
MAX_CENTROID_JUMP = 0.6  # of the previous box diagonal
LOST_AFTER_S = 1.0


def assign_track_ids(state: TrafficState, boxes: list[Box], class_names: list[str], now: float) -> list[int]:
    """Track ids for one frame's boxes, updating the fallback tracks in `state`."""
    tracks = [track for track in state.fallback_tracks if now - track.last_seen <= LOST_AFTER_S]
    overlaps = box_iou([track.box for track in tracks], boxes)
    pairs = sorted(
        ((float(overlaps[t, d]), t, d) for t, track in enumerate(tracks) for d in range(len(boxes))
         if track.class_name == class_names[d]),
        reverse=True,
    )
    assigned: dict[int, int] = {}
    used_tracks: set[int] = set()
    for iou, t, d in pairs:
        if iou < MIN_IOU:
            break
        if t not in used_tracks and d not in assigned:
            assigned[d] = t
            used_tracks.add(t)
    for d, box in enumerate(boxes):
        if d in assigned:
            continue
        best, best_distance = None, math.inf
        for t, track in enumerate(tracks):
            if t in used_tracks or track.class_name != class_names[d]:
                continue
            limit = MAX_CENTROID_JUMP * box_diagonal(track.box)
            distance = math.dist(centre(track.box), centre(box))
            if distance <= limit and distance < best_distance:
                best, best_distance = t, distance
        if best is not None:
            assigned[d] = best
            used_tracks.add(best)
    ids = []
    for d, box in enumerate(boxes):
        if d in assigned:
            track = tracks[assigned[d]]
            track.box, track.last_seen = box, now
        else:
            track = FallbackTrack(track_id=state.fallback_next_id, class_name=class_names[d], box=box, last_seen=now)
            state.fallback_next_id += 1
            tracks.append(track)
        ids.append(track.track_id)
    state.fallback_tracks = tracks
    return ids
