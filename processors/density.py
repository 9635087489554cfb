"""Per-zone people counts, tumbling-window density and risk levels for one camera. Pure: no Kafka, no clock."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from cityguard.config import CameraConfig, Config, RiskThresholds
from processors.camera_analytics import AnalyticsOutput
from processors.geometry import PolygonZone
from schemas import PERSON_CLASS_ID, Detections, RiskLevel, ZoneMetrics


def risk_level(density_per_m2: float, thresholds: RiskThresholds) -> tuple[RiskLevel, str]:
    """The level a density falls in, with the reason in words."""
    bounds = [
        (RiskLevel.CRITICAL, thresholds.critical),
        (RiskLevel.DANGER, thresholds.danger),
        (RiskLevel.WARNING, thresholds.warning),
        (RiskLevel.CAUTION, thresholds.caution),
    ]
    for level, lower in bounds:
        if density_per_m2 >= lower:
            return level, f"density {density_per_m2:.2f} p/m² >= {level.value} threshold {lower:g}"
    return RiskLevel.NORMAL, f"density {density_per_m2:.2f} p/m² below caution threshold {thresholds.caution:g}"


def people_in_zone(detections: Detections, zone: PolygonZone) -> int:
    """People whose foot point (bottom-centre of the box) lies inside the zone."""
    people = detections.class_mask(PERSON_CLASS_ID)
    if not people.any():
        return 0
    return int(zone.contains(detections.foot_points()[people]).sum())


@dataclass
class OpenWindow:
    """Running aggregate of one zone's current tumbling window (initialize / add / result)."""

    start: float
    frames: int = 0
    people_sum: int = 0
    people_max: int = 0
    last_seq: int = 0

    def add(self, people: int, seq: int) -> None:
        self.frames += 1
        self.people_sum += people
        self.people_max = max(self.people_max, people)
        self.last_seq = seq


@dataclass
class CameraWindowState:
    """Everything needed to resume a camera's windows after a restart; plain data for a changelog table."""

    last_seq: int = -1
    windows: dict[str, OpenWindow] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes | None) -> "CameraWindowState":
        if not raw:
            return cls()
        data = json.loads(raw)
        windows = {zone_id: OpenWindow(**window) for zone_id, window in data.get("windows", {}).items()}
        return cls(last_seq=data.get("last_seq", -1), windows=windows)


class ZoneWindowAggregator:
    """Tumbling windows over event time (frame capture time) for every zone of one camera.

    A window closes when the first frame of a later window arrives, so output depends only on the input stream,
    never on wall-clock time: replaying the same detections gives the same metrics. Frames at or below the last
    sequence number seen are redeliveries and are ignored.
    """

    def __init__(self, camera: CameraConfig, window_seconds: float, thresholds: RiskThresholds,
                 state: CameraWindowState | None = None):
        self.camera = camera
        self.window_seconds = window_seconds
        self.thresholds = thresholds
        self.zones = {zone.id: (zone, PolygonZone(zone.polygon)) for zone in camera.zones}
        self.state = state or CameraWindowState()

    @classmethod
    def restore(cls, camera: CameraConfig, config: Config, state: bytes | None) -> "ZoneWindowAggregator":
        analytics = config.analytics
        return cls(camera, analytics.window_seconds, analytics.thresholds, CameraWindowState.from_json(state))

    def state_json(self) -> bytes:
        return self.state.to_json()

    def window_start(self, timestamp: float) -> float:
        return math.floor(timestamp / self.window_seconds) * self.window_seconds

    def update(self, detections: Detections) -> AnalyticsOutput:
        """Adds one frame's detections; returns the metrics of windows this frame closed."""
        if detections.seq <= self.state.last_seq:
            return AnalyticsOutput()
        self.state.last_seq = detections.seq
        start = self.window_start(detections.captured_at)
        closed: list[ZoneMetrics] = []
        for zone_id, (zone_config, polygon) in self.zones.items():
            window = self.state.windows.get(zone_id)
            if window is not None and start > window.start:
                closed.append(self._result(zone_id, window))
                window = None
            if window is None:
                window = self.state.windows[zone_id] = OpenWindow(start=start)
            window.add(people_in_zone(detections, polygon), detections.seq)
        return AnalyticsOutput(zone_metrics=closed)

    def _result(self, zone_id: str, window: OpenWindow) -> ZoneMetrics:
        zone_config, _ = self.zones[zone_id]
        people_mean = window.people_sum / window.frames
        density_mean = people_mean / zone_config.area_m2
        level, reason = risk_level(density_mean, self.thresholds)
        return ZoneMetrics(
            camera_id=self.camera.id,
            zone_id=zone_id,
            window_start=window.start,
            window_end=window.start + self.window_seconds,
            frames=window.frames,
            area_m2=zone_config.area_m2,
            people_mean=people_mean,
            people_max=window.people_max,
            density_mean_per_m2=density_mean,
            density_max_per_m2=window.people_max / zone_config.area_m2,
            risk_level=level,
            risk_reason=reason,
            last_seq=window.last_seq,
        )
