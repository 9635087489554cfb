"""A moment by which a piece of network I/O must be complete, however slowly the other side answers."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, wait
from typing import Callable, TypeVar

T = TypeVar("T")


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

    def call(self, work: Callable[[], T], discard_late: Callable[[T], None]) -> T:
        """What `work()` returns or raises, if it does by the deadline: it runs in a daemon thread of its own, for a
        call that no timeout bounds (a DNS lookup: socket.getaddrinfo takes none). Past the deadline raises
        TimeoutError and leaves the call to end in its thread; what it returns then goes to `discard_late` (a socket
        to close)."""
        timeout_s = self.left()  # before the thread starts: nothing to discard when no time is left
        outcome: Future = Future()
        threading.Thread(target=_settle, args=(outcome, work), daemon=True, name="deadline-call").start()
        if not wait([outcome], timeout_s).done:
            # Called at once if the call ended meanwhile.
            outcome.add_done_callback(lambda late: _discard(late, discard_late))
            raise TimeoutError("deadline passed")
        return outcome.result()


def _settle(outcome: Future, work: Callable[[], T]) -> None:
    try:
        outcome.set_result(work())
    except BaseException as exc:  # handed to the caller, whose error it is
        outcome.set_exception(exc)


def _discard(late: Future, discard_late: Callable[[T], None]) -> None:
    if late.exception() is None:
        discard_late(late.result())
