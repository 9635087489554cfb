"""Metrics sink: detections, zone metrics and dead letters from their topics -> Prometheus gauges and counters.

Labels are camera, zone, class and stage only (never a track id), so series stay bounded as the system runs.
Each stage process also serves its own operational metrics (frames produced, inference latency, lag); this sink
serves what is derived from the data topics, plus the analytics group's lag on the detections topic.
"""
from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from cityguard.config import Config
from schemas import PERSON_CLASS_ID, DeadLetter, Detections, SchemaError, ZoneMetrics, decode

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
DEAD_LETTERS = Counter("cityguard_dead_letters_total", "Messages sent to the dead-letter topic", ["stage", "topic"])
UNREADABLE = Counter("cityguard_metrics_sink_unreadable_total", "Messages this sink could not parse", ["topic"])
CONSUMER_LAG = Gauge("cityguard_consumer_lag_messages", "Messages behind the high-watermark",
                     ["group", "topic", "partition"])


class MetricsSink:
    def __init__(self, config: Config, consumer: KafkaConsumer, group_readers: dict[str, KafkaConsumer]):
        self.topics = config.broker.topics
        self.consumer = consumer
        # One idle consumer per watched group (never subscribed), used only to read that group's committed offsets.
        self.group_readers = group_readers

    def handle(self, topic: str, value: bytes | None) -> None:
        try:
            if topic == self.topics.detections:
                self.on_detections(decode(value, Detections))
            elif topic == self.topics.zone_metrics:
                self.on_zone_metrics(decode(value, ZoneMetrics))
            elif topic == self.topics.dead_letter:
                letter = decode(value, DeadLetter)
                DEAD_LETTERS.labels(letter.stage, letter.source_topic).inc()
        except SchemaError as exc:
            # Not re-dead-lettered: the stage that owns this topic already does that.
            UNREADABLE.labels(topic).inc()
            log.debug("unreadable message on %s: %s", topic, exc)

    @staticmethod
    def on_detections(detections: Detections) -> None:
        camera = detections.camera_id
        FRAMES_DETECTED.labels(camera).inc()
        for class_name in detections.class_name:
            DETECTED_OBJECTS.labels(camera, class_name).inc()
        CAMERA_PEOPLE.labels(camera).set(int(detections.class_mask(PERSON_CLASS_ID).sum()))
        DETECTION_LATENCY.labels(camera).observe(max(0.0, time.time() - detections.captured_at))

    @staticmethod
    def on_zone_metrics(metrics: ZoneMetrics) -> None:
        labels = (metrics.camera_id, metrics.zone_id)
        ZONE_PEOPLE.labels(*labels).set(metrics.people_mean)
        ZONE_PEOPLE_MAX.labels(*labels).set(metrics.people_max)
        ZONE_DENSITY.labels(*labels).set(metrics.density_mean_per_m2)
        ZONE_DENSITY_MAX.labels(*labels).set(metrics.density_max_per_m2)
        ZONE_AREA.labels(*labels).set(metrics.area_m2)
        ZONE_RISK.labels(*labels).set(metrics.risk_level.rank)
        ZONE_WINDOW_END.labels(*labels).set(metrics.window_end)

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
                for group, group_reader in self.group_readers.items():
                    self.update_lag(group, group_reader)
                last_lag = time.monotonic()
