"""A camera's reader thread keeps its camera: frames the store cannot take are dropped and counted, unexpected errors
are retried and reported, a picture that stays frozen across reconnections is found frozen, a playlist no longer
updated is not published again, an MJPEG camera that drops its connections goes on after each reconnection, a
still-image camera that misses single pictures stays up, a live camera is never given up (nor is its producer), and
a reader waiting to pace its next frame stops when told."""
from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from cityguard.bench.capture import DiscardingClient
from infra.redaction import RedactingFormatter
from producers.camera_urls import CameraUrlPolicy
from producers.capture import PublishedUpTo
from producers.frame_producer import WAITING_FOR_CLIP, CameraReader, FrameQueue, PlayedClips, run_producer
from producers.frame_store import LocalFrameStore
from producers.health import CameraHealth
from producers.its_client import ItsCamera, ItsCameraGone, ItsClient, ItsResolver
from producers.local_streams import TokenFileServer
from schemas import CameraState, Frame, PictureFault, decode
from schemas.settings.capture import ItsCameraRef
from schemas.settings.config import parse_config
from tests.conftest import VTEST
from tests.producers.conftest import grey_part
from tests.producers.fake_its import FakeItsApi, record


def reader_for(tmp_path, source: str, store, realtime: bool = False, fps: float = 2, kind: str = "auto",
               its: dict | None = None, resolver=None, **producer) -> CameraReader:
    camera_id = f"reader-{uuid.uuid4().hex[:8]}"  # the metrics are process-wide
    camera = {"id": camera_id, "source": source, "fps": fps, "kind": kind, **({"its": its} if its else {})}
    config = parse_config({"site": "s", "producer": {"reconnect_backoff_base_s": 0.1, "reconnect_backoff_max_s": 0.2,
                                                     **producer},
                           "cameras": [camera]}, tmp_path)
    settings = config.producer
    health = CameraHealth(camera_id, settings.down_after_failures, settings.status_interval_s, settings.read_timeout_s,
                          fps)
    return CameraReader(config.cameras[0], config, FrameQueue(1000, threading.Event()), health, lambda: resolver,
                        lambda: store, threading.Event(), realtime, None)


def run_until(reader: CameraReader, condition, timeout_s: float = 30) -> list:
    """Runs the reader in its thread until the condition holds for a status; returns the statuses seen."""
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    statuses = [reader.health.status()]
    deadline = time.monotonic() + timeout_s
    while not condition(statuses[-1]) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
        statuses.append(reader.health.status())
    reader.stop.set()
    thread.join(10)
    return statuses


def test_frames_the_store_cannot_take_are_dropped_and_counted_and_the_camera_reads_on(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    store = LocalFrameStore(tmp_path / "not-a-directory" / "frames", ttl_s=60)
    reader = reader_for(tmp_path, str(VTEST), store, max_message_bytes=10_000)  # every vtest frame is larger
    reader.run()
    status = reader.health.status()
    assert (status.state, status.reason) == (CameraState.DOWN, "source ended")  # played to its end
    assert status.dropped_frames > 100 and len(reader.queue) == 0
    dropped = REGISTRY.get_sample_value("cityguard_camera_dropped_frames_total", {"camera": reader.camera.id})
    assert dropped == status.dropped_frames


def test_a_reader_waiting_for_its_next_frame_stops_when_told(tmp_path):
    reader = reader_for(tmp_path, str(VTEST), store=None, realtime=True, fps=0.1)  # frames 10 s apart
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not len(reader.queue) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reader.stop.set()
    thread.join(5)
    assert not thread.is_alive() and len(reader.queue) == 1


class FailingStore:
    """A frame-store backend with a bug."""

    def put(self, camera_id: str, seq: int, jpeg: bytes) -> str:
        raise KeyError("bucket")


def test_an_unexpected_error_is_retried_with_backoff_and_reported_by_its_type(tmp_path):
    reader = reader_for(tmp_path, str(VTEST), FailingStore(), max_message_bytes=10_000, down_after_failures=2)
    statuses = run_until(reader, lambda status: status.state is CameraState.DOWN)
    assert (statuses[-1].state, statuses[-1].reason) == (CameraState.DOWN, "reader error: KeyError")
    assert statuses[-1].reconnects >= 1


def test_a_camera_password_with_characters_that_end_a_url_reaches_no_status_and_no_log_line(tmp_path, monkeypatch,
                                                                                          caplog):
    """A '/' in the password seems to start the URL's path, so the URL alone cannot say where the password ends."""
    monkeypatch.setenv("READER_TEST_PASSWORD", "2024/Spring!cam")
    reader = reader_for(tmp_path, "rtsp://viewer:${READER_TEST_PASSWORD}@127.0.0.1:1/stream1", LocalFrameStore(
        tmp_path / "frames", ttl_s=60), down_after_failures=1)
    with caplog.at_level(logging.DEBUG):
        statuses = run_until(reader, lambda status: status.state is CameraState.DOWN)
    assert statuses[-1].state is CameraState.DOWN and "127.0.0.1" in statuses[-1].reason
    formatter = RedactingFormatter("%(message)s")
    shown = [status.reason or "" for status in statuses] + [formatter.format(record) for record in caplog.records]
    assert not [text for text in shown if "Spring" in text]


def still_clip(tmp_path, *output: str) -> None:
    """Two seconds of one still picture at 10 fps, encoded with the given output options."""
    blocks = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "still.png"), cv2.resize(blocks, (160, 120), interpolation=cv2.INTER_NEAREST))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-loop", "1", "-i", str(tmp_path / "still.png"),
                    "-t", "2", "-r", "10", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    *output], check=True, timeout=60)


