"""The embedded broker killed and started again on the same port (topics, messages and offsets lost): the stages
reconnect and go on instead of exiting."""
import threading
import time

import pytest
from prometheus_client import REGISTRY

from cityguard.config import Config
from infra.broker import EmbeddedBroker
from infra.kafka import create_topics, make_consumer, make_producer
from schemas import encode
from sinks.metrics_exporter import MetricsSink
from tests.test_schemas import detections

pytestmark = pytest.mark.broker


def frames_detected(camera: str) -> float:
    return REGISTRY.get_sample_value("cityguard_frames_detected_total", {"camera": camera}) or 0.0


def send_until(predicate, bootstrap: str, topic: str, make_value, timeout_s: float) -> None:
    """Produces one message a second until the predicate holds (a restarted consumer may join after the first)."""
    producer = make_producer(bootstrap)
    deadline = time.monotonic() + timeout_s
    try:
        seq = 0
        while not predicate():
            assert time.monotonic() < deadline, f"not consumed within {timeout_s} s"
            producer.send(topic, value=make_value(seq))
            producer.flush()
            seq += 1
            time.sleep(1)
    finally:
        producer.close()


def test_the_metrics_sink_outlives_a_broker_restart(tmp_path):
    config = Config(cameras=[{"id": "restart-cam", "source": "x.mp4"}])
    topics = config.broker.topics
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    port = broker.port
    create_topics(broker.bootstrap_servers, topics.all(), 1)
    consumer = make_consumer(broker.bootstrap_servers, "restart-sink", topics.detections, enable_auto_commit=True)
    reader = make_consumer(broker.bootstrap_servers, "restart-analytics")
    sink = MetricsSink(config, consumer, {"restart-analytics": reader})
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        before = frames_detected("restart-cam")
        send_until(lambda: frames_detected("restart-cam") > before, broker.bootstrap_servers, topics.detections,
                   lambda seq: encode(detections(camera_id="restart-cam", seq=seq)), 30)
        broker.stop()
        time.sleep(8)  # the sink's clients fail meanwhile: polls, lag reads, commits
        broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log").start()
        create_topics(broker.bootstrap_servers, topics.all(), 1)
        after_restart = frames_detected("restart-cam")
        send_until(lambda: frames_detected("restart-cam") > after_restart, broker.bootstrap_servers,
                   topics.detections, lambda seq: encode(detections(camera_id="restart-cam", seq=1000 + seq)), 60)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
        consumer.close()
        reader.close(autocommit=False)
        broker.stop()
