"""Dead-lettering: a message a stage cannot use is kept whole, with the reason, on the dead-letter topic.

The metrics sink counts dead letters from that topic, so every stage is counted the same way."""
from __future__ import annotations

import logging
import time

from schemas import DeadLetter

log = logging.getLogger(__name__)

def dead_letter(stage: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                reason: str) -> DeadLetter:
    log.warning("%s: dead-lettering %s[%d]@%d: %s", stage, topic, partition, offset, reason)
    return DeadLetter(stage=stage, source_topic=topic, partition=partition, offset=offset, key=key,
                      reason=reason, original=value, at=time.time())
