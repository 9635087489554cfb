import random

import numpy as np
import pytest

from schemas.geometry import (
    BoxGrid,
    PolygonZone,
    box_cover,
    box_iou,
    points_in_polygon,
    polygon_area,
    polygon_cell_weights,
    polygon_is_simple,
    positions_along,
    segment_outline_distance,
    segments_intersect,
)

SQUARE = [(0, 0), (10, 0), (10, 10), (0, 10)]


def test_area_by_shoelace():
    assert polygon_area(SQUARE) == 100
    assert polygon_area([(0, 0), (4, 0), (0, 3)]) == 6
    assert polygon_area([(0, 0), (1, 1), (2, 2)]) == 0


def test_distance_from_a_segment_to_a_polygons_outline():
    assert segment_outline_distance((5, -3), (5, 3), SQUARE) == 0  # across an edge
    assert segment_outline_distance((10, 4), (14, 4), SQUARE) == 0  # from a point on an edge
    assert segment_outline_distance((2, 5), (8, 5), SQUARE) == 2  # inside, 2 from the left and right edges
    assert segment_outline_distance((13, 2), (13, 8), SQUARE) == 3  # beside an edge
    assert segment_outline_distance((12, 13), (20, 13), SQUARE) == pytest.approx(np.hypot(2, 3))  # past a corner
    assert segment_outline_distance((-5, 15), (15, 15), SQUARE) == 5  # a corner closest to the segment's middle


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


def test_one_point_is_told_as_among_many_on_the_outline_and_off_it():
    square = PolygonZone(SQUARE)
    # On the outline: the sides and corner nearest the origin are in, the far ones out, for one point as for many.
    outline = [(0, 5), (5, 0), (0, 0), (10, 5), (5, 10), (10, 0), (10, 10), (0, 10)]
    assert square.contains(outline).tolist() == [True] * 3 + [False] * 5
    assert [square.contains_point(point) for point in outline] == [True] * 3 + [False] * 5
    rng = random.Random(5)
    for trial in range(600):
        # Some on a small integer grid, where points fall exactly on edges and vertices, level and upright ones among
        # them (and the outline may cross itself); some anywhere in a picture; a few of many edges.
        on_grid = trial % 2 == 0
        vertices = rng.randint(3, 9) if trial % 25 else rng.randint(PolygonZone.PLAIN_EDGES - 2, 256)
        polygon = [(rng.randint(0, 6), rng.randint(0, 6)) if on_grid
                   else (rng.uniform(-50, 1300), rng.uniform(-50, 750)) for _ in range(vertices)]
        xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
        points = [*polygon, *[(x1 + share * (x2 - x1), y1 + share * (y2 - y1))
                              for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True)
                              for share in (0.5, 0.25, 1 / 3, rng.random())]]
        for _ in range(20):
            points += [(rng.uniform(min(xs) - 1, max(xs) + 1), rng.uniform(min(ys) - 1, max(ys) + 1)),
                       (rng.choice(xs), rng.uniform(min(ys), max(ys))), (rng.uniform(min(xs), max(xs)), rng.choice(ys))]
        if on_grid:
            points += [(x / 2, y / 2) for x in range(-1, 14) for y in range(-1, 14)]
        zone = PolygonZone(polygon)
        assert [zone.contains_point(point) for point in points] == zone.contains(points).tolist()


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


@pytest.mark.parametrize("top", [94.5, 100.0, 117.0])
def test_cell_weights_are_the_exact_area_of_a_zone_thinner_than_a_cell(top):
    # A 300 x 6 px strip in a 1080p picture under maps of 30 and 60 px cells: wherever it falls within a cell row.
    strip = [(600, top), (900, top), (900, top + 6), (600, top + 6)]
    for rows, cols in ((36, 64), (18, 32)):
        weights = polygon_cell_weights(strip, (1920, 1080), (rows, cols))
        assert weights.dtype == np.float32 and weights.shape == (rows, cols)
        assert weights.sum() * (1920 / cols) * (1080 / rows) == pytest.approx(1800, rel=1e-5)


