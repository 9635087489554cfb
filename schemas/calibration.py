"""Image <-> ground homography from point pairs (normalised DLT), its reprojection error and degeneracy checks.

A homography maps the ground plane seen by a camera to metres, so foot points become positions and zones get
areas. It is only valid for points on that plane and below its horizon (positive projective depth).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

Point = tuple[float, float]
# The units ground points are given in by mistake for metres, by how many of each make a metre: they fit a homography
# as well, and make every length that many times too long (a unit larger than the metre is no mistake anyone makes).
UNITS_PER_M = {"feet": 1 / 0.3048, "inches": 1 / 0.0254, "centimetres": 100.0, "millimetres": 1000.0}


class Homography:
    """3x3 image -> ground matrix with its inverse; points are (N, 2) arrays.

    `ground_image_points` are image points known to lie on the ground plane (the calibration's own): the sign of
    their projective depth is the ground side of the horizon. Without them `on_ground` cannot be answered.
    """

    def __init__(self, matrix: np.ndarray, ground_image_points: Sequence[Point] | np.ndarray | None = None):
        matrix = np.asarray(matrix, dtype=float)
        # Scale is arbitrary: unit norm, and a positive last entry when it has one, for a readable, stable form.
        self.matrix = matrix / np.linalg.norm(matrix) * (-1 if matrix[2, 2] < 0 else 1)
        self.inverse = np.linalg.inv(self.matrix)
        self.ground_sign: float | None = None
        if ground_image_points is not None:
            # The majority, so that one calibration point drawn past the horizon does not turn the plane over.
            depth = self._apply(self.matrix, np.asarray(ground_image_points, dtype=float))[1]
            self.ground_sign = 1.0 if np.sign(depth).sum() >= 0 else -1.0

    @staticmethod
    def _apply(matrix: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        projected = points @ matrix[:, :2].T + matrix[:, 2]
        depth = projected[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return projected[:, :2] / depth[:, None], depth

    def to_ground(self, image_points: np.ndarray) -> np.ndarray:
        return self._apply(self.matrix, image_points)[0]

    def to_image(self, ground_points: np.ndarray) -> np.ndarray:
        return self._apply(self.inverse, ground_points)[0]

    def on_ground(self, image_points: np.ndarray) -> np.ndarray:
        """Mask of image points below the horizon: the same depth sign as the calibration's own image points.

        Not the ground origin's: coordinates measured from a landmark behind the camera put the origin on the far
        side of the horizon, which would turn every verdict over."""
        if self.ground_sign is None:
            raise ValueError("on_ground needs the image points the homography was calibrated from")
        return self._on_ground_side(self._apply(self.matrix, image_points)[1])

    def _on_ground_side(self, depth: np.ndarray) -> np.ndarray:
        """Mask of projective depths on the calibration points' side of the horizon (`on_ground`)."""
        return np.sign(depth) == self.ground_sign

    def standing_height_px(self, image_points: np.ndarray, height_m: float) -> np.ndarray:
        """Image pixels, straight up, between ground points seen at `image_points` (N, 2) and a point `height_m`
        above each (a standing person's head over the feet); 0 where the point is not on the ground or the view is
        from straight above.

        A ground homography holds no camera height, so this is the local pinhole view: a vertical length shows
        cos(depression) as long as the same length across the view, and the ground's foreshortening along the view
        is sin(depression). Exact for a short length; for a person 10 to 20 m from a camera 4 to 20 m up it reads
        5-15 % short, as the head is nearer the camera than the feet.
        """
        points = np.asarray(image_points, dtype=float).reshape(-1, 2)
        across_m_per_px, cos_depression, depth = self._view_at(points)
        with np.errstate(divide="ignore", invalid="ignore"):
            height_px = height_m / across_m_per_px * cos_depression
        seen = np.isfinite(height_px)
        if self.ground_sign is not None:
            seen &= self._on_ground_side(depth)
        return np.where(seen, height_px, 0.0)

    def cos_depression(self, image_points: np.ndarray) -> np.ndarray:
        """Cosine of the angle the view looks down at at each point (N, 2): 1 along the ground, 0 from straight above
        (`standing_height_px` says how it is read)."""
        return self._view_at(np.asarray(image_points, dtype=float).reshape(-1, 2))[1]

    def _view_at(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ground metres one image pixel along x spans at each point (N, 2), the view's scale across it; the
        cosine of the angle the view looks down at there; and the point's projective depth (`on_ground`)."""
        count = len(points)
        # The points, and the points a pixel to the right of and below them, in one product.
        ground, depth = self._apply(self.matrix, np.concatenate((points, points + (1.0, 0.0), points + (0.0, 1.0))))
        across = ground[count:2 * count] - ground[:count]
        down = ground[2 * count:] - ground[:count]
        across_m = np.hypot(*across.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            # along the view: the part of an image row's step not across it
            along_m = np.hypot(*(down - (np.sum(down * across, axis=1) / across_m ** 2)[:, None] * across).T)
            sin_depression = np.clip(across_m / along_m, 0.0, 1.0)
            return across_m, np.sqrt(1.0 - sin_depression ** 2), depth[:count]

    def as_lists(self) -> list[list[float]]:
        return [[float(value) for value in row] for row in self.matrix]


def likely_unit(scale: float, within: float = math.inf) -> tuple[str, float] | None:
    """The unit ground points were likely given in, and how many of it make a metre, when read as metres they make a
    length `scale` times as long as it is: the unit nearest that scale, if within a factor `within` of it, else None."""
    name, per_m = min(UNITS_PER_M.items(), key=lambda item: abs(math.log(scale / item[1])))
    return (name, per_m) if abs(math.log(scale / per_m)) < math.log(within) else None


def _normaliser(points: np.ndarray) -> np.ndarray:
    """Hartley normalisation: centroid to the origin, mean distance sqrt(2); keeps the DLT well conditioned."""
    centre = points.mean(axis=0)
    spread = np.sqrt(((points - centre) ** 2).sum(axis=1)).mean()
    scale = np.sqrt(2) / spread if spread > 0 else 1.0
    return np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1]])


