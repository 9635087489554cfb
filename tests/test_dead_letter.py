"""Dead letters always fit the broker's limit, whatever arrived; small originals are kept whole."""
import hashlib
import os

import pytest

from infra.dead_letter import ORIGINAL_MAX_BYTES, dead_letter
from infra.kafka import MAX_MESSAGE_BYTES
from schemas import DeadLetter, decode, encode


@pytest.mark.parametrize("size", [5 * 1024 * 1024, 20 * 1024 * 1024])
def test_an_oversized_original_is_cut_with_its_size_and_hash(size):
    garbage = os.urandom(size)
    letter = dead_letter("inference", "frames", 3, 42, os.urandom(2 * 1024 * 1024), garbage, "x" * 100_000)
    raw = encode(letter)
    assert len(raw) < 100_000 < MAX_MESSAGE_BYTES  # below every broker's limit (real Kafka defaults to 1 MB)
    read = decode(raw, DeadLetter)
    assert read.original == garbage[:ORIGINAL_MAX_BYTES] and read.original_truncated
    assert (read.original_size, read.original_sha256) == (size, hashlib.sha256(garbage).hexdigest())
    assert len(read.key) == 1024 and len(read.reason) == 2000


def test_a_small_original_is_kept_whole():
    letter = dead_letter("analytics", "detections", 0, 7, b"cam", b"\x00\x01", "not msgpack")
    read = decode(encode(letter), DeadLetter)
    assert (read.original, read.original_truncated, read.original_size) == (b"\x00\x01", False, 2)
    assert dead_letter("alerts", "events", 0, 1, None, None, "tombstone").original_sha256 is None
