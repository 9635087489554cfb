"""fetch's total deadline against a local server that answers slowly in each part of the answer, and against a
resolver that hangs."""
from __future__ import annotations

import ssl
import subprocess

import pytest

from producers.http_fetch import FetchError, fetch
from tests.conftest import HANGING_HOST
from tests.producers.conftest import QuietHandler, serving
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


@pytest.mark.parametrize("hanging_resolver", [5], indirect=True)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_deadline_covers_a_host_name_whose_lookup_hangs(hanging_resolver, scheme):
    # The lookup would fail after 5 s: failing on the deadline instead, the GET gave up before the lookup ended.
    with pytest.raises(FetchError, match="not complete within 0.5 s"):
        fetch(f"{scheme}://{HANGING_HOST}/snapshot.jpg", 1024, timeout_s=0.5)
    assert hanging_resolver.is_set()


@pytest.fixture
def https_localhost(tmp_path, monkeypatch):
    """An https server on 127.0.0.1 answering BODY, with a trusted certificate for the name localhost only; yields
    its port and what each request named: the server name (TLS's SNI), the Host header."""
    certificate, key = tmp_path / "certificate.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    named = {"server_names": [], "hosts": []}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    context.sni_callback = lambda connection, server_name, _: named["server_names"].append(server_name)

    class Handler(QuietHandler):
        def do_GET(self):
            named["hosts"].append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    with serving(Handler, tls=context) as port:
        yield port, named


def test_a_host_name_is_connected_to_under_its_name(https_localhost):
    # The lookup is made apart from the connection: the certificate is still checked for the name, which the
    # request names to the server too.
    port, named = https_localhost
    assert fetch(f"https://localhost:{port}/snapshot.jpg", 1024, timeout_s=10) == BODY
    assert named == {"server_names": ["localhost"], "hosts": [f"localhost:{port}"]}


@pytest.mark.parametrize("url", ["http://[::1/snapshot.jpg", "http://[camera]/snapshot.jpg"])
def test_a_url_that_does_not_parse_is_a_fetch_error(url):
    with pytest.raises(FetchError, match="not a valid URL"):
        fetch(url, 1024, timeout_s=1)


@pytest.mark.parametrize("honours_range", [True, False])
def test_the_first_bytes_of_a_long_body_are_read_whether_or_not_the_server_honours_the_range(honours_range):
    body = bytes(range(256)) * 1024  # 256 KiB: a clip, of which only the start is wanted

    class Handler(QuietHandler):
        def do_GET(self):
            sent = body[:1000] if honours_range and self.headers.get("Range") == "bytes=0-999" else body
            self.send_response(206 if len(sent) < len(body) else 200)
            self.send_header("Content-Length", str(len(sent)))
            self.end_headers()
            self.wfile.write(sent)

    with serving(Handler) as port:
        url = f"http://127.0.0.1:{port}/clip.mp4"
        assert fetch(url, 1000, timeout_s=10, first_bytes=True) == body[:1000]
        with pytest.raises(FetchError, match="exceeds the 1000-byte cap"):
            fetch(url, 1000, timeout_s=10)
