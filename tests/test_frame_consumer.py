"""The inference stage's librdkafka frames consumer against a real broker: it reads, rewinds and commits as
kafka-python's consumer does, which the consume-confirm-commit loop relies on."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import closing

import pytest
from kafka import OffsetAndMetadata, TopicPartition

from infra.consume_loop import rewind
from infra.frame_client import FrameConsumer
from infra.kafka import create_topics, make_consumer, make_producer, reset_positions_past_the_end

pytestmark = pytest.mark.broker


def new_topic(servers: str, partitions: int, per_partition: int) -> tuple[str, str]:
    """A fresh frames topic holding per_partition records on each partition, and a fresh consumer group."""
    topic, group = f"frames-{uuid.uuid4().hex[:8]}", f"inference-{uuid.uuid4().hex[:8]}"
    create_topics(servers, [topic], partitions)
    fill(servers, topic, per_partition, partitions)
    return topic, group


def fill(servers: str, topic: str, per_partition: int, partitions: int) -> None:
    producer = make_producer(servers)
    for partition in range(partitions):
        for index in range(per_partition):
            producer.send(topic, value=f"{partition}-{index}".encode(), partition=partition)
    producer.flush()
    producer.close()


def read(consumer: FrameConsumer, count: int, max_records: int = 500,
         after_poll: Callable[[], None] | None = None) -> list:
    """`count` records, polled as the inference stage polls; after_poll runs after each poll, as the stage's commit
    and checks do."""
    records = []
    deadline = time.monotonic() + 30
    while len(records) < count:
        assert time.monotonic() < deadline, f"read {len(records)} of {count}"
        for batch in consumer.poll(timeout_ms=500, max_records=min(max_records, count - len(records))).values():
            records.extend(batch)
        if after_poll is not None:
            after_poll()
    return records


def committed(servers: str, group: str, partition: TopicPartition) -> int | None:
    reader = make_consumer(servers, group)
    try:
        return reader.committed(partition)
    finally:
        reader.close(autocommit=False)


def commit_for(servers: str, group: str, partition: TopicPartition, offset: int) -> None:
    """The group's commit as another member left it."""
    other = make_consumer(servers, group)
    try:
        other.assign([partition])
        other.commit({partition: OffsetAndMetadata(offset, "", -1)})
    finally:
        other.close(autocommit=False)


def test_a_rewound_partition_is_not_committed_past_when_another_partitions_batch_is(kafka_bootstrap):
    topic, group = new_topic(kafka_bootstrap, 2, 5)
    with closing(FrameConsumer(kafka_bootstrap, group, topic)) as consumer:
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


def test_a_poll_hands_out_what_has_arrived_without_waiting_for_a_full_batch(kafka_bootstrap):
    topic, group = new_topic(kafka_bootstrap, 1, 3)
    with closing(FrameConsumer(kafka_bootstrap, group, topic)) as consumer:
        assert len(read(consumer, 3, max_records=64)) == 3  # max_records is a bound: three are handed out
        started = time.monotonic()
        assert consumer.poll(timeout_ms=1_000, max_records=64) == {}
        assert time.monotonic() - started < 10  # nothing more came: back after the timeout, not stuck
        assert consumer.highwater(TopicPartition(topic, 0)) == 3  # from the fetch responses
        assert consumer.assignment() == {TopicPartition(topic, 0)}


def test_a_restarted_consumer_resumes_from_the_groups_commit(kafka_bootstrap):
    topic, group = new_topic(kafka_bootstrap, 1, 6)
    with closing(FrameConsumer(kafka_bootstrap, group, topic)) as consumer:
        read(consumer, 4, max_records=4)
        consumer.commit()
    with closing(FrameConsumer(kafka_bootstrap, group, topic)) as consumer:
        assert [record.offset for record in read(consumer, 2)] == [4, 5]
        assert consumer.position(TopicPartition(topic, 0)) == 6


def test_a_committed_position_past_a_recreated_partitions_end_is_read_from_the_start(kafka_bootstrap):
    topic, group = new_topic(kafka_bootstrap, 1, 3)
    partition = TopicPartition(topic, 0)
    commit_for(kafka_bootstrap, group, partition, 1_000)  # committed before the topic was recreated
    with closing(FrameConsumer(kafka_bootstrap, group, topic)) as consumer:
        records = read(consumer, 3, max_records=64, after_poll=lambda: reset_positions_past_the_end(consumer, group))
        assert [record.offset for record in records] == [0, 1, 2]
        consumer.commit()
        assert committed(kafka_bootstrap, group, partition) == 3


def test_a_partition_given_back_after_a_rebalance_goes_on_from_its_new_commit(kafka_bootstrap):
    topic, group = new_topic(kafka_bootstrap, 2, 5)
    with closing(FrameConsumer(kafka_bootstrap, group, topic)) as first:
        read(first, 10)
        first.commit()
        # Another worker joins, takes one partition and reads on there; then it leaves.
        with closing(FrameConsumer(kafka_bootstrap, group, topic)) as second:
            deadline = time.monotonic() + 30
            while len(first.assignment()) != 1 or len(second.assignment()) != 1:
                assert time.monotonic() < deadline, "no rebalance"
                first.poll(timeout_ms=200)
                second.poll(timeout_ms=200)
            (moved,) = second.assignment()
            fill(kafka_bootstrap, topic, 4, 2)
            assert {record.partition for record in read(second, 4)} == {moved.partition}
            second.commit()
        fill(kafka_bootstrap, topic, 2, 2)

        def as_the_stage() -> None:
            first.commit()  # each batch is committed: a rebalance then redelivers nothing already read
            # The end cached from before the partition moved (5) is not this assignment's: unknown until a fetch says.
            assert first.highwater(moved) in (None, 11)
            reset_positions_past_the_end(first, group)

        records = read(first, 8, max_records=64, after_poll=as_the_stage)  # 6 where it stayed, 2 on the one given back
        kept = 1 - moved.partition
        assert sorted(record.offset for record in records if record.partition == kept) == [5, 6, 7, 8, 9, 10]
        # Given back where the other worker left it: neither its records again nor the partition's start.
        assert sorted(record.offset for record in records if record.partition == moved.partition) == [9, 10]
        assert first.poll(timeout_ms=1_000) == {}
