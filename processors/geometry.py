"""Plane geometry over plain numbers and numpy arrays: polygons in image pixels or ground metres."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def polygon_area(polygon: Sequence[Point]) -> float:
    """Unsigned area by the shoelace formula (same units squared as the points)."""
    xs, ys = np.asarray(polygon, dtype=float).T
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def _orientation(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True when closed segments p1-p2 and q1-q2 share a point (segments, not infinite lines)."""
    d1, d2 = _orientation(q1, q2, p1), _orientation(q1, q2, p2)
    d3, d4 = _orientation(p1, p2, q1), _orientation(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True

    def on_segment(a: Point, b: Point, c: Point) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return (
        (d1 == 0 and on_segment(q1, q2, p1))
        or (d2 == 0 and on_segment(q1, q2, p2))
        or (d3 == 0 and on_segment(p1, p2, q1))
        or (d4 == 0 and on_segment(p1, p2, q2))
    )


def polygon_is_simple(polygon: Sequence[Point]) -> bool:
    """True when no two non-adjacent edges of the closed polygon touch."""
    n = len(polygon)
    edges = [(polygon[i], polygon[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # adjacent edges share a vertex by construction
            if segments_intersect(*edges[i], *edges[j]):
                return False
    return True


def points_in_polygon(points: np.ndarray, polygon: Sequence[Point]) -> np.ndarray:
    """Boolean mask of which (N, 2) points lie inside the polygon (even-odd ray casting, vectorised)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    vertices = np.asarray(polygon, dtype=float)
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = vertices[:, 0], vertices[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crossings = straddles & (x < x_cross)
    return (crossings.sum(axis=1) % 2) == 1


class PolygonZone:
    """A zone outline; `contains` answers for many points at once."""

    def __init__(self, polygon: Sequence[Point]):
        self.polygon = [tuple(map(float, point)) for point in polygon]

    def contains(self, points: np.ndarray) -> np.ndarray:
        return points_in_polygon(points, self.polygon)
