"""Claim check: oversized frames go to the frame store, messages carry a reference, references expire."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import cv2
import numpy as np
import pytest

import infra.kafka
from cityguard.bench.capture import DiscardingClient
from producers.frame_producer import expire_frames, frame_message, run_producer
from producers.frame_store import FrameNotFound, LocalFrameStore
from schemas import Frame, decode
from schemas.settings.config import parse_config
from tests.conftest import VTEST

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


class KeepingClient(DiscardingClient):
    """Acknowledges every message at once, as DiscardingClient does, and keeps the frames topic's."""

    def __init__(self, topic: str):
        self.topic, self.frames = topic, []

    def send(self, topic: str, key: bytes | None, value: bytes, acknowledged=None) -> None:
        if topic == self.topic:
            self.frames.append(decode(value, Frame))
        super().send(topic, key, value, acknowledged)


@pytest.mark.parametrize("by_reference", [True, False])
def test_a_producer_sending_frames_by_reference_stores_every_one_however_small(tmp_path, by_reference):
    # 96 px wide frames of a few kB, which fit a message of the least max_message_bytes: only by reference are they
    # stored.
    config = parse_config({"site": "s", "producer": {"frame_store_dir": str(tmp_path / "frames"),
                                                     "max_message_bytes": 10_000},
                           "cameras": [{"id": f"small-{uuid.uuid4().hex[:8]}", "source": str(VTEST), "fps": 5,
                                        "max_width": 96}]}, tmp_path)
    client = KeepingClient(config.broker.topics.frames)
    run_producer(config, client, threading.Event(), realtime=False, max_frames=5, frames_by_reference=by_reference)
    assert len(client.frames) == 5
    store = LocalFrameStore(tmp_path / "frames", ttl_s=60)
    for frame in client.frames:
        jpeg = store.resolve(frame.frame_ref) if by_reference else frame.jpeg
        assert (frame.jpeg is None) == by_reference and len(jpeg) < 10_000
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (72, 96, 3)
    assert (tmp_path / "frames").exists() == by_reference


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


def read_for_two_seconds(camera_id: str, store_dir, tmp_path) -> dict[str, int]:
    """One looping camera read by the producer for 2 s, its frames stored in `store_dir` for 1 s: the store is
    expired every tenth of that meanwhile. Returns the frames queued per camera."""
    config = parse_config({"site": "s", "producer": {"frame_store_dir": str(store_dir), "frame_store_ttl_s": 1},
                           "cameras": [{"id": camera_id, "source": str(VTEST), "fps": 5, "loop": True}]}, tmp_path)
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()
    return run_producer(config, DiscardingClient(), stop)


def test_an_entry_the_expiry_cannot_remove_is_left_and_the_producer_reads_on(tmp_path, caplog):
    camera_id = f"expiry-{uuid.uuid4().hex[:8]}"  # the metrics are process-wide
    store_dir = tmp_path / "frames"
    unremovable = store_dir / camera_id / "not-a-frame"  # unlink() refuses a folder, as a file of another user
    unremovable.mkdir(parents=True)
    (store_dir / "other").mkdir()
    expired = store_dir / "other" / "1.jpg"
    expired.write_bytes(b"jpeg")
    for path in (unremovable, expired):
        os.utime(path, (0, 0))
    with caplog.at_level(logging.WARNING, logger="producers.frame_store"):
        queued = read_for_two_seconds(camera_id, store_dir, tmp_path)
    assert queued[camera_id] > 0 and unremovable.exists() and not expired.exists()
    assert "1 entries could not be expired" in caplog.text and "not-a-frame" in caplog.text


def unreadable(path) -> None:
    """Makes the path a link no lookup can follow, even root's: its target's name is over the 255 bytes a name may
    have. Reading it fails as a network mount gone away does, where a missing or plain file would only read empty."""
    path.symlink_to("n" * 300)


def test_an_entry_the_expiry_cannot_look_up_is_left_and_the_others_expire(tmp_path, caplog):
    clock = Clock()
    store = LocalFrameStore(tmp_path, ttl_s=60, clock=clock)
    store.put("cam-1", 1, b"jpeg")
    unreadable(tmp_path / "cam-2")
    clock.now = (tmp_path / "cam-1" / "1.jpg").stat().st_mtime + 61
    with caplog.at_level(logging.WARNING, logger="producers.frame_store"):
        assert store.expire() == 1
    assert "1 entries could not be expired" in caplog.text and "File name too long" in caplog.text


def test_a_store_the_expiry_cannot_read_is_logged_once_and_the_cameras_read_on(tmp_path, caplog):
    camera_id = f"expiry-{uuid.uuid4().hex[:8]}"  # the metrics are process-wide
    store_dir = tmp_path / "frames"
    unreadable(store_dir)
    with caplog.at_level(logging.INFO, logger="producers.frame_producer"):
        queued = read_for_two_seconds(camera_id, store_dir, tmp_path)
    assert queued[camera_id] > 0
    assert caplog.text.count("frame store: old frames cannot be expired") == 1
    assert "File name too long" in caplog.text


def test_expiry_failures_are_logged_once_per_streak(tmp_path, caplog):
    store_dir = tmp_path / "frames"
    store = LocalFrameStore(store_dir, ttl_s=60)
    unreadable(store_dir)
    failing = False
    with caplog.at_level(logging.INFO, logger="producers.frame_producer"):
        for _ in range(3):
            failing = expire_frames(store, failing)
        store_dir.unlink()
        store_dir.mkdir()
        failing = expire_frames(store, failing)
        store_dir.rmdir()
        unreadable(store_dir)
        failing = expire_frames(store, failing)
    assert failing
    assert [(record.levelname, record.getMessage().split(": ")[1]) for record in caplog.records] == [
        ("ERROR", "old frames cannot be expired, kept until they can"), ("INFO", "old frames are expired again"),
        ("ERROR", "old frames cannot be expired, kept until they can")]


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


def test_the_producer_marks_its_status_loop_and_its_sender_as_going_round(tmp_path, monkeypatch):
    # What /healthz and CityguardStageStuck read: a producer whose status loop hangs (a frame store mount that hangs in
    # the expiry) would otherwise leave its cameras' last statuses, up, standing for ever.
    monkeypatch.setattr(infra.kafka, "_loop_times", {})
    started = time.time()
    read_for_two_seconds(f"loops-{uuid.uuid4().hex[:8]}", tmp_path / "frames", tmp_path)
    assert set(infra.kafka._loop_times) == {"producer", "producer-sender"}
    assert all(at >= started + 1.5 for at in infra.kafka._loop_times.values())  # still going round at the end
    stuck = infra.kafka.stuck_loops(time.time() + 400)
    assert [line.split(" loop last went round ")[0] for line in stuck] == ["producer", "producer-sender"]
