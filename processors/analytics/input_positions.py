"""Which input frames the analytics state already holds, per partition of the detections topic.

The analytics stage stores, next to each camera's state, the offset of the next frame the state expects on that
partition. Judging every incoming frame against it makes the state, not the consumer group's committed offset, the
record of what was applied. A commit that ran ahead of the state (a worker stopped mid-frame) and frames the consumer
skipped (faust clears its stream queues when it resumes after a rebalance, losing frames it had already fetched)
both show up as a gap, which the stage fills by reading the missing offsets before it applies the frame.
"""
from __future__ import annotations

import enum


class Verdict(enum.Enum):
    APPLY = "apply"  # the frame the state expects next (or the partition has no state yet)
    ALREADY_APPLIED = "already applied"  # redelivered: its effects are in the state already
    FILL_GAP = "fill gap"  # frames before it never reached the state: read and apply them first


def judge(expected_offset: int | None, offset: int) -> Verdict:
    if expected_offset is None or offset == expected_offset:
        return Verdict.APPLY
    return Verdict.ALREADY_APPLIED if offset < expected_offset else Verdict.FILL_GAP
