"""Debounced counting-line crossings: the one mechanism crowd zone entrances and traffic lines both count with.

Counting lines are segments, not infinite lines: a crossing starts only when a track's step intersects the segment,
and counts after the track has stayed on the new side for `debounce_frames` frames and gone at least its margin past
the line (a share of its box height), so a one-frame flicker back and forth counts nothing, nor does an object
standing on the line while its box jitters a few pixels to and fro (which at 25 fps would otherwise count every
few frames). A track on the other side without having stepped over the segment walked round its end: its
side changes, nothing counts. Each track keeps its own side per line (objects crossing together count one each),
and counts again only after it has been confirmed on the first side again.

A track that vanishes while a crossing is pending (it walked out of view right after the line) crossed and did not
come back, so its crossing counts when it is forgotten (`pending != 0` then names the side it crossed to).

The state is three columns per line, one row per track, so one call handles every track of a frame:
`side` (confirmed side, 0 before the track was first seen off the line), `pending` (side of a crossing not yet
confirmed, 0 for none) and `pending_frames` (frames spent there so far).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.geometry import Point, line_cross, steps_cross_segment

# How far past the line, in the object's box heights, a crossing must go before it counts: a detector's box edge
# wanders a few per cent of the box height from frame to frame on an object standing still.
CROSSING_MARGIN_BOX_HEIGHTS = 0.1


@dataclass(frozen=True)
class LineStep:
    """The state columns after one frame, and which tracks' crossings count now (per track, or per track and line)."""

    side: np.ndarray  # int8
    pending: np.ndarray  # int8
    pending_frames: np.ndarray  # int16
    crossed: np.ndarray  # bool: the crossing to `side` counts in this frame


def step_line(start: Point, end: Point, before: np.ndarray, after: np.ndarray, box_heights: np.ndarray,
              side: np.ndarray, pending: np.ndarray, pending_frames: np.ndarray, debounce_frames: int) -> LineStep:
    """Moves tracks from their previous points `before` to `after` ((N, 2) each) against one line."""
    step = step_lines(np.asarray([start], dtype=float), np.asarray([end], dtype=float), before, after, box_heights,
                      np.asarray(side)[:, None], np.asarray(pending)[:, None], np.asarray(pending_frames)[:, None],
                      debounce_frames)
    return LineStep(step.side[:, 0], step.pending[:, 0], step.pending_frames[:, 0], step.crossed[:, 0])


def step_lines(starts: np.ndarray, ends: np.ndarray, before: np.ndarray, after: np.ndarray, box_heights: np.ndarray,
               side: np.ndarray, pending: np.ndarray, pending_frames: np.ndarray, debounce_frames: int) -> LineStep:
    """Moves tracks from `before` to `after` ((N, 2) each; their boxes now `box_heights` pixels tall, (N,)) against
    L lines at once: `starts` and `ends` are (L, 2), the state columns and the returned ones (N, L)."""
    before = np.asarray(before, dtype=float).reshape(-1, 2)
    after = np.asarray(after, dtype=float).reshape(-1, 2)
    cross = line_cross(after, starts, ends)
    now = np.sign(cross).astype(np.int8)
    with np.errstate(invalid="ignore"):
        past_line = np.abs(cross) / np.hypot(*(ends - starts).T)
    clear = past_line >= CROSSING_MARGIN_BOX_HEIGHTS * np.asarray(box_heights, dtype=float).reshape(-1, 1)
    frames = np.asarray(pending_frames).astype(int)
    confirmed = np.where(side == 0, now, side)  # first time off the line itself
    away = (now != 0) & (now != confirmed)
    back = now == confirmed
    continuing = away & (pending == now)
    # Only a track newly on the other side needs the segment test, and in most frames there are few.
    moved = away & ~continuing
    stepped_over = np.zeros_like(moved)
    if moved.any():
        tracks, lines = np.nonzero(moved)
        stepped_over[moved] = steps_cross_segment(before[tracks], after[tracks], starts[lines], ends[lines])
    starting = moved & stepped_over
    around = moved & ~stepped_over
    # capped: a track waiting on the line short of its margin for minutes must not wrap the int16 column round
    frames = np.where(continuing, np.minimum(frames + 1, debounce_frames), np.where(starting, 1, 0))
    pending = np.where(continuing | starting, now, 0)
    crossed = (continuing | starting) & (frames >= debounce_frames) & clear
    confirmed = np.where(crossed | around, now, confirmed)
    pending = np.where(crossed | back, 0, pending)
    frames = np.where(crossed | back, 0, frames)
    return LineStep(confirmed.astype(np.int8), pending.astype(np.int8), frames.astype(np.int16), crossed)
