"""The contract between pure per-camera analytics and the faust wiring.

An analyzer owns the state of one camera for one concern (crowd, traffic). The analytics stage restores it from a
changelog-backed table, feeds it one Detections message, publishes what it returns, and stores its state again.
Analyzers must ignore a redelivered frame (sequence number already seen) so at-least-once input gives one output.
An analyzer that raised is discarded; the stage restores a fresh one from the last stored state, or from no state
once it has raised on several frames in a row (processors.analytics.stage). Its state is then dropped, so the stage
first asks it to resolve what it has open: nothing else would ever close those incidents. For the same reason the
stage stores, beside the state, what a copy of the analyzer would resolve, for a version that cannot read the state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from schemas import Detections, Event, LineCounts, ZoneMetrics
from schemas.settings.config import CameraConfig, Config


@dataclass
class AnalyticsOutput:
    zone_metrics: list[ZoneMetrics] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    line_counts: list[LineCounts] = field(default_factory=list)


class CameraAnalyzer(Protocol):
    def update(self, detections: Detections) -> AnalyticsOutput: ...

    def state_bytes(self) -> bytes: ...

    def resolve_open(self, at: float, reason: str) -> list[Event]:
        """A resolved event for every incident now open, as of `at`, saying `reason`."""
        ...


class AnalyzerFactory(Protocol):
    def __call__(self, camera: CameraConfig, config: Config, state: bytes | None) -> CameraAnalyzer: ...

