"""fetch's total deadline against a local server that answers slowly in each part of the answer."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from producers.http_fetch import FetchError, fetch

BODY = b"picture"
HEAD = b"HTTP/1.0 200 OK\r\nX-Pad: " + b"a" * 200 + b"\r\nContent-Length: 7\r\n\r\n"


class TricklingServer:
    """Answers one GET with its status line and headers a byte every 20 ms (about 5 s in all), then the body."""

    def __init__(self):
        self.head_sent = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/snapshot.jpg"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.recv(4096)
            try:
                for byte in HEAD:
                    connection.sendall(bytes([byte]))
                    time.sleep(0.02)
                self.head_sent.set()
                connection.sendall(BODY)
            except OSError:  # the client gave up
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def trickling():
    server = TricklingServer()
    yield server
    server.close()


def test_the_deadline_covers_a_status_line_and_headers_that_trickle_in(trickling):
    # Each byte arrives well within a socket timeout; only the total deadline stops the GET before the whole answer.
    with pytest.raises(FetchError, match="not complete within 0.5 s"):
        fetch(trickling.url, 1024, timeout_s=0.5)
    assert not trickling.head_sent.is_set()  # given up while the headers were still coming


def test_a_trickled_answer_within_the_deadline_is_read(trickling):
    assert fetch(trickling.url, 1024, timeout_s=60) == BODY


@pytest.mark.parametrize("url", ["http://[::1/snapshot.jpg", "http://[camera]/snapshot.jpg"])
def test_a_url_that_does_not_parse_is_a_fetch_error(url):
    with pytest.raises(FetchError, match="not a valid URL"):
        fetch(url, 1024, timeout_s=1)
