"""A scene configuration turned into ready-to-use geometry: anchors, region tests, ground projection, motion."""
from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import numpy as np

from processors.analytics.traffic.state import Box, TrackState
from schemas.calibration import Homography
from schemas.geometry import PolygonZone, box_diagonal, point_segment_distance, points_in_polygon, segments_intersect
from schemas.settings.lines import Anchor
from schemas.settings.traffic import SceneConfig

ANSWERS_KEPT = 4096
_UNKNOWN = object()  # a question not yet answered (an answer may be None)
OCCUPANCY_GRID_POINTS = 400  # sample points per lane for occupancy: ~0.25 % resolution, cheap to test


def anchor_point(box: Box, anchor: Anchor) -> tuple[float, float]:
    x1, y1, x2, y2 = box
    y = {Anchor.BOTTOM_CENTER: y2, Anchor.CENTER: (y1 + y2) / 2, Anchor.TOP_CENTER: y1}[anchor]
    return ((x1 + x2) / 2, y)


def centre(box: Box) -> tuple[float, float]:
    return anchor_point(box, Anchor.CENTER)


def box_area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def shifted(box: Box, dx: float, dy: float) -> Box:
    """The box moved by (dx, dy) pixels."""
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def in_box(point: tuple[float, float], box: Box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def segment_meets_box(start: tuple[float, float], end: tuple[float, float], box: Box) -> bool:
    """Whether the segment has a point in the box (an end inside, or crossing an edge)."""
    x1, y1, x2, y2 = box
    if (max(start[0], end[0]) < x1 or min(start[0], end[0]) > x2
            or max(start[1], end[1]) < y1 or min(start[1], end[1]) > y2):
        return False  # the segment's own bounding box lies apart: most segments and boxes, told without edge tests
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    return in_box(start, box) or in_box(end, box) or any(
        segments_intersect(start, end, corners[i], corners[i - 1]) for i in range(4))


def edges_moved(box: Box, other: Box) -> float:
    """The largest shift of any edge between two boxes (pixels)."""
    return max(abs(a - b) for a, b in zip(box, other, strict=True))


def box_segment_distance(box: Box, start: tuple[float, float], end: tuple[float, float]) -> float:
    """Shortest distance between a box and a segment, 0 where they meet."""
    if segment_meets_box(start, end, box):
        return 0.0
    x1, y1, x2, y2 = box

    def to_box(point: tuple[float, float]) -> float:
        return math.hypot(max(x1 - point[0], 0.0, point[0] - x2), max(y1 - point[1], 0.0, point[1] - y2))

    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    return min(to_box(start), to_box(end), *(point_segment_distance(corner, start, end) for corner in corners))


class Scene:
    """Region membership and motion measures for one camera's scene."""

    def __init__(self, config: SceneConfig, homography: Homography | None = None):
        """`homography`: the camera's calibration, image pixels to ground metres; without it no speeds in m/s."""
        self.config = config
        self.thresholds = config.thresholds
        self.vehicle_classes = frozenset(config.vehicle_classes)
        self.road_classes = frozenset(config.road_classes)
        self.lanes = {lane.id: lane for lane in config.lanes}
        self.lane_directions = {lane.id: np.asarray(lane.direction, float) / math.hypot(*lane.direction)
                                for lane in config.lanes}
        self.stopping_zones = [*([config.intersection] if config.intersection else []), *config.no_stopping_zones]
        self.stopping_zone_by_id = {zone.id: zone for zone in self.stopping_zones}
        self.stop_lines = {line.id: line for line in config.stop_lines}
        # Where traffic waits its turn, as segments: stop lines and the outlines of the intersection and crosswalks.
        self.yield_segments = [(line.start, line.end) for line in config.stop_lines]
        for region in [*([config.intersection] if config.intersection else []), *config.crosswalks]:
            self.yield_segments += [(region.polygon[i - 1], region.polygon[i]) for i in range(len(region.polygon))]
        # How far along its direction of travel each lane reaches.
        self.lane_ends = {lane.id: float(np.max(np.asarray(lane.polygon, float) @ self.lane_directions[lane.id]))
                          for lane in config.lanes}
        self.homography = homography
        self._zones: dict[int, PolygonZone] = {}
        self._answers: dict[tuple[tuple[float, float], int | None], bool | str | None] = {}
        self.lane_grids = {lane.id: _grid_inside(lane.polygon) for lane in config.lanes}

    @property
    def calibrated(self) -> bool:
        return self.homography is not None

    def lane_of(self, point: tuple[float, float]) -> str | None:
        # Asked for every sample of every vehicle's recent history each frame: kept as one answer, not one per lane.
        return self._kept((point, None), lambda: next(
            (lane.id for lane in self.config.lanes if self._zone(lane.polygon).contains_point(point)), None))

    def is_in(self, point: tuple[float, float], polygon) -> bool:
        return self._kept((point, id(polygon)), lambda: self._zone(polygon).contains_point(point))

    def _kept(self, key: tuple[tuple[float, float], int | None],
              work: Callable[[], bool | str | None]) -> bool | str | None:
        """The answer to a question about a point, worked out by `work` unless kept. The rules ask about the same foot
        points and regions several times per frame, and about a vehicle's history frame after frame: answers are kept
        for the last few thousand questions. Keyed by the point and the polygon's identity (the polygons are the
        configuration's, alive with the scene), or None for which lane."""
        answer = self._answers.get(key, _UNKNOWN)
        if answer is _UNKNOWN:
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.clear()
            answer = self._answers[key] = work()
        return answer

    def _zone(self, polygon) -> PolygonZone:
        zone = self._zones.get(id(polygon))
        if zone is None:
            zone = self._zones[id(polygon)] = PolygonZone(polygon)
        return zone

    def in_queue_area(self, point: tuple[float, float], line_ids) -> bool:
        """Whether the point lies in the queue area of one of these stop lines (those whose red-light queue stands)."""
        return any(self.is_in(point, self.stop_lines[line_id].queue_area) for line_id in line_ids)

    def on_roadway(self, point: tuple[float, float]) -> bool:
        box = self.config.intersection
        return self.lane_of(point) is not None or (box is not None and self.is_in(point, box.polygon))

    def in_any(self, point: tuple[float, float], regions) -> str | None:
        for region in regions:
            if self.is_in(point, region.polygon):
                return region.id
        return None

    # --- motion from a track's history -------------------------------------------------------------------------

    def stationary_tolerance(self, box: Box) -> float:
        """How far (pixels) a vehicle's box may move and the vehicle still stand: a share of its diagonal."""
        return self.thresholds.stationary_box_fraction * box_diagonal(box)

    def stationary_seconds(self, track: TrackState) -> float:
        return track.last_seen - track.rest_since

    def is_stopped(self, track: TrackState) -> bool:
        return self.stationary_seconds(track) >= self.thresholds.min_stationary_seconds

    def speed_box_per_s(self, track: TrackState, span_s: float = 1.0) -> float:
        """Anchor speed over about the last `span_s`, in box heights per second: comparable across the image."""
        earlier = _index_before(track, track.last_seen - span_s)
        if earlier is None:
            return 0.0
        then, now = track.history[earlier], track.history[-1]
        elapsed = now[0] - then[0]
        if elapsed <= 0:
            return 0.0
        return math.hypot(now[1] - then[1], now[2] - then[2]) / max(now[3], 1.0) / elapsed

    def speed_before_rest(self, track: TrackState, span_s: float = 1.0) -> float:
        """Anchor speed over the `span_s` before the track came to rest, in box heights per second: from its first
        sample when its history reaches back only half that far (a vehicle first seen moments before it stopped), 0
        when not even that."""
        before = [s for s in track.history if s[0] <= track.rest_since - span_s]
        if not before and track.history and track.history[0][0] <= track.rest_since - span_s / 2:
            before = track.history[:1]
        at_rest = [s for s in track.history if s[0] <= track.rest_since]
        if not before or not at_rest or at_rest[-1][0] <= before[-1][0]:
            return 0.0
        start, end = before[-1], at_rest[-1]
        return math.hypot(end[1] - start[1], end[2] - start[2]) / max(end[3], 1.0) / (end[0] - start[0])

    def peak_speed_box_per_s(self, track: TrackState, span_s: float) -> float:
        """Highest speed between consecutive history samples over the last `span_s`."""
        recent = [s for s in track.history if s[0] >= track.last_seen - span_s]
        speeds = [math.hypot(b[1] - a[1], b[2] - a[2]) / max(b[3], 1.0) / (b[0] - a[0])
                  for a, b in pairwise(recent) if b[0] > a[0]]
        return max(speeds, default=0.0)

    def velocity(self, track: TrackState, start: float, end: float) -> tuple[float, float] | None:
        """Mean anchor velocity between the samples nearest `start` and `end` (at or before each), in box heights per
        second; None when the history holds no two such samples."""
        span = _spanning(track, start, end)
        if span is None:
            return None
        first, last = (track.history[index] for index in span)
        scale = max(first[3], last[3], 1.0) * (last[0] - first[0])
        return (last[1] - first[1]) / scale, (last[2] - first[2]) / scale

    def heading(self, track: TrackState, start: float, end: float,
                ground: GroundHistories) -> tuple[float, float] | None:
        """Which way the anchor went between the same samples as `velocity`'s: on the ground where the camera is
        calibrated (seen along a road, the picture sharpens every turn), else in the picture; None likewise.
        `ground`: this frame's ground points of the tracks' histories."""
        span = _spanning(track, start, end)
        if span is None:
            return None
        first, last = span
        if self.homography is None:
            points = [track.history[index][1:3] for index in span]
        else:
            points = ground.of(track)[[first, last]].tolist()
        return float(points[1][0] - points[0][0]), float(points[1][1] - points[0][1])

    def point_ahead(self, track: TrackState, since: float, at: float) -> tuple[float, float] | None:
        """Where the track's anchor would be at `at` had it kept the velocity of its half second up to `since`; None
        without two history samples to tell it."""
        span = _spanning(track, since - 0.5, since)
        if span is None:
            return None
        first, last = (track.history[index] for index in span)
        share = (at - last[0]) / (last[0] - first[0])
        return last[1] + (last[1] - first[1]) * share, last[2] + (last[2] - first[2]) * share

    def box_ahead(self, track: TrackState, at: float) -> Box:
        """Where the track's box would be at `at` had the vehicle kept the velocity of its last half second: one lost
        at speed and detected again has driven on by then."""
        ahead = self.point_ahead(track, track.last_seen, at)
        if ahead is None:
            return track.box
        return shifted(track.box, ahead[0] - track.history[-1][1], ahead[1] - track.history[-1][2])

    def ground_speed_mps(self, track: TrackState, ground: GroundHistories, span_s: float = 1.0) -> float | None:
        """Speed in m/s where calibrated; None without calibration or when above the physical sanity bound.
        `ground`: this frame's ground points of the tracks' histories."""
        if self.homography is None:
            return None
        earlier = _index_before(track, track.last_seen - span_s)
        if earlier is None:
            return None
        elapsed = track.history[-1][0] - track.history[earlier][0]
        if elapsed <= 0:
            return None
        points = ground.of(track)
        speed = float(np.linalg.norm(points[-1] - points[earlier]) / elapsed)
        return speed if speed <= self.thresholds.max_plausible_speed_mps else None


class GroundHistories:
    """Where the anchor of each history sample of the tracks lies on the ground (metres), for one frame: the motion
    measures ask about a few samples of the same vehicle many times a frame (its heading for each contact it makes,
    its speed for each rule), and transforming a track's whole history at once costs what two of its samples do.
    Made anew for every frame, as each frame changes the histories; a track's is worked out when first asked for."""

    def __init__(self, homography: Homography | None):
        self.homography = homography
        self.by_track: dict[int, np.ndarray] = {}

    def of(self, track: TrackState) -> np.ndarray:
        """The ground points of the track's history samples, (N, 2), in their order (a calibrated camera's only)."""
        points = self.by_track.get(track.track_id)
        if points is None:
            points = self.by_track[track.track_id] = self.homography.to_ground(
                np.asarray([sample[1:3] for sample in track.history], float))
        return points


def _spanning(track: TrackState, start: float, end: float) -> tuple[int, int] | None:
    """Where in the history the samples nearest `start` and `end` are (at or before each; the oldest for a `start`
    before it), or None when they are not two."""
    history = track.history
    newest_first = range(len(history) - 1, -1, -1)
    last = next((index for index in newest_first if history[index][0] <= end), None)
    first = next((index for index in newest_first if history[index][0] <= start), 0 if history else None)
    if last is None or first is None or history[last][0] <= history[first][0]:
        return None
    return first, last


def _index_before(track: TrackState, time: float) -> int | None:
    """Where in the history the latest sample at or before `time` but the newest is, else the oldest one if it is not
    the newest."""
    history = track.history
    before = next((index for index in range(len(history) - 2, -1, -1) if history[index][0] <= time), None)
    if before is not None:
        return before
    return 0 if len(history) > 1 else None


def _grid_inside(polygon) -> np.ndarray:
    vertices = np.asarray(polygon, float)
    (x0, y0), (x1, y1) = vertices.min(axis=0), vertices.max(axis=0)
    step = math.sqrt((x1 - x0) * (y1 - y0) / OCCUPANCY_GRID_POINTS)
    xs, ys = np.meshgrid(np.arange(x0 + step / 2, x1, step), np.arange(y0 + step / 2, y1, step))
    grid = np.column_stack((xs.ravel(), ys.ravel()))
    return grid[points_in_polygon(grid, polygon)]
