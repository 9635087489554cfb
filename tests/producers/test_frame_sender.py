"""The frame sender bounds the bytes the broker has not acknowledged, so an outage drops (and counts) frames instead of
growing memory: against futures the test resolves as a broker would, and against a real broker that stops answering."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from infra.broker import EmbeddedBroker
from infra.frame_client import NotDelivered
from infra.kafka import create_topics
from producers.frame_producer import (
    FrameQueue,
    FrameSender,
    LostFrames,
    frame_client,
    run_producer,
)
from producers.health import CameraHealth
from schemas.settings.config import ConfigError, parse_config
from tests.conftest import VTEST

FRAME_BYTES = 10_000


def metric(name: str, camera: str) -> float:
    return REGISTRY.get_sample_value(name, {"camera": camera}) or 0.0


class HeldProducer:
    """The frame client's send() as a broker that answers only when the test says: each send's acknowledgement
    callback waits until acknowledge() or fail()."""

    def __init__(self):
        self.pending: list = []  # acknowledgement callbacks, oldest first
        self.sent: list[str] = []  # the camera of each frame, in the order sent
        self._lock = threading.Lock()  # send() runs on the sender's thread

    def send(self, topic: str, key: bytes, value: bytes, acknowledged) -> None:
        with self._lock:
            self.pending.append(acknowledged)
            self.sent.append(key.decode())

    def take_pending(self, count: int | None) -> list:
        with self._lock:
            taken = self.pending[:count]
            del self.pending[:len(taken)]
        return taken

    def acknowledge(self, count: int | None = None) -> None:
        for acknowledged in self.take_pending(count):
            acknowledged(None)

    def fail(self) -> None:
        for acknowledged in self.take_pending(None):
            acknowledged(NotDelivered("Local: Message timed out"))


def cameras(count: int) -> list[str]:
    suffix = uuid.uuid4().hex[:8]
    return [f"sender-{suffix}-{index}" for index in range(count)]


def sender_for(camera_ids: list[str], producer, max_in_flight_bytes: int, queue_frames: int = 4,
               failures: LostFrames | None = None):
    ready = threading.Event()
    queues = {camera: FrameQueue(queue_frames, ready) for camera in camera_ids}
    health = {camera: CameraHealth(camera, 3, 5.0, 1.0, 5.0) for camera in camera_ids}
    return FrameSender(producer, "frames", queues, health, ready, max_in_flight_bytes, failures), queues, health


def test_unacknowledged_frames_stop_the_sender_at_the_cap_and_the_queues_drop_the_oldest():
    camera_ids = cameras(3)
    producer = HeldProducer()
    sender, queues, _ = sender_for(camera_ids, producer, max_in_flight_bytes=5 * FRAME_BYTES)
    stop = threading.Event()
    dropped = 0
    for index in range(20):  # an outage: the readers keep capturing, the broker acknowledges nothing
        for camera in camera_ids:
            dropped += queues[camera].put(index.to_bytes(2, "big") * (FRAME_BYTES // 2), wait=False, stop=stop)
        sender.send_round(finishing=False)
    assert sender.in_flight.bytes == 5 * FRAME_BYTES  # the cap, reached and held
    assert len(producer.sent) == 5
    assert all(len(queues[camera]) == 4 for camera in camera_ids)
    assert dropped == 3 * 20 - 5 - 3 * 4  # everything neither in flight nor queued was dropped
    first, second, third = camera_ids
    assert producer.sent == [first, second, third, first, second]

    producer.acknowledge(2)  # the broker answers again: room for two more frames
    assert sender.in_flight.bytes == 3 * FRAME_BYTES
    assert sender.send_round(finishing=False) == 2
    assert sender.in_flight.bytes == 5 * FRAME_BYTES
    assert producer.sent[5:] == [third, first]  # the round goes on where the cap stopped the last one


def test_acknowledgements_resume_a_running_sender_and_count_what_the_broker_took():
    camera_ids = cameras(2)
    producer = HeldProducer()
    sender, queues, health = sender_for(camera_ids, producer, max_in_flight_bytes=2 * FRAME_BYTES)
    done, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=sender.run, args=(done,), daemon=True)
    thread.start()
    try:
        for camera in camera_ids:
            for _ in range(3):
                queues[camera].put(b"f" * FRAME_BYTES, wait=False, stop=stop)
        deadline = time.monotonic() + 5
        while len(producer.sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # several of the sender's waits: it must still be holding at the cap
        assert len(producer.sent) == 2 and sender.in_flight.bytes == 2 * FRAME_BYTES
        before = metric("cityguard_frames_produced_total", camera_ids[0])
        while len(producer.sent) < 6 and time.monotonic() < deadline:
            producer.acknowledge()
            time.sleep(0.01)
        assert len(producer.sent) == 6, "the sender did not resume after the acknowledgements"
        producer.acknowledge()
    finally:
        done.set()
        thread.join(5)
    assert not thread.is_alive() and sender.in_flight.bytes == 0
    assert metric("cityguard_frames_produced_total", camera_ids[0]) - before == 3
    assert metric("cityguard_frame_bytes_total", camera_ids[0]) >= 3 * FRAME_BYTES
    assert all(health[camera].status().dropped_frames == 0 for camera in camera_ids)


def test_failed_sends_free_their_room_and_are_counted_and_logged_once_per_interval(caplog):
    camera_ids = cameras(1)
    camera = camera_ids[0]
    producer = HeldProducer()
    now = [100.0]
    sender, queues, health = sender_for(camera_ids, producer, max_in_flight_bytes=10 * FRAME_BYTES, queue_frames=10,
                                        failures=LostFrames("not delivered", log_interval_s=10, clock=lambda: now[0]))
    stop = threading.Event()
    for _ in range(6):
        queues[camera].put(b"f" * FRAME_BYTES, wait=False, stop=stop)
    for _ in range(6):
        sender.send_round(finishing=False)
    with caplog.at_level(logging.WARNING, logger="producers.frame_producer"):
        producer.fail()
        now[0] += 11
        queues[camera].put(b"f" * FRAME_BYTES, wait=False, stop=stop)
        sender.send_round(finishing=False)
        producer.fail()
    assert sender.in_flight.bytes == 0
    assert metric("cityguard_frames_send_failed_total", camera) == 7
    assert metric("cityguard_camera_dropped_frames_total", camera) == 7
    assert health[camera].status().dropped_frames == 7
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2, warnings  # the first failure, then the five held back plus the next one
    assert warnings[0].startswith(f"camera {camera}: 1 frame(s) not delivered: Local: Message timed out")
    assert warnings[1].startswith(f"camera {camera}: 6 frame(s) not delivered")


def test_a_send_the_client_refuses_is_counted_and_frees_its_room():
    camera_ids = cameras(1)

    class RefusingProducer:
        def send(self, topic, key, value, acknowledged):
            acknowledged(NotDelivered("refused by the client: Local: Queue full"))

    sender, queues, _ = sender_for(camera_ids, RefusingProducer(), max_in_flight_bytes=FRAME_BYTES)
    queues[camera_ids[0]].put(b"f" * FRAME_BYTES, wait=False, stop=threading.Event())
    assert sender.send_round(finishing=False) == 1
    assert sender.in_flight.bytes == 0
    assert metric("cityguard_frames_send_failed_total", camera_ids[0]) == 1


def test_in_flight_cap_must_hold_one_message():
    with pytest.raises(ConfigError, match="max_in_flight_bytes"):
        parse_config({"site": "s", "cameras": [{"id": "a", "source": "x.mp4"}],
                      "producer": {"max_in_flight_bytes": 1_000_000, "max_message_bytes": 2_000_000}}, Path("."))


@pytest.fixture
def own_broker(tmp_path):
    """A broker of the test's own, which it may freeze (the session's broker is shared)."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    yield broker
    os.kill(broker.process.pid, signal.SIGCONT)  # a frozen process would not act on the SIGTERM
    broker.stop()


