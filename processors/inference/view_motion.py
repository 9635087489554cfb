"""Whether a fixed camera's view moved (a pan or tilt, a strong shake), and the grey images it is judged on.

A zoom is not found: the view's quarters shift apart instead of together.

Everything learnt per cell of a camera's view (the background model's background, the density maps' background
floor) belongs to that view: when it moves, the learnt cells lie under other things. The view is compared with a
reference view by phase correlation of small grey images, which brightness changes and people or vehicles moving
through part of the picture do not shift.
"""
from __future__ import annotations

from collections import deque

import numpy as np

STILL_SHARE = 0.5  # a view whose unshifted correlation is this share of the peak's has not moved
QUARTERS_AGREEING = 3  # of the view's four quarters, this many must show the view's shift for a move
QUARTER_TOLERANCE = 0.25  # a quarter's shift may differ from the view's by this share of it (a tilt, a zoom)
REST_FRAMES = 5  # where a view rests is the median of its shifts over this many frames (a shaking view swings about it)


def grey_image(image: np.ndarray) -> np.ndarray:
    """A BGR or grey image as a float grey image (channel mean), computed once per frame; a float grey image is
    returned as it is."""
    if image.ndim == 2:
        return np.asarray(image, dtype=float)
    # Channel by channel: numpy's mean over the short last axis takes several times as long, on every frame.
    total = image[..., 0].astype(float)
    for channel in range(1, image.shape[2]):
        total += image[..., channel]
    return total / image.shape[2]


class ViewMotion:
    """Global shift of a camera's view against a reference view, by phase correlation of small grey images. A move
    shifts the whole view: the four quarters of the view must agree on the shift, so a large vehicle driving through
    one of them is not taken for the camera moving."""

    def __init__(self, width_px: int = 320, min_peak: float = 0.05, refresh_seconds: float = 10.0,
                 held_frames: int = 1):
        self.width_px = width_px  # views are compared at about this width
        self.min_peak = min_peak  # a correlation peak lower than this measures nothing (noise, a cut)
        self.refresh_seconds = refresh_seconds  # a still view becomes the new reference after this long
        self.reference: np.ndarray | None = None
        self.reference_at = 0.0
        # A jump is a move once the view has stayed there this many frames running: a knocked camera stays, a
        # shaking one swings back within a frame or two (only for views compared frames apart, not seconds).
        self.held_frames = held_frames
        self.recent: deque[tuple[int, int]] = deque(maxlen=REST_FRAMES + held_frames)  # shifts from the reference

    def moved(self, grey: np.ndarray, captured_at: float, limit_px: float) -> bool:
        """Whether the view (a grey image) has moved by `limit_px` or more: jumped that far from where it rested, or
        comes to rest that far from the reference (which then becomes this view)."""
        scale = max(1, grey.shape[1] // self.width_px)
        small = grey_cells(grey, scale)
        rows, cols = small.shape
        reference = self.reference
        if reference is None or reference.shape != small.shape:
            self._refer_to(small, captured_at)
            return False
        measured = _correlate(small, reference, self.min_peak)
        if measured is None:
            return False
        peak, still = measured
        shift = (0, 0) if still else peak
        # A shaking view swings about where it rests, and the reference is one frame of the shake: measured from it
        # the shake doubles, so a shake of half the limit would reach it again and again. A move is a jump of the
        # limit from where the view rested before, held, or where it rests now that far from the reference (a pan,
        # a slow drift).
        self.recent.append(shift)
        shifts = np.array(self.recent, dtype=float) * scale
        held, before = shifts[-self.held_frames:], shifts[:-self.held_frames]
        rested = np.median(before, axis=0) if len(before) else np.zeros(2)
        jumped = len(held) == self.held_frames and float(np.hypot(*(held - rested).T).min()) >= limit_px
        settled = float(np.hypot(*np.median(shifts, axis=0))) >= limit_px
        if peak == (0, 0) and captured_at - self.reference_at >= self.refresh_seconds:
            # Only a view that matches the reference best unshifted replaces it: one shifted by less than a move
            # would let a slow drift (a tilt of a few pixels a minute) pass as still, reference after reference.
            self._refer_to(small, captured_at)
        if not (jumped or settled):
            return False
        half_r, half_c = rows // 2, cols // 2
        quarters = [(slice(r, r + half_r), slice(c, c + half_c)) for r in (0, half_r) for c in (0, half_c)]
        tolerance = max(2.0, QUARTER_TOLERANCE * float(np.hypot(*shift)))
        # A quarter agrees when it shifted as the view did (one that kept still, or shows no clear peak, does not).
        parts = [_phase_shift(small[quarter], reference[quarter], self.min_peak) for quarter in quarters]
        agreeing = sum(1 for part in parts if part not in (None, (0, 0))
                       and np.hypot(part[0] - shift[0], part[1] - shift[1]) <= tolerance)
        if agreeing < QUARTERS_AGREEING:
            return False
        self._refer_to(small, captured_at)
        return True

    def _refer_to(self, small: np.ndarray, captured_at: float) -> None:
        """Makes this view the reference, where the view rests until the next frames show otherwise."""
        self.reference, self.reference_at = small, captured_at
        self.recent.clear()
        self.recent.append((0, 0))


def _phase_shift(image: np.ndarray, reference: np.ndarray, min_peak: float) -> tuple[int, int] | None:
    """(dx, dy) that best maps the reference onto the image, in its pixels: (0, 0) when the image still matches the
    reference unshifted about as well (it has not moved), None without a clear peak."""
    measured = _correlate(image, reference, min_peak)
    if measured is None:
        return None
    peak, still = measured
    return (0, 0) if still else peak


def _correlate(image: np.ndarray, reference: np.ndarray, min_peak: float) -> tuple[tuple[int, int], bool] | None:
    """The correlation peak's (dx, dy), and whether the unshifted image matches about as well; None without a clear
    peak."""
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    spectra = [np.fft.rfft2((a - a.mean()) * window) for a in (image, reference)]
    cross = spectra[0] * np.conj(spectra[1])
    correlation = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=image.shape)
    peak = np.unravel_index(np.argmax(correlation), correlation.shape)
    if correlation[peak] < min_peak:
        return None
    dy, dx = (int(p) if p <= n // 2 else int(p) - n for p, n in zip(peak, image.shape, strict=True))
    return (dx, dy), bool(correlation[0, 0] >= STILL_SHARE * correlation[peak])


def grey_cells(image: np.ndarray, cell_px: int) -> np.ndarray:
    """Mean grey level of each cell_px x cell_px cell of a grey or BGR image (partial edge cells dropped)."""
    grey = grey_image(image)
    rows, cols = grey.shape[0] // cell_px, grey.shape[1] // cell_px
    cropped = grey[: rows * cell_px, : cols * cell_px]
    # Summed as strided slices, row by row and then column by column: a mean over the small cell axes of a reshaped
    # image takes several times as long for cells of a few pixels.
    rows_summed = sum(cropped[row::cell_px] for row in range(cell_px))
    return sum(rows_summed[:, col::cell_px] for col in range(cell_px)) / (cell_px * cell_px)
