"""One object per key (a camera's tracker, its background model), created on first use and dropped once idle.

The stages run for months while cameras come and go: every per-camera map needs eviction, and this is the one place
that has it. Idleness is measured on the worker's own clock (monotonic by default), never on the frames' capture
times: those come from each camera's producer, and one camera whose clock runs ahead would make every other camera
look idle.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class KeyedPool(Generic[Value]):
    def __init__(self, create: Callable[[str], Value], idle_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.create = create
        self.idle_seconds = idle_seconds
        self.clock = clock  # never goes back, so the least recently used key is also the longest idle
        self._entries: OrderedDict[str, tuple[Value, float]] = OrderedDict()  # key -> (object, last seen)

    def get(self, key: str) -> Value:
        """The key's object (created if new), after dropping every object idle for longer than `idle_seconds`.

        Keys are kept least recently used first, so a call looks only at the objects it drops, however many keys
        a producer sends."""
        now = self.clock()
        while self._entries:
            oldest, (_, seen) = next(iter(self._entries.items()))
            if now - seen <= self.idle_seconds:
                break
            del self._entries[oldest]
        entry = self._entries.pop(key, None)
        value = self.create(key) if entry is None else entry[0]
        self._entries[key] = (value, now)
        return value

    def __len__(self) -> int:
        return len(self._entries)
