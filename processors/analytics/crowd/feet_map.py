"""A camera's density maps moved from the people's heads down to their feet.

A crowd-counting model learns from head annotations, so each person's mass lies on the head, while zones are drawn on
the ground and the detector's people are tested by their foot points. Summed over a ground zone as it comes, a map
counts the people whose heads are over the zone: in a view along a street, mostly people standing nearer the camera,
whose heads spread wider than the zone does that far away. A crowd in an alley seen along its length read 70 % low.

Each map cell's mass goes down by the height a standing person has at its feet there (the calibration's
`standing_height_px`), into the cell of the feet. Feet below the picture stay on its bottom row: the person is seen,
and a zone drawn to the picture's edge keeps them. Where the view is from about head height the heads tell little of
where the feet are (MAX_HEAD_SLOPE), and cells there keep their mass. An uncalibrated camera learns that height row by
row from the first people its detector finds whole (`PictureHeights`), and keeps its maps as they are until then: a
zone shallower on the picture than its people are tall would otherwise count only the heads over it, and a packed
crowd standing in it read as the few people the detector finds.

The same reading checks the calibration's unit (`PersonHeights`): ground points in feet fit a homography as well as
in metres, and make every zone's area 10.8 times too large, so a crush of 8 p/m² reads 0.74. The detector's people
tell: their boxes are as tall as the calibration's standing height at their feet for people as tall as people are.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from processors.analytics.crowd.picture_sizes import PerPictureSize
from schemas.calibration import Homography, likely_unit
from schemas.detections import foot_points

HEAD_HEIGHT_M = 1.6  # where a standing adult's head centre is, which the annotations mark
SETTLE_STEPS = 8  # steps of the feet search: the height changes slowly with the row, so a few settle it
# A calibration in metres puts the median detected person below this height (people are 1.5-1.9 m tall, and the
# standing height reads up to 15 % short): above it the ground points are in a smaller unit (feet make people 5.6 m
# tall). Nothing is judged from people reading short: in a packed crowd the detector boxes heads and shoulders, and
# the zone must then read the density its map measures, not unknown.
MAX_PERSON_HEIGHT_M = 3.0
PERSON_HEIGHT_M = 1.7
PERSON_BOXES_JUDGED = 50  # person boxes the median is taken over, once
# A box is judged where the view looks down at 60° or less: from higher up a standing person is a few pixels tall,
# and the standing height from a ground calibration is no longer a measure of one.
MIN_COS_DEPRESSION = 0.5
EDGE_PX = 1.0  # a box this near the picture's top or bottom edge is cut by it, and shorter than its person
# A person seen whole is 2-3.5 times as tall as wide; the heads and shoulders a packed crowd shows the detector, about
# as tall as wide, would make an uncalibrated camera's people short.
MIN_WHOLE_ASPECT = 1.6
HEAD_SHARE = HEAD_HEIGHT_M / PERSON_HEIGHT_M  # of a person's height, where their head centre is above the feet
# A person standing a row lower on the picture has their head 1 - HEAD_SHARE x (the line's slope) of a row lower, so a
# head's row tells the feet's row to 1 / that of a row: twice as coarsely as the map's cells where HEAD_SHARE x slope is
# this, not at all from a camera at head height (slope 1 / HEAD_SHARE, every head near one row; HEAD_SHARE x slope
# measured 1.06-1.29 on two eye-level street views). Where the head's height above the feet grows faster than this
# with the feet's row, a cell's mass stays at the head: a calibrated camera as an uncalibrated one.
MAX_HEAD_SLOPE = 0.5
# Boxes are judged as the analyzer's state stores them, little-endian float32 (to a thousandth of a pixel in pictures
# up to 8,192 px), so that a restart judges the very numbers the running analyzer did.
PERSON_BOX_DTYPE = np.dtype("<f4")


def heads_above(homography: Homography, feet: np.ndarray) -> np.ndarray:
    """Where in the picture the head of a person standing at each feet point (N, 2) is: one standing height (taken at
    the feet) straight above them."""
    heads = np.array(feet, dtype=float).reshape(-1, 2)
    heads[:, 1] -= homography.standing_height_px(heads, HEAD_HEIGHT_M)
    return heads


def calibrated_head_height(homography: Homography) -> Callable[[np.ndarray], np.ndarray]:
    """How far above each feet point (N, 2) a standing person's head is, in pixels, by the calibration."""
    return partial(homography.standing_height_px, height_m=HEAD_HEIGHT_M)


