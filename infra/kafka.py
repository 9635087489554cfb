"""Kafka client settings in one place, including what the embedded Tansu broker needs.

Tansu facts: rebalances take about half the session timeout, so it is 6 s; lag comes
from the fetch high-watermark because ListOffsets is wrong for multi-record batches; faust table recovery needs
one record per batch. crc32c must be importable or kafka-python checksums at ~12 MB/s.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Protocol

import aiokafka
import crc32c  # noqa: F401  (imported so a missing install fails here, not as a 20x slowdown)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # clients' limit; Tansu has none, real Kafka defaults to 1 MB per topic


def producer_settings(bootstrap_servers: str) -> dict:
    return {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "linger_ms": 5,
        "retries": 5,
        "max_request_size": MAX_MESSAGE_BYTES,
        # kafka-python 3.0.12 never re-initialises an idempotent producer after it expires a batch it had sent, so
        # one broker outage longer than the delivery timeout would stop a stage for good. Duplicates from retries are
        # harmless (every consumer is idempotent); one request in flight per connection keeps per-key order.
        "enable_idempotence": False,
        "max_in_flight_requests_per_connection": 1,
    }


def consumer_settings(bootstrap_servers: str, group_id: str | None) -> dict:
    return {
        "bootstrap_servers": bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,  # offsets are committed only after the output is produced
        "auto_offset_reset": "earliest",
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
        "max_partition_fetch_bytes": MAX_MESSAGE_BYTES,
        "fetch_max_bytes": 4 * MAX_MESSAGE_BYTES,
    }


def faust_settings(bootstrap_servers: str, replication_factor: int = 1) -> dict:
    return {
        "broker": ",".join(f"kafka://{server}" for server in bootstrap_servers.split(",")),
        "topic_replication_factor": replication_factor,  # the tables' changelogs
        "broker_session_timeout": SESSION_TIMEOUT_MS / 1000,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_MS / 1000,
        "producer_max_batch_size": 1,
        # Committed offsets only bound what a restart re-reads (the analytics state stores its own input position),
        # so once a second is enough; committing every 50 frames cost 15 % of the worker's CPU.
        "broker_commit_every": 1000,
        "broker_commit_interval": 1.0,
        # As large as the largest message: with faust's 1 MiB fetches the worker sat idle about a second after
        # every two fetches on a backlog (measured on the embedded broker), and a message larger than a fetch must fit.
        "consumer_max_fetch_size": MAX_MESSAGE_BYTES,
        "stream_wait_empty": False,
        "web_enabled": False,
        "consumer_auto_offset_reset": "earliest",
    }


def make_producer(bootstrap_servers: str, **overrides) -> KafkaProducer:
    return KafkaProducer(**{**producer_settings(bootstrap_servers), **overrides})


class Consumer(KafkaConsumer):
    def bootstrap_connected(self) -> bool:
        """Whether the client is connected to a broker of the cluster now: what the stages export as
        cityguard_broker_connected. (kafka-python's own answer is true only while its first connection is being
        set up, so a working stage would read as cut off.)"""
        client = self._client
        return any(client.connected(broker.node_id) for broker in client.cluster.brokers())


def make_consumer(bootstrap_servers: str, group_id: str | None, *topics: str, **overrides) -> Consumer:
    return Consumer(*topics, **{**consumer_settings(bootstrap_servers, group_id), **overrides})


BROKER_CONNECTED = Gauge("cityguard_broker_connected", "1 while the stage's Kafka client reaches the broker",
                         ["stage"])
CONSUMER_LAG = Gauge("cityguard_consumer_lag_messages", "Messages behind the high-watermark",
                     ["group", "topic", "partition"])
# A stage whose loop hangs (a model call, a store read) keeps serving its last lag and connection state: its loop's
# own time is what shows it stuck.
STAGE_LOOP = Gauge("cityguard_stage_loop_timestamp_seconds",
                   "Unix time the stage's consume loop last went round", ["stage"])
# Far beyond a loop's slowest healthy round (a batch of model calls, sends waiting a minute for a broker that is
# away), as long as a consumer group waits for a member before it hands the member's partitions to the others.
LOOP_STUCK_AFTER_S = 300.0
_loop_times: dict[str, float] = {}


def loop_went_round(stage: str) -> None:
    """Marks the stage's consume loop as going round: the metric, and what `stuck_loops` reads for /healthz."""
    STAGE_LOOP.labels(stage).set_to_current_time()
    _loop_times[stage] = time.time()


