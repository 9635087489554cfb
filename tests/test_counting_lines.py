"""Several counting lines stepped at once give what each line stepped on its own gives, frame after frame."""
from __future__ import annotations

import numpy as np

from processors.analytics.lines import step_line, step_lines
from schemas.geometry import side_of

LINES = [((100.0, 300.0), (900.0, 300.0)), ((500.0, 50.0), (500.0, 650.0)), ((200.0, 600.0), (300.0, 100.0))]


def test_lines_stepped_together_match_lines_stepped_one_by_one():
    rng = np.random.default_rng(3)
    starts = np.asarray([start for start, _ in LINES])
    ends = np.asarray([end for _, end in LINES])
    points = rng.uniform(0, 800, (60, 2))
    together = [np.zeros((60, len(LINES)), dtype=dtype) for dtype in (np.int8, np.int8, np.int16)]
    alone = [[np.zeros(60, dtype=dtype) for dtype in (np.int8, np.int8, np.int16)] for _ in LINES]
    crossings = 0
    for _ in range(40):
        # Big steps, some rounding a line's end, and a few points exactly on a line.
        after = points + rng.normal(0, 60, points.shape)
        after[:3] = [[500.0, 400.0], [400.0, 300.0], [250.0, 350.0]]
        heights = rng.uniform(20, 200, len(points))
        step = step_lines(starts, ends, points, after, heights, *together, debounce_frames=2)
        together = [step.side, step.pending, step.pending_frames]
        for index, (start, end) in enumerate(LINES):
            single = step_line(start, end, points, after, heights, *alone[index], debounce_frames=2)
            alone[index] = [single.side, single.pending, single.pending_frames]
            for column, expected in zip((step.side, step.pending, step.pending_frames, step.crossed),
                                        (single.side, single.pending, single.pending_frames, single.crossed),
                                        strict=True):
                assert np.array_equal(column[:, index], expected)
            crossings += int(single.crossed.sum())
        points = after
    assert crossings > 20  # the walk does cross the lines


def test_side_of_several_lines_is_side_of_each_line():
    points = np.asarray([[500.0, 300.0], [0.0, 0.0], [800.0, 700.0], [250.0, 350.0]])
    starts = np.asarray([start for start, _ in LINES])
    ends = np.asarray([end for _, end in LINES])
    sides = side_of(points, starts, ends)
    assert sides.shape == (len(points), len(LINES))
    for index, (start, end) in enumerate(LINES):
        assert np.array_equal(sides[:, index], side_of(points, start, end))
    assert sides[0, 0] == 0 and sides[0, 1] == 0 and sides[3, 2] == 0  # on the line itself


def test_an_object_standing_on_a_line_while_its_box_jitters_counts_nothing_and_one_walking_over_counts_once():
    start, end = np.asarray([[0.0, 300.0]]), np.asarray([[800.0, 300.0]])
    state = [np.zeros((2, 1), dtype=dtype) for dtype in (np.int8, np.int8, np.int16)]
    heights = np.asarray([100.0, 100.0])  # a person 100 px tall: the margin is 10 px
    rng = np.random.default_rng(5)
    points = np.asarray([[400.0, 296.0], [200.0, 250.0]])
    crossed = np.zeros(2, dtype=int)
    for frame in range(25 * 60):  # a minute at 25 fps
        after = np.asarray([[400.0, 300.0 + rng.uniform(-4, 4)],  # feet on the line, the box edge wandering
                            [200.0, 250.0 + min(frame, 100)]])  # walks from 50 px before the line to 50 px past it
        step = step_lines(start, end, points, after, heights, *state, debounce_frames=2)
        state = [step.side, step.pending, step.pending_frames]
        crossed += step.crossed[:, 0]
        points = after
    assert crossed.tolist() == [0, 1]
