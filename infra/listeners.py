"""Which addresses only this machine can reach: listeners bound to them may serve reads without a token; beyond
them a token must be long enough not to be guessed. And what every http.server listener of ours needs whatever its
address: a deadline on each request's headers, and failed requests logged, not printed."""
from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading

from schemas.settings.base import ConfigError

log = logging.getLogger(__name__)

# A listener reachable from the network is open to guessing: 16 characters of a random token (what `secrets`
# makes: 24 bytes give 32) are beyond it, a short word is not.
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for a loopback address or the name localhost (a host name, IPv6 without brackets)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_url(host: str, port: int, path: str = "/") -> str:
    """The URL of a listener, for people to open: an IPv6 address goes in brackets."""
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def verify_token_length(token: str, host: str, variable: str, published_by: str | None = None) -> None:
    """ConfigError, naming the variable (never the token), when a listener beyond loopback has a short token, or one
    on loopback that a reverse proxy publishes (`published_by`: the setting that says so)."""
    if len(token) >= MIN_TOKEN_CHARS or is_loopback(host) and published_by is None:
        return
    reached = f"a listener on {host}" if not is_loopback(host) else \
        f"a listener that a reverse proxy publishes ({published_by} is set)"
    raise ConfigError(f"{variable} is too short for {reached}: give it {MIN_TOKEN_CHARS} characters or more "
                      "(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")


class HeaderDeadline:
    """Mixin for an http.server request handler serving one request a connection (HTTP/1.0, as ours do): its request
    line and headers must arrive within `header_timeout_s` in all. The socket timeout bounds each read, not the
    request, so a client sending its headers a byte at a time would hold a thread, and a connection slot where
    there are few, for ever. At the deadline the connection is shut, which ends the read."""

    header_timeout_s = 10.0

    def setup(self) -> None:
        super().setup()
        self._header_deadline = threading.Timer(self.header_timeout_s, self._cut_off)
        self._header_deadline.daemon = True
        self._header_deadline.start()

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers
        self._header_deadline.cancel()
        return parsed

    def finish(self) -> None:
        self._header_deadline.cancel()
        super().finish()

    def _cut_off(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed meanwhile


class LoggedRequestErrors:
    """Mixin for a socketserver server: a request that fails is logged (through the stage's redacting log), never
    printed to stderr with its traceback, as socketserver does by default; a client dropping its connection is not
    news at all, and anyone who can connect could otherwise flood the output."""

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        log.warning("a request from %s failed: %s", client_address[0] if client_address else "?",
                    f"{type(error).__name__}: {error}")
        log.debug("the failed request's traceback", exc_info=True)
