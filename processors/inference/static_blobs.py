"""Unknown static objects from frames: foreground that appeared and has stayed unchanged (fallen cargo, debris).

A per-cell background model over a coarse grid of the grey image (pure numpy, no OpenCV): a cell that differs
from the background is foreground; it is *static* once its value has stayed the same since it turned foreground
for `static_seconds`. Passing traffic keeps changing the cells it covers, so it never becomes static; a stopped
vehicle does, which is why the traffic rule ignores blobs under a detected box. Foreground that stays for
`absorb_seconds` becomes background (a parked object is not an obstacle for ever). The first background is the
median of the first frames, so a car passing at start-up does not leave a ghost. The background learns only
where there is no foreground, so slow light changes are followed without swallowing objects.

The inference stage feeds it decoded frames (it needs images; the analyzer gets only detections) through
`StaticBlobPool` and attaches the blobs to the Detections message (`Detections.static_blobs`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from infra.keyed_pool import KeyedPool
from schemas import StaticBlob


class StaticBlobDetector:
    def __init__(self, cell_px: int = 8, difference_threshold: float = 30.0, static_seconds: float = 3.0,
                 absorb_seconds: float = 600.0, learning_rate: float = 0.05, min_cells: int = 4,
                 warmup_frames: int = 9):
        self.cell_px = cell_px
        self.difference_threshold = difference_threshold
        self.static_seconds = static_seconds
        self.absorb_seconds = absorb_seconds
        self.learning_rate = learning_rate
        self.min_cells = min_cells
        self.warmup_frames = warmup_frames
        self._warmup: list[np.ndarray] = []  # first frames; their median is the first background, free of traffic
        self.background: np.ndarray | None = None
        self.reference: np.ndarray | None = None  # cell value when it turned foreground
        self.foreground_since: np.ndarray | None = None  # NaN where background

    def _cells(self, image: np.ndarray) -> np.ndarray:
        grey = image.mean(axis=2) if image.ndim == 3 else image.astype(float)
        rows, cols = grey.shape[0] // self.cell_px, grey.shape[1] // self.cell_px
        cropped = grey[: rows * self.cell_px, : cols * self.cell_px]
        return cropped.reshape(rows, self.cell_px, cols, self.cell_px).mean(axis=(1, 3))

    def update(self, image: np.ndarray, captured_at: float) -> list[StaticBlob]:
        """Feeds one frame (grey or BGR uint8); returns the static blobs present now."""
        cells = self._cells(image)
        if self.background is None or self.background.shape != cells.shape:
            self._warmup = [frame for frame in self._warmup if frame.shape == cells.shape] + [cells]
            if len(self._warmup) < self.warmup_frames:
                return []
            self.background = np.median(np.stack(self._warmup), axis=0)
            self.reference = self.background.copy()
            self.foreground_since = np.full(cells.shape, np.nan)
            self._warmup = []
        threshold = self.difference_threshold
        foreground = np.abs(cells - self.background) > threshold
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
        return self._blobs(static)

    def _blobs(self, static: np.ndarray) -> list[StaticBlob]:
        labels, count = ndimage.label(static)
        blobs = []
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            member = labels[found] == index
            if member.sum() < self.min_cells:
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


class StaticBlobPool:
    """One StaticBlobDetector per camera with a traffic scene; a camera silent for `idle_seconds` is dropped."""

    def __init__(self, camera_ids: set[str], idle_seconds: float = 300.0):
        self.camera_ids = camera_ids
        self._detectors = KeyedPool(lambda camera_id: StaticBlobDetector(), idle_seconds)

    def update(self, camera_id: str, image: np.ndarray, captured_at: float) -> list[StaticBlob] | None:
        """Static blobs in this frame, or None for cameras without a scene."""
        if camera_id not in self.camera_ids:
            return None
        return self._detectors.get(camera_id, captured_at).update(image, captured_at)

    def __len__(self) -> int:
        return len(self._detectors)
