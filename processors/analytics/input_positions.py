"""Which input frames the analytics state already holds, per partition of the detections topic.

The analytics stage stores, next to each camera's state, the offset of the next frame the state expects on that
partition. Judging every incoming frame against it makes the state, not the consumer group's committed offset, the
record of what was applied. A commit that ran ahead of the state (a worker stopped mid-frame) and frames the consumer
skipped (faust clears its stream queues when it resumes after a rebalance, losing frames it had already fetched)
both show up as a gap, which the stage fills by reading the missing offsets before it applies the frame.

A stored position belongs to one incarnation of the topic, recorded with it as the topic's id: offsets of a topic
deleted and created again (the embedded broker loses every topic when it restarts) start at 0 again, and judged
against the old position every new frame would look "already applied" until the offsets passed it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    APPLY = "apply"  # the frame the state expects next (or the partition has no state yet)
    ALREADY_APPLIED = "already applied"  # redelivered: its effects are in the state already
    FILL_GAP = "fill gap"  # frames before it never reached the state: read and apply them first
    TOPIC_RECREATED = "topic recreated"  # the position is of an earlier topic of that name: apply, start afresh


@dataclass(frozen=True)
class Position:
    """The next input offset the state expects on a partition, and the id of the topic it counts in."""

    offset: int
    topic_id: str | None  # None: the broker gives no topic ids, or a position stored before they were recorded

    def encode(self) -> bytes:
        return f"{self.offset}@{self.topic_id or ''}".encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Position | None:
        if not raw:
            return None
        offset, _, topic_id = raw.decode().partition("@")
        return cls(int(offset), topic_id or None)


def judge(expected: Position | None, offset: int, topic_id: str | None) -> Verdict:
    """The frame at `offset` of the topic with `topic_id`, against the position the state expects."""
    if expected is None or offset == expected.offset:
        return Verdict.APPLY
    if expected.topic_id is not None and topic_id is not None and expected.topic_id != topic_id:
        return Verdict.TOPIC_RECREATED
    return Verdict.ALREADY_APPLIED if offset < expected.offset else Verdict.FILL_GAP
