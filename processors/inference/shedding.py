"""Load shedding: which frames the inference stage skips rather than processes late.

A frame is worth detecting only while it is fresh: one older than `max_age_s` when inference reaches it is
skipped (its camera's zones then age towards "unknown", which is the truth, instead of showing a late picture).
And one camera cannot take a shared partition's capacity from the others: frames of a configured camera beyond
`rate_factor` x its configured fps (per second of capture time) are skipped too, so a flooding camera's surplus
costs a message parse each, not a model run, and the frames queued behind it stay fresh. Every skipped frame is
counted per camera and reason; none is dead-lettered (nothing is wrong with it).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

from schemas import Frame

STALE, OVER_RATE = "stale", "over_rate"


class FrameShedder:
    def __init__(self, max_age_s: float, camera_fps: dict[str, float], rate_factor: float,
                 clock: Callable[[], float] = time.time):
        self.max_age_s, self.rate_factor, self.clock = max_age_s, rate_factor, clock
        self.allowance = {camera: max(1, math.ceil(fps * rate_factor)) for camera, fps in camera_fps.items()}
        self.kept: dict[str, tuple[int, set[int]]] = {}  # camera -> (second of capture time, seqs kept in it)

    def age(self, frame: Frame) -> float:
        return self.clock() - frame.captured_at

    def reason(self, frame: Frame) -> str | None:
        """None when the frame is to be processed, else why it is skipped."""
        if self.age(frame) > self.max_age_s:
            return STALE
        allowance = self.allowance.get(frame.camera_id)
        if allowance is None:
            return None  # not a configured camera: no rate to hold it to (the inference stage rejects it before this)
        second = math.floor(frame.captured_at)
        kept_second, kept = self.kept.get(frame.camera_id, (second, set()))
        if kept_second != second:
            kept = set()
        if frame.seq in kept:
            return None  # kept before: a rewound batch brings it again, and it must not count twice
        if len(kept) >= allowance:
            return OVER_RATE
        kept.add(frame.seq)
        self.kept[frame.camera_id] = (second, kept)
        return None
