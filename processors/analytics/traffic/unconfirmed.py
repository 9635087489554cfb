"""Vehicles lost before the tracker confirmed them: kept as lost tracks, so that the background showing something
standing where one vanished makes it a crash hidden in its own dust, as for a confirmed track (static_objects).

A car at speed may be detected in only two or three frames before it crashes and vanishes in dust, too few for
the tracker. Only a vehicle seen moving fast over two sampled frames that is then gone from the next two, away from
the frame edge, counts: a vehicle that drives on is detected again (a detector's lapse loses it for a frame now and
then, all the unconfirmed detections of a frame at once where frames are lost on the way), and one whose path leads
out of the picture by then has left it.
"""
from __future__ import annotations

from processors.analytics.traffic.converging import SampledFrames
from processors.analytics.traffic.scene import Scene, anchor_point
from processors.analytics.traffic.state import TrackState, TrafficState
from processors.analytics.traffic.static_objects import touches_edge
from schemas import UNTRACKED
from schemas.settings.lines import Anchor


def keep_lost(scene: Scene, state: TrafficState, frames: SampledFrames, frame_size: tuple[int, int]) -> None:
    """Adds a lost track for each unconfirmed vehicle missing from the last sampled frame (`state.missed_unconfirmed`)
    that this one (`frames.frame`), the next sampled frame, does not show either, where it stood or where it would
    have driven on to, and whose path stays in view; then notes the unconfirmed vehicles of the sampled frame before
    that were moving fast and are gone from this one."""
    frame, frame_index = frames.frame, frames.index
    for track in state.missed_unconfirmed:
        ahead = scene.box_ahead(track, frame.time)
        if not touches_edge(ahead, frame_size) and not any(frame_index.as_same_vehicle(where)
                                                           for where in (track.box, ahead)):
            state.tracks[state.next_unconfirmed_id] = track.model_copy(update={"track_id": state.next_unconfirmed_id})
            state.next_unconfirmed_id -= 1
    state.missed_unconfirmed = []
    if len(frames.recent) < 2:
        return
    first, second = frames.recent
    went_on = {i for i in frames.frame_previous if i is not None}
    for i, j in enumerate(frames.recent_previous):
        box = second.boxes[i]
        if j is None or i in went_on or second.track_ids[i] != UNTRACKED or touches_edge(box, frame_size):
            continue
        before = first.boxes[j]
        (x0, y0), (x1, y1) = anchor_point(before, Anchor.BOTTOM_CENTER), anchor_point(box, Anchor.BOTTOM_CENTER)
        track = TrackState(
            track_id=UNTRACKED, class_name=second.class_names[i], box=box, first_seen=first.time,
            last_seen=second.time, confidence=second.confidences[i], rest_point=(x1, y1), rest_since=second.time,
            history=[(first.time, x0, y0, before[3] - before[1]), (second.time, x1, y1, box[3] - box[1])])
        if scene.speed_box_per_s(track) >= scene.thresholds.crash_stop_speed_box_per_s:
            state.missed_unconfirmed.append(track)