def stuck_loops(now: float, after_s: float = LOOP_STUCK_AFTER_S) -> list[str]:
    """The loops of this process that have not gone round for `after_s`, in words; none before a loop's first
    round (a stage still loading its model)."""
    return [f"{stage} loop last went round {now - at:.0f} s ago" for stage, at in sorted(_loop_times.items())
            if now - at > after_s]


class ProduceFailed(KafkaError):
    """A message of the batch was not acknowledged: the caller must not commit the batch's input offsets."""


def flush_confirmed(producer: KafkaProducer, futures: list, timeout_s: float = 60) -> None:
    """Flushes and checks every send of the batch; kafka-python's flush() returns even when sends failed."""
    producer.flush(timeout=timeout_s)
    for future in futures:
        try:
            future.get(timeout=0 if future.is_done else timeout_s)
        except KafkaError as exc:
            raise ProduceFailed(f"produce failed: {type(exc).__name__}: {exc}") from exc


async def deliveries_confirmed(deliveries: list) -> None:
    """flush_confirmed for asyncio delivery futures (faust's sends): returns once every one is acknowledged."""
    outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise ProduceFailed(f"produce failed: {type(outcome).__name__}: {outcome}") from outcome


class Positioned(Protocol):
    """What lag and position checks read from a consumer: kafka-python's, or the inference stage's FrameConsumer."""

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None: ...

    def seek_to_beginning(self, partition: TopicPartition) -> None: ...


def partition_lag(consumer: Positioned) -> dict[tuple[str, int], int]:
    """Messages not yet consumed per assigned partition, from the fetch high-watermark (not ListOffsets)."""
    lag = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        try:
            # Bounded: a position still to be looked up (after a seek to the start) would wait out a broker outage.
            position = None if highwater is None else consumer.position(tp, timeout_ms=POSITION_WAIT_MS)
        except KafkaError:  # kafka-python answers None when the time is up; an error as well: the next pass asks again
            continue
        if position is not None:  # a partition with nothing read and nothing committed has no position yet
            lag[(tp.topic, tp.partition)] = max(0, highwater - position)
    return lag


def export_lag(lags: dict[tuple[str, str, str], int], exported: set[tuple[str, str, str]]
               ) -> set[tuple[str, str, str]]:
    """Sets the consumer lag of each (group, topic, partition) in `lags`; removes the series of those in `exported`
    (the last call's return) left out now, partitions a rebalance took away, which their new owner reports. Returns
    the series exported now."""
    for labels, lag in lags.items():
        CONSUMER_LAG.labels(*labels).set(lag)
    for labels in exported - set(lags):
        CONSUMER_LAG.remove(*labels)
    return set(lags)


def export_partition_lag(consumer: Positioned, group: str, exported: set[tuple[str, str, str]]
                         ) -> set[tuple[str, str, str]]:
    """export_lag of the group's lag on each partition assigned to `consumer`."""
    return export_lag({(group, topic, str(partition)): lag
                       for (topic, partition), lag in partition_lag(consumer).items()}, exported)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of a topic of `partitions` that a message keyed `key` goes to: murmur2, as the Java client,
    kafka-python and aiokafka (under faust) place keyed messages by default, and librdkafka with murmur2_random."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


POSITION_RESETS = Counter("cityguard_consumer_position_resets_total",
                          "Partitions read again from their start because the position was past their end "
                          "(the topic was recreated or truncated, e.g. by a broker restart)", ["group", "topic"])


POSITION_WAIT_MS = 1_000  # the callers' loops come back within a second or so


def reset_positions_past_the_end(consumer: Positioned, group: str) -> list[TopicPartition]:
    """Partitions whose position lies beyond their high-watermark are moved to their start, and returned.

    A recreated topic starts again at offset 0 while a consumer keeps its old position (or rewinds to it): Kafka
    answers such a fetch with an out-of-range error and the reset policy applies, but Tansu answers it with no
    records, and the consumer would wait, skipping every new message, until the offsets caught up with it.
    """
    reset = []
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        try:
            position = consumer.position(tp, timeout_ms=POSITION_WAIT_MS)
        except KafkaError:  # a position still being looked up when the broker went away: the next pass asks again
            continue
        if position is not None and position > highwater:
            log.warning("%s[%d]: position %d is past the end %d (topic recreated or truncated): reading it from "
                        "the start", tp.topic, tp.partition, position, highwater)
            try:
                consumer.seek_to_beginning(tp)
            except KafkaError as exc:  # librdkafka refuses a seek while the partition's fetcher changes state
                log.warning("%s[%d]: the seek to the start was refused (%s); the next pass tries again", tp.topic,
                            tp.partition, exc)
                continue
            POSITION_RESETS.labels(group, tp.topic).inc()
            reset.append(tp)
    return reset


