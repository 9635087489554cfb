"""Metrics sink: detections, zone metrics and dead letters from their topics -> Prometheus gauges and counters.

Labels are camera, zone, class and stage only (never a track id), so series stay bounded as the system runs.
Each stage process also serves its own operational metrics (frames produced, inference latency, lag); this sink
serves what is derived from the data topics, plus the analytics group's lag on the detections topic.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from infra.kafka import BROKER_CONNECTED, CONSUMER_LAG
from schemas import (
    PERSON_CLASS_ID,
    DeadLetter,
    Detections,
    Event,
    EventState,
    LineCounts,
    RiskLevel,
    SchemaError,
    ZoneMetrics,
    decode,
)
from schemas.settings.config import Config

log = logging.getLogger(__name__)

DETECTED_OBJECTS = Counter("cityguard_detected_objects_total", "Objects detected", ["camera", "class_name"])
FRAMES_DETECTED = Counter("cityguard_frames_detected_total", "Detections messages seen", ["camera"])
CAMERA_PEOPLE = Gauge("cityguard_camera_people", "People detected in the camera's latest frame", ["camera"])
DETECTION_LATENCY = Histogram(
    "cityguard_capture_to_detection_seconds", "Time from frame capture to its detections reaching the sink",
    ["camera"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
ZONE_PEOPLE = Gauge("cityguard_zone_people", "Mean people in the zone over the last window", ["camera", "zone"])
ZONE_PEOPLE_MAX = Gauge("cityguard_zone_people_max", "Most people in the zone in one frame of the last window",
                        ["camera", "zone"])
ZONE_DENSITY = Gauge("cityguard_zone_density_per_square_metre", "Mean people per m² over the last window",
                     ["camera", "zone"])
ZONE_DENSITY_MAX = Gauge("cityguard_zone_peak_density_per_square_metre", "Highest people per m² in the last window",
                         ["camera", "zone"])
ZONE_AREA = Gauge("cityguard_zone_area_square_metres", "Ground area of the zone", ["camera", "zone"])
ZONE_RISK = Gauge("cityguard_zone_risk_level",
                  "Risk level: -1 unknown, 0 normal, 1 caution, 2 warning, 3 danger, 4 critical", ["camera", "zone"])
ZONE_WINDOW_END = Gauge("cityguard_zone_window_end_timestamp_seconds", "End of the last window reported",
                        ["camera", "zone"])
EVENTS = Counter("cityguard_events_total", "Incidents opened", ["camera", "type", "severity"])
EVENTS_OPEN = Gauge("cityguard_events_open", "Incidents open now", ["camera", "type", "severity"])
LINE_CROSSINGS = Counter("cityguard_line_crossings_total", "Objects that crossed a counting line",
                         ["camera", "line", "class_name", "direction"])
LANE_CROSSINGS = Counter("cityguard_lane_crossings_total", "Counting-line crossings added up per lane",
                         ["camera", "lane", "class_name", "direction"])
CAMERA_INFO = Gauge("cityguard_camera_info", "Configured cameras with their map position (value always 1)",
                    ["camera", "name", "lat", "lon"])
ZONE_PEAK_LOCAL_DENSITY = Gauge("cityguard_zone_peak_local_density_per_square_metre",
                                "Highest Gaussian-weighted local density around any person (Helbing et al.)",
                                ["camera", "zone"])
ZONE_FORECAST = Gauge("cityguard_zone_forecast_density_per_square_metre", "Forecast mean density",
                      ["camera", "zone", "horizon_minutes"])
ZONE_FORECAST_UPPER = Gauge("cityguard_zone_forecast_upper_density_per_square_metre",
                            "Upper edge of the forecast's uncertainty band", ["camera", "zone", "horizon_minutes"])
ZONE_SECONDS_TO_DANGER = Gauge("cityguard_zone_forecast_time_to_danger_seconds",
                               "Seconds until the forecast reaches the danger threshold (absent: not expected)",
                               ["camera", "zone"])
ZONE_CROSSINGS = Counter("cityguard_zone_crossings_total", "People crossing the zone's entrance lines",
                         ["camera", "zone", "direction"])
ZONE_SPEED = Gauge("cityguard_zone_mean_speed_metres_per_second", "Mean walking speed in the zone", ["camera", "zone"])
ZONE_PRESSURE = Gauge("cityguard_zone_crowd_pressure_per_square_second",
                      "Crowd pressure: local density x velocity variance", ["camera", "zone"])
ZONE_DETECTOR_PEOPLE = Gauge("cityguard_zone_detector_people", "People per frame counted by the box detector",
                             ["camera", "zone"])
ZONE_MODEL_PEOPLE = Gauge("cityguard_zone_density_model_people", "People per frame from the density-map model",
                          ["camera", "zone"])
ZONE_COUNT_RELIABLE = Gauge("cityguard_zone_count_reliable", "1 when the zone's count is trusted", ["camera", "zone"])
DEAD_LETTERS = Counter("cityguard_dead_letters_total", "Messages sent to the dead-letter topic", ["stage", "topic"])
UNREADABLE = Counter("cityguard_metrics_sink_unreadable_total", "Messages this sink could not parse", ["topic"])


def zone_stale_after_s(window_seconds: float) -> float:
    """A zone whose windows stopped this long ago (camera down, inference stalled) is UNKNOWN, not its last level."""
    return max(3 * window_seconds, 30.0)


def _remove(gauge: Gauge, labels: tuple[str, ...]) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass  # never set


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


class OpenEvents:
    """Incidents opened and not yet resolved, by event id; stale ones expire so a lost resolve cannot pin a gauge."""

    def __init__(self, max_open_seconds: float = 24 * 3600):
        self.max_open_seconds = max_open_seconds
        self._open: dict[str, tuple[tuple[str, str, str], float]] = {}

    def apply(self, event: Event) -> bool:
        """Records the event; returns True when it opened a new incident."""
        labels = (event.camera_id, event.type, event.severity.value)
        if event.state is EventState.RESOLVED:
            self._open.pop(event.event_id, None)
            return False
        is_new = event.event_id not in self._open
        self._open[event.event_id] = (labels, event.updated_at)
        return is_new

    def counts(self, now: float) -> dict[tuple[str, str, str], int]:
        self._open = {key: value for key, value in self._open.items() if now - value[1] <= self.max_open_seconds}
        counts: dict[tuple[str, str, str], int] = {}
        for labels, _ in self._open.values():
            counts[labels] = counts.get(labels, 0) + 1
        return counts


class MetricsSink:
    def __init__(self, config: Config, consumer: KafkaConsumer, group_readers: dict[str, KafkaConsumer]):
        self.topics = config.broker.topics
        self.consumer = consumer
        # One idle consumer per watched group (never subscribed), used only to read that group's committed offsets.
        self.group_readers = group_readers
        self.open_events = OpenEvents()
        self.counted_windows = RecentKeys()
        self.counted_frames = RecentKeys()
        self.stale_after_s = zone_stale_after_s(config.analytics.window_seconds)
        self.last_window_end: dict[tuple[str, str], float] = {}  # configured zones only
        self._open_labels: set[tuple[str, str, str]] = set()
        for camera in config.cameras:
            if camera.lat is not None and camera.lon is not None:
                CAMERA_INFO.labels(camera.id, camera.name or camera.id, f"{camera.lat:.6f}", f"{camera.lon:.6f}").set(1)

    def handle(self, topic: str, value: bytes | None) -> None:
        try:
            if topic == self.topics.detections:
                self.on_detections(decode(value, Detections))
            elif topic == self.topics.zone_metrics:
                self.on_zone_metrics(decode(value, ZoneMetrics))
            elif topic == self.topics.line_counts:
                self.on_line_counts(decode(value, LineCounts))
            elif topic == self.topics.events:
                self.on_event(decode(value, Event))
            elif topic == self.topics.dead_letter:
                letter = decode(value, DeadLetter)
                DEAD_LETTERS.labels(letter.stage, letter.source_topic).inc()
        except SchemaError as exc:
            # Not re-dead-lettered: the stage that owns this topic already does that.
            UNREADABLE.labels(topic).inc()
            log.debug("unreadable message on %s: %s", topic, exc)

    def on_detections(self, detections: Detections) -> None:
        camera = detections.camera_id
        if not self.counted_frames.first_time((camera, detections.seq)):
            return  # a frame detected twice after an inference redelivery counts once
        FRAMES_DETECTED.labels(camera).inc()
        for class_name in detections.class_name:
            DETECTED_OBJECTS.labels(camera, class_name).inc()
        CAMERA_PEOPLE.labels(camera).set(int(detections.class_mask(PERSON_CLASS_ID).sum()))
        DETECTION_LATENCY.labels(camera).observe(max(0.0, time.time() - detections.captured_at))

    def on_zone_metrics(self, metrics: ZoneMetrics) -> None:
        labels = (metrics.camera_id, metrics.zone_id)
        ZONE_PEOPLE.labels(*labels).set(metrics.people_mean)
        ZONE_PEOPLE_MAX.labels(*labels).set(metrics.people_max)
        ZONE_DENSITY.labels(*labels).set(metrics.density_mean_per_m2)
        ZONE_DENSITY_MAX.labels(*labels).set(metrics.density_max_per_m2)
        ZONE_AREA.labels(*labels).set(metrics.area_m2)
        ZONE_RISK.labels(*labels).set(metrics.risk_level.rank)
        ZONE_WINDOW_END.labels(*labels).set(metrics.window_end)
        self.last_window_end[labels] = max(metrics.window_end, self.last_window_end.get(labels, 0.0))
        ZONE_COUNT_RELIABLE.labels(*labels).set(1 if metrics.count_reliable else 0)
        optional_gauges = ((ZONE_PEAK_LOCAL_DENSITY, metrics.peak_local_density_per_m2),
                           (ZONE_SPEED, metrics.mean_speed_m_per_s), (ZONE_PRESSURE, metrics.crowd_pressure_per_s2),
                           (ZONE_DETECTOR_PEOPLE, metrics.detector_people_mean),
                           (ZONE_MODEL_PEOPLE, metrics.density_model_people_mean),
                           (ZONE_SECONDS_TO_DANGER, metrics.seconds_to_threshold.get("danger")))
        for gauge, value in optional_gauges:
            if value is None:
                _remove(gauge, labels)  # not measured in this window: no stale value left behind
            else:
                gauge.labels(*labels).set(value)
        for point in metrics.forecast:
            horizon = f"{point.horizon_s / 60:g}"
            ZONE_FORECAST.labels(*labels, horizon).set(point.density_per_m2)
            ZONE_FORECAST_UPPER.labels(*labels, horizon).set(point.upper_per_m2)
        if self.counted_windows.first_time(("zone", *labels, metrics.window_start)):
            ZONE_CROSSINGS.labels(*labels, "in").inc(metrics.inflow)
            ZONE_CROSSINGS.labels(*labels, "out").inc(metrics.outflow)

    def mark_stale_zones(self, now: float) -> None:
        for labels, window_end in self.last_window_end.items():
            if now - window_end > self.stale_after_s:
                ZONE_RISK.labels(*labels).set(RiskLevel.UNKNOWN.rank)

    def on_line_counts(self, counts: LineCounts) -> None:
        if not self.counted_windows.first_time(("line", counts.camera_id, counts.line_id, counts.window_start)):
            return  # a redelivered window must not be counted twice
        for class_name, direction, count in zip(counts.class_name, counts.direction, counts.count, strict=True):
            LINE_CROSSINGS.labels(counts.camera_id, counts.line_id, class_name, direction).inc(count)
            if counts.lane_id is not None:
                LANE_CROSSINGS.labels(counts.camera_id, counts.lane_id, class_name, direction).inc(count)

    def on_event(self, event: Event) -> None:
        # Redelivered "opened" messages carry the same event id, so they are not counted twice.
        if self.open_events.apply(event):
            EVENTS.labels(event.camera_id, event.type, event.severity.value).inc()
        counts = self.open_events.counts(time.time())
        for labels in self._open_labels | set(counts):
            EVENTS_OPEN.labels(*labels).set(counts.get(labels, 0))
        self._open_labels |= set(counts)

    def update_lag(self, group: str, group_reader: KafkaConsumer) -> None:
        """Lag of another group on the detections topic: our fetch high-watermark minus its committed offset."""
        for tp in self.consumer.assignment():
            if tp.topic != self.topics.detections:
                continue
            highwater = self.consumer.highwater(tp)
            committed = group_reader.committed(TopicPartition(tp.topic, tp.partition)) or 0
            if highwater is not None:
                CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(max(0, highwater - committed))

    def run(self, stop: threading.Event) -> None:
        last_lag = 0.0
        while not stop.is_set():
            for records in self.consumer.poll(timeout_ms=500).values():
                for record in records:
                    self.handle(record.topic, record.value)
            if time.monotonic() - last_lag > 5:
                BROKER_CONNECTED.labels("metrics-sink").set(1 if self.consumer.bootstrap_connected() else 0)
                self.mark_stale_zones(time.time())
                for group, group_reader in self.group_readers.items():
                    self.update_lag(group, group_reader)
                last_lag = time.monotonic()
