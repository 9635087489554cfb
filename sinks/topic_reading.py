"""What the sinks that read the data topics share: label values bounded to the site (message content cannot add
series or lists without end), redelivered messages told apart, and the back-off while the broker is away."""
from __future__ import annotations

from collections import OrderedDict

from infra.backoff import backoff_delay
from schemas.settings.config import Config

OTHER = "other"
RETRY_INITIAL_S, RETRY_MAX_S = 0.5, 10.0  # back-off while the broker is unreachable
STAGES = ("producer", "inference", "analytics", "alerts", "metrics-sink")


class LabelBounds:
    """The label values the sink may create series for; anything else is `other`.

    Cameras, zones and counting lines (with their lane and direction names) must be configured, stages and topics
    known; free-text labels (class, event type, horizon) keep the first `limit` distinct values seen each. A flood of
    forged ids thus adds one series.
    """

    def __init__(self, config: Config, limit: int = 64):
        self.cameras = {camera.id for camera in config.cameras}
        self.zones = {(camera.id, zone.id) for camera in config.cameras for zone in camera.zones}
        self.lines = {(camera.id, line.id): line for camera in config.cameras if camera.scene
                      for line in camera.scene.counting_lines}
        self.topics = set(config.broker.topics.all())
        self.limit = limit
        self.seen: dict[str, set[str]] = {}

    def camera(self, camera_id: str) -> str:
        return camera_id if camera_id in self.cameras else OTHER

    def zone(self, camera_id: str, zone_id: str) -> tuple[str, str] | None:
        """(camera, zone) for a configured zone, else None: a zone's gauges mean nothing pooled under `other`."""
        return (camera_id, zone_id) if (camera_id, zone_id) in self.zones else None

    def line(self, camera_id: str, line_id: str, lane_id: str | None,
             direction: str) -> tuple[str, str | None, str] | None:
        """(line, lane, direction) of a configured counting line, as configured, else None: crossings of a line the
        site does not have mean nothing pooled, and each of its labels free would multiply into their product."""
        line = self.lines.get((camera_id, line_id))
        if line is None or lane_id != line.lane or direction not in (line.forward, line.backward):
            return None
        return line_id, lane_id, direction

    def stage(self, stage: str) -> str:
        return stage if stage in STAGES else OTHER

    def topic(self, topic: str) -> str:
        return topic if topic in self.topics else OTHER

    def free(self, label: str, value: str) -> str:
        values = self.seen.setdefault(label, set())
        if value in values:
            return value
        if len(values) < self.limit:
            values.add(value)
            return value
        return OTHER


def retry_delay_s(failures: int) -> float:
    """Back-off before the next try after `failures` failed ones in a row."""
    return backoff_delay(failures, RETRY_INITIAL_S, RETRY_MAX_S)


def zone_stale_after_s(window_seconds: float) -> float:
    """A zone whose windows stopped this long ago (camera down, inference stalled) is UNKNOWN, not its last level."""
    return max(3 * window_seconds, 30.0)


class RecentKeys:
    """The last `capacity` keys seen, to drop redelivered copies of messages that add to counters."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._keys: OrderedDict[tuple, None] = OrderedDict()

    def first_time(self, key: tuple) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True
