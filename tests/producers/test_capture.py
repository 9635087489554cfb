"""Sampling from a real file and a still-image URL served from 127.0.0.1."""
from __future__ import annotations

import http.server
import threading

import cv2
import numpy as np
import pytest

from producers.capture import CameraUnavailable, sample_frames
from producers.picture import YuvPicture, encode_jpeg
from schemas.settings.config import CameraConfig
from tests.conftest import VTEST


def test_file_is_sampled_on_its_own_timeline():
    camera = CameraConfig(id="campus", source=str(VTEST), fps=5)
    frames = []
    for frame in sample_frames(camera, str(VTEST), realtime=False):
        frames.append(frame)
        if len(frames) == 10:
            break
    assert np.diff([frame.captured_at for frame in frames]) == pytest.approx([0.2] * 9)  # vtest.avi is 10 fps
    assert (frames[0].picture.width, frames[0].picture.height) == (768, 576)


def test_missing_file_is_a_permanent_failure(tmp_path):
    camera = CameraConfig(id="gone", source="x.avi")
    with pytest.raises(CameraUnavailable, match="no such file") as error:
        next(sample_frames(camera, str(tmp_path / "x.avi")))
    assert error.value.permanent


def test_encode_scales_down_to_the_max_width():
    jpeg, width, height = encode_jpeg(YuvPicture.from_bgr(np.zeros((576, 768, 3), np.uint8)), max_width=384, quality=70)
    assert (width, height) == (384, 288) and cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1).shape == (288, 384, 3)


@pytest.fixture
def snapshot_server():
    state = {"status": 200, "image": np.full((48, 64, 3), 90, np.uint8), "gets": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["gets"] += 1
            body = cv2.imencode(".jpg", state["image"])[1].tobytes() if state["status"] == 200 else b"gone"
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/snapshot.jpg", state
    server.shutdown()
    server.server_close()


def test_still_image_url_is_polled_at_the_camera_rate(snapshot_server):
    url, state = snapshot_server
    camera = CameraConfig(id="snap", source=url, fps=20)
    frames = sample_frames(camera, url)
    first = [next(frames) for _ in range(4)]
    assert state["gets"] == 4 and (first[0].picture.width, first[0].picture.height) == (64, 48)
    assert np.diff([frame.captured_at for frame in first]) == pytest.approx([0.05] * 3, abs=0.03)
    state["status"] = 404  # an expired tokenised URL
    with pytest.raises(CameraUnavailable, match="HTTP 404"):
        next(frames)
