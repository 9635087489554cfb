"""Operator "ignore this" filters: a camera, a class and a region whose objects never reach the rules, until the
filter expires. The fix for a known false alarm (a statue read as a person) that does not wait for retraining.

A filter drops an object when its class matches and its foot point (bottom-centre, where zones test objects too)
lies inside the polygon. Expiry is judged by the frame's capture time, so replaying footage gives the same result.
The filters live in one small JSON file that the `cityguard ignore` commands edit and the analytics stage re-reads
every few seconds; there a filter also applies only to frames captured since it was added, so a frame analysed
again after a restart is filtered as it was the first time. (A replay applies the file's filters to all its footage.)
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from infra.files import locked, replace_file
from schemas import Detections
from schemas.geometry import Point, points_in_polygon
from schemas.settings.base import verify_simple_polygon

log = logging.getLogger(__name__)


class UnusableRegion(ValueError):
    """A filter's region cannot cover anything: too few points, crossing edges, no area or a non-finite vertex."""


@dataclass(frozen=True)
class IgnoreFilter:
    id: str
    camera: str
    class_name: str
    polygon: tuple[Point, ...]  # image pixels
    created_at: float
    expires_at: float | None  # None: until removed
    note: str = ""

    def __post_init__(self):
        try:
            if len(self.polygon) < 3:
                raise ValueError("the region needs 3 or more points")
            # As a zone's: a region of no area would cover nothing, and a repeated point is dropped.
            object.__setattr__(self, "polygon", tuple(verify_simple_polygon(list(self.polygon))))
        except ValueError as exc:
            raise UnusableRegion(f"ignore filter {self.id}: {exc}") from None

    def active(self, at: float) -> bool:
        return self.expires_at is None or at < self.expires_at

    @classmethod
    def from_json(cls, data: dict) -> IgnoreFilter:
        return cls(**{**data, "polygon": tuple(tuple(map(float, point)) for point in data["polygon"])})


def ignored_mask(detections: Detections, filters: Sequence[IgnoreFilter]) -> np.ndarray:
    """Which objects of the frame an active filter of its camera covers."""
    mask = np.zeros(len(detections), dtype=bool)
    if not len(detections):
        return mask
    feet = detections.foot_points()
    names = np.asarray(detections.class_name)
    for rule in filters:
        if rule.camera == detections.camera_id and rule.active(detections.captured_at):
            mask |= (names == rule.class_name) & points_in_polygon(feet, rule.polygon)
    return mask


def without_ignored(detections: Detections, filters: Sequence[IgnoreFilter]) -> Detections:
    """The frame without the objects the filters cover (every per-object column kept aligned)."""
    mask = ignored_mask(detections, filters)
    if not mask.any():
        return detections
    keep = np.flatnonzero(~mask)
    columns = {name: [getattr(detections, name)[i] for i in keep]
               for name in ("xyxy", "confidence", "class_id", "class_name")}
    if detections.track_id is not None:
        columns["track_id"] = [detections.track_id[i] for i in keep]
    return detections.model_copy(update=columns)


class IgnoreFilterStore:
    """The filters file: read by the analytics stage, edited by the CLI (under a lock, replaced atomically)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._left_out: set[str] = set()  # reasons already logged: the analytics stage reads the file every few s

    def load(self) -> list[IgnoreFilter]:
        if not self.path.exists():
            return []
        filters = []
        try:
            for entry in json.loads(self.path.read_text())["filters"]:
                try:
                    filters.append(IgnoreFilter.from_json(entry))
                except UnusableRegion as exc:  # stored by an earlier version, which let it through: it covers nothing
                    if str(exc) not in self._left_out:
                        self._left_out.add(str(exc))
                        log.warning("%s: %s; left out", self.path, exc)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}: not an ignore-filters file: {exc}") from None
        return filters

    @contextmanager
    def _editing(self) -> Iterator[list[IgnoreFilter]]:
        with locked(self.path):
            filters = self.load()
            yield filters
            replace_file(self.path, json.dumps({"filters": [asdict(f) for f in filters]}, indent=2) + "\n",
                         follow_link=True)

    def add(self, camera: str, class_name: str, polygon: Sequence[Point], expires_in_s: float | None,
            note: str = "", now: float | None = None) -> IgnoreFilter:
        """Stores a new filter; expired ones are dropped from the file at the same time."""
        now = time.time() if now is None else now
        rule = IgnoreFilter(secrets.token_hex(4), camera, class_name, tuple(tuple(map(float, p)) for p in polygon),
                            now, None if expires_in_s is None else now + expires_in_s, note)
        with self._editing() as filters:
            filters[:] = [f for f in filters if f.active(now)] + [rule]
        return rule

    def remove(self, filter_id: str) -> IgnoreFilter:
        with self._editing() as filters:
            found = [f for f in filters if f.id == filter_id]
            if not found:
                raise KeyError(f"no ignore filter {filter_id!r} in {self.path}")
            filters.remove(found[0])
        return found[0]


class IgnoreFilterReader:
    """The analytics side: the filters re-read at most every `interval_s` (a small file). A file that cannot be
    read keeps the filters last read, with the reason in `error` (logged once per new reason)."""

    def __init__(self, store: IgnoreFilterStore, interval_s: float = 2.0):
        self.store = store
        self.interval_s = interval_s
        self.checked_at = float("-inf")
        self.filters: list[IgnoreFilter] = []
        self.error: str | None = None

    def current(self, captured_at: float) -> list[IgnoreFilter]:
        """The filters that existed when a frame was captured at `captured_at`."""
        if time.monotonic() - self.checked_at >= self.interval_s:
            self.checked_at = time.monotonic()
            try:
                self.filters, self.error = self.store.load(), None
            except (OSError, ValueError) as exc:
                if str(exc) != self.error:
                    log.error("ignore filters: %s; keeping the %d filters last read", exc, len(self.filters))
                self.error = str(exc)
        return [rule for rule in self.filters if rule.created_at <= captured_at]