@pytest.mark.broker
def test_a_broker_that_stops_answering_bounds_memory_drops_frames_and_the_producer_recovers(own_broker, tmp_path):
    """A real broker frozen (SIGSTOP: connections stay open, nothing is answered) for longer than the delivery
    timeout: bytes in flight stay under the cap, the queues drop and count frames, expired sends are counted, and
    frames flow again once it answers (a kafka-python idempotent producer would stay stuck here)."""
    broker = own_broker
    suffix = uuid.uuid4().hex[:8]
    camera_ids = [f"frozen-{suffix}-{index}" for index in range(3)]
    config = parse_config({
        "site": f"frozen-{suffix}",
        "broker": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 1,
                   "topics": {name: f"frozen-{suffix}.{name}" for name in
                              ("frames", "detections", "zone_metrics", "events", "alerts", "camera_status",
                               "dead_letter")}},
        "producer": {"max_in_flight_bytes": 1_000_000, "frame_delivery_timeout_s": 2, "status_interval_s": 1},
        "cameras": [{"id": camera, "source": str(VTEST), "fps": 10, "loop": True} for camera in camera_ids]},
        tmp_path)
    cap = config.producer.max_in_flight_bytes + config.producer.max_message_bytes
    create_topics(broker.bootstrap_servers, config.broker.topics.all(), 1)
    producer = frame_client(broker.bootstrap_servers, config.producer)
    stop = threading.Event()
    thread = threading.Thread(target=run_producer, args=(config, producer, stop), daemon=True)

    def produced() -> float:
        return sum(metric("cityguard_frames_produced_total", camera) for camera in camera_ids)

    thread.start()
    try:
        deadline = time.monotonic() + 10
        while produced() < 10:
            assert time.monotonic() < deadline, "no frames acknowledged before the outage"
            time.sleep(0.05)
        dropped_before = {camera: metric("cityguard_camera_dropped_frames_total", camera) for camera in camera_ids}
        os.kill(broker.process.pid, signal.SIGSTOP)
        peak_in_flight = 0.0
        try:
            frozen_until = time.monotonic() + 4  # twice the delivery timeout
            while time.monotonic() < frozen_until:
                peak_in_flight = max(peak_in_flight, REGISTRY.get_sample_value("cityguard_frames_in_flight_bytes"))
                time.sleep(0.02)
            produced_in_outage = produced()
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        failed = {camera: metric("cityguard_frames_send_failed_total", camera) for camera in camera_ids}
        dropped = {camera: metric("cityguard_camera_dropped_frames_total", camera) - dropped_before[camera]
                   for camera in camera_ids}
        deadline = time.monotonic() + 10
        while produced() < produced_in_outage + 10:
            assert time.monotonic() < deadline, "frames did not flow again after the broker came back"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        producer.close(timeout=5)
    assert 0 < peak_in_flight <= cap, f"{peak_in_flight:.0f} bytes in flight, cap {cap}"
    assert sum(failed.values()) > 0, "no send was given up after the delivery timeout"
    queue_drops = {camera: dropped[camera] - failed[camera] for camera in camera_ids}
    assert all(count > 0 for count in queue_drops.values()), queue_drops