def test_cell_weights_of_a_concave_zone_partly_outside_the_picture_match_fine_sampling():
    rng = np.random.default_rng(3)
    angles, radii = np.sort(rng.uniform(0, 2 * np.pi, 40)), rng.uniform(100, 1000, 40)
    star = np.column_stack((900 + radii * np.cos(angles), 500 + radii * np.sin(angles)))
    assert polygon_is_simple(star.tolist())
    weights = polygon_cell_weights(star, (1920, 1080), (9, 16))
    samples = 64  # per cell side: each sample stands for 1/4096 of a cell
    xs = (np.arange(16 * samples) + 0.5) * (1920 / 16 / samples)
    ys = (np.arange(9 * samples) + 0.5) * (1080 / 9 / samples)
    grid_x, grid_y = np.meshgrid(xs, ys)
    sampled = points_in_polygon(np.column_stack((grid_x.ravel(), grid_y.ravel())), star)
    sampled = sampled.reshape(9, samples, 16, samples).mean(axis=(1, 3))
    assert weights.min() == 0 and weights.max() == 1 and ((0 < weights) & (weights < 1)).sum() > 20
    np.testing.assert_allclose(weights, sampled, atol=2e-3)
    assert polygon_cell_weights(star[::-1], (1920, 1080), (9, 16)) == pytest.approx(weights)  # either orientation


def test_cell_weights_are_zero_outside_the_polygon_and_the_picture():
    assert polygon_cell_weights([(200, 0), (300, 0), (300, 100)], (100, 100), (4, 4)).sum() == 0
    wider = [(-50, -10), (150, -10), (150, 110), (-50, 110)]
    assert polygon_cell_weights(wider, (100, 100), (4, 4)) == pytest.approx(np.ones((4, 4)))


def test_the_zone_side_of_a_segment_on_its_edge_holds_for_concave_zones():
    # An L shape whose vertices' mean (40, 40) lies outside it, beyond its inner edge y = 20.
    l_shape = PolygonZone([(0, 0), (100, 0), (100, 20), (20, 20), (20, 100), (0, 100)])
    assert l_shape.side_of_segment((40, 20), (90, 20)) == -1  # the normal (0, 50) points out of the zone
    assert l_shape.side_of_segment((90, 20), (40, 20)) == 1
    square = PolygonZone(SQUARE)
    assert square.side_of_segment((2, 0), (8, 0)) == 1  # on the edge
    assert square.side_of_segment((2, -1.5), (8, -1.5)) == 1  # drawn a little outside it
    assert square.side_of_segment((6, 4), (4, 4)) == -1  # in the middle: the side of the vertices' mean


def test_paired_boxes_measure_as_their_entries_of_every_pair():
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 100, size=(300, 2))
    sizes = rng.choice([0.0, 5.0, 40.0, -10.0], size=(300, 2)) * rng.uniform(0, 1, size=(300, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=1)  # some without area, some upside down
    first, second = rng.integers(0, 300, size=(2, 2000))
    for measure in (box_iou, box_cover):
        assert np.array_equal(measure(boxes[first], boxes[second], paired=True), measure(boxes, boxes)[first, second])
    with pytest.raises(ValueError, match="paired one to one"):
        box_iou(boxes[:2], boxes[:3], paired=True)


def test_positions_along_a_direction_are_each_points_dot_product():
    rng = np.random.default_rng(4)
    for _ in range(200):
        direction = rng.normal(size=2)
        direction /= np.hypot(*direction)
        points = [tuple(point) for point in rng.uniform(0, 1920, size=(int(rng.integers(1, 30)), 2)).round(1)]
        # Equal to the last bit with this machine's BLAS; another may round a product's sum differently.
        assert positions_along(points, direction) == pytest.approx([float(np.dot(point, direction))
                                                                     for point in points], rel=1e-12, abs=1e-9)
    assert positions_along([], np.array([1.0, 0.0])) == []


def test_the_grid_offers_every_box_that_shares_a_point_with_the_one_asked_about():
    rng = random.Random(1)
    boxes = []
    for _ in range(400):
        x, y = rng.uniform(-50, 1300), rng.uniform(-50, 750)
        width, height = rng.choice([0.0, rng.uniform(1, 120), rng.uniform(300, 3000)]), rng.uniform(0, 90)
        boxes.append((x, y, x + width, y + height))
    boxes += [(1e12, 5.0, 1e12 + 10, 15.0), (-1e9, -1e9, 1e9, 1e9), (600.0, 300.0, 500.0, 200.0)]
    grid = BoxGrid(boxes, cell=50.0)
    for query in [*boxes, (0.0, 0.0, 0.0, 0.0), (640.0, 360.0, 640.0, 360.0), (-1e6, -1e6, 1e6, 1e6)]:
        x1, x2 = sorted((query[0], query[2]))
        y1, y2 = sorted((query[1], query[3]))
        sharing = [index for index, box in enumerate(boxes)
                   if min(box[0], box[2]) <= x2 and x1 <= max(box[0], box[2])
                   and min(box[1], box[3]) <= y2 and y1 <= max(box[1], box[3])]
        assert set(sharing) <= grid.near(query)
