"""One object per key (a camera's tracker, its background model), created on first use and dropped once idle.

The stages run for months while cameras come and go: every per-camera map needs eviction, and this is the one place
that has it. Time is whatever clock the caller passes (monotonic seconds or frame capture time), never read here.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class KeyedPool(Generic[Value]):
    def __init__(self, create: Callable[[str], Value], idle_seconds: float):
        self.create = create
        self.idle_seconds = idle_seconds
        self._values: dict[str, Value] = {}
        self._last_seen: dict[str, float] = {}

    def get(self, key: str, now: float) -> Value:
        """The key's object (created if new), after dropping every object idle for longer than `idle_seconds`."""
        for idle in [k for k, seen in self._last_seen.items() if now - seen > self.idle_seconds]:
            del self._values[idle], self._last_seen[idle]
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = self.create(key)
        self._last_seen[key] = now
        return value

    def __len__(self) -> int:
        return len(self._values)
