"""requests sessions whose requests end at a deadline, whatever the server does.

requests bounds each socket wait (the connect, each read), never a request: a server sending its status line, headers
or body a byte at a time, each within the timeout, holds its caller as long as it likes. The waits happen deep in
urllib3, or in urllib3-future, which takes its place where niquests is installed and reads the socket in HTTP/1.1 and
HTTP/2 loops of its own: there is no response object whose reads could be cut to the time left, as the producers'
http_fetch cuts http.client's. So a watchdog ends them instead: at the deadline it shuts down the sockets of every
connection the session opened, which wakes whatever read or write waits on them. A session serves one caller for one
deadline and opens connections of its own: no other request shares a socket that is shut down under it.

Before there is a socket to shut down, the host is looked up: socket.getaddrinfo takes no timeout, and a resolver that
hangs would hold the caller as long as it did. So each connection makes its socket (the lookup, then the connect) in
a thread of its own, waited for until the deadline only; the library makes it as ever (it connects to what the
lookup gave, naming the host in the Host header, TLS's SNI and the certificate check).
"""
from __future__ import annotations

import contextlib
import functools
import socket
import threading
from typing import Iterator

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError

from infra.deadline import Deadline

# urllib3-future, installed in urllib3's place where niquests is, speaks HTTP/3 to a receiver whose answer offers it
# (Alt-Svc): QUIC, over a UDP socket, whose waits the watchdog's shutdown of that socket does not end (a QUIC
# handshake runs on past it). The tries keep to TCP. Plain urllib3 has no HTTP/3.
_HTTP3 = getattr(getattr(urllib3, "HttpVersion", None), "h3", None)


class _Watchdog:
    """Shuts down, at the deadline, the sockets of the connections it watches; until it is stood down."""

    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.lock = threading.Lock()
        self.connections: list = []
        self.fired = False
        self.stood_down = False
        self.timer = threading.Timer(deadline.left(), self.fire)
        self.timer.daemon = True
        self.timer.start()

    def watch(self, connection) -> None:
        with self.lock:
            self.connections.append(connection)

    def fire(self) -> None:
        with self.lock:  # held while shutting down: a session closes its sockets only once the watchdog stood down
            if self.stood_down:
                return
            self.fired = True
            for connection in self.connections:
                sock = getattr(connection, "sock", None)  # None before it connects and once it is closed
                if sock is not None:
                    with contextlib.suppress(OSError):  # already closed by the server
                        sock.shutdown(socket.SHUT_RDWR)

    def stand_down(self) -> None:
        self.timer.cancel()
        with self.lock:
            self.stood_down = True


class _DeadlineConnection:
    """A urllib3 connection that makes its socket (looks the host up, then connects) by the deadline, or raises
    ConnectTimeoutError; a lookup given up on ends in its thread, and a socket made then is closed."""

    def __init__(self, *args, deadline: Deadline, **kwargs):
        self.deadline = deadline
        super().__init__(*args, **kwargs)

    def _new_conn(self):
        try:
            return self.deadline.call(super()._new_conn, _close)
        except TimeoutError:
            raise ConnectTimeoutError(self, f"{self.host} not looked up and connected to by the deadline") from None


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


class _WatchedPool:
    """A urllib3 connection pool whose every new connection is watched by the session's watchdog and connects by its
    deadline, over TCP."""

    def __init__(self, *args, watchdog: _Watchdog, **kwargs):
        self.watchdog = watchdog
        if _HTTP3 is not None:
            kwargs["disabled_svn"] = {*kwargs.get("disabled_svn", ()), _HTTP3}
        super().__init__(*args, deadline=watchdog.deadline, **kwargs)

    def _new_conn(self, *args, **kwargs):
        connection = super()._new_conn(*args, **kwargs)
        self.watchdog.watch(connection)
        return connection


@functools.cache
def _watched(pool_class: type) -> type:
    connection_class = type(f"Deadline{pool_class.ConnectionCls.__name__}",
                            (_DeadlineConnection, pool_class.ConnectionCls), {})
    return type(f"Watched{pool_class.__name__}", (_WatchedPool, pool_class), {"ConnectionCls": connection_class})


class _DeadlineAdapter(HTTPAdapter):
    """Sends each request with the time left as its timeout, through pools (a proxy's included) that the watchdog
    watches; a request that fails once the deadline has come is a timeout."""

    def __init__(self, deadline: Deadline, watchdog: _Watchdog):
        self.deadline, self.watchdog = deadline, watchdog
        super().__init__()

    def _watch_pools_of(self, manager):
        manager.pool_classes_by_scheme = {scheme: functools.partial(_watched(pool_class), watchdog=self.watchdog)
                                          for scheme, pool_class in manager.pool_classes_by_scheme.items()}
        return manager

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._watch_pools_of(self.poolmanager)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        known = proxy in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        return manager if known else self._watch_pools_of(manager)

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        try:
            left = self.deadline.left()
        except TimeoutError:  # nothing was sent
            raise requests.ConnectTimeout("no time left to connect", request=request) from None
        try:
            return super().send(request, stream=stream, timeout=left, verify=verify, cert=cert, proxies=proxies)
        except requests.ConnectTimeout:
            raise
        except requests.RequestException:
            if self.watchdog.fired:  # the error is the shut-down socket's; the request may have gone out
                raise requests.ReadTimeout("answer not complete by the deadline", request=request) from None
            raise


@contextlib.contextmanager
def session_until(deadline: Deadline) -> Iterator[requests.Session]:
    """A session whose requests, and the reads of their answers within the block, end by `deadline`: a request begun
    after it, or whose host is not looked up and connected to by then, raises ConnectTimeout, one it cuts short
    ReadTimeout; a read of a streamed body it cuts short ends early or raises as a connection that broke off. The
    timeout a request names is ignored. Raises TimeoutError where no time is left."""
    watchdog = _Watchdog(deadline)
    session = requests.Session()
    adapter = _DeadlineAdapter(deadline, watchdog)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    try:
        yield session
    finally:
        watchdog.stand_down()  # before the session closes its sockets, whose numbers may then be reused
        session.close()


class PerRequestDeadlineSession(requests.Session):
    """For a client library that sends through `session.send(..., timeout=...)` and reads the whole answer before it
    returns (no stream): each request is made in a session of its own that ends it, its answer read, within its
    timeout."""

    def send(self, request, **kwargs):
        with session_until(Deadline(kwargs.pop("timeout"))) as session:
            return session.send(request, **kwargs)
