"""Which listeners count as reachable from this machine only, and the URLs printed for people to open; what every
http.server listener of ours does with slow and failing requests."""
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra.listeners import HeaderDeadline, LoggedRequestErrors, http_url, is_loopback


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.5", False), ("console.city.example", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_an_ipv6_listener_is_printed_in_brackets():
    assert http_url("::1", 8090) == "http://[::1]:8090/"
    assert http_url("127.0.0.1", 9100, "/metrics") == "http://127.0.0.1:9100/metrics"


class Server(LoggedRequestErrors, ThreadingHTTPServer):
    daemon_threads = True


class Handler(HeaderDeadline, BaseHTTPRequestHandler):
    header_timeout_s = 0.3

    def do_GET(self):
        if self.path == "/fail":
            raise RuntimeError("the handler broke")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    running = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield running
    running.shutdown()
    running.server_close()


def exchange(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as connection:
        connection.sendall(request)
        return connection.recv(65536)


def test_a_request_whose_headers_never_end_is_cut_off_at_the_deadline(server):
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as connection:
        started = time.monotonic()
        connection.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n")
        for _ in range(10):  # a header line every 0.1 s, never the blank line that ends them
            try:
                connection.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            time.sleep(0.1)
        assert connection.recv(65536) == b""
        assert time.monotonic() - started < 2
    assert exchange(server, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 200")


def test_a_failed_request_is_logged_without_its_traceback_and_a_dropped_connection_not_at_all(server, caplog,
                                                                                               capsys):
    with caplog.at_level(logging.WARNING, logger="infra.listeners"):
        exchange(server, b"GET /fail HTTP/1.0\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        try:
            raise ConnectionResetError("peer went away")
        except ConnectionResetError:
            server.handle_error(None, ("127.0.0.1", 1))
    assert [record.getMessage() for record in caplog.records] == [
        "a request from 127.0.0.1 failed: RuntimeError: the handler broke"]
    assert "Traceback" not in capsys.readouterr().err
