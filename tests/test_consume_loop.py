"""The consume-confirm-commit step's rewind: back to the batch's first offsets on the partitions still assigned."""
from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from kafka import TopicPartition

from infra.consume_loop import rewind
from infra.kafka import create_topics, make_consumer

pytestmark = pytest.mark.broker


def test_a_rewind_after_a_rebalance_leaves_a_partition_taken_away_to_its_new_owner(kafka_bootstrap):
    topic = f"rewind-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], 2)
    consumer = make_consumer(kafka_bootstrap, None)
    try:
        kept, taken = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([kept])  # partition 1 was revoked after the batch was read
        batch = [SimpleNamespace(topic=topic, partition=partition, offset=offset)
                 for partition, offset in ((0, 7), (1, 3), (0, 5), (0, 6))]
        rewind(consumer, batch)
        assert consumer.position(kept) == 5
        assert taken not in consumer.assignment()
    finally:
        consumer.close(autocommit=False)
