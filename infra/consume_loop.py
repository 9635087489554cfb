"""Consume -> confirm -> commit-or-rewind: the one at-least-once step of every consuming stage that is not faust's
(kafka-python's consumer, or the inference stage's librdkafka one, which reads and commits the same way).

A batch's input offsets are committed only after the broker has acknowledged every output of the batch (results and
dead letters alike). If any send failed, the consumer is rewound to the batch's first offset on each partition, so
the whole batch comes again; consumers downstream drop the duplicates this can make.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError

from infra.kafka import flush_confirmed

if TYPE_CHECKING:  # only the inference stage loads librdkafka
    from infra.frame_client import FrameConsumer

log = logging.getLogger(__name__)


class RetryBatch(Exception):  # noqa: N818 - an instruction to the loop, not a failure of the batch's records
    """Raised by a batch's handler when something the batch needs is away for now (a shared frame store): the batch
    is rewound and comes again, as after a failed send, instead of its records being dead-lettered."""


def process_batch(consumer: KafkaConsumer | FrameConsumer, producer: KafkaProducer, records: list,
                  handle: Callable[[list], list]) -> KafkaError | RetryBatch | None:
    """Runs `handle(records)`, which returns the futures of every send it made, then confirms and commits.

    Returns None once the batch is confirmed (its offsets committed, left to the partitions' new owner after a
    rebalance, or to the next batch's commit when the broker went away meanwhile), or the error that made it rewind
    the batch; the caller decides how long to wait before the next one.
    """
    try:
        flush_confirmed(producer, handle(records))
    except (KafkaError, RetryBatch) as exc:
        # A send refused at once or failed in flight (ProduceFailed), or the handler asking for the batch again.
        rewind(consumer, records)
        return exc
    try:
        consumer.commit()
    except CommitFailedError as exc:
        # Partitions moved during the batch; the new owner processes it again (duplicates are dropped downstream).
        log.warning("commit failed after a rebalance; the batch will be redelivered: %s", exc)
    except KafkaError as exc:
        # The broker went away after confirming the outputs: the next batch's commit covers this one, or a restart
        # before it redelivers it (duplicates are dropped downstream). Not a reason to stop the stage.
        log.warning("commit not confirmed by the broker: %s", exc)
    return None


def rewind(consumer: KafkaConsumer | FrameConsumer, records: list) -> None:
    """Seeks each partition of the batch back to the batch's first offset on it; a partition a rebalance has taken
    away meanwhile is left to its new owner, which starts from the last commit (before this batch).

    A seek the client refuses is logged and the other partitions are still rewound: librdkafka refuses one on a
    partition assigned again during the batch's polls and not yet fetched ("Erroneous state"), which starts from
    its committed offset anyway, at or before the batch. Raising here would end the stage from its error path.
    """
    first: dict[TopicPartition, int] = {}
    for record in records:
        key = TopicPartition(record.topic, record.partition)
        first[key] = min(first.get(key, record.offset), record.offset)
    assigned = consumer.assignment()
    for partition, offset in first.items():
        if partition in assigned:
            try:
                consumer.seek(partition, offset)
            except KafkaError as exc:
                log.warning("rewind of %s[%d] to offset %d refused; it goes on from its committed offset: %s",
                            partition.topic, partition.partition, offset, exc)
