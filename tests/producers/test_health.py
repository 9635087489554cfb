"""Camera health and its gauges, frozen/blank detection, backoff, queues, sharding and source kinds: pure, no
broker."""
from __future__ import annotations

import logging
import random
import threading
import uuid

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from infra.frame_client import NotDelivered
from producers.capture import MediaClock, source_kind
from producers.frame_producer import FrameQueue, LogLimit, StatusReporter, cameras_for_shard
from producers.health import CameraHealth, FrameQualityMonitor, reconnect_delay
from schemas import CameraState, CameraStatus, PictureFault
from schemas.settings.capture import SourceKind
from schemas.settings.config import CameraConfig, ConfigError, parse_config


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class UnansweredClient:
    """A Kafka client whose sends are never acknowledged: the reporter only hands it statuses."""

    def send(self, topic: str, key: bytes | None, value: bytes, acknowledged=None) -> None:
        pass


def monitor() -> FrameQualityMonitor:
    return FrameQualityMonitor(frozen_after_s=3, frozen_max_difference=0.5, blank_after_s=2, blank_max_stddev=4,
                               black_max_mean=16)


def scene(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (72, 128), dtype=np.uint8)


def test_identical_frames_for_long_enough_are_frozen():
    quality, still = monitor(), scene(1)
    verdicts = [(quality.check(still, at), quality.fault) for at in np.arange(0, 5, 0.5)]
    assert verdicts[:7] == [(None, None)] * 7  # identical since 0.5 s: frozen from 3.5 s on
    assert verdicts[7][0].startswith("frozen") and verdicts[7][1] is PictureFault.FROZEN
    assert quality.check(scene(2), 5) is None and quality.fault is None


def test_moving_picture_is_never_frozen_and_reset_forgets():
    quality = monitor()
    assert all(quality.check(scene(int(at * 10)), at) is None for at in np.arange(0, 10, 0.5))
    still = scene(7)
    for at in (20, 22, 24):
        quality.check(still, at)
    quality.reset()
    assert quality.check(still, 25) is None and quality.check(still, 26) is None


@pytest.mark.parametrize("level, expected", [(0, "black frames"), (128, "blank (uniform grey level 128) frames")])
def test_blank_frames(level, expected):
    quality, blank = monitor(), np.full((72, 128), level, dtype=np.uint8)
    assert quality.check(blank, 0) is None and quality.check(blank, 1) is None
    assert quality.check(blank, 2.5).startswith(expected) and quality.fault is PictureFault.BLANK
    assert quality.check(scene(3), 3) is None and quality.fault is None


def test_health_goes_reconnecting_then_down_and_back_up():
    clock = Clock()
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    assert health.status().state is CameraState.RECONNECTING
    health.connecting()
    assert health.failed("cannot open") == 1 and health.status().state is CameraState.RECONNECTING
    for _ in range(2):
        health.connecting()
        health.failed("cannot open")
    status = health.status()
    assert (status.state, status.reason, status.reconnects) == (CameraState.DOWN, "cannot open", 2)
    health.connecting()
    for _ in range(10):
        clock.now += 0.2
        health.frame_captured(clock.now, None, None)
        health.frame_sent()
    health.frames_dropped(4)
    status = health.status()
    assert (status.state, status.reconnects, status.dropped_frames) == (CameraState.UP, 3, 4)
    assert status.fps == pytest.approx(5.0) and status.last_frame_age_s == 0  # one frame every 0.2 s
    clock.now += 11
    status = health.status()
    assert status.state is CameraState.STALLED and "no frame for 11 s" in status.reason and status.fps == 0


def test_gauges_follow_the_status_and_a_camera_without_frames_has_no_frame_age():
    clock = Clock()
    camera = f"gauges-{uuid.uuid4().hex[:8]}"  # the metrics are process-wide
    health = CameraHealth(camera, down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    reporter = StatusReporter(UnansweredClient(), "camera-status", {camera: health}, interval_s=5)

    def gauge(name: str, **labels) -> float | None:
        return REGISTRY.get_sample_value(name, {"camera": camera, **labels})

    reporter.report()
    assert gauge("cityguard_camera_up") == 0 and gauge("cityguard_camera_state", state="reconnecting") == 1
    assert gauge("cityguard_camera_last_frame_age_seconds") is None  # not 0 s, a fresh frame
    health.connecting()
    health.frame_captured(clock.now, None, None)
    clock.now += 2
    reporter.report()
    assert gauge("cityguard_camera_up") == 1 and gauge("cityguard_camera_state", state="reconnecting") == 0
    assert gauge("cityguard_camera_state", state="up") == 1 and gauge("cityguard_camera_last_frame_age_seconds") == 2


def dark_picture(seed: int, level: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, noise, (360, 640)), 0, 255).astype(np.uint8)


