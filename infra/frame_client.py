"""The frame producer's Kafka client: librdkafka (confluent-kafka), reduced to what the producer process uses: send
with an acknowledgement callback, flush, close, whether the broker is reachable.

Why a second client: a producer process is a hundred camera reader threads sharing one GIL, and kafka-python batches,
encodes requests and does its socket I/O in Python, each step waiting for the GIL behind the readers. Measured with
100 cameras on 2 cores it took about 1 ms of CPU per frame there (0.3 ms in a process of its own). librdkafka does
all of that in its own C threads; Python only hands it each frame and runs the acknowledgement callback. Every other
stage keeps kafka-python (or faust's aiokafka): they send a few messages per frame, not the frames.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer

from infra.kafka import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1  # acknowledgements are handed to their callbacks at least this often
STATISTICS_INTERVAL_MS = 1000  # how often the client reports its connections (bootstrap_connected)


class NotDelivered(RuntimeError):
    """The client gave up on a message (delivery timeout, broker error) or refused it (its queue full, too large)."""


Acknowledged = Callable[["NotDelivered | None"], None]  # called once: None when the broker acknowledged the message


class FrameClient:
    """A librdkafka producer with a thread that hands acknowledgements to their callbacks.

    Keyed messages go to the partition kafka-python and the Java client pick (murmur2), so a camera's frames land
    where any other client would put them. One request in flight per connection and no idempotence, as for every
    stage (infra.kafka.producer_settings): retries keep each camera's frames in order.
    """

    def __init__(self, bootstrap_servers: str, delivery_timeout_ms: int, linger_ms: int, batch_bytes: int,
                 max_queued_bytes: int):
        self._connected = False
        self._last_error = ""
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            "retries": 5,
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            "batch.size": batch_bytes,
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "delivery.timeout.ms": delivery_timeout_ms,
            "request.timeout.ms": max(1, delivery_timeout_ms // 2),  # room for a retry within the delivery timeout
            "queue.buffering.max.kbytes": max(1, max_queued_bytes // 1024),
            "statistics.interval.ms": STATISTICS_INTERVAL_MS,
            "stats_cb": self._statistics,
            "error_cb": self._error,
            # Errors come through error_cb, said once each; librdkafka's own log repeats every failed connection
            # attempt of an outage.
            "log_level": 2,
            "logger": log,
        })
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="frame-client-poll", daemon=True)
        self._poller.start()

    def send(self, topic: str, key: bytes | None, value: bytes, acknowledged: Acknowledged | None = None) -> None:
        """Queues a message; never blocks. `acknowledged` runs once the broker has acknowledged the message or the
        client has given up on it (on the client's polling thread, or in a flush), and here at once if the client
        refuses it (its queue full, the message too large)."""

        def on_delivery(error, _message) -> None:
            # An exception here would come out of whichever poll() or flush() ran the callback, ending the polling
            # thread (and every acknowledgement after it) or the caller's flush.
            try:
                acknowledged(None if error is None else NotDelivered(error.str()))
            except Exception:
                log.exception("frame client: an acknowledgement callback failed")

        try:
            self._producer.produce(topic, value=value, key=key,
                                   on_delivery=None if acknowledged is None else on_delivery)
        except (BufferError, KafkaException) as exc:
            if acknowledged is not None:
                acknowledged(NotDelivered(f"refused by the client: {exc}"))

    def bootstrap_connected(self) -> bool:
        """Whether the client had a broker connection up at its last statistics report (each second)."""
        return self._connected

    def flush(self, timeout: float | None = None) -> int:
        """Waits for every queued message to be acknowledged or given up; returns how many are still queued."""
        return self._producer.flush(-1 if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        self._closed.set()
        self._poller.join()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_INTERVAL_S)

    def _statistics(self, report: str) -> None:
        brokers = json.loads(report).get("brokers", {}).values()
        self._connected = any(broker.get("state") == "UP" for broker in brokers)

    def _error(self, error) -> None:
        # Broker outages repeat the same error every few seconds: said once until something else happens.
        text = error.str()
        if text != self._last_error:
            log.warning("frame client: %s", text)
            self._last_error = text
