"""Claim check: oversized frames go to the frame store, messages carry a reference, references expire."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from producers.frame_producer import frame_message
from producers.frame_store import FrameNotFound, LocalFrameStore
from schemas import Frame, decode

FIELDS = {"camera_id": "cam-1", "seq": 42, "captured_at": 1_700_000_000.0, "width": 64, "height": 48}


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_small_frames_travel_inline_large_ones_by_reference(tmp_path):
    store = LocalFrameStore(tmp_path, ttl_s=60)
    small = frame_message(FIELDS, b"x" * 1000, 10_000, lambda: store)
    assert decode(small, Frame).jpeg == b"x" * 1000 and not any(tmp_path.iterdir())
    jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))[1].tobytes()
    large = frame_message(FIELDS, jpeg, 10_000, lambda: store)
    frame = decode(large, Frame)
    assert len(large) < 1000 and frame.jpeg is None and frame.seq == 42
    assert store.resolve(frame.frame_ref) == jpeg


def test_frames_expire(tmp_path):
    clock = Clock()
    store = LocalFrameStore(tmp_path, ttl_s=60, clock=clock)
    old, recent = store.put("cam-1", 1, b"jpeg1"), store.put("cam-1", 2, b"jpeg2")
    written_at = (tmp_path / "cam-1" / "2.jpg").stat().st_mtime
    clock.now = written_at + 30
    assert store.expire() == 0 and store.resolve(old) == b"jpeg1"
    clock.now = written_at + 61
    with pytest.raises(FrameNotFound, match="expired"):  # even before the files are deleted
        store.resolve(recent)
    assert store.expire() == 2
    with pytest.raises(FrameNotFound, match="not in the store"):
        store.resolve(old)


@pytest.mark.parametrize("reference", ["local:../etc/1.jpg", "local:/etc/1.jpg", "s3://bucket/1.jpg",
                                       "local:cam/abc.jpg",
                                       # no camera id or sequence number is this long: names the filesystem refuses
                                       f"local:{'c' * 65}/1.jpg", f"local:{'c' * 300}/1.jpg",
                                       f"local:cam/{'1' * 21}.jpg", f"local:cam/{'1' * 300}.jpg"])
def test_references_outside_the_store_are_rejected(tmp_path, reference):
    with pytest.raises(FrameNotFound, match="not a local frame-store reference"):
        LocalFrameStore(tmp_path, ttl_s=60).resolve(reference)


def test_the_longest_camera_id_and_sequence_number_are_stored_and_resolved(tmp_path):
    store = LocalFrameStore(tmp_path, ttl_s=60)
    assert store.resolve(store.put("c" * 64, 2**64 - 1, b"jpeg")) == b"jpeg"


def test_a_stored_picture_is_readable_by_the_producers_user_alone_and_leaves_no_temporary(tmp_path):
    store = LocalFrameStore(tmp_path, ttl_s=60)
    reference = store.put("campus", 7, b"\xff\xd8\xff\xd9")
    assert store.resolve(reference) == b"\xff\xd8\xff\xd9"
    [stored] = (tmp_path / "campus").iterdir()
    assert stored.name == "7.jpg" and stored.stat().st_mode & 0o777 == 0o600
