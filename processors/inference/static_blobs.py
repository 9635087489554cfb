"""Unknown static objects from frames: foreground that appeared and has stayed unchanged (fallen cargo, debris).

A per-cell background model over a coarse grid of the grey image (pure numpy, no OpenCV): a cell that differs
from the background is foreground; it is *static* once its value has stayed the same since it turned foreground
for `static_seconds`. Passing traffic keeps changing the cells it covers, so it never becomes static; a stopped
vehicle does, which is why the traffic rules merge blobs with the vehicle they lie under. Foreground that stays for
`absorb_seconds` becomes background (a parked object is not an obstacle for ever). The first background is the
median of frames spread over the first `warmup_seconds`, so traffic passing at start-up does not leave a ghost; a
ghost that slips through anyway (a slow truck in most warm-up frames) shows the road when it leaves, so a static
region that looks like the road around it, where the background did not, is learnt at once instead of reported.
The background learns only where there is no foreground, so slow light changes are followed without swallowing
objects.

A light that changes in part of the view and stays so (a street light switching on, a lit sign, the edge of a
cloud's shadow, sun on a wall) scales and offsets the grey levels under it but keeps their structure; an object put
down replaces it. So the background also keeps each cell's structure, at `DETAIL` x `DETAIL` sub-cells, and a static
region is judged before it is reported, cell by cell, the ring of cells around it included (its outline may be in
them). A cell's detail is what the plane that fits its sub-cells (its brightness, a gentle slope of light across it)
leaves: a cell kept its structure when its detail correlates with the background's by at least `kept_correlation`,
is flat when neither has `flat_detail` grey levels RMS, and otherwise its structure is new, unless a light's sharp
edge crosses it (each sub-cell as it was, or as the light of the region's other cells makes it). A region where
structure shows is light when at least `light_share` of those cells kept it: it is learnt at once, but for the cells
whose structure is new (an object lying in the light, or casting the shadow), which are reported on their own. A
region with no structure under it or in it (plain asphalt) shows only its outline: light falls off gently and is
learnt, an object's outline is a sharp step; so is a sharp-edged light's over plain asphalt, which cannot be told from
a flat object and is reported as one. Light clipped at white (or black) has lost the structure under it, and is
reported as before, until `absorb_seconds`.

The camera moving (a pan, tilt or zoom, a strong shake) makes every cell differ: the view is compared with a
reference view (view_motion), and once it has shifted by `view_shift_share` of the frame the model starts again
from the new view and reports that the view moved, so the traffic rules can stand aside until it is still again. A
slight shake, well under the share, is not a move. Over `max_foreground_share` of the cells changing at once (a cut,
the light switched, a lorry filling the view) starts the model again without reporting a move.

The inference stage feeds it decoded frames (it needs images; the analyzer gets only detections) through
`StaticBlobPool` and attaches the blobs to the Detections message (`Detections.static_blobs`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from infra.keyed_pool import KeyedPool
from processors.inference.view_motion import ViewMotion, grey_cells, grey_image
from schemas import StaticBlob

DETAIL = 4  # sub-cells per cell side in which the background keeps each cell's structure
_ROUND = np.ones((3, 3), bool)  # a cell's neighbours, diagonal ones too


class BackgroundView(NamedTuple):
    blobs: list[StaticBlob]
    view_moved: bool  # the camera's view moved at this frame


class StaticBlobDetector:
    def __init__(self, cell_px: int = 8, difference_threshold: float = 30.0, static_seconds: float = 3.0,
                 absorb_seconds: float = 600.0, learning_rate: float = 0.05, min_cells: int = 4,
                 warmup_frames: int = 9, warmup_seconds: float = 5.0, max_foreground_share: float = 0.25,
                 view_shift_share: float = 0.01, flat_detail: float = 4.0, kept_correlation: float = 0.6,
                 light_share: float = 0.8):
        if cell_px % DETAIL:
            raise ValueError(f"cell_px must be a multiple of {DETAIL}, got {cell_px}")
        self.cell_px = cell_px
        self.difference_threshold = difference_threshold
        self.static_seconds = static_seconds
        self.absorb_seconds = absorb_seconds
        self.learning_rate = learning_rate
        self.min_cells = min_cells
        self.warmup_frames = warmup_frames  # at least this many samples, spread over at least warmup_seconds
        self.warmup_seconds = warmup_seconds
        self.max_foreground_share = max_foreground_share
        self.view_shift_share = view_shift_share  # of the frame's larger side: a view shifted this far has moved
        self.flat_detail = flat_detail  # grey levels RMS: a cell with less detail than this is flat
        self.kept_correlation = kept_correlation
        self.light_share = light_share
        self.view = ViewMotion()
        self._warmup: list[np.ndarray] = []  # early frames; their median is the first background, free of traffic
        self._warmup_times: list[float] = []
        self.background: np.ndarray | None = None
        # Sub-cells (float32: the structure needs no more, and it is the model's largest array); NaN in a cell whose
        # structure is not known yet.
        self.fine_background: np.ndarray | None = None
        self.reference: np.ndarray | None = None  # cell value when it turned foreground
        self.foreground_since: np.ndarray | None = None  # NaN where background

    def update(self, image: np.ndarray, captured_at: float) -> BackgroundView:
        """Feeds one frame (grey or BGR uint8); returns the static blobs present now and whether the view moved."""
        grey = grey_image(image)
        sub_cells = grey_cells(grey, self.cell_px // DETAIL)
        rows, cols = sub_cells.shape[0] // DETAIL, sub_cells.shape[1] // DETAIL
        fine = sub_cells[: rows * DETAIL, : cols * DETAIL]
        cells = grey_cells(fine, DETAIL)
        if self.view.moved(grey, captured_at, self.view_shift_share * max(grey.shape)):
            # The camera moved: the background no longer lies under the view; learn it again from here.
            self._start_over(cells, fine)
            return BackgroundView([], True)
        if ((self.background is None or self.background.shape != cells.shape)
                and not self._warm_up(cells, fine, captured_at)):
            return BackgroundView([], False)
        threshold = self.difference_threshold
        foreground = np.abs(cells - self.background) > threshold
        if foreground.mean() > self.max_foreground_share:
            # Most of the view changed at once: the light switched, the camera moved, or a large vehicle fills the
            # view close to the camera (so this alone is not reported as a move). Nothing in it is static.
            self._start_over(cells, fine)
            return BackgroundView([], False)
        started = foreground & (np.isnan(self.foreground_since) | (np.abs(cells - self.reference) > threshold))
        self.reference[started] = cells[started]
        self.foreground_since[started] = captured_at
        self.foreground_since[~foreground] = np.nan
        age = captured_at - self.foreground_since  # NaN where background
        absorbed = foreground & (age >= self.absorb_seconds)
        self._learn_at_once(absorbed, cells, fine)
        learn = ~foreground
        self.background[learn] += self.learning_rate * (cells[learn] - self.background[learn])
        # The structure of foreground is compared with its neighbours' too (the outline may be in them): it stays as
        # it was there too.
        learn_fine = _over_sub_cells(~ndimage.binary_dilation(foreground, _ROUND))
        fine_background, fine_now = _by_cell(self.fine_background), _by_cell(fine.astype(np.float32))
        fine_background += np.float32(self.learning_rate) * learn_fine * (fine_now - fine_background)
        unknown = np.isnan(fine_background)
        if unknown.any():  # where the structure is not known yet, the first sight of the background is it
            np.copyto(fine_background, fine_now, where=learn_fine & unknown)
        static = foreground & ~absorbed & (age >= self.static_seconds)
        return BackgroundView(self._blobs(static, cells, fine), False)

    def _learn_at_once(self, cells_to_learn: np.ndarray, cells: np.ndarray, fine: np.ndarray) -> None:
        """The background takes these cells as they are now; they are no longer foreground."""
        if not cells_to_learn.any():  # as on most frames: spares a pass over the sub-cells
            return
        self.background[cells_to_learn] = cells[cells_to_learn]
        np.copyto(_by_cell(self.fine_background), _by_cell(fine), where=_over_sub_cells(cells_to_learn))
        self.foreground_since[cells_to_learn] = np.nan

    def _start_over(self, cells: np.ndarray, fine: np.ndarray) -> None:
        if self.background is None:  # still warming up: the frames collected so far show another view
            self._warmup, self._warmup_times = [], []
            return
        self.background, self.reference, self.fine_background = cells.copy(), cells.copy(), fine.astype(np.float32)
        self.foreground_since = np.full(cells.shape, np.nan)

    def _warm_up(self, cells: np.ndarray, fine: np.ndarray, captured_at: float) -> bool:
        """Collects early frames (at most ~5 per second); True once their median has become the background."""
        if self._warmup and self._warmup[0].shape != cells.shape:  # the resolution changed: start again
            self._warmup, self._warmup_times = [], []
        if not self._warmup_times or captured_at - self._warmup_times[-1] >= 0.2 - 1e-6:
            self._warmup.append(cells)
            self._warmup_times.append(captured_at)
        span = self._warmup_times[-1] - self._warmup_times[0]
        if len(self._warmup) < self.warmup_frames or span < self.warmup_seconds - 1e-6:
            return False
        self.background = np.median(np.stack(self._warmup), axis=0)
        # The structure is this frame's, not a median: keeping every warm-up frame's sub-cells would take DETAIL
        # squared times the memory. Where this frame differs from the median (a vehicle passing, an object put down
        # during the warm-up) it is not known until the cell is seen as background.
        self.fine_background = fine.astype(np.float32)
        differs = np.abs(cells - self.background) > self.difference_threshold
        np.copyto(_by_cell(self.fine_background), np.nan, where=_over_sub_cells(differs))
        self.reference = self.background.copy()
        self.foreground_since = np.full(cells.shape, np.nan)
        self._warmup, self._warmup_times = [], []
        return True

    def _is_ghost(self, region: np.ndarray, cells: np.ndarray) -> bool:
        """A static region that now looks like the road around it, where the background did not: what the warm-up
        took for background was an object that has since left."""
        ring = ndimage.binary_dilation(region, iterations=2) & ~region
        if not ring.any():
            return False
        now_contrast = abs(cells[region].mean() - cells[ring].mean())
        before_contrast = abs(self.background[region].mean() - self.background[ring].mean())
        return now_contrast < self.difference_threshold / 2 <= before_contrast / 2

    def _structure(self, judged: np.ndarray, fine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Of these cells (in the order a mask indexes them): whether there is structure to compare (either picture
        has more detail than `flat_detail`; a cell whose structure is not known yet, NaN, counts), and whether it was
        kept: now correlating with the background's by at least `kept_correlation` (a change of light scales it, and
        the correlation is blind to the scale; an object replaces it)."""
        now, before = _detail(_of_cells(fine, judged)), _detail(_of_cells(self.fine_background, judged))
        power_now, power_before = (now ** 2).mean(axis=(1, 2)), (before ** 2).mean(axis=(1, 2))
        correlation = (now * before).mean(axis=(1, 2)) / np.sqrt(power_now * power_before + 1e-12)
        flat = self.flat_detail ** 2
        textured = ~((power_now < flat) & (power_before < flat))
        return textured, textured & (correlation >= self.kept_correlation)

    def _light_edge(self, judged: np.ndarray, fine: np.ndarray, lit_cells: np.ndarray) -> np.ndarray:
        """Of these cells (in the order a mask indexes them): whether each of their sub-cells is either as it was or
        as the light of `lit_cells` makes it (their gain and offset against the background), to within twice
        `flat_detail` RMS (the noise of two pictures, a light not quite even): the light's sharp edge crosses them."""
        # Over plain asphalt the gain is not measured, nor needed: the light is an offset there.
        now_lit, before_lit = _of_cells(fine, lit_cells), _of_cells(self.fine_background, lit_cells)
        before_mean = before_lit.mean()
        gain = ((now_lit * (before_lit - before_mean)).mean()) / (before_lit.var() + 1e-6)
        offset = now_lit.mean() - gain * before_mean
        now, before = _of_cells(fine, judged), _of_cells(self.fine_background, judged)
        misfit = np.minimum(np.abs(now - before), np.abs(now - gain * before - offset))
        return np.sqrt((misfit ** 2).mean(axis=(1, 2))) <= 2 * self.flat_detail  # (NaN, not known: no edge)

    def _lit(self, region: np.ndarray, cells: np.ndarray, fine: np.ndarray) -> np.ndarray | None:
        """The cells of a static region that a change of light explains, or None when the region is an object.

        The cells where structure shows say it: light when at least `light_share` of them kept it, and then the cells
        whose structure was replaced (an object lying in the light, or casting the shadow) are left out. The light's
        own sharp edge (a step from the light's level to none) is no new structure there. A region with no structure
        under it or in it (plain asphalt) shows only its outline: light falls off gently, an object's outline is
        a sharp step (so is a sharp-edged light's, which is reported as an object would be)."""
        judged = ndimage.binary_dilation(region, _ROUND)
        inside = region[judged]
        textured, kept = self._structure(judged, fine)
        new = textured & ~kept
        lit_cells = inside & ~new  # (a cell whose structure is not known yet is new)
        edge = np.zeros_like(new)
        if new.any() and lit_cells.any():
            edge[new] = self._light_edge(_subset(judged, new), fine, _subset(judged, lit_cells))
        new &= ~edge
        seen_kept, seen_new = int((kept & inside).sum()), int((new & inside).sum())
        if seen_kept + seen_new >= self.min_cells:
            is_light = seen_kept >= self.light_share * (seen_kept + seen_new)
        else:
            is_light = int(edge.sum()) < self.min_cells
        return _subset(judged, inside & ~new) if is_light else None

    def _blobs(self, static: np.ndarray, cells: np.ndarray, fine: np.ndarray) -> list[StaticBlob]:
        labels, _ = ndimage.label(static)
        blobs = []
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            member = labels[found] == index
            if member.sum() < self.min_cells:
                continue
            region = labels == index
            if self._is_ghost(region, cells):
                self._learn_at_once(region, cells, fine)
                continue
            lit = self._lit(region, cells, fine)
            if lit is not None:
                # Learnt now. What is left (an object in the light) is a region of its own from the next frame on.
                self._learn_at_once(lit, cells, fine)
                continue
            rows, cols = found
            size = self.cell_px
            blobs.append(StaticBlob(
                xyxy=(float(cols.start * size), float(rows.start * size), float(cols.stop * size),
                      float(rows.stop * size)),
                static_since=float(np.nanmin(self.foreground_since[found][member])),
                fill_ratio=float(member.mean()),
            ))
        return blobs