def whole_boxes(boxes: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    """Person boxes (N, 4) as PERSON_BOX_DTYPE, less those the picture's top or bottom edge cuts (`image_size` None:
    boxes known to be whole)."""
    boxes = np.asarray(boxes, dtype=PERSON_BOX_DTYPE).reshape(-1, 4)
    if image_size is None:
        return boxes
    return boxes[(boxes[:, 1] > EDGE_PX) & (boxes[:, 3] < image_size[1] - EDGE_PX)]


class FeetMap:
    """Moves a camera's density maps from the heads to the feet by the head's height above the feet, given as a
    function of the feet point; a cell whose feet are ill told by its head (MAX_HEAD_SLOPE) keeps its mass."""

    def __init__(self, head_height_px: Callable[[np.ndarray], np.ndarray]):
        self.head_height_px = head_height_px  # how far above each feet point (N, 2) the head is, pixels
        # The flat cell index of each cell's feet, per picture and map size.
        self._targets = PerPictureSize(self._feet_cells)

    def moved(self, density: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """The map with each cell's mass in the cell of the feet below it (the same total)."""
        moved = np.bincount(self._targets(image_size, density.shape), weights=density.ravel(), minlength=density.size)
        return moved.reshape(density.shape).astype(density.dtype)

    def _feet_cells(self, image_size: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        width, height = image_size
        rows, columns = shape
        row, column = np.mgrid[0:rows, 0:columns]
        heads = np.column_stack(((column.ravel() + 0.5) * width / columns, (row.ravel() + 0.5) * height / rows))
        # The feet lie where the head above them is the cell's: each step moves them down by how far that head still
        # lies above the cell's (y = head y + height(y), the height taken at the feet).
        feet = heads.copy()
        for _ in range(SETTLE_STEPS):
            feet[:, 1] += heads[:, 1] - (feet[:, 1] - self.head_height_px(feet))
        feet_row = np.clip((feet[:, 1] * rows / height).astype(int), 0, rows - 1)
        # Judged where the feet are seen: below the picture the search has not settled where it is ill told, and a
        # calibration's standing height bends there (the view's depression read beyond the calibrated ground).
        seen = np.column_stack((feet[:, 0], np.minimum(feet[:, 1], height - 1.0)))
        head_slope = self.head_height_px(seen + (0.0, 1.0)) - self.head_height_px(seen)
        return np.where(head_slope <= MAX_HEAD_SLOPE, feet_row, row.ravel()) * columns + column.ravel()


class PersonHeights:
    """How tall a camera's calibration makes the people its detector finds, and what is wrong when that is no
    person's height. Judged once, on the first PERSON_BOXES_JUDGED person boxes seen whole and from the side enough;
    the boxes are kept (image pixels, x1 y1 x2 y2, PERSON_BOX_DTYPE) so that a restart, or a new calibration, judges
    them again."""

    def __init__(self, homography: Homography):
        self.homography = homography
        self.boxes = np.empty((0, 4), dtype=PERSON_BOX_DTYPE)
        self.problem: str | None = None  # once judged: why the calibration is not in metres, or None

    @property
    def judging(self) -> bool:
        return len(self.boxes) < PERSON_BOXES_JUDGED

    def add(self, boxes: np.ndarray, image_size: tuple[int, int] | None) -> bool:
        """Takes a frame's person boxes (N, 4) until enough are judged (`image_size` None: boxes known to be whole);
        True when this judged the calibration wrong."""
        if not self.judging:
            return False
        boxes = whole_boxes(boxes, image_size)
        feet = foot_points(boxes)
        with np.errstate(invalid="ignore"):
            judged = (self.homography.cos_depression(feet) >= MIN_COS_DEPRESSION) & \
                (self.homography.standing_height_px(feet, 1.0) > 0)
        self.boxes = np.concatenate((self.boxes, boxes[judged]))[:PERSON_BOXES_JUDGED]
        if self.judging:
            return False
        height_m = float(np.median(self.heights_m()))
        if height_m <= MAX_PERSON_HEIGHT_M:
            return False
        self.problem = f"the calibration makes people {height_m:.2g} m tall: are ground_points in {unit(height_m)}?"
        return True

    def heights_m(self) -> np.ndarray:
        """How tall each kept box's person is by the calibration: its height over the standing height of 1 m there."""
        feet = foot_points(self.boxes)
        return (self.boxes[:, 3] - self.boxes[:, 1]) / self.homography.standing_height_px(feet, 1.0)


class PictureHeights:
    """How far above their feet a standing person's head is on an uncalibrated camera's picture, row by row: learnt
    once from the first PERSON_BOXES_JUDGED person boxes seen whole (uncut by the picture's edge, and MIN_WHOLE_ASPECT
    times as tall as wide at least). Over flat ground a person's height on the picture grows in a straight line with
    the row of their feet below the horizon; the line is Theil-Sen's (the median of the slopes between pairs of
    people), which the odd child, cyclist or person sitting does not bend. The boxes are kept (as PersonHeights'), so
    that a restart fits the same line."""

    def __init__(self):
        self.boxes = np.empty((0, 4), dtype=PERSON_BOX_DTYPE)
        self.line: tuple[float, float] | None = None  # once judged: a person's pixels at row 0, and more per row down

    @property
    def judging(self) -> bool:
        return len(self.boxes) < PERSON_BOXES_JUDGED

    def add(self, boxes: np.ndarray, image_size: tuple[int, int] | None) -> None:
        """Takes a frame's person boxes (N, 4) until enough are judged (`image_size` None: boxes known to be whole)."""
        if not self.judging:
            return
        boxes = whole_boxes(boxes, image_size)
        heights = boxes[:, 3] - boxes[:, 1]
        self.boxes = np.concatenate((self.boxes, boxes[(heights > 0) & (heights >= MIN_WHOLE_ASPECT *
                                                                       (boxes[:, 2] - boxes[:, 0]))]))
        self.boxes = self.boxes[:PERSON_BOXES_JUDGED]
        if not self.judging:
            self.line = height_line(self.boxes[:, 3].astype(float), (self.boxes[:, 3] - self.boxes[:, 1]).astype(float))

    def head_height_px(self, feet: np.ndarray) -> np.ndarray:
        """How far above each feet point (N, 2) the head is, in pixels (0 at and above the horizon)."""
        at_top, per_row = self.line
        return np.maximum(at_top + per_row * feet[:, 1], 0.0) * HEAD_SHARE


def height_line(rows: np.ndarray, heights: np.ndarray) -> tuple[float, float]:
    """Theil-Sen line of people's heights against their feet's rows: (height at row 0, height more per row down). A
    slope upwards (people shorter nearer the camera, which no camera over flat ground shows) or rows all alike give
    everyone the median height."""
    first, second = np.triu_indices(len(rows), k=1)
    apart = rows[first] != rows[second]
    per_row = float(np.median((heights[first] - heights[second])[apart] / (rows[first] - rows[second])[apart])) \
        if apart.any() else 0.0
    per_row = max(per_row, 0.0)
    return float(np.median(heights - per_row * rows)), per_row


def unit(height_m: float) -> str:
    """The unit ground points were likely given in, by how tall they make a person ("metres" where none is near: a
    wrong measurement rather than a unit)."""
    likely = likely_unit(height_m / PERSON_HEIGHT_M, within=1.5)
    return likely[0] if likely else "metres"