def create_topics(bootstrap_servers: str, topics: list[str], partitions: int, timeout_s: float = 30,
                  replication_factor: int = 1) -> None:
    """Creates missing topics; existing ones are left as they are."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
            break
        except KafkaError:  # broker still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, partitions, replication_factor) for name in topics if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another stage created them first
    finally:
        admin.close()


def partition_counts(bootstrap_servers: str, topics: list[str]) -> dict[str, int]:
    """How many partitions each of `topics` that exists has (one that does not is left out)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    try:
        listed = set(admin.list_topics())
        existing = [name for name in topics if name in listed]
        # a topic being deleted or not yet ready describes with an error and no partitions: not counted
        return {description["name"]: len(description["partitions"]) for description in admin.describe_topics(existing)
                if not description["error_code"]} if existing else {}
    finally:
        admin.close()


def broker_reachable(bootstrap_servers: str, timeout_s: float = 5) -> bool:
    """Whether a bootstrap server answers as a Kafka broker within about `timeout_s`. A TCP connection is tried
    first: the Kafka client alone retries a refused one for half a minute, logging each try."""
    def accepts(server: str) -> bool:
        address = server.strip().split("://")[-1]  # PLAINTEXT://host:port as some clusters list them
        host, colon, port = address.rpartition(":")
        if not colon or host.endswith(":"):  # a host alone (an IPv6 address among them): Kafka's own port
            host, port = address, "9092"
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            return False

    if not any(accepts(server) for server in bootstrap_servers.split(",")):
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    except KafkaError:
        return False
    admin.close()
    return True


async def read_offsets(bootstrap_servers: str, topic: str, partition: int, start: int, stop: int,
                       timeout_s: float = 30) -> list:
    """Records [start, stop) of one partition, read without a consumer group (aiokafka, for async stages).

    Offsets removed by retention are skipped: the read starts at the earliest offset still there.
    """
    consumer = aiokafka.AIOKafkaConsumer(**consumer_settings(bootstrap_servers, group_id=None))
    await consumer.start()
    try:
        tp = aiokafka.TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while await consumer.position(tp) < stop:
            if time.monotonic() > deadline:
                raise KafkaError(f"{topic}[{partition}] offsets {start}-{stop - 1} not readable in {timeout_s:.0f} s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            records.extend(record for record in batch.get(tp, []) if record.offset < stop)
        return records
    finally:
        await consumer.stop()


class TopicIdentity:
    """The id the broker gives a topic (KIP-516), which changes when the topic is deleted and created again.

    Looked up at most once per `refresh_s` after a look-up that got an answer; None when the broker gives no ids.
    """

    def __init__(self, bootstrap_servers: str, topic: str, refresh_s: float = 1.0):
        self.bootstrap_servers, self.topic, self.refresh_s = bootstrap_servers, topic, refresh_s
        self.topic_id: str | None = None
        self.looked_up_at = -float("inf")

    def due(self, fresh: bool) -> bool:
        """Whether `current(fresh)` asks the broker (else it answers at once from what it knows)."""
        return self.looked_up_at == -float("inf") or (fresh and time.monotonic() - self.looked_up_at >= self.refresh_s)

    def current(self, fresh: bool = False) -> str | None:
        """The id, looked up again when `fresh` (and the last answer is older than refresh_s) or never had.

        Raises KafkaError when the broker cannot be asked: the id it knew may be of a topic that is gone.
        """
        if self.due(fresh):
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5_000,
                                     bootstrap_timeout_ms=5_000)
            try:
                descriptions = admin.describe_topics([self.topic])
            finally:
                admin.close()
            if len(descriptions) != 1:
                raise KafkaError(f"{len(descriptions)} descriptions of topic {self.topic}")
            [description] = descriptions
            self.topic_id = str(description.get("topic_id") or "") or None
            self.looked_up_at = time.monotonic()
        return self.topic_id

    async def answer(self, fresh: bool, retry_s: float = 1.0) -> str | None:
        """`current` for asyncio code; a `fresh` id is waited for, asking again every retry_s, until the broker answers.

        A consumer judging a message it did not expect by the id it knew before a broker restart recreated the topic
        would take every new message for one it already had. Without `fresh`, the id known so far is good enough.
        """
        while True:
            try:
                if not self.due(fresh):
                    return self.topic_id
                return await asyncio.get_running_loop().run_in_executor(None, self.current, fresh)
            except KafkaError as exc:
                log.warning("cannot look up the id of topic %s: %s", self.topic, exc)
                if not fresh:
                    return self.topic_id
                await asyncio.sleep(retry_s)
