"""A moment by which a piece of network I/O must be complete, however slowly the other side answers."""
from __future__ import annotations

import time


class Deadline:
    """When a request (or one try of several) must be complete."""

    def __init__(self, timeout_s: float):
        self.at = time.monotonic() + timeout_s

    def left(self) -> float:
        """Seconds left; raises TimeoutError once there are none (a socket timeout of 0 would mean non-blocking)."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left
