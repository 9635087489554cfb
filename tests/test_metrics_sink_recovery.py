"""A restarted metrics sink still shows the incidents opened before it started (read back from the events topic), and
a running one stops showing an incident whose resolve never came once it expires, though no other event arrives."""
import threading
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from infra.kafka import create_topics, make_consumer, make_producer
from schemas import Event, EventState, Severity, encode
from schemas.settings.config import Config, TopicNames
from sinks.metrics_exporter import EVENTS_OPEN, MetricsSink, OpenEvents

pytestmark = pytest.mark.broker


def event(event_id: str, state: EventState, at: float) -> Event:
    return Event(event_id=event_id, type="stopped_vehicle", state=state, severity=Severity.WARNING,
                 camera_id="recovery-cam", started_at=at, updated_at=at, confidence=0.9, reason="stopped in lane")


def site(kafka_bootstrap: str) -> tuple[Config, TopicNames]:
    """A site of one camera with topics of its own on the test broker."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicNames(**{name: f"{value}.{suffix}" for name, value in TopicNames().model_dump().items()})
    config = Config(site=f"recovery-{suffix}", broker={"partitions": 1, "topics": topics.model_dump()},
                    cameras=[{"id": "recovery-cam", "source": "a.mp4"}])
    create_topics(kafka_bootstrap, topics.all(), 1)
    return config, topics


def test_incidents_open_before_a_restart_are_open_after_it(kafka_bootstrap):
    config, topics = site(kafka_bootstrap)
    now = time.time()
    producer = make_producer(kafka_bootstrap)
    for message in (event("a", EventState.OPENED, now), event("b", EventState.OPENED, now),
                    event("b", EventState.RESOLVED, now + 1)):
        producer.send(topics.events, key=b"recovery-cam", value=encode(message))
    producer.flush()
    producer.close()

    def sink(recovery=None) -> MetricsSink:
        consumer = make_consumer(kafka_bootstrap, config.group_id("metrics-sink"), topics.events,
                                 enable_auto_commit=False)
        return MetricsSink(config, consumer, {}, recovery)

    labels = {"camera": "recovery-cam", "type": "stopped_vehicle", "severity": "warning"}
    first = sink()  # the sink before the restart: reads the three events and commits past them
    read = 0
    deadline = time.monotonic() + 30
    while read < 3 and time.monotonic() < deadline:
        for records in first.consumer.poll(timeout_ms=500).values():
            for record in records:
                first.handle(record.topic, record.value)
                read += 1
    first.consumer.commit()
    first.consumer.close()
    assert REGISTRY.get_sample_value("cityguard_events_open", labels) == 1

    EVENTS_OPEN.labels(*labels.values()).set(0)  # what a new process starts from
    reader = make_consumer(kafka_bootstrap, None)
    restarted = sink(reader)
    try:
        while not restarted.consumer.assignment() and time.monotonic() < deadline:
            assert not restarted.consumer.poll(timeout_ms=500), "it goes on past the events read before"
        restarted.follow_assignment(time.time())  # takes the partition: reads back what is open on it
    finally:
        reader.close()
        restarted.consumer.close()
    assert REGISTRY.get_sample_value("cityguard_events_open", labels) == 1  # a, still open; b resolved


def test_an_incident_whose_resolve_never_comes_leaves_the_open_gauge_once_it_expires_with_no_other_event(
        kafka_bootstrap):
    config, topics = site(kafka_bootstrap)
    labels = {"camera": "recovery-cam", "type": "stopped_vehicle", "severity": "warning"}
    opened_before = REGISTRY.get_sample_value("cityguard_events_total", labels) or 0
    producer = make_producer(kafka_bootstrap)
    # Opened almost as long ago as an incident stays open without news: it expires seconds after it is read.
    expires_at = time.time() + 15
    producer.send(topics.events, key=b"recovery-cam",
                  value=encode(event("lost-resolve", EventState.OPENED, expires_at - OpenEvents().max_open_seconds)))
    producer.flush()
    producer.close()
    consumer = make_consumer(kafka_bootstrap, config.group_id("metrics-sink"), topics.events)
    sink = MetricsSink(config, consumer, {})
    stop = threading.Event()
    running = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    running.start()
    try:
        deadline = time.monotonic() + 60
        while (REGISTRY.get_sample_value("cityguard_events_total", labels) or 0) == opened_before \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert REGISTRY.get_sample_value("cityguard_events_total", labels) == opened_before + 1, "the event was read"
        while (time.time() < expires_at or REGISTRY.get_sample_value("cityguard_events_open", labels) != 0) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert REGISTRY.get_sample_value("cityguard_events_open", labels) == 0, "the expired incident is not open"
    finally:
        stop.set()
        running.join()
        consumer.close()
