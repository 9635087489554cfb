"""A fixed camera's background floor in its density maps, learnt from its own sparse maps and subtracted.

The density model answers a little everywhere it sees texture (grass, cones, a tripod, speckled asphalt): on a
sparse fixed view that response adds up to several people that never move (measured on street and car-park views:
3.8 and 8.4 people of a 10 and 15 person map). It is the same hour after hour, so it can be learnt per cell as the
minimum over the camera's recent maps (people move on, the texture stays) and taken off later maps. Guards, because
a crowd-safety count must never read calm where it is packed:
- learnt only from evidently sparse scenes: the map's total and the detector's person count both small, which a
  packed or moderate crowd never gives (its map alone holds dozens to thousands of people);
- subtracted only once enough sparse maps spanning long enough were seen, never in a cell of a locally dense crowd,
  at most `max_cell_people` per cell (below the dense-cell level) and at most `max_removed_people` per map, so any
  zone loses at most that many people; the analytics' detector floor still holds the zone count up;
- forgotten when the camera moves (its view shifts from the one the floor was learnt in: view_motion), when the
  map's grid changes, and with the process: an empty floor only ever leaves counts too high, never too low. A camera
  turned to an unrelated view is not recognised as moved; the bounds and the sliding window limit what its old floor
  takes then.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from infra.keyed_pool import KeyedPool
from processors.inference.density_map import dense_cells
from processors.inference.view_motion import ViewMotion, grey_image
from schemas.settings.crowd import BackgroundFloorConfig

# A shift of this many pixels forgets the floor; less stays within a map cell or two. A false move only forgets the
# floor: counts too high, never too low.
MOVE_LIMIT_PX = 16.0


@dataclass
class FloorBucket:
    """The per-cell minimum of the sparse maps captured in one slice of the window."""
    first_at: float
    last_at: float
    minimum: np.ndarray
    maps: int


class DensityFloor:
    """One camera's floor; `update` each new map (with the frame's detector person count and grey image)."""

    BUCKETS = 6  # the window is kept as this many slices, so it slides without storing every map

    def __init__(self, settings: BackgroundFloorConfig, dense_cell_people: float):
        self.settings = settings
        self.dense_cell_people = dense_cell_people
        self.buckets: deque[FloorBucket] = deque()
        self.view = ViewMotion()  # the view the floor is learnt in

    def reset(self) -> None:
        self.buckets.clear()

    def floor(self, now: float) -> np.ndarray | None:
        """The learnt floor at capture time `now`, or None while too few sparse maps over too short a span back it."""
        while self.buckets and now - self.buckets[0].last_at > self.settings.window_seconds:
            self.buckets.popleft()
        if not self.buckets or sum(bucket.maps for bucket in self.buckets) < self.settings.min_maps:
            return None
        if self.buckets[-1].last_at - self.buckets[0].first_at < self.settings.min_span_seconds:
            return None
        return np.minimum.reduce([bucket.minimum for bucket in self.buckets])

    def subtract(self, density: np.ndarray, now: float) -> np.ndarray:
        """The map less its floor, within the guards."""
        floor = self.floor(now)
        if floor is None or floor.shape != density.shape:
            return density
        removed = np.minimum(np.minimum(floor, self.settings.max_cell_people), density)
        removed[dense_cells(density, self.dense_cell_people)] = 0.0
        total = float(removed.sum())
        if total > self.settings.max_removed_people:
            removed *= self.settings.max_removed_people / total
        return (density - removed).astype(np.float32)

    def learn(self, density: np.ndarray, detector_people: int, now: float) -> None:
        """Adds the map to the floor when the scene is evidently sparse."""
        limit = self.settings.sparse_max_people
        if float(density.sum()) > limit or detector_people > limit:
            return
        newest = self.buckets[-1] if self.buckets else None
        if newest is not None and newest.minimum.shape != density.shape:
            self.reset()
            newest = None
        if newest is None or now - newest.first_at >= self.settings.window_seconds / self.BUCKETS:
            self.buckets.append(FloorBucket(now, now, density.copy(), 1))
            return
        np.minimum(newest.minimum, density, out=newest.minimum)
        newest.last_at = max(newest.last_at, now)
        newest.maps += 1

    def update(self, density: np.ndarray, detector_people: int, grey: np.ndarray, captured_at: float) -> np.ndarray:
        """The map to send for this frame (`grey`: the frame as a grey image); the map is learnt from only after it
        has been floored (never itself)."""
        if self.view.moved(grey, captured_at, MOVE_LIMIT_PX):
            self.reset()
        floored = self.subtract(density, captured_at)
        self.learn(density, detector_people, captured_at)
        return floored


class DensityFloorPool:
    """One DensityFloor per zone camera; a camera silent for a whole window starts again empty."""

    def __init__(self, settings: BackgroundFloorConfig, dense_cell_people: float):
        self._floors = KeyedPool(lambda camera_id: DensityFloor(settings, dense_cell_people), settings.window_seconds)

    def update(self, camera_id: str, density: np.ndarray, detector_people: int, image: np.ndarray,
               captured_at: float) -> np.ndarray:
        return self._floors.get(camera_id).update(density, detector_people, grey_image(image), captured_at)

    def __len__(self) -> int:
        return len(self._floors)
