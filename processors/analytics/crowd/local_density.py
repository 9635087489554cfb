"""Helbing local density, local velocity variance and crowd pressure on a ground grid in metres.

Helbing, Johansson & Al-Abideen, Phys. Rev. E 75, 046109 (2007): rho(r) = sum_j f(r_j - r) with the Gaussian
f(d) = exp(-|d|²/R²) / (pi R²); V(r) = the f-weighted mean velocity around r; Var(r) = the local variance of that
field V around r; crowd pressure P(r) = rho(r) Var(r). Evaluated on a grid over the zone (people binned to cells,
then a separable Gaussian), so a packed corner shows as a peak instead of being averaged into the zone mean. Cost is
O(people + cells x side), not O(people²); schemas.settings.crowd.ground_grid_layout bounds the grid's sides and keeps
its cells at most R / 2, and the configuration refuses a zone too large for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from schemas.geometry import points_in_polygon
from schemas.settings.crowd import ground_grid_layout

MIN_NEIGHBOURS = 2.0  # a velocity variance needs a few people around the point to mean anything
# How far above the expected highest neighbourhood of a uniform random crowd a peak must stand, in standard
# deviations: single frames of such crowds reached 1.2-2.1 above it (zones of 16 to 2,300 m² at 1-3.9 p/m²), and the
# windows of the simulated walking crowd of tests/crowd up to 2.3.
PEAK_NOISE_MARGIN_DEVIATIONS = 3.0


def uniform_peak_per_m2(density_per_m2: float, area_m2: float, radius_m: float) -> float:
    """The peak local density a crowd spread uniformly at random at this mean reaches somewhere in a zone this large.

    The peak of a sampled field is biased up, the more the larger the zone: a uniform 3 p/m² crowd peaked at 5 p/m²
    in a tenth of the frames of a 6 x 6 m zone and in all of them at 24 x 24 m. With people placed at random the
    field has a standard deviation of sqrt(density / (2 pi R²)) around the mean, and the zone holds about
    area / (pi R²) neighbourhoods of radius R whose highest lies sqrt(2 ln n) deviations above it."""
    neighbourhoods = max(area_m2 / (math.pi * radius_m ** 2), 1.0)
    deviations = math.sqrt(2 * math.log(neighbourhoods)) + PEAK_NOISE_MARGIN_DEVIATIONS
    return density_per_m2 + deviations * math.sqrt(max(density_per_m2, 0.0) / (2 * math.pi * radius_m ** 2))


@dataclass(frozen=True)
class LocalFields:
    peak_density_per_m2: float
    velocity_variance_m2_per_s2: float | None  # density-weighted over the zone
    peak_pressure_per_s2: float | None


class GroundGrid:
    """Cells over a zone's ground polygon plus a margin; `inside` marks the cells whose centre is in the zone.

    Fields read only inside the zone are smoothed only over the box of rows and columns that holds the zone's cells,
    and fields smoothed together go through one stacked matrix product: the same sums as smoothing each field over
    the whole grid, in about three quarters of the time.
    """

    def __init__(self, ground_polygon: np.ndarray, radius_m: float, cell_m: float):
        ground_polygon = np.asarray(ground_polygon, dtype=float)
        layout = ground_grid_layout(ground_polygon, radius_m, cell_m)
        self.radius_m = radius_m
        self.cell_m = layout.cell_m
        self.origin = layout.origin
        self.shape = layout.shape  # rows (y), cols (x)
        rows, cols = self.shape
        centres_x = self.origin[0] + (np.arange(cols) + 0.5) * self.cell_m
        centres_y = self.origin[1] + (np.arange(rows) + 0.5) * self.cell_m
        grid_x, grid_y = np.meshgrid(centres_x, centres_y)
        centres = np.column_stack((grid_x.ravel(), grid_y.ravel()))
        self.inside = points_in_polygon(centres, [tuple(p) for p in ground_polygon]).reshape(self.shape)
        self.inside_centres = centres[self.inside.ravel()]  # ground (x, y) of the cells in the zone
        # exp(-(dx² + dy²)/R²) = exp(-dx²/R²) exp(-dy²/R²): two 1-D kernels applied as matrices.
        self._kernel_rows = self._kernel(centres_y)
        self._kernel_cols = self._kernel(centres_x)
        # The zone's box: the rows and columns holding a cell inside (all of them when none is).
        inside_rows, inside_cols = np.flatnonzero(self.inside.any(axis=1)), np.flatnonzero(self.inside.any(axis=0))
        self._box = (slice(inside_rows[0], inside_rows[-1] + 1), slice(inside_cols[0], inside_cols[-1] + 1)) \
            if len(inside_rows) else (slice(None), slice(None))
        self._inside_box = self.inside[self._box]
        self._any_inside = bool(self.inside.any())
        self._kernel_rows_box = np.ascontiguousarray(self._kernel_rows[self._box[0]])
        self._kernel_cols_box = np.ascontiguousarray(self._kernel_cols[:, self._box[1]])

    def _kernel(self, centres: np.ndarray) -> np.ndarray:
        distance = centres[:, None] - centres[None, :]
        return np.exp(-(distance ** 2) / self.radius_m ** 2)

    def smooth(self, values: np.ndarray) -> np.ndarray:
        """Sum over people of f(r_j - r) * value_j at every cell centre r (values already binned per cell); a stack
        of grids, (k, rows, cols), is smoothed grid by grid."""
        return self._kernel_rows @ values @ self._kernel_cols / (np.pi * self.radius_m ** 2)

    def smooth_in_box(self, values: np.ndarray) -> np.ndarray:
        """`smooth(values)[box]`, computed only for the cells of the zone's box (`inside_box` marks the zone there)."""
        return self._kernel_rows_box @ values @ self._kernel_cols_box / (np.pi * self.radius_m ** 2)

    def cells(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each position shared among the four cell centres around it by bilinear weights (cloud in cell): flat
        cell indices and shares, (N, 4) each; a corner off the grid has share 0.

        Put whole into its own cell, a person moves up to half a cell, and an evenly spaced crowd beats against the
        grid: put whole, a crowd reads up to 30% above its density with cells of R / 2; shared, within a few
        percent."""
        rows, cols = self.shape
        scaled = (positions - self.origin) / self.cell_m - 0.5  # in cells, from the first cell's centre
        # Off the grid either way (a foot point at the horizon maps to infinity), within the range of an int.
        scaled = np.clip(np.where(np.isfinite(scaled), scaled, -2.0), -2.0, max(rows, cols) + 1.0)
        low = np.floor(scaled).astype(int)
        fraction = scaled - low
        indices, shares = [], []
        for step_x, step_y in ((0, 0), (1, 0), (0, 1), (1, 1)):
            col, row = low[:, 0] + step_x, low[:, 1] + step_y
            on_grid = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
            share_x = fraction[:, 0] if step_x else 1 - fraction[:, 0]
            share = share_x * (fraction[:, 1] if step_y else 1 - fraction[:, 1])
            indices.append(np.where(on_grid, row * cols + col, 0))
            shares.append(np.where(on_grid, share, 0.0))
        return np.stack(indices, axis=1), np.stack(shares, axis=1)

    def bin(self, indices: np.ndarray, shares: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Per cell, the sum of each person's share of it times their value (1 by default), given the (indices,
        shares) that `cells` returns."""
        weights = shares if values is None else shares * values[:, None]
        return np.bincount(indices.ravel(), weights.ravel(), minlength=self.shape[0] * self.shape[1]) \
            .reshape(self.shape)

    def fields(self, positions: np.ndarray, velocities: np.ndarray | None = None) -> LocalFields:
        """Peak local density in the zone and, from people with a known velocity, variance and crowd pressure."""
        positions = np.asarray(positions, dtype=float).reshape(-1, 2)
        if not self._any_inside or len(positions) == 0:
            return LocalFields(0.0, None, None)
        indices, shares = self.cells(positions)
        density = self.smooth_in_box(self.bin(indices, shares))
        peak = float(density[self._inside_box].max())
        if velocities is None:
            return LocalFields(peak, None, None)
        known = np.isfinite(velocities).all(axis=1)
        if known.sum() < MIN_NEIGHBOURS:
            return LocalFields(peak, None, None)
        moving, moving_shares, velocity = indices[known], shares[known], velocities[known]
        # Local mean velocity field V(r): f-weighted average of the velocities around r.
        weight, sum_x, sum_y = self.smooth(np.stack((
            self.bin(moving, moving_shares), self.bin(moving, moving_shares, velocity[:, 0]),
            self.bin(moving, moving_shares, velocity[:, 1]))))
        occupied = weight * np.pi * self.radius_m ** 2 >= MIN_NEIGHBOURS
        with np.errstate(divide="ignore", invalid="ignore"):
            field_x = np.where(occupied, sum_x / weight, 0.0)
            field_y = np.where(occupied, sum_y / weight, 0.0)
        # Var(V) around r: the spread of that field over the neighbourhood, weighted by where people are.
        # (Individual step noise averages out in V; coherent but diverging motion, as in turbulence, does not.)
        weight = np.where(occupied, weight, 0.0)
        total, sum_x, sum_y, sum_square = self.smooth_in_box(np.stack((
            weight, weight * field_x, weight * field_y, weight * (field_x ** 2 + field_y ** 2))))
        enough = self._inside_box & occupied[self._box] & (total > 0)
        if not enough.any():
            return LocalFields(peak, None, None)
        total = total[enough]
        mean_x, mean_y, square = sum_x[enough] / total, sum_y[enough] / total, sum_square[enough] / total
        variance = np.maximum(square - mean_x ** 2 - mean_y ** 2, 0.0)
        local_density = density[enough]
        zone_variance = float((variance * local_density).sum() / local_density.sum())
        return LocalFields(peak, zone_variance, float((local_density * variance).max()))