def test_black_frames_with_a_caption_and_sensor_noise_are_black():
    quality = monitor()
    reasons = []
    for at in (0, 1, 2.5):
        picture = dark_picture(int(at * 10), level=3, noise=6)
        cv2.putText(picture, f"CAM-07 12:00:0{at:.0f}", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 3)
        reasons.append(quality.check(picture, at))
    assert reasons[:2] == [None, None] and reasons[2].startswith("black frames")


def test_a_dark_night_scene_is_not_black():
    quality = monitor()
    for at in np.arange(0, 5, 0.5):
        picture = dark_picture(int(at * 10), level=6, noise=4)
        picture[324:, :] = 45  # the lit road, a tenth of the picture
        picture[40:60, 100:120] = 230  # a street lamp
        assert quality.check(picture, at) is None


class UnreachableBrokerClient:
    """A Kafka client that gives up on every status at once, as after a delivery timeout with the broker away."""

    def send(self, topic: str, key: bytes | None, value: bytes, acknowledged=None) -> None:
        acknowledged(NotDelivered("Local: Message timed out"))


def test_statuses_not_delivered_are_sent_again_and_logged_once_per_interval(caplog):
    clock = Clock()
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    reporter = StatusReporter(UnreachableBrokerClient(), "camera-status", {"cam": health}, interval_s=5,
                              undelivered_log=LogLimit(10, clock))
    with caplog.at_level(logging.WARNING, logger="producers.frame_producer"):
        for _ in range(12):  # a report a second, each status given up on: each is sent again at the next report
            assert len(reporter.report()) == 1
            clock.now += 1
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["camera cam: 1 status(es) not delivered (Local: Message timed out); sending the status again "
                        "at the next report",
                        "camera cam: 10 status(es) not delivered (Local: Message timed out); sending the status again "
                        "at the next report"]


def test_a_source_that_stalls_after_every_burst_backs_off_and_goes_down():
    clock = Clock()
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    failures = []
    for _ in range(3):  # an HLS playlist no longer updated: its segments at once at every attempt, then nothing
        health.connecting()
        for _ in range(8):
            health.frame_captured(clock.now, None, None)
        clock.now += 10
        failures.append(health.failed("stream ended or broke"))
    assert failures == [1, 2, 3] and health.status().state is CameraState.DOWN
    health.connecting()
    for _ in range(60):  # a connection that keeps delivering
        clock.now += 0.2
        health.frame_captured(clock.now, None, None)
    assert health.failed("stream ended or broke") == 1


def statuses_while_delivering(health: CameraHealth, clock: Clock, arrivals: list[float],
                              source_fps: float | None = None) -> list[tuple[float, CameraStatus]]:
    """(time, status) after each frame arriving at the given clock times, and at every whole second between."""
    seconds = [float(at) for at in range(int(clock.now) + 1, int(max(arrivals)) + 1)]
    statuses = []
    for at, tick in sorted([(at, False) for at in arrivals] + [(at, True) for at in seconds]):
        clock.now = at
        if not tick:
            health.frame_captured(at, None, source_fps)
        statuses.append((at, health.status()))
    return statuses


