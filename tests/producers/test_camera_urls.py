"""Hostile camera URLs and hostile camera servers: the ITS API pointing at local files or the metadata service, and
still-image servers answering too much, too slowly, with odd statuses or cut bodies. Each ends as a refused URL or a
CameraUnavailable with the reason, within the configured caps."""
from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np
import pytest

from producers.camera_urls import CameraUrlPolicy
from producers.capture import CameraUnavailable, poll_image
from producers.its_client import ItsClient, ItsResolver, ItsUnavailable, ItsUrlRefused
from schemas.settings.capture import ItsCameraRef
from schemas.settings.config import CameraConfig
from tests.producers.fake_its import FakeItsApi, record

KEY = "s3cr3t-key"
PUBLIC = "203.0.113.7"  # TEST-NET-3: a public-looking address that needs no DNS


def policy(**names: str) -> CameraUrlPolicy:
    """A policy whose DNS is the given name -> address table."""
    return CameraUrlPolicy(resolve=lambda host: [names[host]] if host in names else [])


@pytest.mark.parametrize("url", [
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fe80::a9fe:a9fe]/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://127.0.0.1:8080/stream.m3u8",
    "http://localhost/stream.m3u8",
    "rtsp://[::1]/live",
    "http://0.0.0.0/x.jpg",
    "http://metadata.internal/computeMetadata/v1/",
    "ftp://cctv.example/x.mp4",
    "gopher://cctv.example/",
    "concat:http://cctv.example/a|file:///etc/passwd",
    "http:///no-host",
])
def test_urls_that_reach_local_files_or_services_are_refused(url):
    assert policy(**{"metadata.internal": "169.254.169.254"}).refusal(url) is not None


@pytest.mark.parametrize("url", [f"http://{PUBLIC}/live.m3u8", "rtsp://cctv.example/live", "https://cctv.example/a",
                                 "rtsps://cctv.example/live"])
def test_stream_urls_on_public_hosts_are_taken(url):
    assert policy(**{"cctv.example": PUBLIC}).refusal(url) is None


def test_a_local_host_is_taken_only_when_configured():
    assert CameraUrlPolicy(["127.0.0.1"]).refusal("http://127.0.0.1:9000/relay.m3u8") is None
    assert CameraUrlPolicy(["127.0.0.1"]).refusal("file:///etc/passwd") is not None


def test_the_its_api_cannot_point_a_camera_at_a_file_or_the_metadata_service():
    urls = iter(["http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", f"http://{PUBLIC}/ok.m3u8"])
    current = {"url": next(urls)}
    api = FakeItsApi(KEY, cameras=lambda: [record("A", 127.0, 37.5, current["url"])]).start()
    try:
        ref = ItsCameraRef(name="A", lon=127.0, lat=37.5, road_type="ex")
        resolver = ItsResolver(ItsClient(api.url, KEY), [ref], refresh_min_s=0)
        with pytest.raises(ItsUrlRefused, match="local address"):
            resolver.resolve(ref)
        current["url"] = next(urls)
        with pytest.raises(ItsUrlRefused, match="scheme 'file'"):
            resolver.resolve(ref)
        current["url"] = next(urls)
        assert resolver.resolve(ref).url == f"http://{PUBLIC}/ok.m3u8"
    finally:
        api.stop()


class HostileServer:
    """Answers every GET as `mode` says: huge (declared or streamed), slow, a status, a cut body, or a JPEG."""

    def __init__(self):
        self.mode = "jpeg"
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                try:
                    server.answer(self)
                except OSError:
                    pass  # the client gave up, as it should

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_port}/snapshot.jpg"

    def answer(self, handler) -> None:
        mode = self.mode
        if mode.isdigit():
            body = b"nope"
            handler.send_response(int(mode))
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.send_response(200)
        if mode == "declared-huge":
            handler.send_header("Content-Length", str(1536 * 1024 * 1024))
            handler.end_headers()
            handler.wfile.write(b"\xff" * 65536)
        elif mode == "streamed-huge":  # no Content-Length: only the running count can stop it
            handler.send_header("Connection", "close")
            handler.end_headers()
            for _ in range(2000):
                handler.wfile.write(b"\xff" * 65536)
        elif mode == "slow":
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            for _ in range(100):
                handler.wfile.write(b"\xff" * 10)
                handler.wfile.flush()
                time.sleep(0.1)
        elif mode == "cut":
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            handler.wfile.write(b"\xff" * 100)
            handler.close_connection = True
        else:
            body = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def hostile():
    server = HostileServer()
    yield server
    server.close()


def one_image(url: str, timeout_s: float = 1.0, max_bytes: int = 1024 * 1024):
    camera = CameraConfig(id="snap", source=url, fps=5)
    return next(poll_image(camera, url, timeout_s, max_bytes, time.time, time.sleep))


@pytest.mark.parametrize("mode, reason", [
    ("declared-huge", "exceeds the 1048576-byte cap"),
    ("streamed-huge", "exceeds the 1048576-byte cap"),
    ("slow", "not complete within 1 s"),
    ("500", "HTTP 500"),
    ("418", "HTTP 418"),
    ("cut", "body cut off at 100 of 100000 bytes"),
])
def test_a_hostile_still_image_server_makes_the_camera_unavailable_within_the_caps(hostile, mode, reason):
    hostile.mode = mode
    started = time.monotonic()
    with pytest.raises(CameraUnavailable, match=reason):
        one_image(hostile.url)
    assert time.monotonic() - started < 3  # the 1 s deadline, plus at most one blocked read


def test_a_still_image_server_that_behaves_gives_frames(hostile):
    picture = one_image(hostile.url).picture
    assert (picture.width, picture.height) == (64, 48)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://cctv.example/x.jpg"])
def test_a_still_image_source_must_be_http(url):
    with pytest.raises(CameraUnavailable, match="not an http") as raised:
        one_image(url)
    assert raised.value.permanent


def test_an_its_answer_over_the_cap_is_unavailable(hostile):
    hostile.mode = "streamed-huge"
    client = ItsClient(hostile.url, KEY, timeout_s=2, max_response_bytes=64 * 1024)
    with pytest.raises(ItsUnavailable, match="exceeds the 65536-byte cap") as raised:
        client._get(hostile.url + "?apiKey=" + KEY)
    assert KEY not in str(raised.value)
