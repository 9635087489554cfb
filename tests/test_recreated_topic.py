"""A consumer whose topic was recreated under it (a broker restart) reads the new messages instead of waiting for
the offsets to catch up with its old position, or taking them for messages it already had; a client that refuses the
seek back for a moment is asked again."""
import asyncio
import socket

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from prometheus_client import REGISTRY

from infra.kafka import (
    TopicIdentity,
    create_topics,
    make_consumer,
    make_producer,
    partition_lag,
    reset_positions_past_the_end,
)

pytestmark = pytest.mark.broker


def test_a_position_past_the_end_is_moved_to_the_start(kafka_bootstrap):
    topic = "recreated-topic-test"
    create_topics(kafka_bootstrap, [topic], 1)
    producer = make_producer(kafka_bootstrap)
    for index in range(3):
        producer.send(topic, value=b"new %d" % index)
    producer.flush()
    consumer = make_consumer(kafka_bootstrap, None)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 290)  # where the consumer was in the topic before it was recreated
    try:
        received = []
        for _ in range(20):
            for records in consumer.poll(timeout_ms=200).values():
                received += [record.value for record in records]
            reset_positions_past_the_end(consumer, "test-group")
            if len(received) == 3:
                break
        assert received == [b"new 0", b"new 1", b"new 2"]
        assert REGISTRY.get_sample_value("cityguard_consumer_position_resets_total",
                                         {"group": "test-group", "topic": topic}) == 1
    finally:
        consumer.close()
        producer.close()


class RefusesTheFirstSeek:
    """A consumer past the end of a recreated topic whose client refuses the first seek, as librdkafka does while the
    partition's fetcher changes state."""

    def __init__(self, tp: TopicPartition):
        self.tp, self.seeks, self.at = tp, 0, 290

    def assignment(self) -> set:
        return {self.tp}

    def highwater(self, tp: TopicPartition) -> int:
        return 3

    def position(self, tp: TopicPartition, timeout_ms: int) -> int:
        return self.at

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks += 1
        if self.seeks == 1:
            raise KafkaError("seek on refused-seek[0] failed: Local: Erroneous state")
        self.at = 0


def test_a_refused_seek_to_the_start_is_tried_again_on_the_next_pass():
    tp = TopicPartition("refused-seek", 0)
    consumer = RefusesTheFirstSeek(tp)
    assert reset_positions_past_the_end(consumer, "refusing-group") == []  # the stage goes on
    assert reset_positions_past_the_end(consumer, "refusing-group") == [tp] and consumer.at == 0
    assert REGISTRY.get_sample_value("cityguard_consumer_position_resets_total",
                                     {"group": "refusing-group", "topic": "refused-seek"}) == 1


def test_a_fresh_topic_id_is_waited_for_while_the_broker_cannot_answer(kafka_bootstrap):
    """Judged by the id known before a restart recreated the topic, every new message would look already consumed."""
    topic = "identity-test"
    create_topics(kafka_bootstrap, [topic], 1)
    with socket.socket() as unused:  # a port nothing listens on: the broker is away
        unused.bind(("127.0.0.1", 0))
        away = f"127.0.0.1:{unused.getsockname()[1]}"
    identity = TopicIdentity(away, topic)
    identity.topic_id, identity.looked_up_at = "id-before-the-restart", 0.0
    assert asyncio.run(identity.answer(fresh=False)) == "id-before-the-restart"
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(identity.answer(fresh=True, retry_s=0.1), timeout=3))
    identity.bootstrap_servers = kafka_bootstrap  # the broker is back
    answered = asyncio.run(identity.answer(fresh=True, retry_s=0.1))
    assert answered and answered != "id-before-the-restart"


def test_lag_leaves_out_a_partition_whose_position_cannot_be_looked_up_now_instead_of_waiting_for_it():
    # After a seek to the start (a recreated topic) kafka-python looks the position up again, and with no timeout it
    # waits out a whole broker outage, holding the sink's loop (its stale-zone marking) with it.
    class Consumer:
        asked: list = []

        def assignment(self):
            return {TopicPartition("t", 0), TopicPartition("t", 1)}

        def highwater(self, partition):
            return 10

        def position(self, partition, timeout_ms=None):
            self.asked.append(timeout_ms)
            if partition.partition == 0:
                raise KafkaTimeoutError("position not known within the timeout")
            return 4

    consumer = Consumer()
    assert partition_lag(consumer) == {("t", 1): 6}
    assert all(timeout is not None and timeout <= 5_000 for timeout in consumer.asked)
