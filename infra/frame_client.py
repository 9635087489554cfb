"""The frames' Kafka clients: librdkafka (confluent-kafka), each reduced to what its stage uses. `FrameClient` sends
frames for the producer (send with an acknowledgement callback, flush, close, whether the broker is reachable);
`FrameConsumer` reads them for the inference stage, behind the part of kafka-python's consumer that the stage and
the consume-confirm-commit loop call.

Why a second client: frames are the heavy traffic, and kafka-python batches, encodes and parses requests and records
in Python. A producer process is a hundred camera reader threads sharing one GIL, and each of kafka-python's steps
waits for it behind the readers: measured with 100 cameras on 2 cores it took about 1 ms of CPU per frame there
(0.3 ms in a process of its own). The inference stage reading frames with kafka-python spent 0.1-0.25 ms of CPU per
frame more than with librdkafka (README, Scaling), out of a GPU worker's 0.86 ms. librdkafka does that work in its
own C threads. Every other stage keeps kafka-python (or faust's aiokafka): they move a few small messages per frame.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka import TopicPartition
from kafka.errors import CommitFailedError
from kafka.errors import KafkaError as ClientError

from infra.kafka import HEARTBEAT_INTERVAL_MS, MAX_MESSAGE_BYTES, SESSION_TIMEOUT_MS

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1  # acknowledgements are handed to their callbacks at least this often
STATISTICS_INTERVAL_MS = 1000  # how often the client reports its connections (bootstrap_connected)


class ClientHealth:
    """What a librdkafka client's callbacks report: whether a broker connection was up at the last statistics report
    (each second), and its errors, each said once until another comes or the connection is back (so the next outage
    is said again). They run on the thread that polls the client."""

    def __init__(self, name: str):
        self.name = name
        self.connected = False
        self._last_error = ""

    def settings(self) -> dict:
        return {
            "statistics.interval.ms": STATISTICS_INTERVAL_MS,
            "stats_cb": self.statistics,
            "error_cb": self.report,
            # Errors come through error_cb, said once each; librdkafka's own log repeats every failed connection
            # attempt of an outage.
            "log_level": 2,
            "logger": log,
        }

    def statistics(self, report: str) -> None:
        brokers = json.loads(report).get("brokers", {}).values()
        connected = any(broker.get("state") == "UP" for broker in brokers)
        if connected and not self.connected and self._last_error:
            log.info("%s: connected to the broker", self.name)
            self._last_error = ""
        self.connected = connected

    def report(self, error: KafkaError) -> None:
        # Broker outages repeat the same error every few seconds: said once until something else happens.
        text = error.str()
        if text != self._last_error:
            log.warning("%s: %s", self.name, text)
            self._last_error = text


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
        self._health = ClientHealth("frame client")
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
            **self._health.settings(),
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
        return self._health.connected

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


# Commit errors that mean the group has moved partitions on: their new owner reads the batch again.
MOVED_ON = {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
            KafkaError._ASSIGNMENT_LOST}
COMMITTED_LOOKUP_S = 5.0  # for a newly assigned partition's starting position


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """A consumed message, with the fields of kafka-python's ConsumerRecord that the stages read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # milliseconds since the epoch


