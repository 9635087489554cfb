"""fetch's total deadline against a local server that answers slowly in each part of the answer."""
from __future__ import annotations

import pytest

from producers.http_fetch import FetchError, fetch
from tests.trickling_server import TricklingServer

BODY = b"picture"
HEAD = b"HTTP/1.0 200 OK\r\nX-Pad: " + b"a" * 200 + b"\r\nContent-Length: 7\r\n\r\n"


@pytest.fixture
def trickling():
    server = TricklingServer(HEAD, BODY, pause_s=0.02)  # about 5 s in all
    server.url += "/snapshot.jpg"
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
