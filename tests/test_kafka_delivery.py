"""A failed produce must surface, so stages never commit input whose output was lost; a consumer says whether it
reaches the broker."""
import time

import pytest

from infra.broker import EmbeddedBroker
from infra.kafka import ProduceFailed, create_topics, flush_confirmed, make_consumer, make_producer

pytestmark = pytest.mark.broker


def test_flush_confirmed_passes_acknowledged_sends_and_raises_for_lost_ones(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    try:
        create_topics(broker.bootstrap_servers, ["delivery-test"], 1)
        producer = make_producer(broker.bootstrap_servers, retries=0, request_timeout_ms=2000,
                                 delivery_timeout_ms=3000, max_block_ms=3000)
        flush_confirmed(producer, [producer.send("delivery-test", b"acknowledged")])
        broker.stop()
        lost = producer.send("delivery-test", b"nobody will acknowledge this")
        with pytest.raises(ProduceFailed, match="produce failed"):
            flush_confirmed(producer, [lost], timeout_s=10)
        producer.close(timeout=1)
    finally:
        broker.stop()


def test_a_consumer_is_connected_while_it_reads_and_not_once_the_broker_is_gone(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    consumer = make_consumer(broker.bootstrap_servers, "connected-test", "connected-test")
    try:
        create_topics(broker.bootstrap_servers, ["connected-test"], 1)
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            assert time.monotonic() < deadline, "never assigned"
            consumer.poll(timeout_ms=200)
        consumer.poll(timeout_ms=200)
        assert consumer.bootstrap_connected()
        broker.stop()
        deadline = time.monotonic() + 30
        while consumer.bootstrap_connected():
            assert time.monotonic() < deadline, "still connected with the broker gone"
            consumer.poll(timeout_ms=200)
    finally:
        consumer.close()
        broker.stop()
