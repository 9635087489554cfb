"""requests sessions whose requests end at a deadline, whatever the server does.

requests bounds each socket wait (the connect, each read), never a request: a server sending its status line, headers
or body a byte at a time, each within the timeout, holds its caller as long as it likes. The waits happen deep in
urllib3, or in urllib3-future, which takes its place where niquests is installed and reads the socket in HTTP/1.1 and
HTTP/2 loops of its own: there is no response object whose reads could be cut to the time left, as the producers'
http_fetch cuts http.client's. So a watchdog ends them instead: at the deadline it shuts down the sockets of every
connection the session opened, which wakes whatever read or write waits on them. A session serves one caller for one
deadline and opens connections of its own: no other request shares a socket that is shut down under it.
"""
from __future__ import annotations

import contextlib
import functools
import socket
import threading
from typing import Iterator

import requests
from requests.adapters import HTTPAdapter

from infra.deadline import Deadline


class _Watchdog:
    """Shuts down, at the deadline, the sockets of the connections it watches; until it is stood down."""

    def __init__(self, deadline: Deadline):
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


class _WatchedPool:
    """A urllib3 connection pool whose every new connection is watched by the session's watchdog."""

    def __init__(self, *args, watchdog: _Watchdog, **kwargs):
        self.watchdog = watchdog
        super().__init__(*args, **kwargs)

    def _new_conn(self, *args, **kwargs):
        connection = super()._new_conn(*args, **kwargs)
        self.watchdog.watch(connection)
        return connection


@functools.cache
def _watched(pool_class: type) -> type:
    return type(f"Watched{pool_class.__name__}", (_WatchedPool, pool_class), {})


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
    after it raises ConnectTimeout, one it cuts short ReadTimeout; a read of a streamed body it cuts short ends early
    or raises as a connection that broke off. The timeout a request names is ignored. Raises TimeoutError where no
    time is left."""
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