def fit_homography(image_points: Sequence[Point], ground_points: Sequence[Point]) -> Homography:
    """Least-squares homography (exact for 4 pairs) by the normalised direct linear transform."""
    source = np.asarray(image_points, dtype=float)
    target = np.asarray(ground_points, dtype=float)
    if source.shape != target.shape or source.shape[0] < 4:
        raise ValueError("a homography needs at least 4 image/ground point pairs")
    source_norm, target_norm = _normaliser(source), _normaliser(target)
    s = source @ source_norm[:2, :2].T + source_norm[:2, 2]
    t = target @ target_norm[:2, :2].T + target_norm[:2, 2]
    rows = []
    for (x, y), (u, v) in zip(s, t, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    normalised = vt[-1].reshape(3, 3)
    return Homography(np.linalg.inv(target_norm) @ normalised @ source_norm, source)


def order_problem(homography: Homography, image_points: Sequence[Point]) -> str | None:
    """What is wrong when the homography puts some of its own image points past its horizon, else None.

    Every point of the ground seen in a picture lies below the horizon, so such a pair cannot be a point of the ground
    plane the others fit: the pairs are listed in different orders (four pairs fit exactly whatever their order, and
    a crossed order leaves no reprojection error to tell)."""
    past = np.flatnonzero(~homography.on_ground(np.asarray(image_points, dtype=float)))
    if not len(past):
        return None
    pairs = ", ".join(str(index + 1) for index in past)
    return (f"the ground plane the pairs fit puts pair {pairs} past its horizon: list image_points and ground_points "
            "in the same order")


def reprojection_errors(homography: Homography, image_points: Sequence[Point],
                        ground_points: Sequence[Point]) -> np.ndarray:
    """Ground distance in metres between each mapped image point and its measured ground point."""
    mapped = homography.to_ground(np.asarray(image_points, dtype=float))
    return np.hypot(*(mapped - np.asarray(ground_points, dtype=float)).T)


@dataclass(frozen=True)
class CalibrationProblem:
    message: str
    fatal: bool  # fatal: no homography can be trusted; otherwise a warning about accuracy


def _collinear_triples(points: np.ndarray, tolerance: float) -> list[tuple[int, int, int]]:
    spread = max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 1e-9)
    triples = []
    for i, j, k in combinations(range(len(points)), 3):
        a, b, c = points[i], points[j], points[k]
        twice_area = abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
        if twice_area < tolerance * spread * spread:
            triples.append((i, j, k))
    return triples


# Ground points all closer than this are no metres of a scene (a camera's calibration spans metres at least), and
# from 1 to 180 away from zero they read as degrees: 0.05 degrees is 5.5 km.
MAX_DEGREES_SPREAD = 0.05


def degeneracy_problems(image_points: Sequence[Point], ground_points: Sequence[Point]) -> list[CalibrationProblem]:
    """Point sets a homography cannot be (reliably) fitted from: too few, repeated, collinear, or bunched up; and
    ground points in degrees rather than metres."""
    problems: list[CalibrationProblem] = []
    ground = np.asarray(ground_points, dtype=float).reshape(-1, 2)
    # Points copied from a map: they fit a homography as well as metres do, and make every zone a speck.
    if len(ground) and np.ptp(ground, axis=0).max() < MAX_DEGREES_SPREAD and 1 <= np.abs(ground).max() <= 180:
        x, y = ground[0]
        problems.append(CalibrationProblem(
            f"ground_points lie within {MAX_DEGREES_SPREAD:g} of each other, from ({x:g}, {y:g}): longitude and "
            "latitude in degrees? Give metres on the ground (metres east = degrees of longitude x 111,320 x "
            "cos(latitude), metres north = degrees of latitude x 110,540, from any one point)", fatal=True))
        return problems
    for name, points in (("image", np.asarray(image_points, dtype=float)),
                         ("ground", np.asarray(ground_points, dtype=float))):
        points = points.reshape(-1, 2)
        if len(points) < 4:
            problems.append(CalibrationProblem(f"{len(points)} {name} points: at least 4 are needed", fatal=True))
            continue
        if len(np.unique(np.round(points, 6), axis=0)) < len(points):
            problems.append(CalibrationProblem(f"{name} points contain duplicates", fatal=True))
            continue
        centred = points - points.mean(axis=0)
        singular = np.linalg.svd(centred, compute_uv=False)
        if singular[-1] < 1e-6 * max(singular[0], 1e-9):
            problems.append(CalibrationProblem(f"all {name} points lie on one line", fatal=True))
            continue
        triples = _collinear_triples(points, tolerance=0.01)
        if len(points) == 4 and triples:
            problems.append(CalibrationProblem(
                f"{name} points {', '.join(str(i + 1) for i in triples[0])} are (nearly) collinear: "
                "with 4 pairs no three may lie on a line", fatal=True))
        elif triples:
            problems.append(CalibrationProblem(
                f"{name} points {', '.join(str(i + 1) for i in triples[0])} are nearly collinear; "
                "spread the points out for a better fit", fatal=False))
        if singular[-1] < 0.05 * singular[0]:
            problems.append(CalibrationProblem(
                f"{name} points are bunched along one direction; the fit will be poor away from them",
                fatal=False))
    return problems
