"""Unknown static objects from frames: foreground that appeared and has stayed unchanged (fallen cargo, debris).

A per-cell background model over a coarse grid of the grey image (pure numpy, no OpenCV): a cell that differs
from the background is foreground; it is *static* once its value has stayed the same since it turned foreground
for `static_seconds`; a blob of them is static since `min_cells` of its cells were (a speck of noise that an
object came to cover is no blob, and does not date it). Passing traffic keeps changing the cells it covers, so it
never becomes static; a stopped vehicle does, which is why the traffic rules merge blobs with the vehicle they lie
under. Foreground that stays for `absorb_seconds` becomes background (a parked object is not an obstacle for ever).
The first background is the median of frames spread over the first `warmup_seconds`, so traffic passing at start-up
does not leave a ghost; a ghost that slips through anyway (a slow truck in most warm-up frames) shows the road when it
leaves, so a static region that looks like the road around it, where the background did not, is learnt at once
instead of reported.
The background learns only where there is no foreground, so slow light changes are followed without swallowing objects.
A sudden one is followed too: each frame is compared with the background scaled by their median ratio (an exposure step
changes the whole picture by one factor), and a static region that is its background times one moderate factor (a
shadow, the road showing through it) is learnt at once, as a ghost is.

The camera moving (a pan, tilt or zoom, a strong shake) makes every cell differ: the view is compared with a
reference view (view_motion), and once it has moved by `view_shift_share` of the frame, and by a cell at least (jumped
that far from where it rested and still there in the next frame, or come to rest that far from the reference), the
model starts again from the new view and reports that the view moved, so the traffic rules can stand aside until it
is still again. A shake, swinging about where the view rests and back within a frame, is not a move. Over
`max_foreground_share` of the cells changing at once (a cut, the light switched, a lorry filling the view) starts the
model again without reporting a move.

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

# A frame's ratio to the background within this of 1 is no exposure step but the view's own noise (a shake, traffic):
# scaling by it would only tip cells at the difference threshold in and out of the foreground.
EXPOSURE_TOLERANCE = 0.03
# A camera's exposure steps by at most this factor; a larger one is a cut (a title card to the road) or the light
# switched, which no factor maps onto the background: the model starts again from it instead.
EXPOSURE_STEP = 4 / 3
LIGHT_CHANGE_FACTOR = 2.0  # a shadow or light change scales the road's brightness by at most this, either way
LIGHT_CHANGE_SPREAD = 0.06  # relative spread of the brightness ratio over a region that one factor scaled


class BackgroundView(NamedTuple):
    blobs: list[StaticBlob]
    view_moved: bool  # the camera's view moved at this frame


class StaticBlobDetector:
    def __init__(self, cell_px: int = 8, difference_threshold: float = 30.0, static_seconds: float = 3.0,
                 absorb_seconds: float = 600.0, learning_rate: float = 0.05, min_cells: int = 4,
                 warmup_frames: int = 9, warmup_seconds: float = 5.0, max_foreground_share: float = 0.25,
                 view_shift_share: float = 0.01):
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
        # Compared frame by frame, a knocked camera shows it again in the next frame; a shaking one swings back.
        self.view = ViewMotion(held_frames=2)
        self._warmup: list[np.ndarray] = []  # early frames; their median is the first background, free of traffic
        self._warmup_times: list[float] = []
        self.background: np.ndarray | None = None
        self.reference: np.ndarray | None = None  # cell value when it turned foreground
        self.foreground_since: np.ndarray | None = None  # NaN where background

    def update(self, image: np.ndarray, captured_at: float) -> BackgroundView:
        """Feeds one frame (grey or BGR uint8); returns the static blobs present now and whether the view moved."""
        grey = grey_image(image)
        cells = grey_cells(grey, self.cell_px)
        # A shift smaller than a cell barely changes the cells' means: the background still lies under the view. On
        # small pictures the share alone is a few pixels, which a shaking or swaying pole reaches again and again.
        if self.view.moved(grey, captured_at, max(self.view_shift_share * max(grey.shape), self.cell_px)):
            # The camera moved: the background no longer lies under the view; learn it again from here.
            self._start_over(cells)
            return BackgroundView([], True)
        if (self.background is None or self.background.shape != cells.shape) and not self._warm_up(cells, captured_at):
            return BackgroundView([], False)
        # An exposure step or the light changing scales the whole picture by one factor: the frame is compared with the
        # background scaled by it, so the step neither lights up the road nor restarts the model. The background
        # itself still learns the frame as it is: scaling it, or the frame, every frame would let its level wander
        # with each frame's factor where it does not learn (under a queue).
        gain = float(np.median(np.maximum(cells, 1.0) / np.maximum(self.background, 1.0)))
        if abs(gain - 1.0) < EXPOSURE_TOLERANCE or not 1.0 / EXPOSURE_STEP <= gain <= EXPOSURE_STEP:
            gain = 1.0
        threshold = self.difference_threshold
        foreground = np.abs(cells - gain * self.background) > threshold
        if foreground.mean() > self.max_foreground_share:
            # Most of the view changed at once: the light switched, the camera moved, or a large vehicle fills the
            # view close to the camera (so this alone is not reported as a move). Nothing in it is static.
            self._start_over(cells)
            return BackgroundView([], False)
        started = foreground & (np.isnan(self.foreground_since) | (np.abs(cells - self.reference) > threshold))
        self.reference[started] = cells[started]
        self.foreground_since[started] = captured_at
        self.foreground_since[~foreground] = np.nan
        age = captured_at - self.foreground_since  # NaN where background
        absorbed = foreground & (age >= self.absorb_seconds)
        self.background[absorbed] = cells[absorbed]
        self.foreground_since[absorbed] = np.nan
        learn = ~foreground
        self.background[learn] += self.learning_rate * (cells[learn] - self.background[learn])
        static = foreground & ~absorbed & (age >= self.static_seconds)
        return BackgroundView(self._blobs(static, cells), False)

    def _start_over(self, cells: np.ndarray) -> None:
        if self.background is None:  # still warming up: the frames collected so far show another view
            self._warmup, self._warmup_times = [], []
            return
        self.background, self.reference = cells.copy(), cells.copy()
        self.foreground_since = np.full(cells.shape, np.nan)

    def _warm_up(self, cells: np.ndarray, captured_at: float) -> bool:
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

    def _is_light_change(self, region: np.ndarray, cells: np.ndarray) -> bool:
        """A static region that is its background times one moderate factor: a shadow or light falling on the road,
        which shows through it, where an object would replace it (a dark car on a grey road dims it far more)."""
        ratio = cells[region] / np.maximum(self.background[region], 1.0)
        factor = float(ratio.mean())
        return 1.0 / LIGHT_CHANGE_FACTOR <= factor <= LIGHT_CHANGE_FACTOR \
            and float(ratio.std()) < LIGHT_CHANGE_SPREAD * factor

    def _blobs(self, static: np.ndarray, cells: np.ndarray) -> list[StaticBlob]:
        labels, _ = ndimage.label(static)
        blobs = []
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            member = labels[found] == index
            if member.sum() < self.min_cells:
                continue
            region = labels == index
            if self._is_ghost(region, cells) or self._is_light_change(region, cells):
                self.background[region] = cells[region]
                self.foreground_since[region] = np.nan
                continue
            rows, cols = found
            size = self.cell_px
            # Static since it had a blob's worth of cells (min_cells): a speck of noise too small to be one, that an
            # object came to cover looking much like it, does not date the object from before it arrived.
            since = np.partition(self.foreground_since[found][member], self.min_cells - 1)[self.min_cells - 1]
            blobs.append(StaticBlob(
                xyxy=(float(cols.start * size), float(rows.start * size), float(cols.stop * size),
                      float(rows.stop * size)),
                static_since=float(since),
                fill_ratio=float(member.mean()),
            ))
        return blobs


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
