"""Line-crossing counts per class and direction, with the faults of common counters designed out.

- Segment, not infinite line: a side change counts only when the anchor's path crosses between the end points.
- Flicker: a crossing counts after `debounce_frames` consecutive frames on the new side; a return before that
  cancels it, so a one-frame jump across the line is neither a crossing nor an opposite crossing.
- Objects crossing together: each track keeps its own side per line, nothing is shared between tracks.
- Double counts: a track counts again only after it has been confirmed back on the first side.
- Frame edge: a track that leaves the frame (expires) while its crossing is pending still counts, since it did
  cross and never came back; the first sighting fixes the start side without any debounce.
"""
from __future__ import annotations

from cityguard.config_traffic import CountingLineConfig
from processors.traffic.scene import anchor_point, crosses_segment, side_of
from processors.traffic.state import Box, LineSide, PendingCrossing, TrackState


def observe_line(track: TrackState, line: CountingLineConfig, previous_box: Box | None, debounce_frames: int) -> str | None:
    """Updates the track's side of the line; returns the direction name of a crossing that now counts."""
    point = anchor_point(track.box, line.anchor)
    side = side_of(point, line.start, line.end)
    state = track.lines.get(line.id)
    if state is None:
        if side != 0:
            track.lines[line.id] = LineSide(side=side)
        return None
    if side == 0 or side == state.side:
        state.pending = None  # back on the confirmed side (or on the line): whatever was pending was flicker
        return None
    if state.pending is None:
        previous = anchor_point(previous_box, line.anchor) if previous_box is not None else point
        state.pending = PendingCrossing(side=side, frames=0,
                                        through_segment=crosses_segment(previous, point, line.start, line.end))
    state.pending.frames += 1
    if state.pending.frames < debounce_frames:
        return None
    return _confirm(state, line)


def flush_pending(track: TrackState, line: CountingLineConfig) -> str | None:
    """A track that disappears while its crossing is pending crossed and did not come back: count it."""
    state = track.lines.get(line.id)
    if state is None or state.pending is None:
        return None
    return _confirm(state, line)


def _confirm(state: LineSide, line: CountingLineConfig) -> str | None:
    pending = state.pending
    state.side, state.pending = pending.side, None
    if not pending.through_segment:
        return None  # went round the end of the segment
    return line.forward if pending.side > 0 else line.backward
