"""A calibrated camera's density maps moved from the people's heads down to their feet.

A crowd-counting model learns from head annotations, so each person's mass lies on the head, while zones are drawn on
the ground and the detector's people are tested by their foot points. Summed over a ground zone as it comes, a map
counts the people whose heads are over the zone: in a view along a street, mostly people standing nearer the camera,
whose heads spread wider than the zone does that far away. A crowd in an alley seen along its length read 70 % low.

Each map cell's mass goes down by the height a standing person has at its feet there (the calibration's
`standing_height_px`), into the cell of the feet. Feet below the picture stay on its bottom row: the person is seen,
and a zone drawn to the picture's edge keeps them. Uncalibrated cameras keep their maps as they are.
"""
from __future__ import annotations

import numpy as np

from processors.analytics.crowd.picture_sizes import PerPictureSize
from schemas.calibration import Homography

HEAD_HEIGHT_M = 1.6  # where a standing adult's head centre is, which the annotations mark
SETTLE_STEPS = 8  # steps of the feet search: the height changes slowly with the row, so a few settle it


def heads_above(homography: Homography, feet: np.ndarray) -> np.ndarray:
    """Where in the picture the head of a person standing at each feet point (N, 2) is: one standing height (taken at
    the feet) straight above them."""
    heads = np.array(feet, dtype=float).reshape(-1, 2)
    heads[:, 1] -= homography.standing_height_px(heads, HEAD_HEIGHT_M)
    return heads


class FeetMap:
    def __init__(self, homography: Homography):
        self.homography = homography
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
            feet[:, 1] += heads[:, 1] - heads_above(self.homography, feet)[:, 1]
        feet_row = np.clip((feet[:, 1] * rows / height).astype(int), 0, rows - 1)
        return feet_row * columns + column.ravel()
