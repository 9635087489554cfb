"""Per-camera track memory, column-wise: ground velocity per track and debounced counting-line crossings.

Columns (numpy arrays, one row per track, sorted by id) keep the per-frame work vectorised for crowds of
thousands; tracks unseen for `ttl_seconds` are evicted, and at most `max_tracks` are kept (the system runs for
months). Line crossings follow processors.analytics.lines: debounced, segments not infinite lines, and a crossing
still pending when its track is evicted counts (the track walked out of view right after the line).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from processors.analytics.lines import step_lines
from schemas.geometry import side_of

Point = tuple[float, float]


@dataclass(frozen=True)
class CountingLine:
    start: Point
    end: Point
    inward_sign: int  # +1: the side where cross(end - start, p - start) > 0 is inside the zone


@dataclass(frozen=True)
class Crossing:
    line_index: int
    inward: bool
    track_id: int


def line_ends(lines: Sequence[CountingLine]) -> tuple[np.ndarray, np.ndarray]:
    """The lines' start and end points as (L, 2) arrays."""
    return (np.asarray([line.start for line in lines], dtype=float).reshape(-1, 2),
            np.asarray([line.end for line in lines], dtype=float).reshape(-1, 2))


# A track's velocity is its ground displacement over at least this long, not from frame to frame: a detector's boxes
# jitter by a few pixels, and over one frame that reads as walking (at 5 fps, 3 px of jitter made a standing crowd
# at 4.5 p/m² move at 0.5 m/s, its velocity variance a crowd pressure at the danger threshold).
VELOCITY_BASE_S = 1.0


