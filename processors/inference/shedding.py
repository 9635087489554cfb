"""Load shedding: which frames the inference stage skips rather than processes late.

A frame is worth detecting only while it is fresh: one older than `max_age_s` when inference reaches it is
skipped (its camera's zones then age towards "unknown", which is the truth, instead of showing a late picture).
And one camera cannot take a shared partition's capacity from the others: frames of a configured camera beyond
`rate_factor` x its configured fps (per second of capture time) are skipped too, so a flooding camera's surplus
costs a message parse each, not a model run, and the frames queued behind it stay fresh. Every skipped frame is
counted per camera and reason; none is dead-lettered (nothing is wrong with it).

A kept frame that comes again at the same offset (a rewound batch) is kept again without counting twice: the rewind
must not lose frames the first pass kept. Any other record counts, whatever its sequence number says (a flood may
repeat one), and so does a frame of any of the camera's last RECENT_SECONDS capture seconds (a flood may alternate
between them). A frame stamped later than FUTURE_SLACK_S from now counts in that second (a flood stamped with ever
new future seconds would otherwise get a fresh allowance with each).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

from schemas import Frame

STALE, OVER_RATE = "stale", "over_rate"
# Capture seconds whose kept frames are remembered per camera, the first begun forgotten first. A camera's frames come
# in capture order, so only a flood alternating between seconds, or a rewound batch, meets an earlier one again; a
# second forgotten and met again starts afresh, which keeps a rewound batch's frames all the same.
RECENT_SECONDS = 16
# Clock skew between a producer and this stage that a capture time may show without its frames being counted as of
# a later second than now's; a timely frame is never stamped ahead by more.
FUTURE_SLACK_S = 1.0


class FrameShedder:
    def __init__(self, max_age_s: float, camera_fps: dict[str, float], rate_factor: float,
                 clock: Callable[[], float] = time.time):
        self.max_age_s, self.rate_factor, self.clock = max_age_s, rate_factor, clock
        self.allowance = {camera: max(1, math.ceil(fps * rate_factor)) for camera, fps in camera_fps.items()}
        # camera -> second of capture time -> the (seq, offset) of the frames kept in it
        self.kept: dict[str, dict[int, set[tuple[int, int]]]] = {}

    def age(self, frame: Frame) -> float:
        return self.clock() - frame.captured_at

    def reason(self, frame: Frame, offset: int) -> str | None:
        """None when the frame, read at `offset` of its partition, is to be processed, else why it is skipped."""
        now = self.clock()  # one reading: the age and the bound on future capture times must agree
        if now - frame.captured_at > self.max_age_s:
            return STALE
        allowance = self.allowance.get(frame.camera_id)
        if allowance is None:
            return None  # not a configured camera: no rate to hold it to (the inference stage rejects it before this)
        seconds = self.kept.setdefault(frame.camera_id, {})
        second = math.floor(min(frame.captured_at, now + FUTURE_SLACK_S))
        if second not in seconds:
            seconds[second] = set()
            if len(seconds) > RECENT_SECONDS:
                del seconds[next(iter(seconds))]
        kept, delivery = seconds[second], (frame.seq, offset)
        if delivery in kept:
            return None  # kept before: a rewound batch brings it again, and it must not count twice
        if len(kept) >= allowance:
            return OVER_RATE
        kept.add(delivery)
        return None
