"""The producer against the real broker: live HLS with an outage and ITS re-resolution, RTSP, claim check, and 50
cameras in one process."""
from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections import defaultdict

import cv2
import numpy as np
import psutil
import pytest

from infra.kafka import create_topics, make_consumer
from producers.frame_producer import frame_client, run_producer
from producers.frame_store import open_frame_store
from producers.local_streams import HlsEncoder, TokenFileServer
from schemas import CameraState, CameraStatus, Frame, decode
from schemas.settings.config import parse_config
from tests.conftest import VTEST
from tests.producers.fake_its import FakeItsApi, record
from tests.producers.rtsp_server import RtspServer

pytestmark = pytest.mark.broker

KEY_ENV = "CITYGUARD_TEST_ITS_KEY"
FAST_RETRIES = {"reconnect_backoff_base_s": 0.2, "reconnect_backoff_max_s": 1.0, "down_after_failures": 2,
                "status_interval_s": 1.0, "open_timeout_s": 5, "read_timeout_s": 5}


def site(tmp_path, bootstrap: str, cameras: list[dict], **producer):
    suffix = uuid.uuid4().hex[:8]
    config = parse_config({
        "site": f"capture-{suffix}",
        "broker": {"bootstrap_servers": bootstrap, "partitions": 2,
                   "topics": {name: f"capture-{suffix}.{name}" for name in ("frames", "detections", "zone_metrics",
                                                                            "events", "alerts", "camera_status",
                                                                            "dead_letter")}},
        "producer": {**FAST_RETRIES, **producer}, "cameras": cameras}, tmp_path)
    create_topics(bootstrap, config.broker.topics.all(), config.broker.partitions)
    return config