def _by_cell(fine: np.ndarray) -> np.ndarray:
    """Sub-cells (rows * DETAIL, cols * DETAIL) seen as (rows, DETAIL, cols, DETAIL): each cell's together."""
    return fine.reshape(fine.shape[0] // DETAIL, DETAIL, fine.shape[1] // DETAIL, DETAIL)


def _over_sub_cells(mask: np.ndarray) -> np.ndarray:
    """A mask of cells that applies to their sub-cells as _by_cell groups them."""
    return mask[:, None, :, None]


def _subset(mask: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The cells of a mask that `chosen` (one flag per cell of the mask, in the order it indexes them) picks."""
    subset = np.zeros_like(mask)
    subset[mask] = chosen
    return subset


def _of_cells(fine: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The sub-cells of these cells, (n, DETAIL, DETAIL) in the order the mask indexes them."""
    return _by_cell(fine).transpose(0, 2, 1, 3)[cells]


def _detail(sub_cells: np.ndarray) -> np.ndarray:
    """Cells' sub-cells (n, DETAIL, DETAIL) less the plane that fits each cell's best: its edges and texture, without
    its brightness or a gentle slope of light across it."""
    across = np.arange(DETAIL) - (DETAIL - 1) / 2
    detail = sub_cells - sub_cells.mean(axis=(1, 2), keepdims=True)
    for slope in (across[None, :, None], across[None, None, :]):  # down the cell, then along it
        detail = detail - slope * (detail * slope).sum(axis=(1, 2), keepdims=True) / (DETAIL * (across ** 2).sum())
    return detail


class StaticBlobPool:
    """One StaticBlobDetector per camera with a traffic scene; a camera silent for `idle_seconds` is dropped."""

    def __init__(self, camera_ids: set[str], idle_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.camera_ids = camera_ids
        self._detectors = KeyedPool(lambda camera_id: StaticBlobDetector(), idle_seconds, clock)

    def update(self, camera_id: str, image: np.ndarray, captured_at: float) -> BackgroundView | None:
        """Static blobs in this frame and whether the view moved, or None for cameras without a scene."""
        if camera_id not in self.camera_ids:
            return None
        return self._detectors.get(camera_id).update(image, captured_at)

    def __len__(self) -> int:
        return len(self._detectors)
