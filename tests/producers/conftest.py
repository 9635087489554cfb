"""A still-image camera and an MJPEG camera served from 127.0.0.1."""
from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """Serves the handler on 127.0.0.1 from a thread, over TLS where given its context; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def snapshot_server():
    """The URL of a snapshot and the state that decides its answers: `status`, the `image` (as JPEG) or a raw `body`,
    the `authorization` header it requires, every `fail_every`-th request answered 503; `gets` counts requests."""
    state = {"status": 200, "image": np.full((48, 64, 3), 90, np.uint8), "body": None, "authorization": None,
             "fail_every": None, "gets": 0}

    class Handler(QuietHandler):
        def do_GET(self):
            state["gets"] += 1
            status = state["status"]
            if state["authorization"] and self.headers.get("Authorization") != state["authorization"]:
                status = 401
            if state["fail_every"] and state["gets"] % state["fail_every"] == 0:
                status = 503
            body = b"no" if status != 200 else state["body"] if state["body"] is not None \
                else cv2.imencode(".jpg", state["image"])[1].tobytes()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}/snapshot.jpg", state


MJPEG_BOUNDARY = "cityguardframe"


def mjpeg_level(part: int) -> int:
    """The grey level of the part-th picture an MJPEG camera serves (counted over all its connections, modulo 30)."""
    return 16 + 8 * (part % 30)


def grey_part(picture: np.ndarray) -> int:
    """Which part's picture a decoded grey picture is."""
    return round((float(picture.mean()) - 16) / 8)


@pytest.fixture
def mjpeg_server():
    """The URL of an MJPEG camera at a path that names no kind, and the state that decides its answers: every
    connection gets `parts` JPEG parts of multipart/x-mixed-replace, `every_s` apart, after which the camera drops
    it; the pictures are uniform grey at mjpeg_level of the part's number, but for the part numbers in `corrupt`,
    which are not JPEG; `connections` counts connections."""
    state = {"parts": 20, "every_s": 0.0, "corrupt": range(0), "connections": 0, "served": 0}

    class Handler(QuietHandler):
        def do_GET(self):
            state["connections"] += 1
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}")
            self.end_headers()
            for _ in range(state["parts"]):
                picture = np.full((48, 64, 3), mjpeg_level(state["served"]), np.uint8)
                jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
                if state["served"] in state["corrupt"]:
                    jpeg = b"not a picture"
                self.wfile.write(f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                                 "\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
                state["served"] += 1
                time.sleep(state["every_s"])

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}/video.cgi", state