def test_a_picture_frozen_across_reconnections_is_reported_frozen(tmp_path):
    # A live stream that breaks every 2 s and shows the same still picture again after each reconnection.
    still_clip(tmp_path, str(tmp_path / "still.mp4"))
    reader = reader_for(tmp_path, str(tmp_path / "still.mp4"), None, realtime=True, kind="rtsp", frozen_after_s=4)
    statuses = run_until(reader, lambda status: status.reason.startswith("frozen"))
    assert statuses[-1].state is CameraState.STALLED and statuses[-1].reason.startswith("frozen")
    assert statuses[-1].reconnects >= 1
    # Its frames say so, once it is found frozen: the stages after it must not take the old picture for the present.
    faults = [decode(value, Frame).picture_fault for value in iter(reader.queue.take, None)]
    assert faults[0] is None and faults[-1] is PictureFault.FROZEN


def test_a_playlist_no_longer_updated_is_published_once_and_reported_down(tmp_path):
    # Each connection gets the same 2 s of segments, then nothing: they are repeats, not new frames.
    (tmp_path / "hls").mkdir()
    still_clip(tmp_path, "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_flags", "omit_endlist",
               str(tmp_path / "hls" / "live.m3u8"))
    server = TokenFileServer(tmp_path / "hls").start()
    try:
        reader = reader_for(tmp_path, server.url("live.m3u8"), None, realtime=True, fps=5, open_timeout_s=5,
                            read_timeout_s=1)
        statuses = run_until(reader, lambda status: status.state is CameraState.DOWN)
    finally:
        server.stop()
    assert statuses[-1].state is CameraState.DOWN and "already published" in statuses[-1].reason
    assert statuses[-1].reconnects >= 1
    assert len(reader.queue) == 10  # the 2 s at 5 fps, once