def test_a_camera_delivering_a_few_per_cent_of_its_rate_is_degraded_until_it_delivers_again():
    clock = Clock(1000.0)
    camera = f"degraded-{uuid.uuid4().hex[:8]}"  # the metrics are process-wide
    health = CameraHealth(camera, down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    reporter = StatusReporter(UnansweredClient(), "camera-status", {camera: health}, interval_s=5)
    health.connecting()
    steady = statuses_while_delivering(health, clock, [1000 + 0.2 * index for index in range(1, 451)])  # 90 s
    assert {status.state for _, status in steady} == {CameraState.UP}
    rare = statuses_while_delivering(health, clock, [1090.0 + 20 * index for index in range(1, 7)])  # one per 20 s
    assert {status.state for at, status in rare if at >= 1150} == {CameraState.DEGRADED, CameraState.STALLED}
    assert rare[-1][1].reason == "too few frames: 0.07 fps over the last 60 s, 5 fps configured"  # 4 frames
    reporter.report()
    assert REGISTRY.get_sample_value("cityguard_camera_state", {"camera": camera, "state": "degraded"}) == 1
    assert REGISTRY.get_sample_value("cityguard_camera_up", {"camera": camera}) == 0  # CityguardCameraDown fires
    back = statuses_while_delivering(health, clock, [1210 + 0.2 * index for index in range(1, 101)])
    # Degraded below a tenth of the rate (30 frames a minute), up again only from a fifth (60 frames): 12 s.
    assert {status.state for at, status in back if at < 1221} == {CameraState.DEGRADED}
    assert {status.state for at, status in back if at >= 1222} == {CameraState.UP}


def test_a_camera_delivering_too_few_frames_stays_degraded_across_reconnections():
    """Its server closes the stream every 45 s (a stream limit, a proxy's timeout, an expiring token) and the camera
    reconnects at once: degraded all along, never up for a moment between connections."""
    clock = Clock(1000.0)
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    statuses = []
    for _ in range(13):  # 10 minutes
        health.connecting()
        first = clock.now + 0.5
        statuses += statuses_while_delivering(health, clock, [first + 3 * index for index in range(15)])  # 0.33 fps
        clock.now = first + 44.5
        health.failed("stream ended or broke")
        statuses.append((clock.now, health.status()))
    later = [status.state for at, status in statuses if at >= 1065]  # connected for a minute
    assert set(later) == {CameraState.DEGRADED, CameraState.RECONNECTING}
    assert later.count(CameraState.RECONNECTING) == 12  # each only while the camera was reconnecting


@pytest.mark.parametrize("every_s_before, outage_s", [
    (0.2, 58.0),  # at its rate, then a reconnection that takes most of a minute
    (3.0, 3600.0),  # degraded, then down for an hour
])
def test_a_camera_back_at_its_rate_after_an_outage_is_up(every_s_before, outage_s):
    """The time spent reconnecting, reported as such, does not count as time without frames; after an outage longer
    than the rate's window, the rate before it says nothing of the camera."""
    clock = Clock(1000.0)
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    health.connecting()
    statuses_while_delivering(health, clock, [1000 + every_s_before * index for index in range(1, 601)])
    assert health.status().state is (CameraState.UP if every_s_before == 0.2 else CameraState.DEGRADED)
    health.failed("stream ended or broke")
    clock.now += outage_s
    health.connecting()
    back = statuses_while_delivering(health, clock, [clock.now + 0.2 * index for index in range(1, 301)])
    assert {status.state for _, status in back} == {CameraState.UP}


@pytest.mark.parametrize("every_s, at_once, source_fps", [
    (2.5, 1, 0.4),  # a stream that declares 0.4 fps, configured at 5
    (1.0, 1, None),  # a still image answered once a second, polled at 5 fps
    (6.0, 30, 25.0),  # HLS: 6 s segments of 5 fps arriving at once
])
def test_a_camera_delivering_what_its_source_offers_stays_up(every_s, at_once, source_fps):
    clock = Clock(1000.0)
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    health.connecting()
    arrivals = [1000 + every_s * index for index in range(1, int(300 / every_s)) for _ in range(at_once)]
    statuses = statuses_while_delivering(health, clock, arrivals, source_fps)
    assert {status.state for at, status in statuses if at >= arrivals[0]} == {CameraState.UP}


def test_stall_reason_and_end_of_source():
    health = CameraHealth("cam", 3, 5, 10, 5, clock=Clock())
    health.frame_captured(1000, "frozen: identical frames for 10 s", None)
    assert (health.status().state, health.status().reason) == (CameraState.STALLED, "frozen: identical frames for 10 s")
    health.ended("source ended")
    assert health.status().state is CameraState.DOWN and health.finished


def test_backoff_grows_exponentially_to_the_cap_with_bounded_jitter():
    rng = random.Random(1)
    plain = [reconnect_delay(attempt, 0.5, 30, 0, rng) for attempt in range(1, 10)]
    assert plain == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    jittered = [reconnect_delay(3, 0.5, 30, 0.2, rng) for _ in range(200)]
    assert 1.6 <= min(jittered) < 1.9 and 2.1 < max(jittered) <= 2.4


def test_jitter_never_takes_a_wait_beyond_the_longest_the_settings_allow():
    rng = random.Random(1)
    capped = [reconnect_delay(attempt, 0.5, 30, 0.2, rng) for attempt in range(7, 200)]
    assert max(capped) <= 30 and min(capped) >= 24
    assert len(set(capped)) == len(capped)  # still spread: cameras that failed together do not retry together
    near_the_cap = [reconnect_delay(6, 0.5, 18, 0.2, rng) for _ in range(200)]  # 16 s, jittered 12.8 s to 19.2 s
    assert 12.8 <= min(near_the_cap) < 14 and 17 < max(near_the_cap) <= 18


def test_queue_drops_the_oldest_frames_when_full():
    queue = FrameQueue(3, threading.Event())
    dropped = [queue.put(bytes([index]), wait=False, stop=threading.Event()) for index in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert [queue.take() for _ in range(4)] == [b"\x02", b"\x03", b"\x04", None]


def test_replay_queue_waits_instead_of_dropping():
    queue, stop = FrameQueue(1, threading.Event()), threading.Event()
    queue.put(b"a", wait=True, stop=stop)
    taker = threading.Timer(0.2, queue.take)
    taker.start()
    assert queue.put(b"b", wait=True, stop=stop) == 0
    assert queue.take() == b"b"


def test_shards_split_cameras_completely_and_disjointly():
    cameras = [CameraConfig(id=f"cam{index}", source="x.mp4") for index in range(200)]
    shards = [cameras_for_shard(cameras, index, 3) for index in range(3)]
    ids = [camera.id for shard in shards for camera in shard]
    assert sorted(ids) == sorted(camera.id for camera in cameras) and len(set(ids)) == 200
    assert all(40 < len(shard) < 95 for shard in shards)


def test_shard_index_must_be_below_the_count(tmp_path):
    with pytest.raises(ConfigError, match="producer: .*shard_index 3 must be below shard_count 3"):
        parse_config({"producer": {"shard_index": 3, "shard_count": 3}}, tmp_path)


@pytest.mark.parametrize("source, kind", [
    ("rtsp://10.0.0.5/stream1", SourceKind.RTSP), ("http://cctv.example/live/playlist.m3u8?t=1", SourceKind.HLS),
    ("http://cctvsec.ktict.co.kr/270/opaque", SourceKind.HLS), ("https://x.example/snap.jpg?t=2", SourceKind.IMAGE),
    ("https://x.example/clip.mp4", SourceKind.FILE), ("videos/a.avi", SourceKind.FILE), ("0", SourceKind.WEBCAM),
    ("http://cam.example/mjpg/video.mjpg", SourceKind.MJPEG), ("http://cam.example/live.mjpeg?fps=5", SourceKind.MJPEG),
    ("http://cam.example/axis-cgi/mjpg/video.cgi?resolution=640x480", SourceKind.MJPEG),
    ("http://cam.example:8080/?action=stream", SourceKind.MJPEG),
])
def test_source_kind_is_inferred(source, kind):
    assert source_kind(CameraConfig(id="c", source=source), source) is kind
    if source.lower().startswith("http"):  # a kind given wins (image: fetched over http(s) only)
        assert source_kind(CameraConfig(id="c", source=source, kind="image"), source) is SourceKind.IMAGE


def test_media_clock_spreads_bursts_and_never_runs_ahead():
    clock = MediaClock(resync_s=5)
    # 1 s HLS segments of 10 frames, each arriving at once, a second apart.
    first = [clock.captured_at(0.1 * index, 100.0) for index in range(10)]
    second = [clock.captured_at(1.0 + 0.1 * index, 101.0) for index in range(10)]
    assert max(first) <= 100.0 and max(second) <= 101.0
    assert np.diff(second) == pytest.approx([0.1] * 9)  # the first burst calibrates how late frames arrive
    assert second[0] == pytest.approx(100.1)
    # A stream that falls 10 s behind is re-anchored to arrival time.
    assert clock.captured_at(2.0, 112.0) == 112.0


def test_a_source_waiting_for_something_new_is_up_as_long_as_it_may_wait_and_stalled_after():
    # An ITS camera of recorded clips between two clips: not a dead camera, until its clips are overdue.
    clock = Clock()
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    health.frame_captured(clock.now, None, None)
    for _ in range(4):  # asked again every minute
        clock.now += 60
        health.waiting("waiting for a new clip", longest_wait_s=420)
        status = health.status()
        assert (status.state, status.reason) == (CameraState.UP, "waiting for a new clip")
    clock.now += 240  # 420 s since the first wait
    assert health.status().state is CameraState.UP
    clock.now += 1
    status = health.status()
    assert status.state is CameraState.STALLED
    assert status.reason == "waiting for a new clip for 421 s, longer than the 420 s it may take"
    health.frame_captured(clock.now, None, None)  # the next clip
    health.waiting("waiting for a new clip", longest_wait_s=420)
    assert health.status().state is CameraState.UP  # waited afresh


def test_a_wait_broken_by_failures_of_the_api_still_ends_stalled_once_the_clips_are_overdue():
    # Every other ask of the ITS API fails, every other says "nothing new": neither the failures (each forgiven by the
    # next wait) nor a wait restarted at each failure may keep the camera from being reported.
    clock = Clock()
    health = CameraHealth("cam", down_after_failures=3, fps_window_s=5, no_frame_stall_s=10, configured_fps=5,
                          clock=clock)
    health.frame_captured(clock.now, None, None)
    health.waiting("waiting for a new clip", longest_wait_s=420)
    for _ in range(4):
        clock.now += 60
        health.failed("waiting for a new clip: the API answered 500")
        assert health.status().state is CameraState.RECONNECTING  # a failure shows as itself, not as the wait
        clock.now += 60
        health.waiting("waiting for a new clip", longest_wait_s=420)
    assert health.status().state is CameraState.STALLED  # 480 s since the wait began
    health.frame_captured(clock.now, None, None)
    health.waiting("waiting for a new clip", longest_wait_s=420)
    assert health.status().state is CameraState.UP
