"""The frame producer's librdkafka client against a real broker, and what its callbacks make of outages."""
from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid

import pytest
from confluent_kafka import KafkaError

from infra.frame_client import ClientHealth, FrameClient, NotDelivered
from infra.kafka import MAX_MESSAGE_BYTES, create_topics, key_partition, make_consumer


@pytest.mark.broker
def test_frames_are_acknowledged_on_the_partition_kafka_python_picks(kafka_bootstrap):
    topic = f"frame-client-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 4)
    client = FrameClient(kafka_bootstrap, delivery_timeout_ms=10_000, linger_ms=5, batch_bytes=1_000_000,
                         max_queued_bytes=8_000_000)
    acknowledged, failed = [], []
    done = threading.Event()
    keys = [f"camera-{index}".encode() for index in range(12)]

    def record(key, error):
        if error is not None:
            failed.append(error)
        acknowledged.append(key)
        if len(acknowledged) == len(keys):
            done.set()

    try:
        for key in keys:
            client.send(topic, key, key * 1000, functools.partial(record, key))
        assert done.wait(20) and not failed
        assert client.flush(5) == 0
        deadline = time.monotonic() + 5
        while not client.bootstrap_connected():  # known from the client's statistics, once a second
            assert time.monotonic() < deadline, "no connection reported"
            time.sleep(0.1)
    finally:
        client.close(5)
    consumer = make_consumer(kafka_bootstrap, None, topic)
    partitions = {}
    deadline = time.monotonic() + 20
    while len(partitions) < len(keys) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200).items():
            partitions.update({record.key: tp.partition for record in records})
    consumer.close()
    assert partitions == {key: key_partition(key, 4) for key in keys}  # kafka-python's (and Java's) choice


@pytest.mark.broker
def test_a_message_over_the_size_limit_fails_at_once(kafka_bootstrap):
    client = FrameClient(kafka_bootstrap, delivery_timeout_ms=10_000, linger_ms=5, batch_bytes=1_000_000,
                         max_queued_bytes=64_000_000)
    failures = []
    try:
        client.send("frame-client-oversized", b"camera", b"x" * (MAX_MESSAGE_BYTES + 1), failures.append)
    finally:
        client.close(5)
    assert len(failures) == 1 and isinstance(failures[0], NotDelivered)
    assert "refused by the client" in str(failures[0])


@pytest.mark.broker
def test_a_failing_acknowledgement_callback_does_not_stop_the_next_ones(kafka_bootstrap, caplog):
    topic = f"frame-client-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 1)
    client = FrameClient(kafka_bootstrap, delivery_timeout_ms=10_000, linger_ms=5, batch_bytes=1_000_000,
                         max_queued_bytes=8_000_000)
    second = threading.Event()

    def failing(_error):
        raise KeyError("a camera nobody configured")

    try:
        client.send(topic, b"camera", b"first", failing)
        assert client.flush(10) == 0
        client.send(topic, b"camera", b"second", lambda error: error is None and second.set())
        assert second.wait(10)
    finally:
        client.close(5)
    assert "an acknowledgement callback failed" in caplog.text


def test_an_outage_is_said_once_and_the_next_one_again(caplog):
    """librdkafka repeats an outage's error every few seconds, and the next outage's errors read the same."""
    health = ClientHealth("frame client")
    refused = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: refused")
    up, down = (json.dumps({"brokers": {"127.0.0.1:9092/1": {"state": state}}}) for state in ("UP", "CONNECT"))
    with caplog.at_level(logging.INFO, logger="infra.frame_client"):
        health.statistics(up)
        for _ in range(3):  # an outage
            health.statistics(down)
            health.report(refused)
        assert not health.connected
        health.statistics(up)
        assert health.connected
        for _ in range(3):  # the next one
            health.statistics(down)
            health.report(refused)
    assert caplog.messages == [f"frame client: {refused.str()}", "frame client: connected to the broker",
                               f"frame client: {refused.str()}"]