class FrameConsumer:
    """A librdkafka group consumer that reads, commits and rewinds as kafka-python's KafkaConsumer does, as far as the
    inference stage and the consume-confirm-commit loop use it; partitions are kafka-python's TopicPartition, errors
    its KafkaError (CommitFailedError when the group moved the partitions on).

    The partitions owned and their positions are kept here, as kafka-python keeps them, not in librdkafka's offset
    store. Ownership changes only in the rebalance callbacks (which run inside poll), so a record of a partition taken
    away during a poll is neither handed out nor committed. A commit names, for each partition owned, the offset after
    the last record handed out or where a seek put it: with the store, a batch rewound on one partition would be
    committed past as soon as the next batch, from another partition, was committed.
    """

    def __init__(self, bootstrap_servers: str, group_id: str, *topics: str):
        self._health = ClientHealth("frame consumer")
        self._owned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        # The cached end of each partition owned before it was owned this time: it is not this assignment's until a
        # fetch has answered (a record handed out, or the value changed).
        self._stale_ends: dict[TopicPartition, int] = {}
        # infra.kafka.consumer_settings' choices, under librdkafka's names.
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,  # offsets are committed only after the output is produced
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
            "fetch.max.bytes": 4 * MAX_MESSAGE_BYTES,
            **self._health.settings(),
        })
        self._consumer.subscribe(list(topics), on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._revoked)

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[TopicPartition, list[FrameRecord]]:
        """Records already fetched, up to max_records, waiting up to timeout_ms for the first one (as kafka-python's
        poll; librdkafka's consume would wait for all max_records). A rebalance it runs may take a few seconds more
        (the committed offsets of the partitions newly owned are read)."""
        first = self._consumer.poll(timeout_ms / 1000)
        if first is None:
            return {}
        messages = [first, *(self._consumer.consume(max_records - 1, 0) if max_records > 1 else ())]
        polled: dict[TopicPartition, list[FrameRecord]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self._health.report(error)
                continue
            partition = TopicPartition(message.topic(), message.partition())
            if partition not in self._owned:  # taken away by a rebalance in this poll: its new owner reads it
                continue
            polled.setdefault(partition, []).append(FrameRecord(
                message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                message.timestamp()[1]))
            self._positions[partition] = message.offset() + 1
            self._stale_ends.pop(partition, None)
        return polled

    def commit(self) -> None:
        """Commits the position of each partition owned that has one, and waits for the broker to confirm it."""
        offsets = [RdTopicPartition(tp.topic, tp.partition, offset) for tp, offset in self._positions.items()]
        if not offsets:
            return
        try:
            committed = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise _client_error(exc.args[0]) from None
        # Errors of single partitions may come back in the result instead of raising.
        failed = next((tp.error for tp in committed or () if tp.error is not None), None)
        if failed is not None:
            raise _client_error(failed)

    def assignment(self) -> set[TopicPartition]:
        return set(self._owned)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._seek(partition, offset)
        self._positions[partition] = offset

    def seek_to_beginning(self, partition: TopicPartition) -> None:
        self._seek(partition, OFFSET_BEGINNING)
        # Known again from the first record read: a commit before it leaves the partition's commit as it was, never
        # ahead of what was read.
        self._positions.pop(partition, None)

    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None:
        """The offset of the next record to hand out; None before the first one when the group has none committed."""
        return self._positions.get(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        """The end of a partition owned, as a fetch response of this assignment gave it (not ListOffsets, which Tansu
        gets wrong); None until one has. An end cached from before is not taken instead (a partition given back
        would look past it and be read again from its start), so after a rebalance an idle partition's lag, and a
        position past its end, are known once its next record arrives."""
        if partition not in self._owned:
            return None
        end = self._cached_end(partition)
        if end == self._stale_ends.get(partition, end - 1):
            return None
        self._stale_ends.pop(partition, None)
        return end if end >= 0 else None

    def bootstrap_connected(self) -> bool:
        """Whether the client had a broker connection up at its last statistics report (each second)."""
        return self._health.connected

    def close(self) -> None:
        self._consumer.close()

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(RdTopicPartition(partition.topic, partition.partition, offset))
        except KafkaException as exc:
            raise ClientError(f"seek on {partition.topic}[{partition.partition}] failed: {exc.args[0].str()}") from None

    def _cached_end(self, partition: TopicPartition) -> int:
        try:
            watermarks = self._consumer.get_watermark_offsets(
                RdTopicPartition(partition.topic, partition.partition), cached=True)
        except KafkaException:
            return -1
        return watermarks[1] if watermarks else -1

    def _assigned(self, consumer: Consumer, partitions: list[RdTopicPartition]) -> None:
        # A new partition starts at the group's committed offset, read once here and handed to librdkafka with the
        # assignment (it would otherwise read it again, and a commit between the two reads would set them apart): as
        # kafka-python's position() says before the first record, so a committed position past the partition's end
        # (a topic recreated) is found and reset like any other.
        owned = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        stale_ends = {tp: self._cached_end(tp) for tp in owned}
        try:
            committed = consumer.committed(partitions, timeout=COMMITTED_LOOKUP_S)
        except KafkaException as exc:
            log.warning("frame consumer: committed offsets of %d partitions not read: %s", len(partitions), exc)
            committed = None  # librdkafka assigns them itself, reading the commits then
        if committed is not None:
            for tp in committed:
                if tp.error is not None or tp.offset < 0:
                    tp.offset = OFFSET_INVALID  # the commit, or the reset policy where there is none
            consumer.assign(committed)  # owned only once this has worked: it raises out of poll otherwise
            self._positions.update((TopicPartition(tp.topic, tp.partition), tp.offset)
                                   for tp in committed if tp.offset >= 0)
        self._owned.update(owned)
        self._stale_ends.update(stale_ends)

    def _revoked(self, _consumer: Consumer, partitions: list[RdTopicPartition]) -> None:
        for tp in partitions:
            partition = TopicPartition(tp.topic, tp.partition)
            self._owned.discard(partition)
            self._positions.pop(partition, None)
            self._stale_ends.pop(partition, None)


def _client_error(error: KafkaError) -> ClientError:
    if error.code() in MOVED_ON:
        return CommitFailedError(error.str())
    return ClientError(error.str())
