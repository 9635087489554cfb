"""A still-image camera served from 127.0.0.1."""
from __future__ import annotations

import http.server
import threading

import cv2
import numpy as np
import pytest


@pytest.fixture
def snapshot_server():
    """The URL of a snapshot and the state that decides its answers: `status`, the `image` (as JPEG) or a raw `body`,
    the `authorization` header it requires, every `fail_every`-th request answered 503; `gets` counts requests."""
    state = {"status": 200, "image": np.full((48, 64, 3), 90, np.uint8), "body": None, "authorization": None,
             "fail_every": None, "gets": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["gets"] += 1
            status = state["status"]
            if state["authorization"] and self.headers.get("Authorization") != state["authorization"]:
                status = 401
            if state["fail_every"] and state["gets"] % state["fail_every"] == 0:
                status = 503
            body = state["body"] or cv2.imencode(".jpg", state["image"])[1].tobytes() if status == 200 else b"no"
            self.send_response(status)
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
