"""A rewind the client refuses on one partition: logged, the batch's other partitions still rewound, and the
consume-confirm-commit step returns its error instead of raising out of the stage."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka import TopicPartition
from kafka.errors import IllegalStateError

from infra import frame_client
from infra.consume_loop import RetryBatch, process_batch
from infra.frame_client import FrameConsumer

TOPIC = "frames"


def batch(*offsets: tuple[int, int]) -> list:
    return [SimpleNamespace(topic=TOPIC, partition=partition, offset=offset) for partition, offset in offsets]


def retry(records: list) -> list:
    raise RetryBatch("frame store away")


class RefusingConsumer:
    """kafka-python's consumer as the step sees it, refusing a seek on partition 1."""

    def __init__(self):
        self.positions: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition.partition == 1:
            raise IllegalStateError("no position for the partition yet")
        self.positions[partition] = offset


def test_a_refused_seek_leaves_the_other_partitions_rewound(caplog):
    consumer = RefusingConsumer()
    error = process_batch(consumer, None, batch((1, 3), (0, 7), (0, 5)), retry)
    assert isinstance(error, RetryBatch)
    assert consumer.positions == {TopicPartition(TOPIC, 0): 5}
    assert "rewind of frames[1] to offset 3 refused" in caplog.text


class UnfetchedLibrdkafkaConsumer:
    """librdkafka's consumer with partition 0 assigned again by a rebalance (group commit at offset 5) and not yet
    fetched: it refuses a seek there, as librdkafka does."""

    def __init__(self, settings: dict):
        self.callbacks: dict = {}

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.callbacks = {"assign": on_assign, "revoke": on_revoke}

    def committed(self, partitions, timeout=None):
        return [RdTopicPartition(tp.topic, tp.partition, 5) for tp in partitions]

    def assign(self, partitions):
        pass

    def get_watermark_offsets(self, partition, cached=False):
        return 0, 10

    def seek(self, partition):
        raise KafkaException(RdKafkaError(RdKafkaError._STATE))


@pytest.fixture
def reassigned_frame_consumer(monkeypatch) -> FrameConsumer:
    monkeypatch.setattr(frame_client, "Consumer", UnfetchedLibrdkafkaConsumer)
    consumer = FrameConsumer("127.0.0.1:1", "inference", TOPIC)
    client = consumer._consumer
    client.callbacks["revoke"](client, [RdTopicPartition(TOPIC, 0)])
    client.callbacks["assign"](client, [RdTopicPartition(TOPIC, 0)])
    return consumer


def test_a_partition_assigned_again_during_the_batch_goes_on_from_its_commit(reassigned_frame_consumer, caplog):
    error = process_batch(reassigned_frame_consumer, None, batch((0, 7), (0, 8)), retry)
    assert isinstance(error, RetryBatch)
    assert "Erroneous state" in caplog.text
    # The group's commit, before the batch: the batch is read again and nothing after the commit is skipped.
    assert reassigned_frame_consumer.position(TopicPartition(TOPIC, 0)) == 5
