"""Plane geometry over plain numbers and numpy arrays: polygons in image pixels or ground metres."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def polygon_area(polygon: Sequence[Point]) -> float:
    """Unsigned area by the shoelace formula (same units squared as the points)."""
    xs, ys = np.asarray(polygon, dtype=float).T
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def side_of(points: np.ndarray, start: Point | np.ndarray, end: Point | np.ndarray) -> np.ndarray:
    """Side of the line start->end each (N, 2) point is on: +1 where cross(end - start, p - start) > 0 (the side the
    normal (-dy, dx) points to), -1 on the other side, 0 on the line itself; int8, (N,).

    With the starts and ends of L lines as (L, 2) arrays, every point against every line at once: (N, L).
    """
    return np.sign(line_cross(points, start, end)).astype(np.int8)


def line_cross(points: np.ndarray, start: Point | np.ndarray, end: Point | np.ndarray) -> np.ndarray:
    """cross(end - start, p - start) for each (N, 2) point, shaped as `side_of` gives its sign: the point's distance
    from the line times the line's length, positive on the side the normal (-dy, dx) points to."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    if start.ndim == 2:
        points = points[:, None, :]
    return _cross(start, end, points)


def _cross(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """cross(b - a, c - a), elementwise."""
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def _orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The sign of cross(b - a, c - a), elementwise: which side of the line a->b each c is on (see side_of)."""
    return np.sign(_cross(a, b, c))


def _within_box(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Whether c lies in the bounding box of a-b (for a point known to be collinear with them: on the segment)."""
    return ((np.minimum(a[..., 0], b[..., 0]) <= c[..., 0]) & (c[..., 0] <= np.maximum(a[..., 0], b[..., 0]))
            & (np.minimum(a[..., 1], b[..., 1]) <= c[..., 1]) & (c[..., 1] <= np.maximum(a[..., 1], b[..., 1])))


def steps_cross_segment(before: np.ndarray, after: np.ndarray, start: Point | np.ndarray,
                        end: Point | np.ndarray) -> np.ndarray:
    """Mask of the (N, 2) steps before[i] -> after[i] that share a point with the closed segment start-end (one
    segment for all steps, or one per step as (N, 2) starts and ends).

    Segments, not infinite lines: a step that passes beyond an end point does not cross; touching counts.
    """
    p1 = np.asarray(before, dtype=float).reshape(-1, 2)
    p2 = np.asarray(after, dtype=float).reshape(-1, 2)
    q1 = np.broadcast_to(np.asarray(start, dtype=float), p1.shape)
    q2 = np.broadcast_to(np.asarray(end, dtype=float), p1.shape)
    d1, d2 = _orientation(q1, q2, p1), _orientation(q1, q2, p2)
    d3, d4 = _orientation(p1, p2, q1), _orientation(p1, p2, q2)
    proper = (d1 * d2 < 0) & (d3 * d4 < 0)
    if not ((d1 == 0) | (d2 == 0) | (d3 == 0) | (d4 == 0)).any():
        return proper  # no end point on the other segment's line: touching is impossible
    touching = (((d1 == 0) & _within_box(q1, q2, p1)) | ((d2 == 0) & _within_box(q1, q2, p2))
                | ((d3 == 0) & _within_box(p1, p2, q1)) | ((d4 == 0) & _within_box(p1, p2, q2)))
    return proper | touching


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True when closed segments p1-p2 and q1-q2 share a point (segments, not infinite lines)."""
    return bool(steps_cross_segment(np.asarray([p1]), np.asarray([p2]), q1, q2)[0])


def polygon_is_simple(polygon: Sequence[Point]) -> bool:
    """True when no two non-adjacent edges of the closed polygon touch (every pair at once: a drawn outline of a
    few hundred points is tens of thousands of pairs)."""
    n = len(polygon)
    starts = np.asarray(polygon, dtype=float).reshape(-1, 2)
    ends = np.roll(starts, -1, axis=0)
    first, second = np.triu_indices(n, k=2)  # edge i ends where edge i + 1 starts: adjacent edges always share it
    apart = ~((first == 0) & (second == n - 1))  # nor do the last and the first, which close the outline
    first, second = first[apart], second[apart]
    return not steps_cross_segment(starts[first], ends[first], starts[second], ends[second]).any()


def points_in_polygon(points: np.ndarray, polygon: Sequence[Point]) -> np.ndarray:
    """Boolean mask of which (N, 2) points lie inside the polygon (even-odd ray casting, vectorised)."""
    return PolygonZone(polygon).contains(points)


def _ray_crosses(x, y, x1, y1, y2, dx, dy):
    """Whether the ray from (x, y) towards +x crosses the edge from (x1, y1) to (x1 + dx, y2), `dy` being y2 - y1 (any
    number where that is 0: a level edge never straddles a ray). Numbers or arrays that broadcast, so that one point
    and many are told by the very same comparisons, which decide on which side of the outline a point exactly on it
    (or a ray through a vertex) falls."""
    return ((y1 > y) != (y2 > y)) & (x < x1 + (y - y1) * dx / dy)


class PolygonZone:
    """A zone outline; `contains` answers for many points at once, `contains_point` for one (even-odd ray casting).

    The edges are prepared once, so a zone tested every frame (often for a single point) pays only the arithmetic.
    """

    # Up to this many edges one point is told faster by plain arithmetic, edge after edge, than through numpy, whose
    # fixed cost per call is that of some 50 edges.
    PLAIN_EDGES = 40

    def __init__(self, polygon: Sequence[Point]):
        self.polygon = [tuple(map(float, point)) for point in polygon]
        vertices = np.asarray(self.polygon, dtype=float)
        x1, y1 = vertices[:, 0], vertices[:, 1]
        y2 = np.roll(y1, -1)
        dy = y2 - y1
        self._edges = (x1, y1, y2, np.roll(x1, -1) - x1, np.where(dy != 0, dy, 1.0))
        # The same edges as plain numbers, one tuple per edge: numpy's overhead on a single point is most of its cost.
        self._edge_numbers = list(zip(*(column.tolist() for column in self._edges), strict=True))

    def contains(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        return (_ray_crosses(points[:, 0:1], points[:, 1:2], *self._edges).sum(axis=1) % 2) == 1

    def contains_point(self, point: Point) -> bool:
        """`contains` for one point."""
        if len(self._edge_numbers) > self.PLAIN_EDGES:
            return bool(self.contains((point,))[0])
        x, y = float(point[0]), float(point[1])
        inside = False
        for edge in self._edge_numbers:
            inside ^= _ray_crosses(x, y, *edge)
        return inside

    def side_of_segment(self, start: Point, end: Point) -> int:
        """The side of the segment start->end the zone lies on, as `side_of` numbers it (+1: where the normal
        (-dy, dx) points).

        Probed just off the segment's midpoint, where a segment along the zone's edge has the zone on one side only
        (the vertices' mean can lie outside a concave zone); then further out, doubling up to the segment's length,
        for a segment drawn a little off the edge. Where no distance tells (a segment across the zone's middle, or
        away from it), the side of the vertices' mean.
        """
        a, b = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
        direction = b - a
        length = float(np.hypot(*direction))
        normal = np.array([-direction[1], direction[0]]) / length
        distances = 2.0 ** np.arange(np.floor(np.log2(max(length, 1.0))) + 1)  # 1, 2, 4, ... pixels
        midpoint = (a + b) / 2
        ahead = self.contains(midpoint + distances[:, None] * normal)
        behind = self.contains(midpoint - distances[:, None] * normal)
        telling = np.flatnonzero(ahead != behind)
        if len(telling):
            return 1 if ahead[telling[0]] else -1
        mean = np.asarray(self.polygon).mean(axis=0)
        return int(side_of(mean, a, b)[0]) or 1


def positions_along(points: Sequence[Point], direction: np.ndarray) -> list[float]:
    """Each point's position along `direction`, a (2,) array: its dot product with it, to the last bit as np.dot gives
    it for the point alone. The points are stacked for numpy to take one dot product each; a matrix-vector product
    (points @ direction) sums by another kernel, which may round differently."""
    return (np.asarray(points, dtype=float).reshape(-1, 1, 2) @ direction).ravel().tolist()


def point_segment_distance(point: Point, start: Point, end: Point) -> float:
    """Distance from a point to the closest point of the segment start-end."""
    p, a, b = np.asarray(point, float), np.asarray(start, float), np.asarray(end, float)
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def segment_outline_distance(start: Point, end: Point, polygon: Sequence[Point]) -> float:
    """Distance from the segment start-end to the closest point of the closed polygon's outline: 0 where the segment
    crosses or touches an edge."""
    corners = np.asarray(polygon, dtype=float).reshape(-1, 2)
    following = np.roll(corners, -1, axis=0)
    if steps_cross_segment(corners, following, start, end).any():
        return 0.0
    # Two segments that do not meet are closest at an end point of one of them.
    return min(min(point_segment_distance(corner, start, end) for corner in corners),
               min(point_segment_distance(point, a, b) for point in (start, end)
                   for a, b in zip(corners, following, strict=True)))


def box_diagonal(box: Sequence[float]) -> float:
    """Length of an (x1, y1, x2, y2) box's diagonal: the object's size in the thresholds that scale with it."""
    return math.hypot(box[2] - box[0], box[3] - box[1])


def _shaped(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """xyxy boxes a and b as arrays that broadcast to the pairs asked for: a[k] with b[k] (`paired`), else every box
    of a with every one of b."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    if not paired:
        return a[:, None, :], b[None, :, :]
    if len(a) != len(b):
        raise ValueError(f"boxes are paired one to one, not {len(a)} with {len(b)}")
    return a, b


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2:] - boxes[..., :2]).clip(0).prod(axis=-1)


