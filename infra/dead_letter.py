"""Dead-lettering: a message a stage cannot use goes, with the reason, to the dead-letter topic.

The letter always fits the broker's message limit, whatever arrived: an original over ORIGINAL_MAX_BYTES keeps only
its first bytes, with the size and SHA-256 of the whole (enough to recognise it in the source topic, where it stays
for the retention period), and key and reason are capped too; senders key the letter with its capped key, never the
original's (a key of megabytes would make the record too large again). A letter that had to embed a 5 MB original
whole would exceed the producer's request limit, fail, and stop its partition behind it.
The metrics sink counts dead letters from that topic, so every stage is counted the same way."""
from __future__ import annotations

import hashlib
import logging
import time

from schemas import DeadLetter

log = logging.getLogger(__name__)

ORIGINAL_MAX_BYTES = 64 * 1024
KEY_MAX_BYTES = 1024
REASON_MAX_CHARS = 2000


def dead_letter(stage: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                reason: str) -> DeadLetter:
    reason = reason if len(reason) <= REASON_MAX_CHARS else reason[:REASON_MAX_CHARS - 1] + "…"
    log.warning("%s: dead-lettering %s[%d]@%d (%s bytes): %s", stage, topic, partition, offset,
                "no" if value is None else len(value), reason)
    truncated = value is not None and len(value) > ORIGINAL_MAX_BYTES
    return DeadLetter(
        stage=stage, source_topic=topic, partition=partition, offset=offset,
        key=key[:KEY_MAX_BYTES] if key is not None else None, reason=reason,
        original=value[:ORIGINAL_MAX_BYTES] if truncated else value, at=time.time(),
        original_size=None if value is None else len(value),
        original_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        original_truncated=truncated,
    )


def wrong_key(kind: str, camera_id: str, key: bytes | None) -> str | None:
    """Why a `kind` message of `camera_id` under `key` is refused, or None: a camera's messages are keyed by its id,
    which places them all on one partition and so on one worker's state of that camera (its tracker, its analyzers and
    their record of the frames they took). One under another key, or none, lands on another partition, where a second
    copy of that state would take it again."""
    if key is None:
        return f"{kind} of camera {camera_id!r} without a key (its camera id)"
    if key != camera_id.encode():
        return f"{kind} of camera {camera_id!r} under the key {key!r}"
    return None
