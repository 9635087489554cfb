"""What a crowd zone works out once for each size of picture and density map its camera sends."""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Made = TypeVar("Made")

# A camera sends pictures of one size, and maps of one or two shapes; a few more cover a change of stream. A stream
# changing size at every frame would otherwise add an entry (and its arrays) at every frame, without end.
SIZES_KEPT = 4


class PerPictureSize(Generic[Made]):
    """`make(*key)`, made once per key and kept for the last few keys: those over SIZES_KEPT start the cache afresh."""

    def __init__(self, make: Callable[..., Made]):
        self.make = make
        self.made: dict[tuple[Hashable, ...], Made] = {}

    def __call__(self, *key: Hashable) -> Made:
        if key not in self.made:
            if len(self.made) >= SIZES_KEPT:
                self.made.clear()
            self.made[key] = self.make(*key)
        return self.made[key]
