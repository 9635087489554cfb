"""Which frames of an inference batch get a density map, so that every zone camera's map stays fresh at the rate the
hardware sustains.

A density map costs as much as dozens of detector passes, so it cannot run on every frame; the analytics stage uses
a zone's last map for at most `analytics.counting.density_map_max_age_seconds` (capture time) and reports the zone
UNKNOWN ("density map stale") after that. The schedule:
- renews maps earliest-deadline-first: among the zone cameras with a frame in the batch, those whose map is at least
  `refresh_seconds` old (or that have none) are due, and the `maps_per_batch` oldest of them get one; a batch
  detected in parts (model.max_batch_decoded_bytes) chooses in each part from what its earlier parts left of
  `maps_per_batch`, so it makes no more maps than it would whole;
- spends at most `busy_fraction` of the worker's time on maps (a budget refilled with elapsed worker time and
  charged with each map's measured time), so detection keeps up with the cameras. When the zone cameras need more
  map time than that, maps are renewed less often, their ages pass the bound and the zones say UNKNOWN instead of
  reporting a level the evidence no longer supports;
- counts a camera's map age from its newest map sent, and tries a camera whose map failed (the model failing on its
  picture, or a map left off its frame) again only `refresh_seconds` after that try: with the oldest maps first, a
  picture the model always fails on would otherwise take the map slots of every camera behind it.

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
        self.tried_at: dict[str, float] = {}  # capture time of the frame each camera's latest map was chosen for
        self.credit_s = 0.0  # map time the budget allows now; negative after a costly map, until repaid
        self.clock_s: float | None = None  # the worker's clock at the last call
        # The cameras of the batch's choices (one per part of a batch detected in parts), each with its map and try
        # times before them: what a rewound batch gives back; and of its last choice, with its map time before it:
        # what a failed map gives back.
        self.batch_replaced: dict[str, tuple[float | None, float | None]] = {}
        self.last_replaced: dict[str, float | None] = {}
        self.batch_chosen = 0  # maps chosen in the batch, made or not: a model that failed took its time too

    def age(self, camera_id: str, at: float) -> float:
        """Seconds between capture time `at` and the camera's newest map; infinite before its first one."""
        return self._since(self.last_map_at.get(camera_id), at)

    def _since(self, last: float | None, at: float) -> float:
        """Seconds from capture time `last` to `at`; infinite for None, and when `last` is more than a refresh
        interval later than `at` (the camera's clock stepped back, or that frame was stamped in the future): such a
        time says nothing about the time of this frame, which would otherwise never find the camera due."""
        if last is None or at < last - self.refresh_seconds:
            return math.inf
        return max(0.0, at - last)

    def choose(self, frames: Sequence[tuple[str, float]], now: float, later_part: bool = False) -> list[int]:
        """Indices of the (camera id, capture time) frames to map, given the worker's clock `now` (seconds); records
        them as mapped. One frame per camera at most (its newest in the frames), oldest maps first. The frames are a
        batch, or with `later_part` a later part of the batch the last choose was for: then at most what its earlier
        parts left of `maps_per_batch` are chosen."""
        if not later_part:
            self.batch_replaced, self.batch_chosen = {}, 0
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
               if self._since(self.tried_at.get(camera_id), frames[index][1]) >= self.refresh_seconds]
        due.sort(key=lambda entry: (-entry[0], entry[1]))
        chosen = due[:self.maps_per_batch - self.batch_chosen]
        self.batch_chosen += len(chosen)
        self.last_replaced = {camera_id: self.last_map_at.get(camera_id) for _, camera_id, _ in chosen}
        for _, camera_id, index in chosen:
            self.batch_replaced.setdefault(camera_id,
                                           (self.last_map_at.get(camera_id), self.tried_at.get(camera_id)))
            self.last_map_at[camera_id] = self.tried_at[camera_id] = frames[index][1]
        return sorted(index for _, _, index in chosen)

    def not_made(self, camera_ids: Iterable[str]) -> None:
        """The maps the last `choose` picked for these cameras were not made or not sent: each gets back the map age
        it had before, and is tried again a refresh interval after this try; the other maps stand, as do those of the
        batch's earlier parts."""
        for camera_id in camera_ids:
            if camera_id in self.last_replaced:
                _set_back(self.last_map_at, camera_id, self.last_replaced.pop(camera_id))

    def batch_sent(self) -> None:
        """The batch's maps went out: a later rewind leaves them."""
        self.batch_replaced, self.last_replaced, self.batch_chosen = {}, {}, 0

    def batch_rewound(self) -> None:
        """The batch did not go out and comes again: every camera chosen in it gets back the map age and the try it
        had before the batch, so the frames that come again find it due."""
        for camera_id, (last_map_at, tried_at) in self.batch_replaced.items():
            _set_back(self.last_map_at, camera_id, last_map_at)
            _set_back(self.tried_at, camera_id, tried_at)
        self.batch_replaced, self.last_replaced, self.batch_chosen = {}, {}, 0

    def spent(self, seconds: float) -> None:
        """Charges the time the chosen maps took."""
        self.credit_s -= seconds


def _set_back(times: dict[str, float], camera_id: str, at: float | None) -> None:
    """Sets the camera's time back to `at` (None: it had none)."""
    if at is None:
        times.pop(camera_id, None)
    else:
        times[camera_id] = at
