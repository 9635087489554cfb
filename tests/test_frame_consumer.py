"""The inference stage's librdkafka frames consumer against a real broker: it reads, rewinds and commits as
kafka-python's consumer does, which the consume-confirm-commit loop relies on."""
from __future__ import annotations

import time
import uuid

import pytest
from kafka import TopicPartition

from infra.consume_loop import rewind
from infra.frame_client import FrameConsumer
from infra.kafka import create_topics, make_consumer, make_producer

pytestmark = pytest.mark.broker


def fill(servers: str, topic: str, per_partition: int, partitions: int) -> None:
    producer = make_producer(servers)
    for partition in range(partitions):
        for index in range(per_partition):
            producer.send(topic, value=f"{partition}-{index}".encode(), partition=partition)
    producer.flush()
    producer.close()


def read(consumer: FrameConsumer, count: int, max_records: int = 500) -> list:
    records = []
    deadline = time.monotonic() + 30
    while len(records) < count:
        assert time.monotonic() < deadline, f"read {len(records)} of {count}"
        for batch in consumer.poll(timeout_ms=500, max_records=min(max_records, count - len(records))).values():
            records.extend(batch)
    return records


def committed(servers: str, group: str, partition: TopicPartition) -> int | None:
    reader = make_consumer(servers, group)
    try:
        return reader.committed(partition)
    finally:
        reader.close(autocommit=False)


def test_a_rewound_partition_is_not_committed_past_when_another_partitions_batch_is(kafka_bootstrap):
    topic, group = f"frames-{uuid.uuid4().hex[:8]}", f"inference-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 2)
    fill(kafka_bootstrap, topic, 5, 2)
    consumer = FrameConsumer(kafka_bootstrap, group, topic)
    try:
        records = read(consumer, 10)
        assert sorted((record.partition, record.offset) for record in records) == [
            (partition, offset) for partition in (0, 1) for offset in range(5)]
        first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
        # The batch's outputs on partition 0 were not confirmed: rewound to its first record there, then the
        # partition 1 batch is committed.
        rewind(consumer, [record for record in records if record.partition == 0])
        assert consumer.position(first) == 0
        consumer.commit()
        assert committed(kafka_bootstrap, group, first) == 0
        assert committed(kafka_bootstrap, group, second) == 5
        again = read(consumer, 5)
        assert [(record.partition, record.offset, record.value) for record in again] == [
            (0, offset, f"0-{offset}".encode()) for offset in range(5)]
        consumer.commit()
        assert committed(kafka_bootstrap, group, first) == 5
    finally:
        consumer.close()


def test_a_poll_hands_out_what_has_arrived_without_waiting_for_a_full_batch(kafka_bootstrap):
    topic, group = f"frames-{uuid.uuid4().hex[:8]}", f"inference-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 1)
    fill(kafka_bootstrap, topic, 3, 1)
    consumer = FrameConsumer(kafka_bootstrap, group, topic)
    try:
        assert len(read(consumer, 3, max_records=64)) == 3  # max_records is a bound: three are handed out
        started = time.monotonic()
        assert consumer.poll(timeout_ms=1_000, max_records=64) == {}
        assert time.monotonic() - started < 10  # nothing more came: back after the timeout, not stuck
        assert consumer.highwater(TopicPartition(topic, 0)) == 3  # from the fetch responses
        assert consumer.assignment() == {TopicPartition(topic, 0)}
    finally:
        consumer.close()


def test_a_restarted_consumer_resumes_from_the_groups_commit(kafka_bootstrap):
    topic, group = f"frames-{uuid.uuid4().hex[:8]}", f"inference-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 1)
    fill(kafka_bootstrap, topic, 6, 1)
    consumer = FrameConsumer(kafka_bootstrap, group, topic)
    try:
        read(consumer, 4, max_records=4)
        consumer.commit()
    finally:
        consumer.close()
    consumer = FrameConsumer(kafka_bootstrap, group, topic)
    try:
        assert [record.offset for record in read(consumer, 2)] == [4, 5]
        assert consumer.position(TopicPartition(topic, 0)) == 6
    finally:
        consumer.close()
