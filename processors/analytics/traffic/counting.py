"""Line-crossing counts per class and direction, through the shared debounced mechanism (processors.analytics.lines).

The anchor point of each track's box is what crosses; its previous sighting's anchor is where the step starts, and
the first sighting fixes the start side without any debounce.
"""
from __future__ import annotations

import numpy as np

from processors.analytics.lines import step_line
from processors.analytics.traffic.scene import anchor_point
from processors.analytics.traffic.state import Box, LineSide, TrackState
from schemas.settings.lines import CountingLineConfig


def observe_line(track: TrackState, line: CountingLineConfig, previous_box: Box | None,
                 debounce_frames: int) -> str | None:
    """Updates the track's side of the line; returns the direction name of a crossing that now counts."""
    point = anchor_point(track.box, line.anchor)
    previous = anchor_point(previous_box, line.anchor) if previous_box is not None else point
    state = track.lines.get(line.id) or LineSide()
    height = track.box[3] - track.box[1]
    step = step_line(line.start, line.end, np.asarray([previous]), np.asarray([point]), np.asarray([height]),
                     np.asarray([state.side]), np.asarray([state.pending]), np.asarray([state.pending_frames]),
                     debounce_frames)
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
