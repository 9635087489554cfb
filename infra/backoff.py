"""Doubling back-off, for every retry of the stages: a camera's reconnect, a sink's next read, an alert's next try,
the dispatcher's pause after work that failed, a restarted stage."""
from __future__ import annotations

import math
from dataclasses import dataclass


def backoff_delay(failures: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after `failures` failures in a row (1-based): doubling from `initial_s`, capped at `max_s`."""
    # Doublings past the cap change nothing, and counted without end (an outage of hours) they overflow a float.
    doublings = min(failures - 1, math.ceil(math.log2(max_s / initial_s)))
    return min(max_s, initial_s * 2 ** doublings)


@dataclass
class Pause:
    """How long one piece of work waits after failing `failures` times in a row (monotonic)."""

    initial_s: float
    max_s: float
    failures: int = 0
    until: float = 0.0

    def failed(self, now: float) -> float:
        """Counts a failure and pauses the work from `now`; returns the pause in seconds."""
        self.failures += 1
        delay = backoff_delay(self.failures, self.initial_s, self.max_s)
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0

    def remaining(self, now: float) -> float:
        return max(0.0, self.until - now)
