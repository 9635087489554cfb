"""Which frames of an inference batch get a density map, so that every zone camera's map stays fresh at the rate the
hardware sustains.

A density map costs as much as dozens of detector passes, so it cannot run on every frame; the analytics stage uses
a zone's last map for at most `analytics.counting.density_map_max_age_seconds` (capture time) and reports the zone
UNKNOWN ("density map stale") after that. The schedule:
- renews maps earliest-deadline-first: among the zone cameras with a frame in the batch, those whose map is at least
  `refresh_seconds` old (or that have none) are due, and the `maps_per_batch` oldest of them get one;
- spends at most `busy_fraction` of the worker's time on maps (a budget refilled with elapsed worker time and
  charged with each map's measured time), so detection keeps up with the cameras. When the zone cameras need more
  map time than that, maps are renewed less often, their ages pass the bound and the zones say UNKNOWN instead of
  reporting a level the evidence no longer supports.

Pure: the caller passes its clock and the time the maps took.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


class DensitySchedule:
    def __init__(self, cameras: Iterable[str], refresh_seconds: float, maps_per_batch: int = 1,
                 busy_fraction: float = 1.0):
        if refresh_seconds <= 0 or maps_per_batch < 1 or not 0 < busy_fraction <= 1:
            raise ValueError("need refresh_seconds > 0, maps_per_batch >= 1 and 0 < busy_fraction <= 1")
        self.cameras = frozenset(cameras)
        self.refresh_seconds = refresh_seconds
        self.maps_per_batch = maps_per_batch
        self.busy_fraction = busy_fraction
        self.last_map_at: dict[str, float] = {}  # capture time of the frame each camera's newest map was made from
        self.credit_s = 0.0  # map time the budget allows now; negative after a costly map, until repaid
        self.clock_s: float | None = None  # the worker's clock at the last call
        # The cameras chosen since the last made or not_made (a batch detected in parts chooses once per part), and
        # their map times before the first of those choices.
        self.replaced: dict[str, float | None] = {}

    def age(self, camera_id: str, at: float) -> float:
        """Seconds between capture time `at` and the camera's newest map; infinite before its first one, and when that
        map's frame is more than a refresh interval later than `at` (the camera's clock stepped back, or that frame
        was stamped in the future): such a map says nothing about the time of this frame, which would otherwise
        never find the camera due."""
        last = self.last_map_at.get(camera_id)
        if last is None or at < last - self.refresh_seconds:
            return math.inf
        return max(0.0, at - last)

    def choose(self, frames: Sequence[tuple[str, float]], now: float) -> list[int]:
        """Indices of the (camera id, capture time) frames to map, given the worker's clock `now` (seconds); records
        them as mapped. One frame per camera at most (its newest in the batch), oldest maps first."""
        if self.clock_s is not None:
            # unspent budget is capped at one refresh interval's share, so an idle spell does not buy a long burst
            self.credit_s = min(self.credit_s + (now - self.clock_s) * self.busy_fraction,
                                self.refresh_seconds * self.busy_fraction)
        self.clock_s = now
        if self.credit_s < 0:
            return []
        newest: dict[str, int] = {}
        for index, (camera_id, captured_at) in enumerate(frames):
            if camera_id in self.cameras and (camera_id not in newest or captured_at >= frames[newest[camera_id]][1]):
                newest[camera_id] = index
        due = [(self.age(camera_id, frames[index][1]), camera_id, index) for camera_id, index in newest.items()
               if self.age(camera_id, frames[index][1]) >= self.refresh_seconds]
        due.sort(key=lambda entry: (-entry[0], entry[1]))
        chosen = due[:self.maps_per_batch]
        for _, camera_id, index in chosen:
            self.replaced.setdefault(camera_id, self.last_map_at.get(camera_id))
            self.last_map_at[camera_id] = frames[index][1]
        return sorted(index for _, _, index in chosen)

    def made(self) -> None:
        """The maps picked since the last made or not_made went out: a later `not_made` leaves them."""
        self.replaced = {}

    def not_made(self) -> None:
        """The maps picked since the last made or not_made were not made (the model failed) or did not go out (their
        batch is rewound): those cameras keep their map ages, so the frames that come again find them due."""
        for camera_id, last in self.replaced.items():
            if last is None:
                self.last_map_at.pop(camera_id, None)
            else:
                self.last_map_at[camera_id] = last
        self.replaced = {}

    def spent(self, seconds: float) -> None:
        """Charges the time the chosen maps took."""
        self.credit_s -= seconds