class Running:
    """run_producer in a thread, with the frames and statuses it published read back from the broker."""

    def __init__(self, config, bootstrap: str, read_frames: bool = True, **kwargs):
        self.producer = frame_client(bootstrap, config.producer)
        self.stop = threading.Event()
        self.result: dict = {}
        self.thread = threading.Thread(target=lambda: self.result.update(
            run_producer(config, self.producer, self.stop, **kwargs)), daemon=True)
        self.frames_consumer = make_consumer(bootstrap, None, config.broker.topics.frames) if read_frames else None
        self.status_consumer = make_consumer(bootstrap, None, config.broker.topics.camera_status)
        self.frames: list[Frame] = []
        self.statuses: list[CameraStatus] = []
        self.thread.start()

    def poll(self) -> None:
        for records in (self.frames_consumer.poll(timeout_ms=100) if self.frames_consumer else {}).values():
            self.frames.extend(decode(record.value, Frame) for record in records)
        for records in self.status_consumer.poll(timeout_ms=100).values():
            self.statuses.extend(decode(record.value, CameraStatus) for record in records)

    def wait_for(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.poll()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(15)
        self.poll()
        for consumer in (self.frames_consumer, self.status_consumer):
            if consumer is not None:
                consumer.close()
        self.producer.close()


@pytest.fixture(scope="module")
def hls_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hls")
    encoder = HlsEncoder(VTEST, directory).start()
    yield directory
    encoder.stop()


def test_hls_outage_reconnects_with_a_re_resolved_url_and_continuing_sequence(kafka_bootstrap, tmp_path, hls_dir,
                                                                              monkeypatch):
    server = TokenFileServer(hls_dir).start()
    its = FakeItsApi("its-key", cameras=lambda: [record("CAM A", 127.0, 37.5, server.url("live.m3u8"))]).start()
    monkeypatch.setenv(KEY_ENV, "its-key")
    config = site(tmp_path, kafka_bootstrap, [{
        "id": "its-a", "source": server.url("live.m3u8"), "fps": 5, "lat": 37.5, "lon": 127.0,
        "its": {"name": "CAM A", "lon": 127.0, "lat": 37.5, "road_type": "ex", "cctv_type": 1}}],
        its_api_url=its.url, its_api_key_env=KEY_ENV, its_allowed_local_hosts=["127.0.0.1"])  # a local relay
    running = Running(config, kafka_bootstrap)
    try:
        running.wait_for(lambda: len(running.frames) >= 10, 30, "frames before the outage")
        server.stop()
        outage_started = time.time()
        running.wait_for(lambda: any(s.state is CameraState.DOWN for s in running.statuses), 15, "camera down")
        before = len(running.frames)
        server.rotate_token()  # the old URL now answers 404: only a re-resolved URL can work
        server.start()
        running.wait_for(lambda: len(running.frames) >= before + 10, 30, "frames after the outage")
        running.wait_for(lambda: running.statuses[-1].state is CameraState.UP, 10, "camera up again")
    finally:
        running.finish()
        server.stop()
        its.stop()
    sequence = [frame.seq for frame in running.frames]
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
    states = [status.state for status in running.statuses]
    assert CameraState.RECONNECTING in states and CameraState.DOWN in states and states[-1] is CameraState.UP
    down = next(status for status in running.statuses if status.state is CameraState.DOWN)
    assert down.reason and down.camera_id == "its-a"
    assert running.statuses[-1].reconnects >= 1
    assert its.requests, "the camera was never re-resolved through the ITS API"  # the old token 404s
    after = [frame for frame in running.frames if frame.captured_at > outage_started]
    assert len(after) >= 10 and all(frame.width == 768 for frame in after)


@pytest.mark.skipif(not RtspServer.available(), reason="rtsp-server-perl (Debian) is not installed")
def test_rtsp_stream_reconnects_after_the_server_restarts(kafka_bootstrap, tmp_path):
    rtsp = RtspServer(VTEST, tmp_path / "rtsp").start()
    config = site(tmp_path, kafka_bootstrap, [{"id": "rtsp-cam", "source": rtsp.url, "fps": 5}],
                  rtsp_transport="udp")
    running = Running(config, kafka_bootstrap)
    try:
        running.wait_for(lambda: len(running.frames) >= 10, 30, "RTSP frames")
        rtsp.stop()
        running.wait_for(lambda: any(s.state is CameraState.DOWN for s in running.statuses), 20, "camera down")
        before = len(running.frames)
        rtsp.start()
        running.wait_for(lambda: len(running.frames) >= before + 10, 30, "RTSP frames after the restart")
    finally:
        running.finish()
        rtsp.stop()
    sequence = [frame.seq for frame in running.frames]
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
    assert running.statuses[-1].reconnects >= 1


def test_oversized_frames_travel_by_reference_and_scaled_ones_keep_the_cameras_own_size(kafka_bootstrap, tmp_path):
    # "big" sends full-size frames too large for a message; "half" is scaled down to 384 px wide (max_width) and
    # still says its picture is 768x576, where the site's geometry is drawn.
    config = site(tmp_path, kafka_bootstrap, [{"id": "big", "source": str(VTEST), "fps": 5, "jpeg_quality": 100},
                                              {"id": "half", "source": str(VTEST), "fps": 5, "max_width": 384}],
                  max_message_bytes=10_000, frame_store_dir=str(tmp_path / "frames"))
    running = Running(config, kafka_bootstrap, realtime=False, max_frames=3)
    running.thread.join(30)
    running.wait_for(lambda: len(running.frames) >= 6, 15, "frames")
    running.finish()
    store = open_frame_store(config)
    by_camera = defaultdict(list)
    for frame in running.frames:
        by_camera[frame.camera_id].append(frame)
    for frame in by_camera["big"]:
        assert frame.jpeg is None and frame.frame_ref
        image = cv2.imdecode(np.frombuffer(store.resolve(frame.frame_ref), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (frame.height, frame.width, 3)
        assert frame.source_size == (768, 576) and frame.source_width is None  # not scaled
    for frame in by_camera["half"]:
        jpeg = frame.jpeg or store.resolve(frame.frame_ref)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (288, 384, 3) == (frame.height, frame.width, 3)
        assert (frame.source_width, frame.source_height) == (768, 576)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    """vtest.avi at 320x240: 50 cameras of the full clip would measure this 2-core machine, not the producer."""
    path = tmp_path_factory.mktemp("clip") / "small.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(VTEST), "-t", "20", "-vf", "scale=320:240",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", str(path)], check=True, timeout=60)
    return path


@pytest.mark.solo
def test_fifty_cameras_publish_in_bounded_memory_while_dead_ones_are_down(kafka_bootstrap, tmp_path, small_clip):
    """How fast they run on a given machine is a figure of `cityguard bench capture`, not asserted here."""
    live = [{"id": f"live{index:02d}", "source": str(small_clip), "fps": 5, "loop": True} for index in range(46)]
    dead = [{"id": "dead-refused", "source": "http://127.0.0.1:9/live.m3u8", "fps": 5},
            {"id": "dead-rtsp", "source": "rtsp://127.0.0.1:9/stream", "fps": 5},
            {"id": "dead-image", "source": "http://127.0.0.1:9/snapshot.jpg", "fps": 5},
            {"id": "dead-file", "source": str(tmp_path / "missing.mp4"), "fps": 5}]
    config = site(tmp_path, kafka_bootstrap, live + dead, status_interval_s=5.0)
    process = psutil.Process()
    # Frames are not read back here: a consumer's fetch buffers would be counted as the producer's memory.
    running = Running(config, kafka_bootstrap, read_frames=False)
    try:
        time.sleep(10)  # every decoder opened, queues and client buffers at their working size
        running.poll()
        settled_rss = process.memory_info().rss
        deadline = time.monotonic() + 20
        peak_rss = settled_rss
        while time.monotonic() < deadline:
            running.poll()
            peak_rss = max(peak_rss, process.memory_info().rss)
        final = {status.camera_id: status for status in running.statuses}
    finally:
        running.finish()
    assert peak_rss - settled_rss < 40 * 2**20, f"memory grew {(peak_rss - settled_rss) / 2**20:.0f} MiB in 20 s"
    for camera in live:
        assert final[camera["id"]].state is CameraState.UP, final[camera["id"]]
    for camera in dead:
        status = final[camera["id"]]
        assert status.state is CameraState.DOWN and status.reason, status
    assert "no such file" in final["dead-file"].reason
    assert {camera for camera, sent in running.result.items() if sent} == {camera["id"] for camera in live}