class TrackTable:
    """What the analyzer remembers of each track between frames."""

    COLUMNS = ("ids", "last_seen", "image_xy", "ground_xy", "step_xy", "step_at", "velocity", "side", "pending",
               "pending_frames")
    DTYPES = {"ids": "<i8", "last_seen": "<f8", "image_xy": "<f8", "ground_xy": "<f8", "step_xy": "<f8",
              "step_at": "<f8", "velocity": "<f8", "side": "i1", "pending": "i1", "pending_frames": "<i2"}

    def __init__(self, line_count: int, columns: dict | None = None):
        self.line_count = line_count
        if columns is None:
            columns = {name: [] for name in self.COLUMNS}
        self.ids = np.asarray(columns["ids"], dtype=np.int64).reshape(-1)
        self.last_seen = np.asarray(columns["last_seen"], dtype=float).reshape(-1)
        self.image_xy = np.asarray(columns["image_xy"], dtype=float).reshape(-1, 2)
        self.ground_xy = np.asarray(columns["ground_xy"], dtype=float).reshape(-1, 2)
        # Where and when the track's current velocity step began; a state stored before steps spanned
        # VELOCITY_BASE_S begins them where the track was last seen.
        self.step_xy = np.array(columns.get("step_xy", self.ground_xy), dtype=float).reshape(-1, 2)  # copies
        self.step_at = np.array(columns.get("step_at", self.last_seen), dtype=float).reshape(-1)
        self.velocity = np.asarray(columns["velocity"], dtype=float).reshape(-1, 2)
        self.side = np.asarray(columns["side"], dtype=np.int8).reshape(len(self.ids), line_count)
        self.pending = np.asarray(columns["pending"], dtype=np.int8).reshape(len(self.ids), line_count)
        self.pending_frames = np.asarray(columns["pending_frames"], dtype=np.int16).reshape(len(self.ids), line_count)

    def __len__(self) -> int:
        return len(self.ids)

    def to_columns(self) -> dict[str, bytes]:
        """Each column as its little-endian machine bytes (NaN kept as it is): cheap enough to store every frame."""
        return {name: np.ascontiguousarray(getattr(self, name), dtype=dtype).tobytes()
                for name, dtype in self.DTYPES.items()}

    @classmethod
    def from_columns(cls, line_count: int, columns: dict[str, bytes]) -> TrackTable:
        # copies: arrays over the message's bytes would be read-only
        return cls(line_count, {name: np.frombuffer(columns[name], dtype=dtype).copy()
                                for name, dtype in cls.DTYPES.items() if name in columns})

    def update(self, at: float, track_ids: np.ndarray, image_xy: np.ndarray, box_heights: np.ndarray,
               ground_xy: np.ndarray, lines: Sequence[CountingLine], smoothing: float, max_speed: float,
               ttl_seconds: float, debounce_frames: int, max_tracks: int) -> tuple[np.ndarray, list[Crossing]]:
        """Adds one frame (each track's foot point, box height and ground position); returns each current track's
        ground velocity (NaN when unknown) and line crossings."""
        track_ids = np.asarray(track_ids, dtype=np.int64)
        position = np.searchsorted(self.ids, track_ids)
        known = (position < len(self.ids)) & (self.ids[np.minimum(position, len(self.ids) - 1)] == track_ids) \
            if len(self.ids) else np.zeros(len(track_ids), dtype=bool)
        rows = position[known]
        velocity = np.full((len(track_ids), 2), np.nan)
        crossings: list[Crossing] = []
        if known.any():
            here = ground_xy[known]
            with np.errstate(divide="ignore", invalid="ignore"):
                # Faster than anyone walks since the last frame: the tracker gave the id to someone else (or lost
                # the ground position); the step starts again from here.
                jumped = ~(np.hypot(*(here - self.ground_xy[rows]).T) <= max_speed * (at - self.last_seen[rows]))
                elapsed = at - self.step_at[rows]
                step = (here - self.step_xy[rows]) / elapsed[:, None]
            done = ~jumped & (elapsed >= VELOCITY_BASE_S)  # else the velocity stays what it was
            valid = done & np.isfinite(step).all(axis=1) & (np.hypot(step[:, 0], step[:, 1]) <= max_speed)
            previous = self.velocity[rows]
            blended = np.where(np.isfinite(previous), previous * (1 - smoothing) + step * smoothing, step)
            new_velocity = np.where(valid[:, None], blended, previous)
            velocity[known] = new_velocity
            self.velocity[rows] = new_velocity
            crossings = self._cross_lines(rows, track_ids[known], self.image_xy[rows], image_xy[known],
                                          np.asarray(box_heights)[known], lines, debounce_frames)
            restart = done | jumped
            self.step_xy[rows] = np.where(restart[:, None], here, self.step_xy[rows])
            self.step_at[rows] = np.where(restart, at, self.step_at[rows])
            self.last_seen[rows] = at
            self.image_xy[rows] = image_xy[known]
            self.ground_xy[rows] = here
        fresh = ~known
        if fresh.any():
            starts, ends = line_ends(lines)
            self._insert(track_ids[fresh], at, image_xy[fresh], ground_xy[fresh],
                         side_of(image_xy[fresh], starts, ends))
        crossings += self._evict(at - ttl_seconds, max_tracks, lines)
        return velocity, crossings

    def _cross_lines(self, rows: np.ndarray, ids: np.ndarray, before: np.ndarray, after: np.ndarray,
                     box_heights: np.ndarray, lines: Sequence[CountingLine], debounce_frames: int) -> list[Crossing]:
        starts, ends = line_ends(lines)
        step = step_lines(starts, ends, before, after, box_heights, self.side[rows], self.pending[rows],
                          self.pending_frames[rows], debounce_frames)
        self.side[rows] = step.side
        self.pending[rows] = step.pending
        self.pending_frames[rows] = step.pending_frames
        crossings = []
        if step.crossed.any():
            line_indices, crossed_rows = np.nonzero(step.crossed.T)  # line by line, as the lines are listed
            for index, row in zip(line_indices.tolist(), crossed_rows.tolist(), strict=True):
                crossings.append(Crossing(index, int(step.side[row, index]) == lines[index].inward_sign,
                                          int(ids[row])))
        return crossings

    def _insert(self, ids: np.ndarray, at: float, image_xy: np.ndarray, ground_xy: np.ndarray,
                sides: np.ndarray) -> None:
        count = len(ids)
        # A tracker numbers new tracks upwards, so new rows usually belong at the end, already in order.
        in_order = (len(self.ids) == 0 or ids[0] > self.ids[-1]) and bool((ids[1:] > ids[:-1]).all())
        self.ids = np.concatenate((self.ids, ids))
        self.last_seen = np.concatenate((self.last_seen, np.full(count, at)))
        self.image_xy = np.concatenate((self.image_xy, image_xy))
        self.ground_xy = np.concatenate((self.ground_xy, ground_xy))
        self.step_xy = np.concatenate((self.step_xy, ground_xy))
        self.step_at = np.concatenate((self.step_at, np.full(count, at)))
        self.velocity = np.concatenate((self.velocity, np.full((count, 2), np.nan)))
        self.side = np.concatenate((self.side, sides.astype(np.int8)))
        self.pending = np.concatenate((self.pending, np.zeros_like(sides, dtype=np.int8)))
        self.pending_frames = np.concatenate((self.pending_frames, np.zeros_like(sides, dtype=np.int16)))
        if not in_order:
            self._keep(np.argsort(self.ids, kind="stable"))

    def _evict(self, oldest: float, max_tracks: int, lines: Sequence[CountingLine]) -> list[Crossing]:
        keep = np.flatnonzero(self.last_seen >= oldest)
        if len(keep) > max_tracks:
            keep = keep[np.argsort(self.last_seen[keep], kind="stable")[-max_tracks:]]
            keep.sort()
        if len(keep) == len(self.ids):
            return []
        gone = np.ones(len(self.ids), dtype=bool)
        gone[keep] = False
        crossings = [Crossing(int(line_index), int(self.pending[row, line_index]) == lines[line_index].inward_sign,
                              int(self.ids[row]))
                     for row, line_index in zip(*np.nonzero(gone[:, None] & (self.pending != 0)), strict=True)]
        self._keep(keep)
        return crossings

    def _keep(self, order: np.ndarray) -> None:
        for name in self.COLUMNS:
            setattr(self, name, getattr(self, name)[order])