def wait_for(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_live_camera_whose_playlist_is_not_written_yet_is_reported_down_by_a_producer_that_stays_up(tmp_path):
    """"No such file" ends a recording for good, not a live camera: a local encoder's playlist that is not there yet
    (the encoder starting after the producer, or restarted) is retried, and the producer, whose only camera it is,
    stays up reporting it down, so that the camera's alert can fire, until the playlist appears and is read."""
    camera_id = f"reader-{uuid.uuid4().hex[:8]}"  # the metrics are process-wide
    playlist = tmp_path / "hls" / "live.m3u8"
    config = parse_config({"site": "s", "producer": {"reconnect_backoff_base_s": 0.1, "reconnect_backoff_max_s": 0.2,
                                                     "down_after_failures": 1, "status_interval_s": 0.2},
                           "cameras": [{"id": camera_id, "source": str(playlist), "kind": "hls", "fps": 5}]},
                          tmp_path)
    statuses, stop = [], threading.Event()
    producer = threading.Thread(target=run_producer, args=(config, DiscardingClient(), stop),
                                kwargs={"on_status": statuses.extend}, daemon=True)
    producer.start()
    try:
        wait_for(lambda: not producer.is_alive() or (statuses and statuses[-1].reconnects >= 3))
        assert producer.is_alive()
        assert statuses[-1].state is CameraState.DOWN and statuses[-1].reason.startswith("no such file")
        assert REGISTRY.get_sample_value("cityguard_camera_up", {"camera": camera_id}) == 0
        # The encoder starts: its playlist and segments appear at once, as an encoder writing them in place would not
        # leave them half written for the reader to find.
        (tmp_path / "encoding").mkdir()
        still_clip(tmp_path, "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                   str(tmp_path / "encoding" / "live.m3u8"))
        (tmp_path / "encoding").rename(playlist.parent)
        produced = {"camera": camera_id}
        wait_for(lambda: not producer.is_alive() or REGISTRY.get_sample_value("cityguard_frames_produced_total",
                                                                               produced))
        assert REGISTRY.get_sample_value("cityguard_frames_produced_total", produced)
    finally:
        stop.set()
        producer.join(10)
    assert not producer.is_alive()


def test_an_mjpeg_camera_that_drops_its_connection_goes_on_after_each_reconnection(tmp_path, mjpeg_server):
    url, state = mjpeg_server
    state.update(parts=5, every_s=0.1)  # each connection 0.5 s of a 10 fps camera, then dropped
    reader = reader_for(tmp_path, url.replace("/video.cgi", "/mjpg/video.mjpg"), None, realtime=True, fps=10)
    statuses = run_until(reader, lambda status: state["connections"] >= 3)
    assert state["connections"] >= 3 and statuses[-1].reconnects >= 2
    parts = [grey_part(cv2.imdecode(np.frombuffer(decode(value, Frame).jpeg, np.uint8), cv2.IMREAD_GRAYSCALE))
             for value in iter(reader.queue.take, None)]
    served_by_connection = {part // 5 for part in parts}
    assert {0, 1} <= served_by_connection  # frames from after the first reconnection were published


class OneUrlResolver:
    def __init__(self, url: str):
        self.url = url

    def resolve(self, its, failed_url: str) -> ItsCamera:
        return ItsCamera(its.name, its.lon, its.lat, self.url, its.cctv_type)


def test_an_its_camera_given_another_stream_starts_a_new_timeline_and_a_fresh_token_keeps_it(tmp_path):
    its = {"name": "CAM A", "lon": 127.0, "lat": 37.5, "road_type": "ex"}
    first = "http://cctvsec.example/270/rWSK4DQ8ZAZxCK6lH8C+zUD0ni1ZcCsJIIyLfJrGYrBU=="
    reader = reader_for(tmp_path, first, None, its=its, resolver=OneUrlResolver(first))
    reader.published.stream_s = 500.0
    reader.re_resolve()
    assert reader.published.stream_s == 500.0  # the same stream: what it serves again is not published again
    fresh_token = "http://cctvsec.example/270/qA7Ubl5+OwmUqjGjDfxb+I+2fTm%2F0IqjRgErU5+WmeQ="
    reader.resolver = lambda: OneUrlResolver(fresh_token)
    reader.re_resolve()
    assert reader.source == fresh_token and reader.published.stream_s == 500.0
    reader.resolver = lambda: OneUrlResolver("http://cctvsec.example/271/qA7Ubl5+OwmUqjGjDfxb+I+2fTm%2F0IqjRgErU5+Wm")
    reader.re_resolve()
    assert "/271/" in reader.source and reader.published.stream_s is None


class UnlistedResolver:
    def resolve(self, its, failed_url: str) -> ItsCamera:
        raise ItsCameraGone(f"ITS API no longer lists {its.name!r} at {its.lon:.5f},{its.lat:.5f}")


def test_an_its_camera_the_api_no_longer_lists_says_so_in_its_status(tmp_path):
    its = {"name": "CAM OLD", "lon": 127.0, "lat": 37.5, "road_type": "ex"}
    reader = reader_for(tmp_path, "http://127.0.0.1:9/old.m3u8", None, its=its, resolver=UnlistedResolver(),
                        open_timeout_s=1)
    statuses = run_until(reader, lambda status: "no longer lists" in status.reason or status.state is CameraState.DOWN)
    assert "ITS API no longer lists 'CAM OLD'" in statuses[-1].reason
    assert "the last URL failed: cannot open" in statuses[-1].reason


def test_an_its_camera_whose_api_answers_unreadable_json_is_retried_and_says_why(tmp_path):
    its = {"name": "CAM A", "lon": 127.0, "lat": 37.5, "road_type": "ex"}
    api = FakeItsApi("key", body=b'{"response": {"datacount": ' + b"9" * 5000 + b"}}").start()
    try:
        resolver = ItsResolver(ItsClient(api.url, "key"), [ItsCameraRef(**its)], refresh_min_s=60)
        reader = reader_for(tmp_path, "http://127.0.0.1:9/old.m3u8", None, its=its, resolver=resolver,
                            open_timeout_s=1)
        statuses = run_until(reader, lambda status: status.reconnects >= 3)
    finally:
        api.stop()
    assert statuses[-1].reconnects >= 3  # its reader is still retrying it
    assert statuses[-1].reason.startswith("ITS API answer is not JSON")


class BrokenResolver:
    """An ITS resolver with a bug."""

    def resolve(self, its, failed_url: str) -> ItsCamera:
        raise KeyError("listing")


def test_an_unexpected_error_in_an_its_lookup_fails_that_attempt_and_the_camera_is_retried(tmp_path, caplog):
    its = {"name": "CAM A", "lon": 127.0, "lat": 37.5, "road_type": "ex"}
    reader = reader_for(tmp_path, "http://127.0.0.1:9/old.m3u8", None, its=its, resolver=BrokenResolver(),
                        open_timeout_s=1)
    with caplog.at_level(logging.ERROR, logger="producers.frame_producer"):
        statuses = run_until(reader, lambda status: status.reconnects >= 3)
    assert statuses[-1].reconnects >= 3  # its reader is still retrying it
    assert statuses[-1].reason == "reader error: KeyError"
    assert f"camera {reader.camera.id}: KeyError in its reader: 'listing'" in caplog.text


def test_its_cameras_whose_api_key_cannot_be_used_are_retried_on_their_urls(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CITYGUARD_TEST_ITS_KEY", "s3cr3t\tkey")  # a tab pasted with it: no request could carry it
    camera_id = f"reader-{uuid.uuid4().hex[:8]}"
    config = parse_config({"site": "s", "producer": {"its_api_key_env": "CITYGUARD_TEST_ITS_KEY", "open_timeout_s": 1,
                                                     "reconnect_backoff_base_s": 0.1, "reconnect_backoff_max_s": 0.2,
                                                     "status_interval_s": 0.2},
                           "cameras": [{"id": camera_id, "source": "http://127.0.0.1:9/old.m3u8",
                                        "its": {"name": "CAM A", "lon": 127.0, "lat": 37.5, "road_type": "ex"}}]},
                          tmp_path)
    statuses, stop = [], threading.Event()

    def on_status(reported) -> None:
        statuses.extend(reported)
        if statuses[-1].reconnects >= 3:
            stop.set()

    give_up = threading.Timer(30, stop.set)
    give_up.start()
    try:
        with caplog.at_level(logging.ERROR, logger="producers.frame_producer"):
            run_producer(config, DiscardingClient(), stop, on_status=on_status)
    finally:
        give_up.cancel()
    assert statuses[-1].reconnects >= 3  # its reader is still retrying it
    assert "ITS cameras cannot be re-resolved: producer.its_api_key_env: environment variable CITYGUARD_TEST_ITS_KEY " \
           "holds a control character" in caplog.text


def numbered_clip(path, first_level: int) -> None:
    """Two seconds at 10 fps of uniform grey pictures, the i-th at grey level first_level + 4 i (told apart after
    JPEG by clip_frame)."""
    levels = np.repeat(np.arange(20, dtype=np.uint8) * 4 + first_level, 48 * 64)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "64x48",
                    "-r", "10", "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "0", "-pix_fmt",
                    "yuv420p", str(path)], input=levels.tobytes(), check=True, timeout=60)


def clip_frame(frame: Frame) -> tuple[str, int]:
    """Which clip (a or b, of numbered_clip at levels 20 and 120) and which of its pictures a frame shows."""
    level = float(cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).mean())
    return ("a", round((level - 20) / 4)) if level < 110 else ("b", round((level - 120) / 4))


def clip_path(url: str) -> str:
    """What the clips at these URLs start with: the clip their path names (their query is a token)."""
    return url.split("?", 1)[0]


def test_a_clip_that_broke_off_is_not_finished_once_a_newer_one_is_listed():
    # Its pictures are older than the newer clip's: finished after it, they would go out of order.
    clips = PlayedClips()
    first = clips.listed("https://its.example/a.mp4?token=1", "20261207101500", clip_path, 0.0)
    first.published = PublishedUpTo(4.2)  # broke off part way
    assert clips.listed("https://its.example/b.mp4?token=2", "20261207102000", clip_path, 60.0).ended is False
    # Listed again by a lagging server, and without its creation time: told by its first bytes.
    again = clips.listed("https://its.example/a.mp4?token=3", None, clip_path, 90.0)
    assert again is first and again.ended


def test_a_clip_listed_with_another_creation_time_is_a_new_clip_though_it_begins_as_the_last_did():
    # An encoder's clips may begin alike for the bytes read (a header of the same size and settings).
    clips = PlayedClips()

    def same_start(url: str) -> str:
        return "the encoder's header"

    first = clips.listed("https://its.example/a.mp4?token=1", "20261207101500", same_start, 0.0)
    newer = clips.listed("https://its.example/b.mp4?token=2", "20261207102000", same_start, 60.0)
    assert newer is not first and first.ended and not newer.ended


def test_a_clip_camera_may_wait_twice_its_usual_interval_between_clips():
    clips = PlayedClips()
    clips.listed("https://its.example/0.mp4?token=1", None, clip_path, 0.0)
    assert clips.longest_wait_s(first_wait_s=600, poll_max_s=60) == 600  # one clip says nothing of the interval
    for listed_at in (180.0, 360.0, 4000.0, 4180.0):  # every 3 min, but for an hour's outage
        clips.listed(f"https://its.example/{listed_at}.mp4?token=1", None, clip_path, listed_at)
    assert clips.longest_wait_s(first_wait_s=600, poll_max_s=60) == 2 * 180 + 60


@pytest.mark.parametrize("made", [("20261207090000", "20261207090100"), ("", "")], ids=["made", "no-filecreatetime"])
def test_an_its_camera_of_recorded_clips_plays_each_new_clip_once_and_waits_between_them(tmp_path, made):
    """An ITS MP4 camera (cctvType 2) is a live camera made of clips: its clip played, it stays up reporting that it
    waits for a new clip while the API lists the same one (under a fresh token too, with or without the time it was
    made), plays the next as the API lists it, and never publishes a clip's frames twice."""
    (tmp_path / "clips").mkdir()
    numbered_clip(tmp_path / "clips" / "a.mp4", 20)
    numbered_clip(tmp_path / "clips" / "b.mp4", 120)
    server = TokenFileServer(tmp_path / "clips").start()
    its = {"name": "CAM MP4", "lon": 127.0, "lat": 37.5, "road_type": "ex", "cctv_type": 2}
    listed = {"clip": "a.mp4", "made": made[0]}
    api = FakeItsApi("key", cameras=lambda: [record(its["name"], its["lon"], its["lat"], server.url(listed["clip"]),
                                                    cctv_type=2, file_created=listed["made"])]).start()
    client = ItsClient(api.url, "key", url_policy=CameraUrlPolicy(["127.0.0.1"]))  # the clips' server is local
    resolver = ItsResolver(client, [ItsCameraRef(**its)], refresh_min_s=0)
    # The URL discovery wrote, long expired: the reader asks the API for the camera's clip first.
    reader = reader_for(tmp_path, "http://127.0.0.1:9/mp4/expired", None, realtime=True, fps=5, its=its,
                        resolver=resolver, its_clip_poll_s=0.1, its_clip_poll_max_s=0.2)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    waiting = []

    def waits() -> bool:
        status = reader.health.status()
        if status.reason == WAITING_FOR_CLIP:
            waiting.append(status)
            return True
        return False

    try:
        wait_for(lambda: not thread.is_alive() or waits())
        played_a = reader.queued
        server.rotate_token()  # the clip's URL expires; the API lists the same clip under a fresh one
        asked = len(api.requests)
        wait_for(lambda: not thread.is_alive() or len(api.requests) >= asked + 3)
        assert reader.queued == played_a and waits()
        listed.update(clip="b.mp4", made=made[1])
        wait_for(lambda: not thread.is_alive() or (reader.queued > played_a and waits()))
        assert thread.is_alive() and not reader.health.finished
    finally:
        reader.stop.set()
        thread.join(10)
        server.stop()
        api.stop()
    assert waiting and {status.state for status in waiting} == {CameraState.UP}  # its clips' interval is not over
    shown = [clip_frame(decode(value, Frame)) for value in iter(reader.queue.take, None)]
    assert len(shown) == reader.queued and len(set(shown)) == len(shown)  # no frame published twice
    assert shown == sorted(shown) and {clip for clip, _ in shown} == {"a", "b"}  # a's frames, then b's, in order
    assert all(picture % 2 == 0 for _, picture in shown)  # every other picture: 10 fps sampled at 5


def test_a_still_image_camera_missing_single_pictures_is_never_down(tmp_path, snapshot_server):
    url, state = snapshot_server
    state["fail_every"] = 3
    reader = reader_for(tmp_path, url, None, fps=10)
    statuses = run_until(reader, lambda status: state["gets"] >= 15)
    assert state["gets"] >= 15 and statuses[-1].state is CameraState.UP
    assert {status.state for status in statuses} <= {CameraState.RECONNECTING, CameraState.UP}
