import numpy as np
import pytest

from schemas.geometry import (
    PolygonZone,
    box_cover,
    points_in_polygon,
    polygon_area,
    polygon_is_simple,
    segments_intersect,
)

SQUARE = [(0, 0), (10, 0), (10, 10), (0, 10)]


def test_area_by_shoelace():
    assert polygon_area(SQUARE) == 100
    assert polygon_area([(0, 0), (4, 0), (0, 3)]) == 6
    assert polygon_area([(0, 0), (1, 1), (2, 2)]) == 0


def test_points_in_polygon_including_concave_shapes():
    # An L shape: the notch (7, 7) is outside although inside the bounding box.
    l_shape = [(0, 0), (10, 0), (10, 5), (5, 5), (5, 10), (0, 10)]
    points = np.array([[2, 2], [7, 7], [7, 2], [2, 8], [11, 1], [-1, 5]])
    assert points_in_polygon(points, l_shape).tolist() == [True, False, True, True, False, False]


def test_zone_contains_many_points_at_once():
    zone = PolygonZone(SQUARE)
    rng = np.random.default_rng(0)
    points = rng.uniform(-5, 15, size=(1000, 2))
    expected = (points[:, 0] > 0) & (points[:, 0] < 10) & (points[:, 1] > 0) & (points[:, 1] < 10)
    assert np.array_equal(zone.contains(points), expected)
    assert zone.contains(np.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize("polygon, simple", [
    (SQUARE, True),
    ([(0, 0), (10, 10), (10, 0), (0, 10)], False),  # bow tie
])
def test_simple_polygon_check(polygon, simple):
    assert polygon_is_simple(polygon) is simple


def test_segments_are_finite():
    assert segments_intersect((0, 0), (10, 0), (5, -5), (5, 5))
    # Same infinite lines would cross at (15, 0); the segments do not reach it.
    assert not segments_intersect((0, 0), (10, 0), (15, -5), (15, 5))
    assert segments_intersect((0, 0), (10, 0), (10, 0), (10, 5))  # touching end points count


def test_box_cover_is_the_share_of_the_smaller_box_inside_the_other():
    whole = [0, 0, 10, 30]
    cover = box_cover([whole], [[0, 0, 10, 15], [5, 0, 15, 30], [20, 0, 30, 30], [3, 3, 3, 9]])
    np.testing.assert_allclose(cover, [[1.0, 0.5, 0.0, 0.0]])  # the top half, half beside, apart, no area
