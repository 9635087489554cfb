"""Which listeners count as reachable from this machine only, and the URLs printed for people to open."""
import pytest

from infra.listeners import http_url, is_loopback


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.5", False), ("console.city.example", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_an_ipv6_listener_is_printed_in_brackets():
    assert http_url("::1", 8090) == "http://[::1]:8090/"
    assert http_url("127.0.0.1", 9100, "/metrics") == "http://127.0.0.1:9100/metrics"
