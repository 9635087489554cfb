"""Line-crossing counts per class and direction, through the shared debounced mechanism (processors.analytics.lines).

The anchor point of each track's box is what crosses; its previous sighting's anchor is where the step starts, and
the first sighting fixes the start side without any debounce: the track's own, or, for a vehicle the tracker confirmed
late, where it was seen unconfirmed before (converging.SampledFrames.unconfirmed_origin).
"""
from __future__ import annotations

import numpy as np

from processors.analytics.lines import step_line
from processors.analytics.traffic.scene import anchor_point
from processors.analytics.traffic.state import Box, LineSide, TrackState
from schemas.settings.lines import CountingLineConfig


def observe_line(track: TrackState, line: CountingLineConfig, previous_box: Box | None, debounce_frames: int,
                 origin_box: Box | None = None) -> str | None:
    """Updates the track's side of the line; returns the direction name of a crossing that now counts. `origin_box`,
    for a track new in this frame: where the vehicle was seen before the tracker confirmed it, the side it came from
    (a track first seen just past a line would otherwise never cross it)."""
    if origin_box is not None and line.id not in track.lines:
        _step(track, line, origin_box, origin_box, debounce_frames)
        previous_box = origin_box
    return _step(track, line, previous_box if previous_box is not None else track.box, track.box, debounce_frames)


def _step(track: TrackState, line: CountingLineConfig, before: Box, after: Box, debounce_frames: int) -> str | None:
    point = anchor_point(after, line.anchor)
    state = track.lines.get(line.id) or LineSide()
    step = step_line(line.start, line.end, np.asarray([anchor_point(before, line.anchor)]), np.asarray([point]),
                     np.asarray([after[3] - after[1]]), np.asarray([state.side]), np.asarray([state.pending]),
                     np.asarray([state.pending_frames]), debounce_frames)
    side = int(step.side[0])
    if side != 0:
        track.lines[line.id] = LineSide(side=side, pending=int(step.pending[0]),
                                        pending_frames=int(step.pending_frames[0]))
    return _direction(line, side) if step.crossed[0] else None


def flush_pending(track: TrackState, line: CountingLineConfig) -> str | None:
    """A track that disappears while its crossing is pending crossed and did not come back: count it."""
    state = track.lines.get(line.id)
    if state is None or state.pending == 0:
        return None
    return _direction(line, state.pending)


def _direction(line: CountingLineConfig, side: int) -> str:
    return line.forward if side > 0 else line.backward