def _intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[..., :2], b[..., :2])
    bottom_right = np.minimum(a[..., 2:], b[..., 2:])
    return np.clip(bottom_right - top_left, 0, None).prod(axis=-1)


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection areas of xyxy boxes."""
    return _intersections(*_shaped(a, b, paired=False))


def box_iou(a: np.ndarray, b: np.ndarray, *, paired: bool = False) -> np.ndarray:
    """(len(a), len(b)) intersection over union of xyxy boxes; `paired`: of a[k] with b[k] only, (len(a),)."""
    a, b = _shaped(a, b, paired)
    intersection = _intersections(a, b)
    union = _areas(a) + _areas(b) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def box_cover(a: np.ndarray, b: np.ndarray, *, paired: bool = False) -> np.ndarray:
    """(len(a), len(b)) intersection as a share of the smaller of each pair of xyxy boxes (1 when one lies inside
    the other: a part of an object seen beside the whole of it); `paired`: of a[k] with b[k] only, (len(a),)."""
    a, b = _shaped(a, b, paired)
    smaller = np.minimum(_areas(a), _areas(b))
    intersection = _intersections(a, b)
    return np.divide(intersection, smaller, out=np.zeros_like(intersection), where=smaller > 0)


class BoxGrid:
    """Boxes (points among them) bucketed by the cells of a uniform grid that each covers, to find the few of many (a
    frame may hold thousands of vehicles) that may share a point with a given box without testing every one. `cell`:
    the cells' side, about the size of the objects boxed, so that a box covers a few cells and a cell holds a few."""

    MAX_CELLS_PER_BOX = 64  # a box covering more cells than this is not bucketed but offered to every query

    def __init__(self, boxes: Sequence[Sequence[float]], cell: float):
        if not cell > 0:
            raise ValueError(f"a grid's cells need a positive size, not {cell}")
        self.cell = cell
        self._cells: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
        self._everywhere: list[int] = []
        for index, box in enumerate(boxes):
            (x1, y1), (x2, y2) = self._span(box)
            if (x2 - x1 + 1) * (y2 - y1 + 1) > self.MAX_CELLS_PER_BOX:
                self._everywhere.append(index)
                continue
            for x in range(x1, x2 + 1):
                for y in range(y1, y2 + 1):
                    self._cells[(x, y)].append(index)

    def _span(self, box: Sequence[float]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The first and last cell, by column and row, that the box covers (its corners in either order)."""
        x1, x2 = sorted((box[0], box[2]))
        y1, y2 = sorted((box[1], box[3]))
        return ((math.floor(x1 / self.cell), math.floor(y1 / self.cell)),
                (math.floor(x2 / self.cell), math.floor(y2 / self.cell)))

    def near(self, box: Sequence[float]) -> set[int]:
        """Indices of the boxes that may share a point with `box` (edges included): every one that does, and a few
        that do not."""
        (x1, y1), (x2, y2) = self._span(box)
        found = set(self._everywhere)
        if (x2 - x1 + 1) * (y2 - y1 + 1) > len(self._cells):  # a query box larger than the boxes' cells together
            for (x, y), indices in self._cells.items():
                if x1 <= x <= x2 and y1 <= y <= y2:
                    found.update(indices)
        else:
            for x in range(x1, x2 + 1):
                for y in range(y1, y2 + 1):
                    found.update(self._cells.get((x, y), ()))
        return found


def polygon_cell_weights(polygon: Sequence[Point], image_size: tuple[int, int],
                         map_shape: tuple[int, int]) -> np.ndarray:
    """Fraction of each map cell's area inside a polygon given in image pixels, (rows, cols) float32; the cells tile
    the picture. Exact, so a zone thinner than a cell still weighs its share of each cell it crosses.

    By Green's theorem, for every vertical line through a cell the polygon's edges, each signed by its direction in
    x, add up to the polygon's extent along that line; so the sum over edges of the integral, along the edge across
    the cell's columns, of how much of the cell's height lies at smaller y than the edge is the area inside the cell,
    signed by the polygon's orientation.
    """
    width, height = image_size
    rows, cols = map_shape
    cell_w, cell_h = width / cols, height / rows
    vertices = np.asarray(polygon, dtype=float)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    # only cells under the polygon's bounding box can hold any of it
    first_col, last_col = (int(np.clip(np.floor(low[0] / cell_w), 0, cols)),
                           int(np.clip(np.ceil(high[0] / cell_w), 0, cols)))
    first_row, last_row = (int(np.clip(np.floor(low[1] / cell_h), 0, rows)),
                           int(np.clip(np.ceil(high[1] / cell_h), 0, rows)))
    weights = np.zeros((rows, cols), dtype=np.float32)
    if first_col == last_col or first_row == last_row:
        return weights
    tops = np.arange(first_row, last_row) * cell_h
    signed = np.zeros((last_col - first_col, last_row - first_row))  # (columns, rows) of the bounding box
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        if x1 == x2:
            continue  # a vertical edge spans no x
        start_col = max(first_col, int(np.floor(min(x1, x2) / cell_w)))
        end_col = min(last_col, int(np.ceil(max(x1, x2) / cell_w)))
        if start_col >= end_col:
            continue
        lefts = np.arange(start_col, end_col) * cell_w
        # the edge's part over each column, in the edge's direction (zero long where it misses the column)
        xa, xb = np.clip(x1, lefts, lefts + cell_w), np.clip(x2, lefts, lefts + cell_w)
        slope = (y2 - y1) / (x2 - x1)
        above_a = (y1 + (xa - x1) * slope)[:, None] - tops
        above_b = (y1 + (xb - x1) * slope)[:, None] - tops
        signed[start_col - first_col:end_col - first_col] += \
            (xb - xa)[:, None] * _mean_clipped(above_a, above_b, cell_h)
    inside = np.abs(signed) / (cell_w * cell_h)
    weights[first_row:last_row, first_col:last_col] = np.clip(inside, 0.0, 1.0).T
    return weights


def _mean_clipped(start: np.ndarray, end: np.ndarray, upper: float) -> np.ndarray:
    """Mean of clip(u, 0, upper) for u running linearly from `start` to `end`, elementwise."""
    low, high = np.clip(start, 0.0, upper), np.clip(end, 0.0, upper)
    # the integral of clip(u, 0, upper) du: u²/2 within the bounds, `upper` per unit above them
    integral = (high * high - low * low) / 2 + upper * (np.maximum(end - upper, 0) - np.maximum(start - upper, 0))
    rise = end - start
    level = np.abs(rise) < 1e-6  # a run this flat is its midpoint's value to well within float32
    return np.where(level, np.clip((start + end) / 2, 0.0, upper), integral / np.where(level, 1.0, rise))
